//! The CPU backend: contiguous host vectors of each dtype and the kernels that read them through
//! strided layouts. Large elementwise work is split over rayon's threads.

mod attention;
pub mod buffer;
mod elementwise;
pub(crate) mod fast_math;
mod indexing;
mod lanes;
mod matmul;
mod optim;
mod reduce;
mod rows;
mod strided;
mod vec_math;

use half::{bf16, f16};

pub use buffer::{CpuBuf, SharedBytes};

use crate::backend::{AdamHyper, AttnDims, BackendStorage, BinaryOp, CmpOp, ReduceOp, UnaryOp};
use crate::{DType, Device, Error, Layout, Result, Shape, WithDType};

pub(crate) use strided::{copy_strided, map1};

/// Host memory of one dtype.
#[derive(Clone, Debug)]
pub enum CpuStorage {
    F32(CpuBuf<f32>),
    F64(CpuBuf<f64>),
    F16(CpuBuf<f16>),
    BF16(CpuBuf<bf16>),
    I64(CpuBuf<i64>),
    U32(CpuBuf<u32>),
    U8(CpuBuf<u8>),
}

/// The elements `layout` selects, row-major, as `T`: copied as they are when `T` is the element
/// type (an `i64` above 2^53 would not survive a trip through `f64`), else converted via `f64`.
fn elements_as<S: WithDType, T: WithDType>(v: &[S], layout: &Layout) -> Vec<T> {
    if std::any::TypeId::of::<S>() == std::any::TypeId::of::<T>() {
        let mut out = Vec::with_capacity(layout.elem_count());
        strided::for_each(layout, |i| out.push(v[i]));
        let any: Box<dyn std::any::Any> = Box::new(out);
        return *any.downcast::<Vec<T>>().expect("S and T are the same type");
    }
    let mut out = Vec::with_capacity(layout.elem_count());
    strided::for_each(layout, |i| out.push(T::from_f64(v[i].to_f64())));
    out
}

/// Runs `$body` with `$v` bound to the vector of whichever dtype `$s` holds, wrapping a `Vec`
/// result back into the same variant.
macro_rules! map_all {
    ($s:expr, $v:ident => $body:expr) => {
        match $s {
            CpuStorage::F32($v) => CpuStorage::F32($crate::cpu_backend::CpuBuf::from($body)),
            CpuStorage::F64($v) => CpuStorage::F64($crate::cpu_backend::CpuBuf::from($body)),
            CpuStorage::F16($v) => CpuStorage::F16($crate::cpu_backend::CpuBuf::from($body)),
            CpuStorage::BF16($v) => CpuStorage::BF16($crate::cpu_backend::CpuBuf::from($body)),
            CpuStorage::I64($v) => CpuStorage::I64($crate::cpu_backend::CpuBuf::from($body)),
            CpuStorage::U32($v) => CpuStorage::U32($crate::cpu_backend::CpuBuf::from($body)),
            CpuStorage::U8($v) => CpuStorage::U8($crate::cpu_backend::CpuBuf::from($body)),
        }
    };
}
/// Like `map_all!` but the body's value is returned as is.
macro_rules! with_all {
    ($s:expr, $v:ident => $body:expr) => {
        match $s {
            CpuStorage::F32($v) => $body,
            CpuStorage::F64($v) => $body,
            CpuStorage::F16($v) => $body,
            CpuStorage::BF16($v) => $body,
            CpuStorage::I64($v) => $body,
            CpuStorage::U32($v) => $body,
            CpuStorage::U8($v) => $body,
        }
    };
}
/// Runs `$body` for two storages of the same dtype, or fails with a dtype mismatch.
macro_rules! map_pair {
    ($op:expr, $a:expr, $b:expr, ($x:ident, $y:ident) => $body:expr) => {
        match ($a, $b) {
            (CpuStorage::F32($x), CpuStorage::F32($y)) => {
                CpuStorage::F32($crate::cpu_backend::CpuBuf::from($body))
            }
            (CpuStorage::F64($x), CpuStorage::F64($y)) => {
                CpuStorage::F64($crate::cpu_backend::CpuBuf::from($body))
            }
            (CpuStorage::F16($x), CpuStorage::F16($y)) => {
                CpuStorage::F16($crate::cpu_backend::CpuBuf::from($body))
            }
            (CpuStorage::BF16($x), CpuStorage::BF16($y)) => {
                CpuStorage::BF16($crate::cpu_backend::CpuBuf::from($body))
            }
            (CpuStorage::I64($x), CpuStorage::I64($y)) => {
                CpuStorage::I64($crate::cpu_backend::CpuBuf::from($body))
            }
            (CpuStorage::U32($x), CpuStorage::U32($y)) => {
                CpuStorage::U32($crate::cpu_backend::CpuBuf::from($body))
            }
            (CpuStorage::U8($x), CpuStorage::U8($y)) => {
                CpuStorage::U8($crate::cpu_backend::CpuBuf::from($body))
            }
            (a, b) => {
                return Err(Error::DTypeMismatch {
                    op: $op,
                    lhs: crate::backend::BackendStorage::dtype(a),
                    rhs: crate::backend::BackendStorage::dtype(b),
                })
            }
        }
    };
}
/// Runs `$body` (whose value is returned as is) for two storages of the same dtype.
macro_rules! with_pair {
    ($op:expr, $a:expr, $b:expr, ($x:ident, $y:ident) => $body:expr) => {
        match ($a, $b) {
            (CpuStorage::F32($x), CpuStorage::F32($y)) => $body,
            (CpuStorage::F64($x), CpuStorage::F64($y)) => $body,
            (CpuStorage::F16($x), CpuStorage::F16($y)) => $body,
            (CpuStorage::BF16($x), CpuStorage::BF16($y)) => $body,
            (CpuStorage::I64($x), CpuStorage::I64($y)) => $body,
            (CpuStorage::U32($x), CpuStorage::U32($y)) => $body,
            (CpuStorage::U8($x), CpuStorage::U8($y)) => $body,
            (a, b) => {
                return Err(Error::DTypeMismatch {
                    op: $op,
                    lhs: crate::backend::BackendStorage::dtype(a),
                    rhs: crate::backend::BackendStorage::dtype(b),
                })
            }
        }
    };
}
/// The error for a float-only kernel given a storage of another dtype.
pub(crate) fn float_only(op: &'static str, s: &CpuStorage) -> Error {
    Error::UnsupportedDType {
        op,
        got: s.dtype(),
        expected: "a floating-point dtype",
    }
}

/// Runs `$body` (a `CpuBuf`) for a floating-point storage, wrapping it in the same variant;
/// other dtypes are an error.
macro_rules! float_map {
    ($op:expr, $s:expr, $v:ident => $body:expr) => {
        match $s {
            CpuStorage::F32($v) => CpuStorage::F32($body),
            CpuStorage::F64($v) => CpuStorage::F64($body),
            CpuStorage::F16($v) => CpuStorage::F16($body),
            CpuStorage::BF16($v) => CpuStorage::BF16($body),
            other => return Err($crate::cpu_backend::float_only($op, other)),
        }
    };
}

/// Like `float_map!` for two storages of the same floating-point dtype.
macro_rules! float_map2 {
    ($op:expr, $a:expr, $b:expr, ($x:ident, $y:ident) => $body:expr) => {
        match ($a, $b) {
            (CpuStorage::F32($x), CpuStorage::F32($y)) => CpuStorage::F32($body),
            (CpuStorage::F64($x), CpuStorage::F64($y)) => CpuStorage::F64($body),
            (CpuStorage::F16($x), CpuStorage::F16($y)) => CpuStorage::F16($body),
            (CpuStorage::BF16($x), CpuStorage::BF16($y)) => CpuStorage::BF16($body),
            (a, b)
                if $crate::backend::BackendStorage::dtype(a)
                    != $crate::backend::BackendStorage::dtype(b) =>
            {
                return Err($crate::Error::DTypeMismatch {
                    op: $op,
                    lhs: $crate::backend::BackendStorage::dtype(a),
                    rhs: $crate::backend::BackendStorage::dtype(b),
                })
            }
            (other, _) => return Err($crate::cpu_backend::float_only($op, other)),
        }
    };
}
pub(crate) use {float_map, float_map2, map_all, map_pair, with_all, with_pair};

/// `copy_into` and `add_into` write one element per source element: the shapes must agree.
fn same_shape(op: &'static str, src_l: &Layout, dst_l: &Layout) -> Result<()> {
    if src_l.shape() != dst_l.shape() {
        return Err(Error::ShapeMismatch {
            op,
            lhs: src_l.shape().clone(),
            rhs: dst_l.shape().clone(),
        });
    }
    Ok(())
}

impl CpuStorage {
    /// `len` elements of `dtype` borrowed in place at byte `offset` of `bytes` (no copy), or
    /// `None` when they lie outside the bytes or are misaligned for the dtype.
    pub fn borrowed(
        dtype: DType,
        bytes: SharedBytes,
        offset: usize,
        len: usize,
    ) -> Option<CpuStorage> {
        Some(match dtype {
            DType::F32 => CpuStorage::F32(CpuBuf::borrowed(bytes, offset, len)?),
            DType::F64 => CpuStorage::F64(CpuBuf::borrowed(bytes, offset, len)?),
            DType::F16 => CpuStorage::F16(CpuBuf::borrowed(bytes, offset, len)?),
            DType::BF16 => CpuStorage::BF16(CpuBuf::borrowed(bytes, offset, len)?),
            DType::I64 => CpuStorage::I64(CpuBuf::borrowed(bytes, offset, len)?),
            DType::U32 => CpuStorage::U32(CpuBuf::borrowed(bytes, offset, len)?),
            DType::U8 => CpuStorage::U8(CpuBuf::borrowed(bytes, offset, len)?),
        })
    }
    /// True when the elements are borrowed from shared bytes rather than owned.
    pub(crate) fn is_borrowed(&self) -> bool {
        with_all!(self, v => v.is_borrowed())
    }
    /// Number of elements held.
    pub(crate) fn len(&self) -> usize {
        with_all!(self, v => v.len())
    }
    /// Wraps a vector of any supported element type.
    pub fn from_vec<T: WithDType>(v: Vec<T>) -> CpuStorage {
        // The element type is known statically; the conversion is a move, never a copy.
        use std::any::Any;
        let b: Box<dyn Any> = Box::new(v);
        match T::DTYPE {
            DType::F32 => CpuStorage::F32(CpuBuf::Owned(
                *b.downcast().expect("dtype tag matches type"),
            )),
            DType::F64 => CpuStorage::F64(CpuBuf::Owned(
                *b.downcast().expect("dtype tag matches type"),
            )),
            DType::F16 => CpuStorage::F16(CpuBuf::Owned(
                *b.downcast().expect("dtype tag matches type"),
            )),
            DType::BF16 => CpuStorage::BF16(CpuBuf::Owned(
                *b.downcast().expect("dtype tag matches type"),
            )),
            DType::I64 => CpuStorage::I64(CpuBuf::Owned(
                *b.downcast().expect("dtype tag matches type"),
            )),
            DType::U32 => CpuStorage::U32(CpuBuf::Owned(
                *b.downcast().expect("dtype tag matches type"),
            )),
            DType::U8 => CpuStorage::U8(CpuBuf::Owned(
                *b.downcast().expect("dtype tag matches type"),
            )),
        }
    }

    /// The elements selected by `layout`, converted to `T` (exact when `T` is the storage dtype).
    pub fn to_vec<T: WithDType>(&self, layout: &Layout) -> Vec<T> {
        with_all!(self, v => elements_as(v, layout))
    }

    fn full_f64(n: usize, value: f64, dtype: DType) -> CpuStorage {
        fn fill<T: WithDType>(n: usize, v: f64) -> Vec<T> {
            vec![T::from_f64(v); n]
        }
        match dtype {
            DType::F32 => CpuStorage::F32(CpuBuf::from(fill(n, value))),
            DType::F64 => CpuStorage::F64(CpuBuf::from(fill(n, value))),
            DType::F16 => CpuStorage::F16(CpuBuf::from(fill(n, value))),
            DType::BF16 => CpuStorage::BF16(CpuBuf::from(fill(n, value))),
            DType::I64 => CpuStorage::I64(CpuBuf::from(fill(n, value))),
            DType::U32 => CpuStorage::U32(CpuBuf::from(fill(n, value))),
            DType::U8 => CpuStorage::U8(CpuBuf::from(fill(n, value))),
        }
    }

    /// `n` copies of `value` converted to `dtype`.
    pub fn full(n: usize, value: f64, dtype: DType) -> CpuStorage {
        Self::full_f64(n, value, dtype)
    }
}

fn convert<T: WithDType, U: WithDType>(v: &[T], l: &Layout) -> Vec<U> {
    map1(v, l, |x| U::from_f64(x.to_f64()))
}

impl BackendStorage for CpuStorage {
    fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::I64(_) => DType::I64,
            CpuStorage::U32(_) => DType::U32,
            CpuStorage::U8(_) => DType::U8,
        }
    }

    fn device(&self) -> Device {
        Device::Cpu
    }
    fn elem_len(&self) -> usize {
        self.len()
    }

    fn to_cpu(&self) -> Result<CpuStorage> {
        Ok(self.clone())
    }

    fn zeros(shape: &Shape, dtype: DType, _device: Device) -> Result<Self> {
        Ok(Self::full_f64(shape.elem_count(), 0.0, dtype))
    }

    fn to_dtype(&self, layout: &Layout, dtype: DType) -> Result<Self> {
        if dtype == self.dtype() {
            return self.copy_strided(layout);
        }
        // f16/bf16 <-> f32 go through `half`'s direct conversions; the rest through f64.
        Ok(match (self, dtype) {
            (CpuStorage::F16(v), DType::F32) => {
                CpuStorage::F32(CpuBuf::from(map1(v, layout, |x| x.to_f32())))
            }
            (CpuStorage::BF16(v), DType::F32) => {
                CpuStorage::F32(CpuBuf::from(map1(v, layout, |x| x.to_f32())))
            }
            (CpuStorage::F32(v), DType::F16) => {
                CpuStorage::F16(CpuBuf::from(map1(v, layout, f16::from_f32)))
            }
            (CpuStorage::F32(v), DType::BF16) => {
                CpuStorage::BF16(CpuBuf::from(map1(v, layout, bf16::from_f32)))
            }
            (s, DType::F32) => with_all!(s, v => CpuStorage::F32(CpuBuf::from(convert(v, layout)))),
            (s, DType::F64) => with_all!(s, v => CpuStorage::F64(CpuBuf::from(convert(v, layout)))),
            (s, DType::F16) => with_all!(s, v => CpuStorage::F16(CpuBuf::from(convert(v, layout)))),
            (s, DType::BF16) => {
                with_all!(s, v => CpuStorage::BF16(CpuBuf::from(convert(v, layout))))
            }
            (s, DType::I64) => with_all!(s, v => CpuStorage::I64(CpuBuf::from(convert(v, layout)))),
            (s, DType::U32) => with_all!(s, v => CpuStorage::U32(CpuBuf::from(convert(v, layout)))),
            (s, DType::U8) => with_all!(s, v => CpuStorage::U8(CpuBuf::from(convert(v, layout)))),
        })
    }

    fn copy_strided(&self, layout: &Layout) -> Result<Self> {
        Ok(map_all!(self, v => copy_strided(v, layout)))
    }

    fn copy_into(&self, src_l: &Layout, dst: &mut Self, dst_l: &Layout) -> Result<()> {
        let op = "copy_into";
        same_shape(op, src_l, dst_l)?;
        with_pair!(op, self, dst, (s, d) => strided::combine_into(s, src_l, d, dst_l, |d, s| *d = s));
        Ok(())
    }

    fn add_into(&self, src_l: &Layout, dst: &mut Self, dst_l: &Layout) -> Result<()> {
        use elementwise::Arith;
        let op = "add_into";
        same_shape(op, src_l, dst_l)?;
        with_pair!(op, self, dst, (s, d) => strided::combine_into(s, src_l, d, dst_l, |d, s| *d = Arith::add(*d, s)));
        Ok(())
    }

    fn adam_step(&mut self, m: &mut Self, v: &mut Self, g: &Self, h: AdamHyper) -> Result<()> {
        optim::adam_step(self, m, v, g, h)
    }

    fn unary(&self, layout: &Layout, op: UnaryOp) -> Result<Self> {
        elementwise::unary(self, layout, op)
    }

    fn unary_grad(&self, l: &Layout, g: &Self, gl: &Layout, op: UnaryOp) -> Result<Self> {
        elementwise::unary_grad(self, l, g, gl, op)
    }

    fn binary(&self, l: &Layout, rhs: &Self, r: &Layout, op: BinaryOp) -> Result<Self> {
        elementwise::binary(self, l, rhs, r, op)
    }

    fn cmp(&self, l: &Layout, rhs: &Self, r: &Layout, op: CmpOp) -> Result<Self> {
        elementwise::cmp(self, l, rhs, r, op)
    }

    fn where_cond(
        &self,
        l: &Layout,
        on_true: &Self,
        t: &Layout,
        on_false: &Self,
        f: &Layout,
    ) -> Result<Self> {
        elementwise::where_cond(self, l, on_true, t, on_false, f)
    }

    fn reduce(&self, layout: &Layout, op: ReduceOp, dims: &[usize]) -> Result<Self> {
        reduce::reduce(self, layout, op, dims)
    }

    fn matmul(&self, l: &Layout, rhs: &Self, r: &Layout) -> Result<Self> {
        matmul::matmul(self, l, rhs, r)
    }

    fn index_select(&self, l: &Layout, ids: &Self, il: &Layout, dim: usize) -> Result<Self> {
        indexing::index_select(self, l, ids, il, dim)
    }

    fn gather(&self, l: &Layout, ids: &Self, il: &Layout, dim: usize) -> Result<Self> {
        indexing::gather(self, l, ids, il, dim)
    }

    fn scatter_add(
        &self,
        l: &Layout,
        ids: &Self,
        il: &Layout,
        src: &Self,
        sl: &Layout,
        dim: usize,
    ) -> Result<Self> {
        indexing::scatter_add(self, l, ids, il, src, sl, dim)
    }

    fn softmax_last(&self, layout: &Layout, log: bool) -> Result<Self> {
        rows::softmax_last(self, layout, log)
    }

    fn softmax_last_bwd(&self, l: &Layout, g: &Self, gl: &Layout, log: bool) -> Result<Self> {
        rows::softmax_last_bwd(self, l, g, gl, log)
    }

    fn norm_last(&self, layout: &Layout, eps: f64, rms: bool) -> Result<(Self, Self)> {
        rows::norm_last(self, layout, eps, rms)
    }

    fn norm_last_bwd(&self, rstd: &Self, g: &Self, gl: &Layout, rms: bool) -> Result<Self> {
        rows::norm_last_bwd(self, rstd, g, gl, rms)
    }

    fn attention_fwd(&self, k: &Self, v: &Self, dims: AttnDims) -> Result<(Self, Self)> {
        attention::attention_fwd(self, k, v, dims)
    }

    fn attention_bwd(
        &self,
        k: &Self,
        v: &Self,
        probs: &Self,
        g: &Self,
        dims: AttnDims,
    ) -> Result<(Self, Self, Self)> {
        attention::attention_bwd(self, k, v, probs, g, dims)
    }
}
