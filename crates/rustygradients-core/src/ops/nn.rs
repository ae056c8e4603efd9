//! Neural-network functions: softmax, normalisation, losses and dropout, composed from the
//! primitive ops (so their gradients come from the primitives' rules).

use crate::op::Op;
use crate::{DType, Dim, Error, Result, Tensor};

/// How a loss combines its per-element values (PyTorch's `reduction=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// The mean over the elements (the default); `cross_entropy` does not count ignored
    /// targets.
    #[default]
    Mean,
    /// The sum over the elements.
    Sum,
    /// No reduction: the per-element losses, in the input's shape (`(N,)` for
    /// `cross_entropy`).
    None,
}

impl Tensor {
    /// `exp(x) / sum(exp(x))` along `dim` (one fused pass per row).
    pub fn softmax(&self, dim: impl Dim) -> Result<Tensor> {
        self.softmax_impl(dim, false, "softmax")
    }

    /// `x - logsumexp(x)` along `dim` (one fused pass per row).
    pub fn log_softmax(&self, dim: impl Dim) -> Result<Tensor> {
        self.softmax_impl(dim, true, "log_softmax")
    }

    /// Moves `dim` last (a view), runs the fused row kernel, and moves it back.
    fn softmax_impl(&self, dim: impl Dim, log: bool, op: &'static str) -> Result<Tensor> {
        if crate::autocast_dtype().is_some() && self.dtype().is_half() {
            return self.autocast_f32()?.softmax_impl(dim, log, op);
        }
        let d = dim.resolve(self.shape(), op)?;
        self.float_only(op)?;
        let last = self.rank() - 1;
        let x = if d == last {
            self.contiguous()?
        } else {
            self.transpose(d, last)?.contiguous()?
        };
        let s = x.storage().softmax_last(x.layout(), log)?;
        let y = Tensor::from_storage(s, x.shape().clone(), Some(Op::SoftmaxLast(x.clone(), log)));
        if d == last {
            Ok(y)
        } else {
            y.transpose(d, last)
        }
    }

    /// Attention `softmax(q kᵀ / sqrt(d)) v` over the last two dims of `(.., T, d)` queries and
    /// `(.., S, d)` keys / `(.., S, dv)` values. `causal` masks keys after each query (top-left
    /// aligned, like PyTorch's `is_causal`); `dropout_p` drops attention weights.
    pub fn scaled_dot_product_attention(
        &self,
        k: &Tensor,
        v: &Tensor,
        causal: bool,
        dropout_p: f64,
    ) -> Result<Tensor> {
        let op = "scaled_dot_product_attention";
        if crate::autocast_dtype().is_some() {
            let (q, k2, v2) = (
                self.autocast_half()?,
                k.autocast_half()?,
                v.autocast_half()?,
            );
            if q.dtype() != self.dtype() || k2.dtype() != k.dtype() || v2.dtype() != v.dtype() {
                return q.scaled_dot_product_attention(&k2, &v2, causal, dropout_p);
            }
        }
        if self.rank() < 2 || k.rank() != self.rank() || v.rank() != self.rank() {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().clone(),
                rhs: k.shape().clone(),
            });
        }
        let r = self.rank();
        let (t, d, s) = (self.dims()[r - 2], self.dims()[r - 1], k.dims()[r - 2]);
        let scale = 1.0 / (d as f64).sqrt();
        let batch = &self.dims()[..r - 2];
        let dv = v.dims()[r - 1];
        // Empty sizes take the general path (the fused kernel works on whole rows).
        let fusable = dropout_p == 0.0
            && [t, s, d, dv].iter().all(|&x| x > 0)
            && self.dtype().is_float()
            && k.dims() == self.dims()
            && v.dims()[..r - 1] == k.dims()[..r - 1]
            && k.dtype() == self.dtype()
            && v.dtype() == self.dtype();
        if fusable {
            // One fused kernel: no (T, S) score tensors in the graph.
            let n: usize = batch.iter().product();
            let mut dims = crate::backend::AttnDims {
                n,
                t,
                s,
                d,
                dv,
                scale,
                causal,
                strided: None,
            };
            // Heads as views of a fused projection go to a GPU's FlashAttention in place: no
            // copies of q, k and v, and the output comes back (batch, time, heads, dim)-major,
            // which is what the model reshapes it to next.
            let in_place = |x: &Tensor| {
                x.stride()[r - 1] == 1
                    && x.layout().offset().is_multiple_of(8)
                    && x.stride()[..r - 1].iter().all(|s| s.is_multiple_of(8))
            };
            if r == 4
                && !self.device().is_cpu()
                && k.dims()[..2] == self.dims()[..2]
                && [self, k, v].into_iter().all(in_place)
                && crate::cuda_backend::flash_applies(self.dtype(), &dims)
            {
                let (b, h) = (self.dims()[0], self.dims()[1]);
                let at = |x: &Tensor| {
                    let st = x.stride();
                    [x.layout().offset(), st[0], st[1], st[2]]
                };
                dims.strided = Some(crate::backend::AttnStrides {
                    heads: h,
                    q: at(self),
                    k: at(k),
                    v: at(v),
                });
                let (out, saved) =
                    self.storage()
                        .attention_fwd(&k.storage(), &v.storage(), dims)?;
                let len = saved.elem_len();
                let saved = Tensor::from_storage(saved, len, None);
                let op = Op::Attention {
                    q: self.clone(),
                    k: k.clone(),
                    v: v.clone(),
                    saved,
                    dims,
                    packed: packed_projection(self, k, v),
                };
                return Tensor::from_storage(out, [b, t, h, dv], Some(op)).transpose(1, 2);
            }
            let flat = |x: &Tensor, rows: usize, cols: usize| x.dense()?.reshape([n, rows, cols]);
            let (q3, k3, v3) = (flat(self, t, d)?, flat(k, s, d)?, flat(v, s, dv)?);
            let (out, saved) = q3
                .storage()
                .attention_fwd(&k3.storage(), &v3.storage(), dims)?;
            let len = saved.elem_len();
            let saved = Tensor::from_storage(saved, len, None);
            let op = Op::Attention {
                q: q3.clone(),
                k: k3.clone(),
                v: v3.clone(),
                saved,
                dims,
                packed: None,
            };
            let mut out_dims = batch.to_vec();
            out_dims.extend([t, dv]);
            return Tensor::from_storage(out, [n, t, dv], Some(op)).reshape(out_dims);
        }
        let mut att = self
            .matmul(&k.transpose(r - 2, r - 1)?)?
            .mul_scalar(scale)?;
        if causal {
            let future = Tensor::diagonal_mask(t, s, 1, false, self.device())?;
            att = att.masked_fill(&future, f64::NEG_INFINITY)?;
        }
        att.softmax(-1)?
            .dropout(dropout_p, dropout_p > 0.0)?
            .matmul(v)
    }

    /// The gradient rule of the fused softmax: `self` is its (contiguous) output.
    pub(crate) fn softmax_last_backward(&self, g: &Tensor, log: bool) -> Result<Tensor> {
        let g = g.contiguous()?;
        let s = self
            .storage()
            .softmax_last_bwd(self.layout(), &g.storage(), g.layout(), log)?;
        Ok(Tensor::from_storage(s, self.shape().clone(), None))
    }

    /// `x̂ = (x - mean) / sqrt(var + eps)` over the last dim (RMS: `x / sqrt(mean(x²) + eps)`),
    /// fused, with its own gradient rule.
    fn normalize_last(&self, eps: f64, rms: bool) -> Result<Tensor> {
        let x = self.contiguous()?;
        let (xhat, rstd) = x.storage().norm_last(x.layout(), eps, rms)?;
        let rows = self.dims()[..self.rank() - 1].to_vec();
        let rstd = Tensor::from_storage(rstd, rows, None);
        Ok(Tensor::from_storage(
            xhat,
            x.shape().clone(),
            Some(Op::NormLast(x.clone(), rstd, rms)),
        ))
    }

    /// The gradient rule of the fused normalisation: `self` is `x̂`.
    pub(crate) fn norm_last_backward(
        &self,
        rstd: &Tensor,
        g: &Tensor,
        rms: bool,
    ) -> Result<Tensor> {
        let g = g.contiguous()?;
        let s = self
            .storage()
            .norm_last_bwd(&rstd.storage(), &g.storage(), g.layout(), rms)?;
        Ok(Tensor::from_storage(s, self.shape().clone(), None))
    }

    fn check_last_dim(&self, p: &Tensor, op: &'static str) -> Result<()> {
        if p.rank() != 1 || self.rank() == 0 || p.dims()[0] != self.dims()[self.rank() - 1] {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().clone(),
                rhs: p.shape().clone(),
            });
        }
        Ok(())
    }

    /// The normalisation and its affine weight and bias in one kernel, where the backend has
    /// one (the GPU; the CPU for f32/f64) and the operands suit it; `None` sends the caller to the composed path
    /// (which also reports any shape or dtype problem). Under autocast an f32 input gives a
    /// half output (its statistics stay f32): every consumer in a transformer is a matmul,
    /// which would cast it anyway.
    fn norm_affine(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
        rms: bool,
    ) -> Result<Option<Tensor>> {
        let dt = self.dtype();
        let c = self.dims()[self.rank() - 1];
        let autocast = crate::autocast_dtype();
        // Parameters of the input's dtype, or f32 ones for a half input under autocast.
        let fits = |p: Option<&Tensor>| {
            p.is_none_or(|p| {
                (p.dtype() == dt || (p.dtype() == DType::F32 && autocast.is_some()))
                    && p.device() == self.device()
                    && p.dims() == [c]
            })
        };
        if !matches!(dt, DType::F32 | DType::F64 | DType::BF16 | DType::F16)
            || (dt == DType::F64 && !self.device().is_cpu())
            || c == 0
            || c > 8192
            || !fits(weight)
            || !fits(bias)
        {
            return Ok(None);
        }
        let out = match autocast {
            Some(h) if dt == DType::F32 => h,
            _ => dt,
        };
        let x = self.dense()?;
        let rows = self.elem_count() / c;
        let (w, b) = (
            weight.map(Tensor::dense).transpose()?,
            bias.map(Tensor::dense).transpose()?,
        );
        let (ws, bs) = (
            w.as_ref().map(|t| t.storage()),
            b.as_ref().map(|t| t.storage()),
        );
        let Some((y, mean, rstd)) =
            x.storage()
                .norm_affine((rows, c), ws.as_deref(), bs.as_deref(), eps, rms, out)?
        else {
            return Ok(None);
        };
        drop((ws, bs));
        let stat = |s| Tensor::from_storage(s, rows, None);
        let op = Op::NormAffine {
            x: x.clone(),
            w,
            b,
            mean: stat(mean),
            rstd: stat(rstd),
            rms,
        };
        Ok(Some(Tensor::from_storage(
            y,
            self.shape().clone(),
            Some(op),
        )))
    }

    /// Layer normalisation over the last dim: `(x - mean) / sqrt(var + eps) * weight + bias`.
    pub fn layer_norm(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        let op = "layer_norm";
        self.float_only(op)?;
        if self.rank() == 0 {
            return Err(Error::InvalidShape {
                op,
                msg: "needs at least 1 dim".into(),
                shape: self.shape().clone(),
            });
        }
        if let Some(y) = self.norm_affine(weight, bias, eps, false)? {
            return Ok(y);
        }
        if let Some(h) = crate::autocast_dtype() {
            if self.dtype() != DType::F64 {
                // Statistics and affine in f32, the result in the half dtype (as the GPU's
                // fused kernel gives it).
                let _off = crate::AutocastGuard::new(None)?;
                let f = |t: Option<&Tensor>| t.map(|t| t.to_dtype(DType::F32)).transpose();
                return self
                    .to_dtype(DType::F32)?
                    .layer_norm(f(weight)?.as_ref(), f(bias)?.as_ref(), eps)?
                    .to_dtype(h);
            }
        }
        let mut y = self.normalize_last(eps, false)?;
        if let Some(w) = weight {
            self.check_last_dim(w, op)?;
            y = y.mul(w)?;
        }
        if let Some(b) = bias {
            self.check_last_dim(b, op)?;
            y = y.add(b)?;
        }
        Ok(y)
    }

    /// RMS normalisation over the last dim: `x / sqrt(mean(x²) + eps) * weight`.
    pub fn rms_norm(&self, weight: Option<&Tensor>, eps: f64) -> Result<Tensor> {
        let op = "rms_norm";
        self.float_only(op)?;
        if self.rank() == 0 {
            return Err(Error::InvalidShape {
                op,
                msg: "needs at least 1 dim".into(),
                shape: self.shape().clone(),
            });
        }
        if let Some(y) = self.norm_affine(weight, None, eps, true)? {
            return Ok(y);
        }
        if let Some(h) = crate::autocast_dtype() {
            if self.dtype() != DType::F64 {
                let _off = crate::AutocastGuard::new(None)?;
                let w = weight.map(|t| t.to_dtype(DType::F32)).transpose()?;
                return self
                    .to_dtype(DType::F32)?
                    .rms_norm(w.as_ref(), eps)?
                    .to_dtype(h);
            }
        }
        let y = self.normalize_last(eps, true)?;
        match weight {
            Some(w) => {
                self.check_last_dim(w, op)?;
                y.mul(w)
            }
            None => Ok(y),
        }
    }

    /// Cross-entropy of `(N, C)` logits against `(N,)` class indices (`i64` or `u32`); targets
    /// equal to `ignore_index` contribute nothing (and are not counted by the mean). For sequence
    /// logits `(B, T, C)`, flatten them to `(B·T, C)` and their `(B, T)` targets to `(B·T,)`
    /// first.
    pub fn cross_entropy(
        &self,
        targets: &Tensor,
        ignore_index: Option<i64>,
        reduction: Reduction,
    ) -> Result<Tensor> {
        self.clone()
            .into_cross_entropy(targets, ignore_index, reduction)
    }

    /// [`Tensor::cross_entropy`], consuming the logits. When this was the last handle to
    /// their memory (a model's loss that never returns its logits) and autograd records the
    /// op, the forward overwrites the logits with their gradient in the same pass that computes
    /// the loss: one pass over a vocabulary-wide classifier's logits instead of three, and no
    /// second logits-sized buffer. The backward then only rescales rows whose output gradient
    /// is not the one the forward assumed (1 per row for a sum, `1/N` for a mean), so losses
    /// scaled before `backward` stay exact, at the cost of one more rounding of each gradient
    /// element. f16 logits keep the two-pass path: their gradient at `1/N` would underflow.
    ///
    /// ```
    /// use rustygradients_core::{DType, Device, Reduction, Tensor};
    /// let logits = Tensor::randn([4, 10], DType::F32, Device::Cpu)?.requires_grad_(true)?;
    /// let targets = Tensor::from_vec(vec![1i64, 0, 9, 3], &[4], Device::Cpu)?;
    /// let loss = logits.affine(2.0, 0.0)?.into_cross_entropy(&targets, None, Reduction::Mean)?;
    /// loss.backward()?;
    /// assert_eq!(logits.grad().unwrap().dims(), &[4, 10]);
    /// # Ok::<(), rustygradients_core::Error>(())
    /// ```
    pub fn into_cross_entropy(
        self,
        targets: &Tensor,
        ignore_index: Option<i64>,
        reduction: Reduction,
    ) -> Result<Tensor> {
        let op = "cross_entropy";
        if self.rank() != 2 || targets.rank() != 1 || targets.dims()[0] != self.dims()[0] {
            return Err(Error::InvalidArgument {
                op,
                msg: format!(
                    "expects logits (N, C) and targets (N,) of class indices (i64 or u32); \
                     got logits {} and targets {}",
                    self.shape(),
                    targets.shape()
                ),
            });
        }
        if !matches!(targets.dtype(), DType::I64 | DType::U32) {
            return Err(Error::UnsupportedDType {
                op,
                got: targets.dtype(),
                expected: "targets must be class indices of dtype i64 or u32",
            });
        }
        let (n, self_dtype) = (self.dims()[0], self.dtype());
        // The output gradient each row will most likely get, when the forward may write the
        // gradient: a mean without ignored targets (1/N), or a sum (1).
        let scale = match (reduction, ignore_index) {
            (Reduction::Mean, None) => Some(1.0 / n as f64),
            (Reduction::Sum, _) => Some(1.0),
            _ => None,
        };
        let x = self.dense()?;
        drop(self);
        if let Some(scale) = scale.filter(|_| {
            x.is_tracked()
                && crate::grad_mode::is_grad_enabled()
                && x.dtype() != DType::F16
                && x.exclusively_owned()
        }) {
            let nll = x.storage_mut().cross_entropy_fwd_grad(
                x.layout(),
                &targets.storage(),
                targets.layout(),
                scale,
                ignore_index,
            )?;
            if let Some(nll) = nll {
                let op = Op::CrossEntropyGrad { logits: x, scale };
                let nll = Tensor::from_storage(nll, n, Some(op));
                return Self::reduce_nll(nll, targets, ignore_index, reduction, self_dtype);
            }
        }
        let (nll, lse) = x.storage().cross_entropy_fwd(
            x.layout(),
            &targets.storage(),
            targets.layout(),
            ignore_index,
        )?;
        let lse = Tensor::from_storage(lse, n, None);
        let op = Op::CrossEntropy {
            logits: x,
            targets: targets.clone(),
            lse,
            ignore: ignore_index,
        };
        Self::reduce_nll(
            Tensor::from_storage(nll, n, Some(op)),
            targets,
            ignore_index,
            reduction,
            self_dtype,
        )
    }

    /// The losses of [`Tensor::into_cross_entropy`]'s rows, reduced.
    fn reduce_nll(
        mut nll: Tensor,
        targets: &Tensor,
        ignore_index: Option<i64>,
        reduction: Reduction,
        dtype: DType,
    ) -> Result<Tensor> {
        let n = nll.dims()[0];
        // The backends compute f16/bf16 losses in f32. Under autocast they stay f32 (PyTorch's
        // autocast runs cross_entropy in f32); otherwise the result keeps the logits' dtype.
        if crate::autocast_dtype().is_none() {
            nll = nll.to_dtype(dtype)?;
        }
        match reduction {
            Reduction::None => Ok(nll),
            Reduction::Sum => nll.sum_all(),
            Reduction::Mean => match ignore_index {
                None => nll.sum_all()?.div_scalar(n as f64),
                // Counted on the device: no sync. PyTorch gives NaN when every target is
                // ignored (0 / 0); so do we.
                Some(i) => {
                    let ignored = Tensor::full(i as f64, (), targets.dtype(), targets.device())?;
                    let count = targets.ne(&ignored)?.to_dtype(nll.dtype())?.sum_all()?;
                    nll.sum_all()?.div(&count)
                }
            },
        }
    }

    /// Mean squared error (or its sum, or the elementwise squares).
    pub fn mse_loss(&self, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
        if self.shape() != target.shape() {
            return Err(Error::ShapeMismatch {
                op: "mse_loss",
                lhs: self.shape().clone(),
                rhs: target.shape().clone(),
            });
        }
        let sq = self.sub(target)?.sqr()?;
        match reduction {
            Reduction::None => Ok(sq),
            Reduction::Sum => sq.sum_all(),
            Reduction::Mean => sq.mean_all(),
        }
    }

    /// Zeroes each element with probability `p` and scales the rest by `1/(1-p)` when `train`;
    /// the identity in eval mode. The mask comes from the global seeded generator.
    pub fn dropout(&self, p: f64, train: bool) -> Result<Tensor> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::InvalidArgument {
                op: "dropout",
                msg: format!("probability {p} is outside [0, 1]"),
            });
        }
        self.float_only("dropout")?;
        if !train || p == 0.0 {
            return Ok(self.clone());
        }
        if p == 1.0 {
            return self.mul_scalar(0.0);
        }
        let scale = 1.0 / (1.0 - p);
        // The mask is drawn on the tensor's device from the global seeded generator.
        let keep = Tensor::rand(self.shape().clone(), self.dtype(), self.device())?
            .ge(&self.scalar_like(p)?)?;
        let mask = keep.to_dtype(self.dtype())?.mul_scalar(scale)?;
        self.mul(&mask)
    }
}

/// The fused projection `(batch, time, 3·heads·dim)` that `(batch, heads, time, dim)` views
/// q, k and v are the three thirds of (GPT-2's `c_attn` output, split and transposed), when
/// that is what they are: the attention's gradient is then built whole for it.
fn packed_projection(q: &Tensor, k: &Tensor, v: &Tensor) -> Option<Tensor> {
    let [b, h, t, d] = *q.dims() else {
        return None;
    };
    let c = h * d;
    // The nearest tensor of the projection's shape the views were taken from.
    let root = |x: &Tensor| {
        let mut v = x.clone();
        while v.dims() != [b, t, 3 * c] {
            v = v.view_source()?;
        }
        Some(v)
    };
    let base = root(q)?;
    let start = base.layout().offset();
    let third = |x: &Tensor, i: usize| {
        x.dims() == q.dims()
            && root(x).is_some_and(|r| r.id() == base.id())
            && x.layout().offset() == start + i * c
            && x.stride() == [t * 3 * c, d, 3 * c, 1]
    };
    let fits = base.is_tracked()
        && base.dims() == [b, t, 3 * c]
        && base.is_contiguous()
        && third(q, 0)
        && third(k, 1)
        && third(v, 2);
    fits.then_some(base)
}

#[cfg(test)]
mod tests {
    use crate::op::Op;
    use crate::{DType, Device, Reduction, Tensor};

    /// Whether the graph below `t` recorded a cross-entropy that wrote its gradient in the
    /// forward pass.
    fn fused_below(t: &Tensor) -> bool {
        let op = t.0.node.op.lock().unwrap();
        match op.as_ref() {
            Some(Op::CrossEntropyGrad { .. }) => true,
            Some(op) => op.inputs().into_iter().any(fused_below),
            None => false,
        }
    }

    #[test]
    fn into_cross_entropy_fuses_only_logits_nothing_else_holds() {
        let x = Tensor::randn([6, 9], DType::F32, Device::Cpu)
            .unwrap()
            .requires_grad_(true)
            .unwrap();
        let t = Tensor::from_vec(vec![0i64, 8, 3, 3, 1, 2], [6], Device::Cpu).unwrap();
        let mean = |l: Tensor| l.into_cross_entropy(&t, None, Reduction::Mean).unwrap();
        assert!(fused_below(&mean(x.mul_scalar(2.0).unwrap())));
        // Held elsewhere (a clone, a leaf, a view of kept logits): the two-pass path.
        let kept = x.mul_scalar(2.0).unwrap();
        assert!(!fused_below(&mean(kept.clone())));
        assert!(!fused_below(&mean(x.clone())));
        assert!(!fused_below(
            &kept.cross_entropy(&t, None, Reduction::Mean).unwrap()
        ));
        // A mean over ignored targets, per-row losses, f16: two passes.
        let ignoring = x
            .mul_scalar(2.0)
            .unwrap()
            .into_cross_entropy(&t, Some(3), Reduction::Mean)
            .unwrap();
        assert!(!fused_below(&ignoring));
        let rows = x.mul_scalar(2.0).unwrap();
        assert!(!fused_below(
            &rows.into_cross_entropy(&t, None, Reduction::None).unwrap()
        ));
        let half = x.to_dtype(DType::F16).unwrap().mul_scalar(2.0).unwrap();
        assert!(!fused_below(&mean(half)));
        // The kept logits still hold their values.
        assert_eq!(
            kept.to_vec::<f32>().unwrap(),
            x.mul_scalar(2.0).unwrap().to_vec::<f32>().unwrap()
        );
    }
}
