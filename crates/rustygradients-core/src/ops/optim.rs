//! Fused, in-place optimizer updates on parameter tensors.

use crate::backend::AdamHyper;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// One Adam/AdamW update of this parameter in place (PyTorch's rule, in one pass): `m` and
    /// `v` are its first and second moments, updated in place too; `grad` is its gradient.
    /// The parameter must be a contiguous leaf; `m` and `v` contiguous tensors of its shape
    /// and dtype that share memory with nothing else the caller still reads. Bumps the
    /// [`version`](Tensor::version) of the parameter's, `m`'s and `v`'s storages, so a graph
    /// recorded earlier that reads the parameter fails at `backward` (call this after it).
    ///
    /// ```
    /// use rustygradients_core::{AdamHyper, Device, Tensor};
    /// let p = Tensor::from_vec(vec![1.0f32, -2.0], &[2], Device::Cpu)?;
    /// let g = Tensor::from_vec(vec![0.5f32, 0.5], &[2], Device::Cpu)?;
    /// let (m, v) = (p.zeros_like()?, p.zeros_like()?);
    /// let h = AdamHyper { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0,
    ///                     decoupled: true, step: 1 };
    /// p.adam_step_(&g, &m, &v, h)?;
    /// // The first Adam step moves each weight by lr against the gradient's sign.
    /// let got = p.to_vec::<f32>()?;
    /// assert!((got[0] - 0.9).abs() < 1e-6 && (got[1] + 2.1).abs() < 1e-6);
    /// # Ok::<(), rustygradients_core::Error>(())
    /// ```
    pub fn adam_step_(&self, grad: &Tensor, m: &Tensor, v: &Tensor, h: AdamHyper) -> Result<()> {
        let op = "adam_step_";
        for (name, t) in [("grad", grad), ("m", m), ("v", v)] {
            if t.shape() != self.shape() {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: self.shape().clone(),
                    rhs: t.shape().clone(),
                });
            }
            if t.dtype() != self.dtype() {
                return Err(Error::DTypeMismatch {
                    op,
                    lhs: self.dtype(),
                    rhs: t.dtype(),
                });
            }
            if t.device() != self.device() {
                return Err(Error::DeviceMismatch {
                    op,
                    lhs: self.device(),
                    rhs: t.device(),
                });
            }
            if name != "grad" && self.same_storage(t) {
                return Err(Error::InvalidArgument {
                    op,
                    msg: format!("`{name}` shares memory with the parameter"),
                });
            }
        }
        if m.same_storage(v) {
            return Err(Error::InvalidArgument {
                op,
                msg: "`m` and `v` share memory".into(),
            });
        }
        if !self.is_leaf() {
            return Err(Error::Backward(
                "adam_step_ needs a leaf parameter (its values may be needed by backward)".into(),
            ));
        }
        for (name, t) in [("parameter", self), ("m", m), ("v", v)] {
            if !t.owns_storage() {
                return Err(Error::InvalidArgument {
                    op,
                    msg: format!(
                        "the {name} must be contiguous and own its whole storage (shape {})",
                        t.shape()
                    ),
                });
            }
        }
        // A gradient that is a view of something larger, or aliases the parameter, is staged
        // first (one storage cannot be read and written at once).
        let g = if grad.owns_storage() && !self.same_storage(grad) {
            grad.clone()
        } else {
            grad.force_copy()?
        };
        let gs = g.storage();
        let (mut ps, mut ms, mut vs) = (self.storage_mut(), m.storage_mut(), v.storage_mut());
        ps.adam_step(&mut ms, &mut vs, &gs, h)
    }
}
