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
        let ops = LinearOperands::new("linear", self, weight, bias)?;
        let y = ops.product()?;
        let y = y.view_with(
            y.layout().clone(),
            Some(Op::Linear {
                x: ops.x,
                w: ops.w,
                b: ops.b,
            }),
        );
        y.reshape(ops.out_dims)
    }
}

/// A linear layer's operands, checked and made ready for the GEMM: cast to the autocast dtype,
/// all of one float dtype and device, dense from element 0, with the input flattened to
/// `(m, k)`.
pub(crate) struct LinearOperands {
    /// The input as `(m, k)`.
    pub(crate) x: Tensor,
    /// `(n, k)`.
    pub(crate) w: Tensor,
    /// `(n,)`.
    pub(crate) b: Option<Tensor>,
    /// `(m, k, n)`.
    pub(crate) dims: (usize, usize, usize),
    /// The output's shape: the input's with the last dim `n`.
    pub(crate) out_dims: Vec<usize>,
}

impl LinearOperands {
    /// Checks `x (…, k)`, `weight (n, k)` and `bias (n,)` for `op`, naming the shapes, dtypes
    /// or devices that do not fit.
    pub(crate) fn new(
        op: &'static str,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<LinearOperands> {
        let bad = |msg: String| Error::InvalidShape {
            op,
            msg,
            shape: x.shape().clone(),
        };
        if weight.rank() != 2 {
            return Err(bad(format!(
                "the weight must be (out, in); got {}",
                weight.shape()
            )));
        }
        let (n, k) = (weight.dims()[0], weight.dims()[1]);
        if x.rank() == 0 || x.dims()[x.rank() - 1] != k {
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
        let (xh, w) = (x.autocast_half()?, weight.autocast_half()?);
        let b = bias.map(Tensor::autocast_half).transpose()?;
        for t in std::iter::once(&w).chain(b.as_ref()) {
            if t.dtype() != xh.dtype() {
                return Err(Error::DTypeMismatch {
                    op,
                    lhs: xh.dtype(),
                    rhs: t.dtype(),
                });
            }
            if t.device() != xh.device() {
                return Err(Error::DeviceMismatch {
                    op,
                    lhs: xh.device(),
                    rhs: t.device(),
                });
            }
        }
        if !xh.dtype().is_float() {
            return Err(Error::UnsupportedDType {
                op,
                got: xh.dtype(),
                expected: "a floating-point dtype",
            });
        }
        let m = xh.elem_count() / k.max(1);
        let mut out_dims = xh.dims()[..xh.rank() - 1].to_vec();
        out_dims.push(n);
        Ok(LinearOperands {
            x: xh.reshape([m, k])?.dense()?,
            w: w.dense()?,
            b: b.map(|b| b.dense()).transpose()?,
            dims: (m, k, n),
            out_dims,
        })
    }

    /// `x · wᵀ + b` as a new `(m, n)` tensor with no graph history: one GEMM with the bias in
    /// its epilogue where the backend has it, else `matmul` + `add`.
    pub(crate) fn product(&self) -> Result<Tensor> {
        let (m, k, n) = self.dims;
        let fused = if m * n * k > 0 {
            let bs = self.b.as_ref().map(|b| b.storage());
            self.x
                .storage()
                .linear(&self.w.storage(), bs.as_deref(), (m, k, n))?
        } else {
            None
        };
        Ok(match fused {
            Some(s) => Tensor::from_storage(s, [m, n], None),
            None => {
                let _g = NoGradGuard::new();
                let y = self.x.matmul(&self.w.t()?)?;
                match &self.b {
                    Some(b) => y.add(b)?,
                    None => y,
                }
            }
        })
    }
}
