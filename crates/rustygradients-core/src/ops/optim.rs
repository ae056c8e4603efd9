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
        Tensor::adam_step_many(&[(self, grad, m, v)], h, None)
    }

    /// [`Tensor::adam_step_`] for many parameters at once, all with the same hyperparameters
    /// and step count: `(parameter, gradient, m, v)` each. A GPU updates up to 32 parameters
    /// per kernel launch. No tensor may appear twice, and no parameter or moment may share
    /// memory with another.
    ///
    /// `grad_scale`, a one-element float tensor on the parameters' device, multiplies every
    /// gradient first (PyTorch's fused Adam `grad_scale`): gradient clipping's coefficient
    /// (from `clip_grad_coef`-style code), applied without a pass of its own on a GPU, where
    /// it is read on the device. The gradients themselves are left as they are.
    ///
    /// ```
    /// use rustygradients_core::{AdamHyper, Device, Tensor};
    /// let p = Tensor::from_vec(vec![1.0f32], &[1], Device::Cpu)?;
    /// let g = Tensor::from_vec(vec![4.0f32], &[1], Device::Cpu)?;
    /// let (m, v) = (p.zeros_like()?, p.zeros_like()?);
    /// let h = AdamHyper { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1,
    ///                     decoupled: false, step: 1 };
    /// let half = Tensor::from_vec(vec![0.5f64], &[], Device::Cpu)?;
    /// Tensor::adam_step_many(&[(&p, &g, &m, &v)], h, Some(&half))?;
    /// // The first moment saw 0.5·4 plus the L2 term 0.1·1.
    /// assert!((m.to_vec::<f32>()?[0] - 0.1 * 2.1).abs() < 1e-6);
    /// assert_eq!(g.to_vec::<f32>()?, [4.0]);
    /// # Ok::<(), rustygradients_core::Error>(())
    /// ```
    pub fn adam_step_many(
        items: &[(&Tensor, &Tensor, &Tensor, &Tensor)],
        h: AdamHyper,
        grad_scale: Option<&Tensor>,
    ) -> Result<()> {
        let op = "adam_step_";
        let mut written = std::collections::HashSet::new();
        let mut grads = Vec::with_capacity(items.len());
        for &(p, g, m, v) in items {
            grads.push(p.adam_operands(g, m, v)?);
            for t in [p, m, v] {
                if !written.insert(t.storage_id()) {
                    return Err(Error::InvalidArgument {
                        op,
                        msg: format!(
                            "a tensor of shape {} is written twice in one step (each parameter \
                             and moment must have memory of its own)",
                            t.shape()
                        ),
                    });
                }
            }
        }
        if let Some(g) = grads.iter().find(|g| written.contains(&g.storage_id())) {
            return Err(Error::InvalidArgument {
                op,
                msg: format!(
                    "a gradient of shape {} shares memory with a parameter or moment",
                    g.shape()
                ),
            });
        }
        let grad_scale = match (grad_scale, items.first()) {
            (Some(c), Some((p, ..))) => {
                if c.elem_count() != 1 || !c.dtype().is_float() {
                    return Err(Error::InvalidArgument {
                        op,
                        msg: format!(
                            "the gradient scale must be one float, not shape {} of {:?}",
                            c.shape(),
                            c.dtype()
                        ),
                    });
                }
                if c.device() != p.device() {
                    return Err(Error::DeviceMismatch {
                        op,
                        lhs: p.device(),
                        rhs: c.device(),
                    });
                }
                let c = c.detach().reshape(())?;
                if p.device().is_cpu() {
                    // Scaled copies of the gradients: the CPU kernel reads plain ones.
                    for g in &mut grads {
                        *g = g.mul(&c.to_dtype(g.dtype())?)?;
                    }
                    None
                } else {
                    // Read by the kernel while it writes the parameters: memory of its own.
                    Some(c.to_dtype(crate::DType::F64)?.copy()?)
                }
            }
            _ => None,
        };
        // Autocast's half copies of the parameters (see `autocast_half`), rewritten in the
        // same pass.
        let shadows: Vec<Option<Tensor>> = items.iter().map(|(p, ..)| p.shadow()).collect();
        {
            let gs: Vec<_> = grads.iter().map(|g| g.storage()).collect();
            let mut ps: Vec<_> = items.iter().map(|(p, ..)| p.storage_mut()).collect();
            let mut ms: Vec<_> = items.iter().map(|(_, _, m, _)| m.storage_mut()).collect();
            let mut vs: Vec<_> = items.iter().map(|(.., v)| v.storage_mut()).collect();
            let mut ss: Vec<_> = shadows
                .iter()
                .map(|s| s.as_ref().map(Tensor::storage_mut))
                .collect();
            let mut batch: Vec<_> = ps
                .iter_mut()
                .zip(ms.iter_mut())
                .zip(vs.iter_mut())
                .zip(gs.iter())
                .map(|(((p, m), v), g)| (&mut **p, &mut **m, &mut **v, &**g))
                .collect();
            let mut shadow_refs: Vec<_> = ss.iter_mut().map(|s| s.as_deref_mut()).collect();
            let scale = grad_scale.as_ref().map(|c| c.storage());
            crate::storage::Storage::adam_step_many(
                &mut batch,
                &mut shadow_refs,
                h,
                scale.as_deref(),
            )?;
        }
        for ((p, ..), s) in items.iter().zip(&shadows) {
            if let Some(s) = s {
                p.set_shadow(s);
            }
        }
        Ok(())
    }

    /// Checks one parameter's operands for `adam_step_`; returns the gradient to read (staged
    /// into memory of its own when it is a view or aliases the parameter).
    fn adam_operands(&self, grad: &Tensor, m: &Tensor, v: &Tensor) -> Result<Tensor> {
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
        if grad.owns_storage() && !self.same_storage(grad) {
            Ok(grad.clone())
        } else {
            grad.force_copy()
        }
    }

    /// `Σ x²` over every element of every tensor in `ts`, as a 0-d f64 tensor on their device
    /// (not recorded for autograd): one multi-tensor kernel per 32 tensors on a GPU, a
    /// reduction per tensor elsewhere. What gradient clipping needs, without a read-back.
    ///
    /// ```
    /// use rustygradients_core::{Device, Tensor};
    /// let a = Tensor::from_slice(&[3f32, 4.0], [2], Device::Cpu)?;
    /// let b = Tensor::from_slice(&[12f32], [1], Device::Cpu)?;
    /// assert_eq!(Tensor::sum_sq_many(&[a, b])?.item()?, 169.0);
    /// # Ok::<(), rustygradients_core::Error>(())
    /// ```
    pub fn sum_sq_many(ts: &[Tensor]) -> Result<Tensor> {
        crate::no_grad(|| {
            let Some(first) = ts.first() else {
                return Tensor::zeros((), crate::DType::F64, crate::Device::Cpu);
            };
            let dense = ts.iter().map(Tensor::dense).collect::<Result<Vec<_>>>()?;
            let guards: Vec<_> = dense.iter().map(|t| t.storage()).collect();
            let items: Vec<_> = guards
                .iter()
                .zip(&dense)
                .map(|(g, t)| (&**g, t.elem_count()))
                .collect();
            if let Some(s) = crate::storage::Storage::sum_sq_many(&items)? {
                return Ok(Tensor::from_storage(s, (), None));
            }
            drop(guards);
            let mut total: Option<Tensor> = None;
            for t in ts {
                let t = if t.dtype().is_half() {
                    t.to_dtype(crate::DType::F32)?
                } else {
                    t.clone()
                };
                let s = t.sqr()?.sum_all()?.to_dtype(crate::DType::F64)?;
                total = Some(match total {
                    Some(acc) => acc.add(&s)?,
                    None => s,
                });
            }
            total.map_or_else(|| Tensor::zeros((), crate::DType::F64, first.device()), Ok)
        })
    }

    /// Multiplies every tensor in `ts` by the 0-d `coef` in place (gradient clipping's scale):
    /// one multi-tensor kernel per 32 tensors on a GPU, reading `coef` there (no read-back); a
    /// multiply and copy per tensor elsewhere. The tensors must be leaves with memory of their
    /// own (gradients are).
    ///
    /// ```
    /// use rustygradients_core::{Device, Tensor};
    /// let a = Tensor::from_slice(&[3f32, 4.0], [2], Device::Cpu)?;
    /// Tensor::mul_many_(&[a.clone()], &Tensor::scalar(0.5f64, Device::Cpu)?)?;
    /// assert_eq!(a.to_vec::<f32>()?, [1.5, 2.0]);
    /// # Ok::<(), rustygradients_core::Error>(())
    /// ```
    pub fn mul_many_(ts: &[Tensor], coef: &Tensor) -> Result<()> {
        if coef.elem_count() != 1 || !coef.dtype().is_float() {
            return Err(Error::InvalidArgument {
                op: "mul_many_",
                msg: format!(
                    "the factor must be one floating-point value, got shape {} ({:?})",
                    coef.shape(),
                    coef.dtype()
                ),
            });
        }
        crate::no_grad(|| {
            let mut ids = std::collections::HashSet::new();
            let fast = !coef.device().is_cpu()
                && ts.iter().all(|t| {
                    t.is_contiguous()
                        && t.layout().offset() == 0
                        && t.is_leaf()
                        && ids.insert(t.storage_id())
                });
            if fast && !ids.contains(&coef.storage_id()) {
                let c = coef.to_dtype(crate::DType::F64)?.reshape(())?.dense()?;
                let cs = c.storage();
                let mut guards: Vec<_> = ts.iter().map(|t| t.storage_mut()).collect();
                let mut items: Vec<_> = guards
                    .iter_mut()
                    .zip(ts)
                    .map(|(g, t)| (&mut **g, t.elem_count()))
                    .collect();
                if crate::storage::Storage::scale_many(&mut items, &cs)? {
                    return Ok(());
                }
            }
            for t in ts {
                t.copy_(&t.mul(&coef.to_dtype(t.dtype())?.reshape(())?)?)?;
            }
            Ok(())
        })
    }
}
