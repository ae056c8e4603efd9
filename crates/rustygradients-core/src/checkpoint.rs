//! Activation recomputation (gradient checkpointing, PyTorch's
//! `torch.utils.checkpoint`): a region of the forward pass keeps only its input, and its
//! backward runs the region again to rebuild what it needs. Memory for one region's
//! activations instead of all of them, for about one more forward pass.

use std::sync::Arc;

use crate::grad_mode::{is_grad_enabled, no_grad, EnableGradGuard};
use crate::op::Op;
use crate::{random, AutocastGuard, DType, Result, Tensor};

/// The recomputed region: a function of one tensor (parameters are captured).
pub(crate) type CheckpointFn = Arc<dyn Fn(&Tensor) -> Result<Tensor> + Send + Sync>;

impl Tensor {
    /// `f(self)` without keeping `f`'s intermediate tensors for `backward`: the backward pass
    /// runs `f` again from `self`, with the same random draws (dropout masks) and autocast
    /// state, and backpropagates through that. Parameters `f` reads (captured, e.g. a
    /// transformer block's weights) receive their gradients as usual. Without autograd (under
    /// `no_grad`) this is just `f(self)`.
    ///
    /// `f` must compute the same function when run again (no in-place changes to what it reads
    /// between the forward and the backward pass).
    ///
    /// ```
    /// use rustygradients_core::{DType, Device, Tensor};
    /// let w = Tensor::randn(&[4, 4], DType::F64, Device::Cpu)?.requires_grad_(true)?;
    /// let x = Tensor::randn(&[3, 4], DType::F64, Device::Cpu)?.requires_grad_(true)?;
    /// let wc = w.clone();
    /// let y = x.checkpoint(move |x| x.matmul(&wc)?.tanh()?.matmul(&wc))?;
    /// y.sum_all()?.backward()?;
    /// let (gx, gw) = (x.grad().unwrap(), w.grad().unwrap());
    /// x.zero_grad();
    /// w.zero_grad();
    /// x.matmul(&w)?.tanh()?.matmul(&w)?.sum_all()?.backward()?;
    /// assert!(gx.sub(&x.grad().unwrap())?.abs()?.sum_all()?.item()? < 1e-12);
    /// assert!(gw.sub(&w.grad().unwrap())?.abs()?.sum_all()?.item()? < 1e-12);
    /// # Ok::<(), rustygradients_core::Error>(())
    /// ```
    pub fn checkpoint(
        &self,
        f: impl Fn(&Tensor) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Result<Tensor> {
        if !is_grad_enabled() {
            return f(self);
        }
        let rng = random::rng_state();
        let autocast = crate::autocast_dtype();
        let y = no_grad(|| f(self))?;
        // An untracked input still needs the op recorded (the parameters inside need their
        // gradients): a detached stand-in that asks for one carries it.
        let x = if self.is_tracked() {
            self.clone()
        } else {
            self.detach().requires_grad_(true)?
        };
        let op = Op::Checkpoint {
            x,
            f: Arc::new(f),
            rng: Box::new(rng),
            autocast,
        };
        Ok(y.view_with(y.layout().clone(), Some(op)))
    }
}

/// The checkpoint's rule: `f` again from a detached copy of `x` with the forward's random
/// stream and autocast state, backpropagated with `g`; returns `x`'s gradient (the captured
/// parameters accumulate theirs on the way).
pub(crate) fn recompute_grad(
    x: &Tensor,
    f: &CheckpointFn,
    rng: &rand_chacha::ChaCha8Rng,
    autocast: Option<DType>,
    g: &Tensor,
) -> Result<Tensor> {
    let xi = x.detach().requires_grad_(true)?;
    let y = {
        let _grad = EnableGradGuard::new();
        let _autocast = AutocastGuard::new(autocast)?;
        // The forward's stream in place of whichever generator is active, then put back.
        let outer = random::swap_active(rng.clone());
        let y = f(&xi);
        random::swap_active(outer);
        y?
    };
    if y.is_tracked() {
        y.backward_with(g)?;
    }
    match xi.grad() {
        Some(gx) => Ok(gx),
        None => xi.zeros_like(),
    }
}
