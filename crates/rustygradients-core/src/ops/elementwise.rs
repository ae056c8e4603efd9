//! Elementwise ops: unary math, binary arithmetic with NumPy broadcasting, comparisons,
//! `where_cond`/`masked_fill` and dtype conversion.

use crate::backend::{BinaryOp, CmpOp, UnaryOp};
use crate::op::Op;
use crate::{DType, Error, Result, Tensor};

/// The dtype of integer true division (PyTorch's default float dtype).
const INT_DIV_DTYPE: DType = DType::F32;

macro_rules! unary_methods {
    ($note:literal; $($(#[$doc:meta])* $name:ident => $op:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[doc = ""]
        #[doc = $note]
        pub fn $name(&self) -> Result<Tensor> {
            self.unary_op(UnaryOp::$op)
        }
    )*};
}

macro_rules! binary_methods {
    ($($(#[$doc:meta])* $name:ident => $op:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[doc = ""]
        #[doc = "Shapes broadcast as in NumPy; both operands must have the same dtype"]
        #[doc = "([`Error::DTypeMismatch`](crate::Error::DTypeMismatch)) and device, which the"]
        #[doc = "result keeps."]
        pub fn $name(&self, rhs: &Tensor) -> Result<Tensor> {
            self.binary_op(rhs, BinaryOp::$op)
        }
    )*};
}

macro_rules! cmp_methods {
    ($($(#[$doc:meta])* $name:ident => $op:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[doc = ""]
        #[doc = "Shapes broadcast as in NumPy; both operands must have the same dtype and device."]
        #[doc = "The result is a `u8` mask of 0/1 (PyTorch gives `bool`) and records no graph."]
        pub fn $name(&self, rhs: &Tensor) -> Result<Tensor> {
            self.cmp_op(rhs, CmpOp::$op)
        }
    )*};
}

impl Tensor {
    pub(crate) fn unary_op(&self, op: UnaryOp) -> Result<Tensor> {
        if !self.dtype().is_float() && !op.supports_int() {
            return Err(Error::UnsupportedDType {
                op: op.name(),
                got: self.dtype(),
                expected: "a floating-point dtype",
            });
        }
        let s = self.storage().unary(self.layout(), op)?;
        Ok(Tensor::from_storage(
            s,
            self.shape().clone(),
            Some(Op::Unary(self.clone(), op)),
        ))
    }

    /// `g · op'(self)`: the gradient rule of `op` as one fused pass (see
    /// [`BackendStorage::unary_grad`](crate::backend::BackendStorage::unary_grad)).
    pub(crate) fn unary_grad(&self, op: UnaryOp, g: &Tensor) -> Result<Tensor> {
        if g.shape() != self.shape() {
            return Err(Error::ShapeMismatch {
                op: op.name(),
                lhs: self.shape().clone(),
                rhs: g.shape().clone(),
            });
        }
        let s = self
            .storage()
            .unary_grad(self.layout(), &g.storage(), g.layout(), op)?;
        Ok(Tensor::from_storage(s, self.shape().clone(), None))
    }

    unary_methods!(
        "Float dtypes only: integer tensors give \
         [`Error::UnsupportedDType`](crate::Error::UnsupportedDType).";
        /// `e^x` (`torch.exp`). f32 uses a vectorised polynomial within 2 ulp.
        exp => Exp,
        /// Natural logarithm (`torch.log`): `-inf` at 0, NaN below it.
        log => Log,
        /// `√x` (`torch.sqrt`): NaN below 0.
        sqrt => Sqrt,
        /// `1 / √x` (`torch.rsqrt`).
        rsqrt => Rsqrt,
        /// Sine of radians (`torch.sin`).
        sin => Sin,
        /// Cosine of radians (`torch.cos`).
        cos => Cos,
        /// Hyperbolic tangent (`torch.tanh`). f32 is within 2e-7 of the exact value.
        tanh => Tanh,
        /// `1 / (1 + e^-x)` (`torch.sigmoid`).
        sigmoid => Sigmoid,
        /// GELU, exact (erf) form: `x * Φ(x)` (`F.gelu`).
        gelu => Gelu,
        /// GELU, tanh approximation: `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`
        /// (`F.gelu(x, approximate="tanh")`).
        gelu_tanh => GeluTanh,
        /// `x · sigmoid(x)` (`F.silu`, swish).
        silu => Silu,
        /// `ln(1 + e^x)` (`F.softplus` with `beta=1`), computed as `max(x, 0) + ln(1 + e^-|x|)`
        /// so that large inputs do not overflow (PyTorch's `threshold` shortcut is not applied).
        softplus => Softplus,
        /// `1 / x` (`torch.reciprocal`): `±inf` at `±0`.
        recip => Recip,
        /// The error function (`torch.erf`): f64 through `libm`, narrower floats through a
        /// rational approximation with absolute error below 1.5e-7.
        erf => Erf,
    );
    unary_methods!(
        "Also defined on integer tensors, computed through f64 and converted back (saturating \
         at the dtype's range, so `neg` of an unsigned tensor is 0).";
        /// `-x` (`torch.neg`).
        neg => Neg,
        /// `|x|` (`torch.abs`).
        abs => Abs,
        /// `max(x, 0)` (`torch.relu`); NaN passes through.
        relu => Relu,
        /// `x²` (`torch.square`).
        sqr => Sqr,
        /// `-1`, `0` or `1` by the sign of `x` (`torch.sign`); NaN and `±0` come back unchanged.
        sign => Sign,
    );

    /// `x^e` for a scalar exponent.
    pub fn powf(&self, e: f64) -> Result<Tensor> {
        self.unary_op(UnaryOp::Powf(e))
    }
    /// Limits values to `[min, max]`.
    pub fn clamp(&self, min: f64, max: f64) -> Result<Tensor> {
        if min > max || min.is_nan() || max.is_nan() {
            return Err(Error::InvalidArgument {
                op: "clamp",
                msg: format!("min {min} must not exceed max {max}"),
            });
        }
        self.unary_op(UnaryOp::Clamp(min, max))
    }
    /// `x * mul + add` in one pass.
    pub fn affine(&self, mul: f64, add: f64) -> Result<Tensor> {
        self.unary_op(UnaryOp::Affine(mul, add))
    }
    /// `x + v` (an [`affine`](Tensor::affine) pass). Integer tensors truncate the result toward
    /// zero and saturate at their range.
    pub fn add_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(1.0, v)
    }
    /// `x - v` (an [`affine`](Tensor::affine) pass). Integer tensors truncate the result toward
    /// zero and saturate at their range.
    pub fn sub_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(1.0, -v)
    }
    /// `x * v` (an [`affine`](Tensor::affine) pass). Integer tensors truncate the result toward
    /// zero and saturate at their range.
    pub fn mul_scalar(&self, v: f64) -> Result<Tensor> {
        self.affine(v, 0.0)
    }
    /// Divides by `v`. On an integer tensor this is true division, as in PyTorch: the result
    /// is `f32` (`[7, 2] / 2` is `[3.5, 1.0]`), never an integer quotient. Float tensors keep
    /// their dtype.
    pub fn div_scalar(&self, v: f64) -> Result<Tensor> {
        if self.dtype().is_int() {
            let x = self.to_dtype(INT_DIV_DTYPE)?;
            return x.div(&Tensor::full(v, (), INT_DIV_DTYPE, self.device())?);
        }
        self.affine(1.0 / v, 0.0)
    }
    /// `max(x, v)` elementwise (`torch.clamp(x, min=v)`, but NaN propagates); `v` is converted
    /// to the tensor's dtype.
    pub fn maximum_scalar(&self, v: f64) -> Result<Tensor> {
        self.maximum(&self.scalar_like(v)?)
    }
    /// `min(x, v)` elementwise (`torch.clamp(x, max=v)`, but NaN propagates); `v` is converted
    /// to the tensor's dtype.
    pub fn minimum_scalar(&self, v: f64) -> Result<Tensor> {
        self.minimum(&self.scalar_like(v)?)
    }

    /// A 0-d tensor of this dtype and device.
    pub(crate) fn scalar_like(&self, v: f64) -> Result<Tensor> {
        Tensor::full(v, (), self.dtype(), self.device())
    }

    /// Broadcasts both operands to their common shape (views, recorded for autograd).
    pub(crate) fn broadcast_pair(
        &self,
        rhs: &Tensor,
        op: &'static str,
    ) -> Result<(Tensor, Tensor)> {
        if self.device() != rhs.device() {
            return Err(Error::DeviceMismatch {
                op,
                lhs: self.device(),
                rhs: rhs.device(),
            });
        }
        let shape = self.shape().broadcast_with(rhs.shape(), op)?;
        Ok((self.broadcast_to(shape.clone())?, rhs.broadcast_to(shape)?))
    }

    pub(crate) fn binary_op(&self, rhs: &Tensor, op: BinaryOp) -> Result<Tensor> {
        if let Some(d) = crate::autocast::promoted(self.dtype(), rhs.dtype()) {
            return self.to_dtype(d)?.binary_op(&rhs.to_dtype(d)?, op);
        }
        if self.dtype() != rhs.dtype() {
            return Err(Error::DTypeMismatch {
                op: op.name(),
                lhs: self.dtype(),
                rhs: rhs.dtype(),
            });
        }
        if self.dtype().is_int() && op == BinaryOp::Div {
            // True division (PyTorch's `int / int`): both sides in the default float dtype.
            return self
                .to_dtype(INT_DIV_DTYPE)?
                .binary_op(&rhs.to_dtype(INT_DIV_DTYPE)?, op);
        }
        if self.dtype().is_int() && op == BinaryOp::Pow {
            return Err(Error::UnsupportedDType {
                op: op.name(),
                got: self.dtype(),
                expected: "a floating-point dtype (convert integers with to_dtype first)",
            });
        }
        let (a, b) = self.broadcast_pair(rhs, op.name())?;
        let s = a
            .storage()
            .binary(a.layout(), &b.storage(), b.layout(), op)?;
        Ok(Tensor::from_storage(
            s,
            a.shape().clone(),
            Some(Op::Binary(a.clone(), b.clone(), op)),
        ))
    }

    binary_methods!(
        /// `self + rhs` (`torch.add`); integers wrap on overflow.
        add => Add,
        /// `self - rhs` (`torch.sub`); integers wrap on overflow.
        sub => Sub,
        /// `self * rhs` (`torch.mul`); integers wrap on overflow.
        mul => Mul,
        /// `self ^ rhs` (`torch.pow` with a tensor exponent). Float dtypes only: integer tensors
        /// give [`Error::UnsupportedDType`](crate::Error::UnsupportedDType).
        pow => Pow,
        /// The larger of each pair (`torch.maximum`); NaN if either is NaN.
        maximum => Maximum,
        /// The smaller of each pair (`torch.minimum`); NaN if either is NaN.
        minimum => Minimum,
    );

    /// Elementwise `div` with NumPy broadcasting. Both operands must have the same dtype. On
    /// integer tensors this is true division, as in PyTorch: the result is `f32` (the default
    /// float dtype), so `[7, -7] / [2, 2]` is `[3.5, -3.5]`, and `x / 0` gives `inf` or `NaN`
    /// rather than an integer quotient or a panic. Float tensors keep their dtype.
    ///
    /// ```
    /// use rustygradients_core::{DType, Device, Tensor};
    /// let a = Tensor::from_vec(vec![7i64, -7], 2, Device::Cpu)?;
    /// let b = Tensor::from_vec(vec![2i64, 2], 2, Device::Cpu)?;
    /// let q = a.div(&b)?;
    /// assert_eq!(q.dtype(), DType::F32);
    /// assert_eq!(q.to_vec::<f32>()?, vec![3.5, -3.5]);
    /// # Ok::<(), rustygradients_core::Error>(())
    /// ```
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Div)
    }

    pub(crate) fn cmp_op(&self, rhs: &Tensor, op: CmpOp) -> Result<Tensor> {
        if self.dtype() != rhs.dtype() {
            return Err(Error::DTypeMismatch {
                op: op.name(),
                lhs: self.dtype(),
                rhs: rhs.dtype(),
            });
        }
        let (a, b) = self.broadcast_pair(rhs, op.name())?;
        let s = a.storage().cmp(a.layout(), &b.storage(), b.layout(), op)?;
        Ok(Tensor::from_storage(s, a.shape().clone(), None))
    }

    cmp_methods!(
        /// `self == rhs` (`torch.eq`); NaN equals nothing.
        eq => Eq,
        /// `self != rhs` (`torch.ne`); NaN differs from everything.
        ne => Ne,
        /// `self < rhs` (`torch.lt`).
        lt => Lt,
        /// `self <= rhs` (`torch.le`).
        le => Le,
        /// `self > rhs` (`torch.gt`).
        gt => Gt,
        /// `self >= rhs` (`torch.ge`).
        ge => Ge,
    );

    /// Elementwise `on_true` where this `u8` mask is non-zero, else `on_false` (all broadcast).
    pub fn where_cond(&self, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        let op = "where_cond";
        if self.dtype() != DType::U8 {
            return Err(Error::UnsupportedDType {
                op,
                got: self.dtype(),
                expected: "a u8 mask",
            });
        }
        if on_true.dtype() != on_false.dtype() {
            return Err(Error::DTypeMismatch {
                op,
                lhs: on_true.dtype(),
                rhs: on_false.dtype(),
            });
        }
        for t in [on_true, on_false] {
            if t.device() != self.device() {
                return Err(Error::DeviceMismatch {
                    op,
                    lhs: self.device(),
                    rhs: t.device(),
                });
            }
        }
        let shape = self
            .shape()
            .broadcast_with(on_true.shape(), op)?
            .broadcast_with(on_false.shape(), op)?;
        let (m, t, f) = (
            self.broadcast_to(shape.clone())?,
            on_true.broadcast_to(shape.clone())?,
            on_false.broadcast_to(shape.clone())?,
        );
        let s = m.storage().where_cond(
            m.layout(),
            &t.storage(),
            t.layout(),
            &f.storage(),
            f.layout(),
        )?;
        Ok(Tensor::from_storage(
            s,
            shape,
            Some(Op::WhereCond(m.clone(), t.clone(), f.clone())),
        ))
    }

    /// `value` where the `u8` mask is non-zero, else this tensor's element.
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Tensor> {
        let shape = self.shape().broadcast_with(mask.shape(), "masked_fill")?;
        if &shape != self.shape() {
            return Err(Error::ShapeMismatch {
                op: "masked_fill",
                lhs: self.shape().clone(),
                rhs: mask.shape().clone(),
            });
        }
        mask.where_cond(&self.scalar_like(value)?, self)
    }

    /// Converts to `dtype` (a copy; gradients flow between float dtypes).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let s = self.storage().to_dtype(self.layout(), dtype)?;
        let op = (dtype.is_float() && self.dtype().is_float()).then(|| Op::ToDType(self.clone()));
        Ok(Tensor::from_storage(s, self.shape().clone(), op))
    }
}
