//! Gradient clipping by global L2 norm (PyTorch's `clip_grad_norm_`).

use rustygradients_core::{no_grad, Result, Tensor};

/// The global L2 norm of the parameters' gradients (parameters without one count as zero);
/// NaN or infinite when any gradient element is.
pub fn grad_norm(params: &[Tensor]) -> Result<f64> {
    no_grad(|| {
        let mut sq = 0.0;
        for p in params {
            if let Some(g) = p.grad() {
                sq += g.sqr()?.sum_all()?.item()?;
            }
        }
        Ok(sq.sqrt())
    })
}

/// Scales every gradient by `max_norm / (norm + 1e-6)` when the global norm exceeds `max_norm`;
/// returns the norm before clipping.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> Result<f64> {
    let norm = grad_norm(params)?;
    no_grad(|| {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for p in params {
                if let Some(g) = p.grad() {
                    p.set_grad(Some(g.mul_scalar(coef)?))?;
                }
            }
        }
        Ok(norm)
    })
}
