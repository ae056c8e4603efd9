//! Dynamic loss scaling for f16 training (PyTorch's `torch.amp.GradScaler`): the loss is
//! multiplied by a large scale before `backward`, so small f16 gradients do not flush to zero;
//! the gradients are divided by it again before the optimizer step. A step whose gradients
//! overflowed (inf or NaN) is skipped and the scale halved; after `growth_interval` good steps
//! in a row the scale doubles. Beyond PyTorch's rule, [`GradScaler::update_with_norm`] treats
//! gradients that are all exactly zero at a finite loss as underflow (a scale far too small):
//! that step is skipped too and the scale doubles at once, so a bad first scale recovers in a
//! few dozen steps instead of thousands.

use rustygradients_core::{no_grad, Result, Tensor};
use serde::{Deserialize, Serialize};

/// The loss scale and its schedule.
///
/// ```
/// use rustygradients_core::{DType, Device, Tensor};
/// use rustygradients_nn::optim::GradScaler;
///
/// # fn main() -> rustygradients_core::Result<()> {
/// let mut scaler = GradScaler::new(1024.0);
/// let w = Tensor::ones([2], DType::F32, Device::Cpu)?.requires_grad_(true)?;
/// let loss = w.sum_all()?;
/// scaler.scale_loss(&loss)?.backward()?;
/// assert_eq!(w.grad().unwrap().to_vec::<f32>()?, [1024.0, 1024.0]);
/// scaler.unscale(&[w.clone()])?;
/// assert_eq!(w.grad().unwrap().to_vec::<f32>()?, [1.0, 1.0]);
/// assert!(scaler.update(true)); // finite: take the step
/// assert!(!scaler.update(false)); // overflow: skip it and halve the scale
/// assert_eq!(scaler.scale(), 512.0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GradScaler {
    scale: f64,
    /// The factor the scale grows by after `growth_interval` good steps (2).
    pub growth_factor: f64,
    /// The factor the scale shrinks by after an overflow (0.5).
    pub backoff_factor: f64,
    /// Good steps in a row before the scale grows (2000).
    pub growth_interval: u64,
    good_steps: u64,
}

impl GradScaler {
    /// A scaler starting at `init_scale` (PyTorch starts at 65536) with PyTorch's schedule.
    pub fn new(init_scale: f64) -> Self {
        GradScaler {
            scale: init_scale,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            good_steps: 0,
        }
    }

    /// The current scale.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// `loss · scale`, to call `backward` on.
    pub fn scale_loss(&self, loss: &Tensor) -> Result<Tensor> {
        loss.mul_scalar(self.scale)
    }

    /// Divides every gradient by the scale on the device (no read-back); overflowed gradients
    /// stay inf/NaN, so the gradient norm taken afterwards shows the overflow.
    pub fn unscale(&self, params: &[Tensor]) -> Result<()> {
        let inv = 1.0 / self.scale;
        no_grad(|| {
            for p in params {
                if let Some(g) = p.grad() {
                    p.set_grad(Some(g.mul_scalar(inv)?))?;
                }
            }
            Ok(())
        })
    }

    /// Moves the scale by this step's gradient norm (taken after [`GradScaler::unscale`]) and
    /// returns whether the optimizer should step: not after an overflow (inf/NaN: the scale
    /// halves) nor after an underflow (a norm of exactly 0: every gradient flushed to zero,
    /// the scale doubles at once); otherwise as [`GradScaler::update`].
    ///
    /// ```
    /// use rustygradients_nn::optim::GradScaler;
    /// let mut s = GradScaler::new(1e-12);
    /// assert!(!s.update_with_norm(0.0)); // underflow: skip, and grow now
    /// assert_eq!(s.scale(), 2e-12);
    /// assert!(s.update_with_norm(0.5));
    /// assert!(!s.update_with_norm(f64::INFINITY));
    /// assert_eq!(s.scale(), 1e-12);
    /// ```
    pub fn update_with_norm(&mut self, norm: f64) -> bool {
        if norm == 0.0 {
            self.scale *= self.growth_factor;
            self.good_steps = 0;
            return false;
        }
        self.update(norm.is_finite())
    }

    /// Records whether this step's gradients were finite and moves the scale; returns whether
    /// the optimizer should step (false: skip the step, the scale was lowered).
    pub fn update(&mut self, finite: bool) -> bool {
        if finite {
            self.good_steps += 1;
            if self.good_steps >= self.growth_interval {
                self.scale *= self.growth_factor;
                self.good_steps = 0;
            }
        } else {
            self.scale *= self.backoff_factor;
            self.good_steps = 0;
        }
        finite
    }
}
