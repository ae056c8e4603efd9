//! Learning-rate schedules, as a function of the step number.

/// The learning rate at each step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LrSchedule {
    Constant(f64),
    /// Linear warmup to `max_lr` over `warmup` steps, then cosine decay to `min_lr` at
    /// `decay_iters`, then `min_lr` (nanoGPT's schedule).
    WarmupCosine {
        max_lr: f64,
        min_lr: f64,
        warmup: usize,
        decay_iters: usize,
    },
}

impl LrSchedule {
    /// [`LrSchedule::WarmupCosine`]: `warmup` steps up to `max_lr`, then a cosine down to
    /// `min_lr` at `decay_iters`.
    ///
    /// ```
    /// use rustygradients_nn::optim::LrSchedule;
    /// let s = LrSchedule::warmup_cosine(1e-3, 1e-4, 10, 100);
    /// assert!(s.lr_at(0) < s.lr_at(9) && s.lr_at(10) == 1e-3 && s.lr_at(100) == 1e-4);
    /// ```
    pub fn warmup_cosine(max_lr: f64, min_lr: f64, warmup: usize, decay_iters: usize) -> Self {
        LrSchedule::WarmupCosine {
            max_lr,
            min_lr,
            warmup,
            decay_iters,
        }
    }

    /// The learning rate for step `step` (counting from 0).
    pub fn lr_at(&self, step: usize) -> f64 {
        match *self {
            LrSchedule::Constant(lr) => lr,
            LrSchedule::WarmupCosine {
                max_lr,
                min_lr,
                warmup,
                decay_iters,
            } => {
                if step < warmup {
                    // In f64: `warmup + 1` must not overflow for any warmup a user types.
                    max_lr * (step as f64 + 1.0) / (warmup as f64 + 1.0)
                } else if step > decay_iters {
                    min_lr
                } else {
                    let ratio =
                        (step - warmup) as f64 / (decay_iters.saturating_sub(warmup)).max(1) as f64;
                    let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos());
                    min_lr + coeff * (max_lr - min_lr)
                }
            }
        }
    }
}
