//! A transformer's feed-forward block with GPT-2's GELU, `gelu_tanh(x W₁ᵀ + b₁) W₂ᵀ + b₂`, as
//! one op, so that the GPU applies the GELU inside the first GEMM and its derivative inside the
//! GEMM that carries the gradient back through the second layer: no separate GELU pass either
//! way.

use crate::grad_mode;
use crate::op::Op;
use crate::ops::linear::LinearOperands;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// `gelu_tanh(self · w1ᵀ + b1) · w2ᵀ + b2` over the last dim: `self` is `(…, in)`, `w1`
    /// `(hidden, in)`, `b1` `(hidden,)`, `w2` `(out, hidden)`, `b2` `(out,)`; the result is
    /// `(…, out)`. The same values and gradients as
    /// `self.linear(w1, b1)?.gelu_tanh()?.linear(w2, b2)`, which is what runs on the CPU.
    ///
    /// On the GPU (f32, f16, bf16 through cuBLASLt) the first GEMM applies the GELU in its
    /// epilogue and keeps the pre-activation for the backward pass, and the backward GEMM
    /// through `w2` multiplies by the GELU's derivative as it writes: GPT-2's MLP without a
    /// separate elementwise pass in either direction. Under autocast the operands are cast to
    /// the half dtype, as for [`Tensor::linear`].
    ///
    /// ```
    /// use rustygradients_core::{Device, Tensor};
    /// let x = Tensor::from_vec(vec![1f32, -1.], &[1, 2], Device::Cpu)?;
    /// let w1 = Tensor::from_vec(vec![1f32, 0., 0., 1., 1., 1.], &[3, 2], Device::Cpu)?;
    /// let w2 = Tensor::from_vec(vec![1f32, 1., 1.], &[1, 3], Device::Cpu)?;
    /// let y = x.feed_forward_gelu_tanh(&w1, None, &w2, None)?;
    /// let z = x.linear(&w1, None)?.gelu_tanh()?.linear(&w2, None)?;
    /// assert_eq!(y.to_vec::<f32>()?, z.to_vec::<f32>()?);
    /// # Ok::<(), rustygradients_core::Error>(())
    /// ```
    pub fn feed_forward_gelu_tanh(
        &self,
        w1: &Tensor,
        b1: Option<&Tensor>,
        w2: &Tensor,
        b2: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.feed_forward("feed_forward", (w1, b1), (w2, b2), None)
    }

    /// `residual + gelu_tanh(self · w1ᵀ + b1) · w2ᵀ + b2`: a pre-LayerNorm block's MLP added
    /// to its residual stream, with the sum made by the second GEMM on the GPU as in
    /// [`Tensor::linear_add`] (which says when `residual` fits for that; otherwise it is added
    /// as a separate op).
    ///
    /// ```
    /// use rustygradients_core::{Device, Tensor};
    /// let x = Tensor::from_vec(vec![1f32, -1.], &[1, 2], Device::Cpu)?;
    /// let w1 = Tensor::from_vec(vec![1f32, 0., 0., 1., 1., 1.], &[3, 2], Device::Cpu)?;
    /// let w2 = Tensor::from_vec(vec![1f32, 1., 1.], &[1, 3], Device::Cpu)?;
    /// let r = Tensor::from_vec(vec![5f32], &[1, 1], Device::Cpu)?;
    /// let y = x.feed_forward_gelu_tanh_add(&w1, None, &w2, None, &r)?;
    /// let z = x.feed_forward_gelu_tanh(&w1, None, &w2, None)?.add(&r)?;
    /// assert_eq!(y.to_vec::<f32>()?, z.to_vec::<f32>()?);
    /// # Ok::<(), rustygradients_core::Error>(())
    /// ```
    pub fn feed_forward_gelu_tanh_add(
        &self,
        w1: &Tensor,
        b1: Option<&Tensor>,
        w2: &Tensor,
        b2: Option<&Tensor>,
        residual: &Tensor,
    ) -> Result<Tensor> {
        self.feed_forward("feed_forward_add", (w1, b1), (w2, b2), Some(residual))
    }

    /// The two feed-forward ops; `residual`, when given, is added to the output.
    fn feed_forward(
        &self,
        op: &'static str,
        (w1, b1): (&Tensor, Option<&Tensor>),
        (w2, b2): (&Tensor, Option<&Tensor>),
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let first = LinearOperands::new(op, self, w1, b1)?;
        let (m, k, h) = first.dims;
        if w2.rank() != 2 || w2.dims()[1] != h {
            return Err(Error::InvalidShape {
                op,
                msg: format!(
                    "the second weight must be (out, {h}) after a first weight {}; got {}",
                    w1.shape(),
                    w2.shape()
                ),
                shape: self.shape().clone(),
            });
        }
        let n = w2.dims()[0];
        let mut out_dims = first.out_dims.clone();
        *out_dims.last_mut().expect("a linear output has a last dim") = n;
        // The CPU's path (and the GPU's where the fused GEMM does not apply): the three ops,
        // from the operands already cast and made dense.
        let composed = |first: &LinearOperands| {
            let y = first
                .x
                .linear(&first.w, first.b.as_ref())?
                .gelu_tanh()?
                .linear(w2, b2)?
                .reshape(out_dims.clone())?;
            match residual {
                Some(r) => r.add(&y),
                None => Ok(y),
            }
        };
        if m * k * h * n == 0 || !self.device().is_cuda() {
            return composed(&first);
        }
        let tracked = grad_mode::is_grad_enabled()
            && [Some(self), Some(w1), b1, Some(w2), b2, residual]
                .into_iter()
                .flatten()
                .any(Tensor::is_tracked);
        let fused = {
            let bs = first.b.as_ref().map(|b| b.storage());
            first
                .x
                .storage()
                .linear_gelu(&first.w.storage(), bs.as_deref(), first.dims, tracked)?
        };
        let Some((act, pre)) = fused else {
            return composed(&first);
        };
        let act = Tensor::from_storage(act, [m, h], None);
        let second = LinearOperands::new(op, &act, w2, b2)?;
        // A residual that doesn't fit the GEMM (shape, dtype) is added afterwards.
        let (r, late) = match residual {
            None => (None, None),
            Some(res) => match second.residual(res, &out_dims)? {
                Some(r) => (Some(r), None),
                None => (None, Some(res)),
            },
        };
        let y = second.product(r.as_ref())?;
        let recorded = pre.map(|pre| Op::FeedForward {
            x: first.x,
            w1: first.w,
            b1: first.b,
            w2: second.w,
            b2: second.b,
            pre: Tensor::from_storage(pre, [m, h], None),
            act: second.x,
            r,
        });
        let y = y
            .view_with(y.layout().clone(), recorded)
            .reshape(out_dims)?;
        match late {
            Some(res) => res.add(&y),
            None => Ok(y),
        }
    }
}
