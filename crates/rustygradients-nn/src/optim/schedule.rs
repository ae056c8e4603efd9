//! Learning-rate schedules, as a function of the step number.

/// The learning rate at each step: [`LrSchedule::lr_at`] gives it, and
/// [`Optimizer::set_learning_rate`](super::Optimizer::set_learning_rate) applies it before
/// each step.
///
/// ```
/// use rustygradients_nn::optim::{LrSchedule, Optimizer, ParamGroup, Sgd, SgdConfig};
/// use rustygradients_nn::Linear;
///
/// # fn main() -> rustygradients_core::Result<()> {
/// let constant = LrSchedule::Constant(0.1);
/// assert_eq!((constant.lr_at(0), constant.lr_at(1_000_000)), (0.1, 0.1));
///
/// let sched = LrSchedule::WarmupCosine {
///     max_lr: 1e-3,
///     min_lr: 1e-4,
///     warmup: 100,
///     decay_iters: 1000,
/// };
/// assert!(sched.lr_at(0) < sched.lr_at(50) && sched.lr_at(50) < sched.lr_at(100));
/// assert_eq!(sched.lr_at(100), 1e-3); // the peak, when warmup ends
/// assert!(sched.lr_at(500) < 1e-3 && sched.lr_at(500) > 1e-4); // cosine decay
/// assert_eq!(sched.lr_at(5000), 1e-4); // the floor, from decay_iters on
///
/// let model = Linear::new(3, 1, true)?;
/// let mut opt = Sgd::new(vec![ParamGroup::all(&model, 0.0)], SgdConfig::default());
/// for step in 0..3 {
///     opt.set_learning_rate(sched.lr_at(step));
///     // opt.zero_grad(); loss.backward()?; opt.step()?;
/// }
/// assert_eq!(opt.learning_rate(), sched.lr_at(2));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LrSchedule {
    /// The same rate at every step.
    Constant(f64),
    /// Linear warmup to `max_lr` over `warmup` steps, then cosine decay to `min_lr` at
    /// `decay_iters`, then `min_lr` (nanoGPT's schedule).
    WarmupCosine {
        /// The peak rate, reached at step `warmup`.
        max_lr: f64,
        /// The floor, from step `decay_iters` on.
        min_lr: f64,
        /// Warmup steps: step `s < warmup` gets `max_lr · (s + 1) / (warmup + 1)`.
        warmup: usize,
        /// The step at which the cosine reaches `min_lr` (counted from 0, warmup included).
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
