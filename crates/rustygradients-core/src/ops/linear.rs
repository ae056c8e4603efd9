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
        let y = ops.product(None)?;
        ops.record(y, None)
    }

    /// `residual + self · weightᵀ + bias`: a linear layer added to a residual stream as one op.
    /// On the GPU the GEMM adds `residual` itself (cuBLASLt's `D = A·B + C`), so the sum costs
    /// no pass of its own, and the backward hands `residual` the output's gradient unchanged.
    ///
    /// `residual` must have the output's shape and (under autocast, the half) dtype for that;
    /// otherwise this is `residual.add(&self.linear(weight, bias)?)`, broadcasting and
    /// promoting as [`Tensor::add`] does.
    ///
    /// ```
    /// use rustygradients_core::{Device, Tensor};
    /// let x = Tensor::from_vec(vec![1f32, 2.], &[1, 2], Device::Cpu)?;
    /// let w = Tensor::from_vec(vec![1f32, 1., 0., 3.], &[2, 2], Device::Cpu)?;
    /// let r = Tensor::from_vec(vec![10f32, 20.], &[1, 2], Device::Cpu)?;
    /// let y = x.linear_add(&w, None, &r)?;
    /// assert_eq!(y.to_vec::<f32>()?, vec![13., 26.]);
    /// # Ok::<(), rustygradients_core::Error>(())
    /// ```
    pub fn linear_add(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        residual: &Tensor,
    ) -> Result<Tensor> {
        let ops = LinearOperands::new("linear_add", self, weight, bias)?;
        match ops.residual(residual, &ops.out_dims)? {
            Some(r) => {
                let y = ops.product(Some(&r))?;
                ops.record(y, Some(r))
            }
            // From the operands already cast and made dense, then the separate add.
            None => {
                let y = ops.product(None)?;
                residual.add(&ops.record(y, None)?)
            }
        }
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

    /// `residual` as the dense tensor [`LinearOperands::product`] can add (its shape kept, so
    /// that its gradient reaches it with no reshape between), or `None` when it does not
    /// match the shape the caller's result will have (`shape`), or the output's dtype and
    /// device (the caller adds it as a separate op then).
    pub(crate) fn residual(&self, residual: &Tensor, shape: &[usize]) -> Result<Option<Tensor>> {
        let fits = residual.dims() == shape
            && residual.dtype() == self.x.dtype()
            && residual.device() == self.x.device();
        if !fits {
            return Ok(None);
        }
        Ok(Some(residual.dense()?))
    }

    /// The output with its op recorded (the inputs already cast and flattened; `r` the
    /// residual [`LinearOperands::product`] added), in the input's shape.
    pub(crate) fn record(self, y: Tensor, r: Option<Tensor>) -> Result<Tensor> {
        let y = y.view_with(
            y.layout().clone(),
            Some(Op::Linear {
                x: self.x,
                w: self.w,
                b: self.b,
                r,
            }),
        );
        y.reshape(self.out_dims)
    }

    /// `x · wᵀ + b (+ r)` as a new `(m, n)` tensor with no graph history: one GEMM with the bias
    /// (and `r`, a dense tensor of `m·n` elements and the output's dtype) added in it where
    /// the backend has it, else `matmul` + `add`.
    pub(crate) fn product(&self, r: Option<&Tensor>) -> Result<Tensor> {
        let (m, k, n) = self.dims;
        let fused = if m * n * k > 0 {
            let bs = self.b.as_ref().map(|b| b.storage());
            let rs = r.map(|r| r.storage());
            self.x
                .storage()
                .linear(&self.w.storage(), bs.as_deref(), (m, k, n), rs.as_deref())?
        } else {
            None
        };
        Ok(match fused {
            Some(s) => Tensor::from_storage(s, [m, n], None),
            None => {
                let _g = NoGradGuard::new();
                let y = self.x.matmul(&self.w.t()?)?;
                let y = match &self.b {
                    Some(b) => y.add(b)?,
                    None => y,
                };
                match r {
                    Some(r) => y.add(&r.reshape([m, n])?)?,
                    None => y,
                }
            }
        })
    }
}
