//! Gradient clipping by global L2 norm (PyTorch's `clip_grad_norm_`).

use rustygradients_core::{no_grad, Result, Tensor};

/// The global L2 norm of the parameters' gradients (parameters without one count as zero);
/// NaN or infinite when any gradient element is. Handy for logging, and for spotting a
/// diverging run before [`clip_grad_norm`] hides it.
///
/// ```
/// use rustygradients_core::{DType, Device, Tensor};
/// use rustygradients_nn::optim::grad_norm;
///
/// # fn main() -> rustygradients_core::Result<()> {
/// let a = Tensor::zeros([2], DType::F32, Device::Cpu)?.requires_grad_(true)?;
/// let b = Tensor::zeros([3], DType::F32, Device::Cpu)?.requires_grad_(true)?;
/// assert_eq!(grad_norm(&[a.clone(), b.clone()])?, 0.0); // no gradients yet
/// a.set_grad(Some(Tensor::from_vec(vec![3f32, 4.0], [2], Device::Cpu)?))?;
/// assert_eq!(grad_norm(&[a, b])?, 5.0); // sqrt(3² + 4²); `b` still counts as zero
/// # Ok(())
/// # }
/// ```
pub fn grad_norm(params: &[Tensor]) -> Result<f64> {
    grad_norm_tensor(params)?.map_or(Ok(0.0), |n| n.item())
}

/// [`grad_norm`] as a 0-d f64 tensor on the gradients' device, computed without reading
/// anything back to the host (`None` when no parameter has a gradient). f16/bf16 gradients
/// are squared in f32.
pub fn grad_norm_tensor(params: &[Tensor]) -> Result<Option<Tensor>> {
    let grads: Vec<Tensor> = params.iter().filter_map(Tensor::grad).collect();
    if grads.is_empty() {
        return Ok(None);
    }
    // One multi-tensor kernel on a GPU (per 32 gradients), a reduction per gradient elsewhere.
    no_grad(|| Tensor::sum_sq_many(&grads)?.sqrt()).map(Some)
}

/// Scales every gradient by `max_norm / (norm + 1e-6)` when the global norm exceeds `max_norm`;
/// returns the norm before clipping. Call it between `backward` and the optimizer's step, as
/// `clip_grad_norm(&opt.params(), 1.0)?`.
///
/// ```
/// use rustygradients_core::{DType, Device, Tensor};
/// use rustygradients_nn::optim::clip_grad_norm;
///
/// # fn main() -> rustygradients_core::Result<()> {
/// let p = Tensor::zeros([2], DType::F32, Device::Cpu)?.requires_grad_(true)?;
/// p.set_grad(Some(Tensor::from_vec(vec![3f32, 4.0], [2], Device::Cpu)?))?;
/// assert_eq!(clip_grad_norm(&[p.clone()], 1.0)?, 5.0); // the norm before clipping
/// let g = p.grad().unwrap().to_vec::<f32>()?;
/// assert!((g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5); // same direction, norm 1
///
/// // Within the limit, the gradients are left alone.
/// let before = p.grad().unwrap().to_vec::<f32>()?;
/// clip_grad_norm(&[p.clone()], 2.0)?;
/// assert_eq!(p.grad().unwrap().to_vec::<f32>()?, before);
/// # Ok(())
/// # }
/// ```
pub fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> Result<f64> {
    clip_grad_norm_tensor(params, max_norm)?.map_or(Ok(0.0), |n| n.item())
}

/// [`clip_grad_norm`] without reading anything back: returns the norm before clipping as a 0-d
/// f64 tensor on the gradients' device (`None` when no parameter has a gradient). The scale
/// `min(1, max_norm / (norm + 1e-6))` is computed and applied on the device, so gradients
/// within the limit are multiplied by exactly 1.
pub fn clip_grad_norm_tensor(params: &[Tensor], max_norm: f64) -> Result<Option<Tensor>> {
    let Some((norm, coef)) = clip_grad_coef(params, max_norm)? else {
        return Ok(None);
    };
    no_grad(|| {
        // Every gradient scaled in place: one multi-tensor kernel per 32 on a GPU.
        let grads: Vec<Tensor> = params.iter().filter_map(Tensor::grad).collect();
        Tensor::mul_many_(&grads, &coef)?;
        Ok(Some(norm))
    })
}

/// The global L2 norm of the gradients and clipping's coefficient `min(1, max_norm / (norm +
/// 1e-6))`, both 0-d f64 tensors on the gradients' device, computed there and with the
/// gradients left as they are (`None` when no parameter has a gradient): hand the coefficient
/// to [`Optimizer::step_scaled`](super::Optimizer::step_scaled), which applies it inside the
/// update, instead of a pass over every gradient as [`clip_grad_norm_tensor`] makes.
pub fn clip_grad_coef(params: &[Tensor], max_norm: f64) -> Result<Option<(Tensor, Tensor)>> {
    let Some(norm) = grad_norm_tensor(params)? else {
        return Ok(None);
    };
    let coef = no_grad(|| {
        norm.add_scalar(1e-6)?
            .recip()?
            .mul_scalar(max_norm)?
            .minimum_scalar(1.0)
    })?;
    Ok(Some((norm, coef)))
}
