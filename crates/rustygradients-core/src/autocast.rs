//! Automatic mixed precision (PyTorch's `torch.autocast`): inside an [`autocast`] scope on the
//! current thread, the ops that gain from tensor cores run in a half dtype while the parameters,
//! their gradients and the optimizer state stay f32.
//!
//! The rules, as PyTorch's autocast lists them:
//! - **half**: `matmul` (so every `Linear`) and `scaled_dot_product_attention` cast f32 operands
//!   to the autocast dtype (f16 or bf16; the products accumulate in f32) and return half results;
//!   a `Linear`'s bias is cast with them.
//! - **f32**: `softmax`, `log_softmax` and `cross_entropy` compute in f32 whatever dtype they
//!   are given and return f32 (the loss never rounds to half). `layer_norm` and `rms_norm`
//!   compute their statistics and affine in f32 too but return the half dtype: their consumers
//!   in a transformer are matmuls, which would cast them anyway (on a GPU one fused kernel
//!   reads the f32 or half input and writes the half output).
//! - **promotion**: an elementwise op on a half and an f32 tensor computes in f32 (so a residual
//!   stream that starts f32 stays f32); outside a scope mixed dtypes are an error, as before.
//! - everything else runs in the dtype it is given.
//!
//! Casts are recorded ops, so each f32 parameter receives its gradient in f32 through the cast's
//! backward: the master weights never leave f32. f64 tensors are never cast.

use std::cell::Cell;

use crate::op::Op;
use crate::{DType, Error, Result, Tensor};

thread_local! {
    static AUTOCAST: Cell<Option<DType>> = const { Cell::new(None) };
}

/// The half dtype of the current thread's autocast scope, if one is active.
pub fn autocast_dtype() -> Option<DType> {
    AUTOCAST.with(|a| a.get())
}

/// Enables autocast on the current thread until dropped, then restores the previous state.
pub struct AutocastGuard {
    prev: Option<DType>,
}

impl AutocastGuard {
    /// Autocast to `dtype` (`F16` or `BF16`), or off for `None` (to leave an enclosing scope
    /// for a region). Any other dtype is an error.
    pub fn new(dtype: Option<DType>) -> Result<Self> {
        if let Some(d) = dtype {
            if !matches!(d, DType::F16 | DType::BF16) {
                return Err(Error::UnsupportedDType {
                    op: "autocast",
                    got: d,
                    expected: "f16 or bf16",
                });
            }
        }
        let prev = AUTOCAST.with(|a| a.replace(dtype));
        Ok(AutocastGuard { prev })
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        AUTOCAST.with(|a| a.set(self.prev));
    }
}

/// Runs `f` with autocast to `dtype` (`F16` or `BF16`) on the current thread.
///
/// ```
/// use rustygradients_core::{autocast, DType, Device, Tensor};
/// let x = Tensor::randn(&[4, 8], DType::F32, Device::Cpu)?;
/// let w = Tensor::randn(&[8, 3], DType::F32, Device::Cpu)?.requires_grad_(true)?;
/// let y = autocast(DType::BF16, || x.matmul(&w))??;
/// assert_eq!(y.dtype(), DType::BF16);
/// y.to_dtype(DType::F32)?.sum_all()?.backward()?;
/// assert_eq!(w.grad().unwrap().dtype(), DType::F32); // the master stays f32
/// # Ok::<(), rustygradients_core::Error>(())
/// ```
pub fn autocast<R>(dtype: DType, f: impl FnOnce() -> R) -> Result<R> {
    let _guard = AutocastGuard::new(Some(dtype))?;
    Ok(f())
}

impl Tensor {
    /// This tensor as a half-precision op under autocast reads it: cast to the scope's dtype
    /// when it is f32 and a scope is active, unchanged otherwise.
    ///
    /// On the GPU, an f32 parameter (a leaf that requires grad) cast while gradients are
    /// recorded (training) keeps its half copy between uses, as PyTorch's autocast weight
    /// cache does, and the fused Adam step ([`Tensor::adam_step_many`]) rewrites that copy as
    /// it updates the parameter: a training step casts no weight. The copy is used only while
    /// neither the parameter nor the copy has been written by anything else since; casts made
    /// under `no_grad` (inference) keep no copy.
    pub fn autocast_half(&self) -> Result<Tensor> {
        match autocast_dtype() {
            Some(d) if self.dtype() == DType::F32 => {
                let param = self.is_leaf()
                    && self.requires_grad()
                    && self.device().is_cuda()
                    && self.owns_storage();
                if param {
                    if let Some(h) = self.shadow().filter(|h| h.dtype() == d) {
                        let cast = Op::ToDType(self.clone());
                        return Ok(h.view_with(h.layout().clone(), Some(cast)));
                    }
                }
                let h = self.to_dtype(d)?;
                if param && crate::grad_mode::is_grad_enabled() {
                    self.set_shadow(&h);
                }
                Ok(h)
            }
            _ => Ok(self.clone()),
        }
    }

    /// This tensor as an f32-only op under autocast reads it: half tensors become f32 inside a
    /// scope; unchanged otherwise.
    pub(crate) fn autocast_f32(&self) -> Result<Tensor> {
        match autocast_dtype() {
            Some(_) if matches!(self.dtype(), DType::F16 | DType::BF16) => {
                self.to_dtype(DType::F32)
            }
            _ => Ok(self.clone()),
        }
    }
}

/// The dtype two float operands of an elementwise op meet in under autocast (the wider of
/// two different float dtypes), or `None` when no promotion applies.
pub(crate) fn promoted(a: DType, b: DType) -> Option<DType> {
    if a == b || !a.is_float() || !b.is_float() || autocast_dtype().is_none() {
        return None;
    }
    let rank = |d: DType| match d {
        DType::F64 => 3,
        DType::F32 => 2,
        _ => 1,
    };
    if rank(a) == rank(b) {
        // f16 with bf16: neither holds the other, so meet in f32 (PyTorch's rule).
        return Some(DType::F32);
    }
    Some(if rank(a) > rank(b) { a } else { b })
}
