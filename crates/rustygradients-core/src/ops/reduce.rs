//! Reductions over any set of dims, with `keepdim`, as in PyTorch. `max`/`min` reduce values
//! (PyTorch's `amax`/`amin`); `argmax`/`argmin` give `i64` indices along one dim.

use crate::backend::ReduceOp;
use crate::op::Op;
use crate::{Dim, Dims, Error, Result, Shape, Tensor};

impl Tensor {
    /// Reduces sorted `dims`, keeping them as size 1, then drops them unless `keepdim`.
    fn reduce_op(&self, op: ReduceOp, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        if op != ReduceOp::Sum && dims.iter().any(|&d| self.dims()[d] == 0) {
            return Err(Error::EmptyTensor {
                op: op.name(),
                shape: self.shape().clone(),
            });
        }
        let kept = self.shape().reduced(dims);
        let s = self.storage().reduce(self.layout(), op, dims)?;
        let record =
            matches!(op, ReduceOp::Sum | ReduceOp::Max | ReduceOp::Min) && self.dtype().is_float();
        let out = Tensor::from_storage(
            s,
            kept,
            record.then(|| Op::Reduce(self.clone(), op, dims.to_vec())),
        );
        if keepdim {
            Ok(out)
        } else {
            out.reshape(drop_dims(self.shape(), dims))
        }
    }

    /// Sum over `dims` (use [`crate::All`] for every dim). As in PyTorch, integer tensors
    /// (`u8`, `u32`, `i64`) sum to `i64`, so a `u8` mask of 300 ones sums to 300 rather than
    /// wrapping; float tensors keep their dtype.
    ///
    /// ```
    /// use rustygradients_core::{DType, Device, Tensor};
    /// let mask = Tensor::ones(300, DType::U8, Device::Cpu)?;
    /// let n = mask.sum_all()?;
    /// assert_eq!((n.dtype(), n.to_scalar::<i64>()?), (DType::I64, 300));
    /// # Ok::<(), rustygradients_core::Error>(())
    /// ```
    pub fn sum(&self, dims: impl Dims, keepdim: bool) -> Result<Tensor> {
        self.reduce_op(ReduceOp::Sum, &dims.resolve(self.shape(), "sum")?, keepdim)
    }
    /// Sum of all elements, as a 0-d tensor (`i64` for integer tensors; see [`Tensor::sum`]).
    pub fn sum_all(&self) -> Result<Tensor> {
        self.sum(crate::All, false)
    }
    /// True when no element is NaN or infinite (always true for integer dtypes). Computed on
    /// the tensor's device; reading the answer is one scalar copy to the host.
    pub fn all_finite(&self) -> Result<bool> {
        if !self.dtype().is_float() {
            return Ok(true);
        }
        // x·0 is 0 for every finite x and NaN for ±inf and NaN; a sum of those is 0 or NaN.
        let probe = crate::no_grad(|| self.mul_scalar(0.0)?.sum_all()?.item())?;
        Ok(probe == 0.0)
    }
    /// Mean over `dims`; float tensors only. As in PyTorch, an integer tensor is an error
    /// (convert it with `to_dtype` first; `sum` of integers gives `i64`).
    pub fn mean(&self, dims: impl Dims, keepdim: bool) -> Result<Tensor> {
        let dims = dims.resolve(self.shape(), "mean")?;
        if !self.dtype().is_float() {
            return Err(Error::UnsupportedDType {
                op: "mean",
                got: self.dtype(),
                expected: "a floating-point dtype; convert integers with to_dtype first",
            });
        }
        let n: usize = dims.iter().map(|&d| self.dims()[d]).product();
        self.reduce_op(ReduceOp::Sum, &dims, keepdim)?
            .mul_scalar(1.0 / n as f64)
    }
    /// Mean of all elements, as a 0-d tensor.
    pub fn mean_all(&self) -> Result<Tensor> {
        self.mean(crate::All, false)
    }
    /// Largest value over `dims` (PyTorch's `amax`); ties share the gradient equally.
    pub fn max(&self, dims: impl Dims, keepdim: bool) -> Result<Tensor> {
        self.reduce_op(ReduceOp::Max, &dims.resolve(self.shape(), "max")?, keepdim)
    }
    /// Smallest value over `dims` (PyTorch's `amin`).
    pub fn min(&self, dims: impl Dims, keepdim: bool) -> Result<Tensor> {
        self.reduce_op(ReduceOp::Min, &dims.resolve(self.shape(), "min")?, keepdim)
    }
    /// Index of the first largest value along `dim`, as `i64`.
    pub fn argmax(&self, dim: impl Dim, keepdim: bool) -> Result<Tensor> {
        self.reduce_op(
            ReduceOp::ArgMax,
            &[dim.resolve(self.shape(), "argmax")?],
            keepdim,
        )
    }
    /// Index of the first smallest value along `dim`, as `i64`.
    pub fn argmin(&self, dim: impl Dim, keepdim: bool) -> Result<Tensor> {
        self.reduce_op(
            ReduceOp::ArgMin,
            &[dim.resolve(self.shape(), "argmin")?],
            keepdim,
        )
    }

    /// Variance over `dims`; `unbiased` divides by `n - 1` (Bessel's correction).
    pub fn var(&self, dims: impl Dims, unbiased: bool, keepdim: bool) -> Result<Tensor> {
        let dims = dims.resolve(self.shape(), "var")?;
        self.float_only("var")?;
        let n: usize = dims.iter().map(|&d| self.dims()[d]).product();
        let ddof = unbiased as usize;
        if n <= ddof {
            return Err(Error::InvalidShape {
                op: "var",
                msg: format!("needs more than {ddof} element(s) along dims {dims:?}"),
                shape: self.shape().clone(),
            });
        }
        let centered = self.sub(&self.mean(dims.as_slice(), true)?)?;
        centered
            .sqr()?
            .sum(dims.as_slice(), keepdim)?
            .mul_scalar(1.0 / (n - ddof) as f64)
    }

    /// `log(sum(exp(x)))` over `dims`, computed stably by shifting by the maximum.
    pub fn logsumexp(&self, dims: impl Dims, keepdim: bool) -> Result<Tensor> {
        let dims = dims.resolve(self.shape(), "logsumexp")?;
        self.float_only("logsumexp")?;
        // The shift is a constant for autograd: its gradient contributions cancel exactly.
        let m = self.max(dims.as_slice(), true)?.detach();
        let m = m.where_cond_finite()?;
        let lse = self
            .sub(&m)?
            .exp()?
            .sum(dims.as_slice(), true)?
            .log()?
            .add(&m)?;
        if keepdim {
            Ok(lse)
        } else {
            lse.reshape(drop_dims(self.shape(), &dims))
        }
    }

    /// Replaces infinite shifts by 0 so that all-(-inf) rows give -inf rather than NaN.
    fn where_cond_finite(&self) -> Result<Tensor> {
        let finite = self.abs()?.lt(&self.scalar_like(f64::INFINITY)?)?;
        finite.where_cond(self, &self.scalar_like(0.0)?)
    }

    pub(crate) fn float_only(&self, op: &'static str) -> Result<()> {
        if self.dtype().is_float() {
            Ok(())
        } else {
            Err(Error::UnsupportedDType {
                op,
                got: self.dtype(),
                expected: "a floating-point dtype",
            })
        }
    }
}

/// `shape` without `dims`.
pub(crate) fn drop_dims(shape: &Shape, dims: &[usize]) -> Shape {
    Shape::new(
        shape
            .dims()
            .iter()
            .enumerate()
            .filter(|(i, _)| !dims.contains(i))
            .map(|(_, &d)| d)
            .collect(),
    )
}
