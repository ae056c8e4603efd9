//! Element types: the runtime [`DType`] tag and the [`WithDType`] trait that ties it to Rust types.

use half::{bf16, f16};

/// The element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float, [`f32`] (`torch.float32`).
    F32,
    /// 64-bit float, [`f64`] (`torch.float64`).
    F64,
    /// IEEE half precision, `half::f16` (`torch.float16`).
    F16,
    /// Brain float: f32's exponent range with 8 bits of precision, `half::bf16`
    /// (`torch.bfloat16`).
    BF16,
    /// 64-bit signed integer, [`i64`] (`torch.int64`): class indices and integer sums.
    I64,
    /// 32-bit unsigned integer, [`u32`] (`torch.uint32`).
    U32,
    /// 8-bit unsigned integer, [`u8`] (`torch.uint8`): the masks that comparisons return.
    U8,
}

impl DType {
    /// PyTorch's spelling, used by `Display` (`torch.float32` → `float32`).
    pub fn as_str(&self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::I64 => "int64",
            DType::U32 => "uint32",
            DType::U8 => "uint8",
        }
    }

    /// Bytes per element.
    pub fn size_in_bytes(&self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::U8 => 1,
        }
    }

    /// True for the four floating-point types.
    pub fn is_float(&self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }

    /// True for the two 16-bit floating-point types (`f16`, `bf16`).
    pub fn is_half(&self) -> bool {
        matches!(self, DType::F16 | DType::BF16)
    }

    /// True for the integer types (`i64`, `u32`, `u8`).
    pub fn is_int(&self) -> bool {
        !self.is_float()
    }
}

/// A Rust element type that a tensor can hold. Conversions go through `f64`, which represents
/// every value of every supported type except the largest `i64`s exactly.
pub trait WithDType:
    Copy
    + Send
    + Sync
    + PartialOrd
    + std::fmt::Debug
    + std::fmt::Display
    + num_traits::NumOps
    + num_traits::Zero
    + num_traits::One
    + 'static
{
    /// The runtime tag of this type.
    const DTYPE: DType;
    /// The value as f64 (exact, except for `i64`s beyond ±2^53).
    fn to_f64(self) -> f64;
    /// The nearest value of this type, as Rust's `as` converts: floats round to nearest,
    /// integers truncate toward zero and saturate at their range (NaN becomes 0).
    fn from_f64(v: f64) -> Self;
}

macro_rules! with_dtype {
    ($ty:ty, $dtype:ident, $to:expr, $from:expr) => {
        impl WithDType for $ty {
            const DTYPE: DType = DType::$dtype;
            #[inline(always)]
            fn to_f64(self) -> f64 {
                $to(self)
            }
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                $from(v)
            }
        }
    };
}
with_dtype!(f32, F32, |v: f32| v as f64, |v: f64| v as f32);
with_dtype!(f64, F64, |v: f64| v, |v: f64| v);
with_dtype!(f16, F16, |v: f16| v.to_f64(), f16::from_f64);
with_dtype!(bf16, BF16, |v: bf16| v.to_f64(), bf16::from_f64);
with_dtype!(i64, I64, |v: i64| v as f64, |v: f64| v as i64);
with_dtype!(u32, U32, |v: u32| v as f64, |v: f64| v as u32);
with_dtype!(u8, U8, |v: u8| v as f64, |v: f64| v as u8);

/// The floating-point element types: all math functions are available. `fast_exp` and
/// `fast_tanh` are the hot transcendental functions; f32 overrides them with vectorisable forms.
pub trait FloatDType: WithDType + num_traits::Float {
    /// `e^self`; f32 uses a branch-free polynomial within 2 ulp, other types `Float::exp`.
    #[inline(always)]
    fn fast_exp(self) -> Self {
        self.exp()
    }
    /// `tanh(self)`; f32 uses a branch-free form within 2e-7 absolute, other types
    /// `Float::tanh`.
    #[inline(always)]
    fn fast_tanh(self) -> Self {
        self.tanh()
    }
}
impl FloatDType for f32 {
    #[inline(always)]
    fn fast_exp(self) -> Self {
        crate::fast_math::exp_f32(self)
    }
    #[inline(always)]
    fn fast_tanh(self) -> Self {
        crate::fast_math::tanh_f32(self)
    }
}
impl FloatDType for f64 {}
impl FloatDType for f16 {}
impl FloatDType for bf16 {}
