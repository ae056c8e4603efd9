//! Host memory that is not tied to a device: what `to_vec`, io and device moves pass around.
//! A [`HostBuffer`] holds the elements of one dtype, owned or borrowed in place from shared
//! bytes (a memory-mapped file); the CPU backend computes on host buffers directly.

mod buffer;

pub use buffer::{HostBuf, SharedBytes};

use half::{bf16, f16};

use crate::{DType, Layout, WithDType};

/// Host memory of one dtype: the elements of a tensor copied off its device, or data on its
/// way onto one.
#[derive(Clone, Debug)]
pub enum HostBuffer {
    /// `f32` elements.
    F32(HostBuf<f32>),
    /// `f64` elements.
    F64(HostBuf<f64>),
    /// IEEE half-precision elements.
    F16(HostBuf<f16>),
    /// bfloat16 elements.
    BF16(HostBuf<bf16>),
    /// `i64` elements.
    I64(HostBuf<i64>),
    /// `u32` elements.
    U32(HostBuf<u32>),
    /// `u8` elements.
    U8(HostBuf<u8>),
}

/// The elements `layout` selects, row-major, as `T`: copied as they are when `T` is the element
/// type (an `i64` above 2^53 would not survive a trip through `f64`), else converted via `f64`.
fn elements_as<S: WithDType, T: WithDType>(v: &[S], layout: &Layout) -> Vec<T> {
    if std::any::TypeId::of::<S>() == std::any::TypeId::of::<T>() {
        let mut out = Vec::with_capacity(layout.elem_count());
        layout.for_each_offset(|i| out.push(v[i]));
        let any: Box<dyn std::any::Any> = Box::new(out);
        return *any.downcast::<Vec<T>>().expect("S and T are the same type");
    }
    let mut out = Vec::with_capacity(layout.elem_count());
    layout.for_each_offset(|i| out.push(T::from_f64(v[i].to_f64())));
    out
}

/// Runs `$body` with `$v` bound to the vector of whichever dtype `$s` holds, wrapping a `Vec`
/// result back into the same variant.
macro_rules! map_all {
    ($s:expr, $v:ident => $body:expr) => {
        match $s {
            $crate::host::HostBuffer::F32($v) => {
                $crate::host::HostBuffer::F32($crate::host::HostBuf::from($body))
            }
            $crate::host::HostBuffer::F64($v) => {
                $crate::host::HostBuffer::F64($crate::host::HostBuf::from($body))
            }
            $crate::host::HostBuffer::F16($v) => {
                $crate::host::HostBuffer::F16($crate::host::HostBuf::from($body))
            }
            $crate::host::HostBuffer::BF16($v) => {
                $crate::host::HostBuffer::BF16($crate::host::HostBuf::from($body))
            }
            $crate::host::HostBuffer::I64($v) => {
                $crate::host::HostBuffer::I64($crate::host::HostBuf::from($body))
            }
            $crate::host::HostBuffer::U32($v) => {
                $crate::host::HostBuffer::U32($crate::host::HostBuf::from($body))
            }
            $crate::host::HostBuffer::U8($v) => {
                $crate::host::HostBuffer::U8($crate::host::HostBuf::from($body))
            }
        }
    };
}
/// Like `map_all!` but the body's value is returned as is.
macro_rules! with_all {
    ($s:expr, $v:ident => $body:expr) => {
        match $s {
            $crate::host::HostBuffer::F32($v) => $body,
            $crate::host::HostBuffer::F64($v) => $body,
            $crate::host::HostBuffer::F16($v) => $body,
            $crate::host::HostBuffer::BF16($v) => $body,
            $crate::host::HostBuffer::I64($v) => $body,
            $crate::host::HostBuffer::U32($v) => $body,
            $crate::host::HostBuffer::U8($v) => $body,
        }
    };
}
/// Runs `$body` for two storages of the same dtype, or fails with a dtype mismatch.
macro_rules! map_pair {
    ($op:expr, $a:expr, $b:expr, ($x:ident, $y:ident) => $body:expr) => {
        match ($a, $b) {
            ($crate::host::HostBuffer::F32($x), $crate::host::HostBuffer::F32($y)) => {
                $crate::host::HostBuffer::F32($crate::host::HostBuf::from($body))
            }
            ($crate::host::HostBuffer::F64($x), $crate::host::HostBuffer::F64($y)) => {
                $crate::host::HostBuffer::F64($crate::host::HostBuf::from($body))
            }
            ($crate::host::HostBuffer::F16($x), $crate::host::HostBuffer::F16($y)) => {
                $crate::host::HostBuffer::F16($crate::host::HostBuf::from($body))
            }
            ($crate::host::HostBuffer::BF16($x), $crate::host::HostBuffer::BF16($y)) => {
                $crate::host::HostBuffer::BF16($crate::host::HostBuf::from($body))
            }
            ($crate::host::HostBuffer::I64($x), $crate::host::HostBuffer::I64($y)) => {
                $crate::host::HostBuffer::I64($crate::host::HostBuf::from($body))
            }
            ($crate::host::HostBuffer::U32($x), $crate::host::HostBuffer::U32($y)) => {
                $crate::host::HostBuffer::U32($crate::host::HostBuf::from($body))
            }
            ($crate::host::HostBuffer::U8($x), $crate::host::HostBuffer::U8($y)) => {
                $crate::host::HostBuffer::U8($crate::host::HostBuf::from($body))
            }
            (a, b) => {
                return Err($crate::Error::DTypeMismatch {
                    op: $op,
                    lhs: a.dtype(),
                    rhs: b.dtype(),
                })
            }
        }
    };
}
/// Runs `$body` (whose value is returned as is) for two storages of the same dtype.
macro_rules! with_pair {
    ($op:expr, $a:expr, $b:expr, ($x:ident, $y:ident) => $body:expr) => {
        match ($a, $b) {
            ($crate::host::HostBuffer::F32($x), $crate::host::HostBuffer::F32($y)) => $body,
            ($crate::host::HostBuffer::F64($x), $crate::host::HostBuffer::F64($y)) => $body,
            ($crate::host::HostBuffer::F16($x), $crate::host::HostBuffer::F16($y)) => $body,
            ($crate::host::HostBuffer::BF16($x), $crate::host::HostBuffer::BF16($y)) => $body,
            ($crate::host::HostBuffer::I64($x), $crate::host::HostBuffer::I64($y)) => $body,
            ($crate::host::HostBuffer::U32($x), $crate::host::HostBuffer::U32($y)) => $body,
            ($crate::host::HostBuffer::U8($x), $crate::host::HostBuffer::U8($y)) => $body,
            (a, b) => {
                return Err($crate::Error::DTypeMismatch {
                    op: $op,
                    lhs: a.dtype(),
                    rhs: b.dtype(),
                })
            }
        }
    };
}
pub(crate) use {map_all, map_pair, with_all, with_pair};

impl HostBuffer {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            HostBuffer::F32(_) => DType::F32,
            HostBuffer::F64(_) => DType::F64,
            HostBuffer::F16(_) => DType::F16,
            HostBuffer::BF16(_) => DType::BF16,
            HostBuffer::I64(_) => DType::I64,
            HostBuffer::U32(_) => DType::U32,
            HostBuffer::U8(_) => DType::U8,
        }
    }
    /// `len` elements of `dtype` borrowed in place at byte `offset` of `bytes` (no copy), or
    /// `None` when they lie outside the bytes or are misaligned for the dtype.
    pub fn borrowed(
        dtype: DType,
        bytes: SharedBytes,
        offset: usize,
        len: usize,
    ) -> Option<HostBuffer> {
        Some(match dtype {
            DType::F32 => HostBuffer::F32(HostBuf::borrowed(bytes, offset, len)?),
            DType::F64 => HostBuffer::F64(HostBuf::borrowed(bytes, offset, len)?),
            DType::F16 => HostBuffer::F16(HostBuf::borrowed(bytes, offset, len)?),
            DType::BF16 => HostBuffer::BF16(HostBuf::borrowed(bytes, offset, len)?),
            DType::I64 => HostBuffer::I64(HostBuf::borrowed(bytes, offset, len)?),
            DType::U32 => HostBuffer::U32(HostBuf::borrowed(bytes, offset, len)?),
            DType::U8 => HostBuffer::U8(HostBuf::borrowed(bytes, offset, len)?),
        })
    }
    /// True when the elements are borrowed from shared bytes rather than owned.
    pub fn is_borrowed(&self) -> bool {
        with_all!(self, v => v.is_borrowed())
    }
    /// True when no elements are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Number of elements held.
    pub fn len(&self) -> usize {
        with_all!(self, v => v.len())
    }
    /// Wraps a vector of any supported element type.
    pub fn from_vec<T: WithDType>(v: Vec<T>) -> HostBuffer {
        // The element type is known statically; the conversion is a move, never a copy.
        use std::any::Any;
        let b: Box<dyn Any> = Box::new(v);
        match T::DTYPE {
            DType::F32 => HostBuffer::F32(HostBuf::Owned(
                *b.downcast().expect("dtype tag matches type"),
            )),
            DType::F64 => HostBuffer::F64(HostBuf::Owned(
                *b.downcast().expect("dtype tag matches type"),
            )),
            DType::F16 => HostBuffer::F16(HostBuf::Owned(
                *b.downcast().expect("dtype tag matches type"),
            )),
            DType::BF16 => HostBuffer::BF16(HostBuf::Owned(
                *b.downcast().expect("dtype tag matches type"),
            )),
            DType::I64 => HostBuffer::I64(HostBuf::Owned(
                *b.downcast().expect("dtype tag matches type"),
            )),
            DType::U32 => HostBuffer::U32(HostBuf::Owned(
                *b.downcast().expect("dtype tag matches type"),
            )),
            DType::U8 => HostBuffer::U8(HostBuf::Owned(
                *b.downcast().expect("dtype tag matches type"),
            )),
        }
    }

    /// The elements selected by `layout`, converted to `T` (exact when `T` is the storage dtype).
    pub fn to_vec<T: WithDType>(&self, layout: &Layout) -> Vec<T> {
        with_all!(self, v => elements_as(v, layout))
    }

    /// `n` copies of `value` converted to `dtype`.
    pub fn full(n: usize, value: f64, dtype: DType) -> HostBuffer {
        fn fill<T: WithDType>(n: usize, v: f64) -> Vec<T> {
            vec![T::from_f64(v); n]
        }
        match dtype {
            DType::F32 => HostBuffer::F32(HostBuf::from(fill(n, value))),
            DType::F64 => HostBuffer::F64(HostBuf::from(fill(n, value))),
            DType::F16 => HostBuffer::F16(HostBuf::from(fill(n, value))),
            DType::BF16 => HostBuffer::BF16(HostBuf::from(fill(n, value))),
            DType::I64 => HostBuffer::I64(HostBuf::from(fill(n, value))),
            DType::U32 => HostBuffer::U32(HostBuf::from(fill(n, value))),
            DType::U8 => HostBuffer::U8(HostBuf::from(fill(n, value))),
        }
    }

    /// The elements as little-endian bytes, as they sit in host memory (what a safetensors file
    /// stores).
    pub fn as_bytes(&self) -> &[u8] {
        with_all!(self, v => bytemuck::cast_slice(v))
    }
}
