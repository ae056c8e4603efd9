//! `F.linear`: `x Wᵀ + b` as one op, so that the GPU can add the bias inside the GEMM and sum
//! its gradient inside the weight-gradient GEMM.

use crate::grad_mode::NoGradGuard;
use crate::op::Op;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// `self · weightᵀ + bias` over the last dim (PyTorch's `F.linear`): `self` is
    /// `(…, in)`, `weight` `(out, in)`, `bias` `(out,)`; the result is `(…, out)`.
    ///
    /// Under autocast the three are cast to the half dtype, as for [`Tensor::matmul`]. On the
    /// GPU the bias is added by the GEMM (a cuBLASLt epilogue), and in the backward pass the
    /// bias gradient is summed by the weight-gradient GEMM; elsewhere this is `matmul` + `add`.
    ///
    /// ```
    /// use rustygradients_core::{Device, Tensor};
    /// let x = Tensor::from_vec(vec![1f32, 2., 3., 4.], &[2, 2], Device::Cpu)?;
    /// let w = Tensor::from_vec(vec![1f32, 0., 1., 1., 0., 2.], &[3, 2], Device::Cpu)?;
    /// let b = Tensor::from_vec(vec![0.5f32, 0., -1.], &[3], Device::Cpu)?;
    /// let y = x.linear(&w, Some(&b))?;
    /// assert_eq!(y.to_vec::<f32>()?, vec![1.5, 3., 3., 3.5, 7., 7.]);
    /// # Ok::<(), rustygradients_core::Error>(())
    /// ```
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let op = "linear";
        let bad = |msg: String| Error::InvalidShape {
            op,
            msg,
            shape: self.shape().clone(),
        };
        if weight.rank() != 2 {
            return Err(bad(format!(
                "the weight must be (out, in); got {}",
                weight.shape()
            )));
        }
        let (n, k) = (weight.dims()[0], weight.dims()[1]);
        if self.rank() == 0 || self.dims()[self.rank() - 1] != k {
            return Err(bad(format!(
                "the input's last dim must be the weight's in_features {k} (weight {})",
                weight.shape()
            )));
        }
        if let Some(b) = bias {
            if b.dims() != [n] {
                return Err(bad(format!(
                    "the bias must be ({n},) for weight {}; got {}",
                    weight.shape(),
                    b.shape()
                )));
            }
        }
        let (x, w) = (self.autocast_half()?, weight.autocast_half()?);
        let b = bias.map(Tensor::autocast_half).transpose()?;
        for t in std::iter::once(&w).chain(b.as_ref()) {
            if t.dtype() != x.dtype() {
                return Err(Error::DTypeMismatch {
                    op,
                    lhs: x.dtype(),
                    rhs: t.dtype(),
                });
            }
            if t.device() != x.device() {
                return Err(Error::DeviceMismatch {
                    op,
                    lhs: x.device(),
                    rhs: t.device(),
                });
            }
        }
        if !x.dtype().is_float() {
            return Err(Error::UnsupportedDType {
                op,
                got: x.dtype(),
                expected: "a floating-point dtype",
            });
        }
        let m = x.elem_count() / k.max(1);
        let mut out_dims = x.dims()[..x.rank() - 1].to_vec();
        out_dims.push(n);
        let x2 = x.reshape([m, k])?.dense()?;
        let w = w.dense()?;
        let b = b.map(|b| b.dense()).transpose()?;
        let fused = if m * n * k > 0 {
            let bs = b.as_ref().map(|b| b.storage());
            x2.storage()
                .linear(&w.storage(), bs.as_deref(), (m, k, n))?
        } else {
            None
        };
        let y = match fused {
            Some(s) => Tensor::from_storage(s, [m, n], None),
            None => {
                let _g = NoGradGuard::new();
                let y = x2.matmul(&w.t()?)?;
                match &b {
                    Some(b) => y.add(b)?,
                    None => y,
                }
            }
        };
        let y = y.view_with(
            y.layout().clone(),
            Some(Op::Linear {
                x: x2.clone(),
                w: w.clone(),
                b,
            }),
        );
        y.reshape(out_dims)
    }
}
