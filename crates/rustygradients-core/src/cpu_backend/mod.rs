//! The CPU backend: contiguous host vectors of each dtype and the kernels that read them through
//! strided layouts. Large elementwise work is split over rayon's threads.

mod amx;
mod attention;
#[cfg(feature = "cpu-blas")]
mod blas;
mod caches;
pub(crate) mod cross_entropy;
mod device;
mod elementwise;
mod gemv;
mod indexing;
mod lanes;
mod matmul;
mod optim;
mod reduce;
pub(crate) mod rows;
mod sgemm;
mod strided;
mod vec_math;

use half::{bf16, f16};

pub use device::CpuDevice;

pub(crate) use crate::host::{HostBuf, HostBuffer};

use crate::backend::{
    same_shape, AdamHyper, AttnDims, BackendStorage, BinaryOp, CmpOp, ReduceOp, UnaryOp,
};
use crate::{DType, Device, Error, Layout, Result, WithDType};

pub(crate) use strided::{copy_strided, map1};

/// Whether f32 matmuls multiply on AMX tiles when [`crate::set_matmul_allow_bf16`] allows it:
/// the CPU and OS run AMX and the kernels run AVX-512 code (not forced lower by `RG_CPU_ISA`).
pub(crate) fn amx_available() -> bool {
    sgemm::applies() && amx::usable()
}

/// Whether f32 matmuls multiply in bf16 on AMX tiles now: allowed and [`amx_available`].
pub(crate) fn amx_applies() -> bool {
    crate::matmul_allow_bf16() && amx_available()
}

/// The error for a float-only kernel given a storage of another dtype.
pub(crate) fn float_only(op: &'static str, s: &HostBuffer) -> Error {
    Error::UnsupportedDType {
        op,
        got: s.dtype(),
        expected: "a floating-point dtype",
    }
}

/// Runs `$body` (a `HostBuf`) for a floating-point storage, wrapping it in the same variant;
/// other dtypes are an error.
macro_rules! float_map {
    ($op:expr, $s:expr, $v:ident => $body:expr) => {
        match $s {
            HostBuffer::F32($v) => HostBuffer::F32($body),
            HostBuffer::F64($v) => HostBuffer::F64($body),
            HostBuffer::F16($v) => HostBuffer::F16($body),
            HostBuffer::BF16($v) => HostBuffer::BF16($body),
            other => return Err($crate::cpu_backend::float_only($op, other)),
        }
    };
}

/// Like `float_map!` for two storages of the same floating-point dtype.
macro_rules! float_map2 {
    ($op:expr, $a:expr, $b:expr, ($x:ident, $y:ident) => $body:expr) => {
        match ($a, $b) {
            (HostBuffer::F32($x), HostBuffer::F32($y)) => HostBuffer::F32($body),
            (HostBuffer::F64($x), HostBuffer::F64($y)) => HostBuffer::F64($body),
            (HostBuffer::F16($x), HostBuffer::F16($y)) => HostBuffer::F16($body),
            (HostBuffer::BF16($x), HostBuffer::BF16($y)) => HostBuffer::BF16($body),
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
pub(crate) use crate::host::{map_all, map_pair, with_all, with_pair};
pub(crate) use {float_map, float_map2};

fn convert<T: WithDType, U: WithDType>(v: &[T], l: &Layout) -> Vec<U> {
    map1(v, l, |x| U::from_f64(x.to_f64()))
}

impl BackendStorage for HostBuffer {
    fn dtype(&self) -> DType {
        HostBuffer::dtype(self)
    }

    fn device(&self) -> Device {
        Device::Cpu
    }
    fn elem_len(&self) -> usize {
        self.len()
    }

    fn to_host(&self, layout: &Layout) -> Result<HostBuffer> {
        self.copy_strided(layout)
    }

    fn to_dtype(&self, layout: &Layout, dtype: DType) -> Result<Self> {
        if dtype == self.dtype() {
            return self.copy_strided(layout);
        }
        // f16/bf16 <-> f32 go through `half`'s direct conversions; the rest through f64.
        Ok(match (self, dtype) {
            (HostBuffer::F16(v), DType::F32) => {
                HostBuffer::F32(HostBuf::from(map1(v, layout, |x| x.to_f32())))
            }
            (HostBuffer::BF16(v), DType::F32) => {
                HostBuffer::F32(HostBuf::from(map1(v, layout, |x| x.to_f32())))
            }
            (HostBuffer::F32(v), DType::F16) => {
                HostBuffer::F16(HostBuf::from(map1(v, layout, f16::from_f32)))
            }
            (HostBuffer::F32(v), DType::BF16) => {
                HostBuffer::BF16(HostBuf::from(map1(v, layout, bf16::from_f32)))
            }
            (s, DType::F32) => {
                with_all!(s, v => HostBuffer::F32(HostBuf::from(convert(v, layout))))
            }
            (s, DType::F64) => {
                with_all!(s, v => HostBuffer::F64(HostBuf::from(convert(v, layout))))
            }
            (s, DType::F16) => {
                with_all!(s, v => HostBuffer::F16(HostBuf::from(convert(v, layout))))
            }
            (s, DType::BF16) => {
                with_all!(s, v => HostBuffer::BF16(HostBuf::from(convert(v, layout))))
            }
            (s, DType::I64) => {
                with_all!(s, v => HostBuffer::I64(HostBuf::from(convert(v, layout))))
            }
            (s, DType::U32) => {
                with_all!(s, v => HostBuffer::U32(HostBuf::from(convert(v, layout))))
            }
            (s, DType::U8) => with_all!(s, v => HostBuffer::U8(HostBuf::from(convert(v, layout)))),
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

    fn cross_entropy_fwd(
        &self,
        l: &Layout,
        targets: &Self,
        tl: &Layout,
        ignore: Option<i64>,
    ) -> Result<(Self, Self)> {
        cross_entropy::cross_entropy_fwd(self, l, targets, tl, ignore)
    }

    fn cross_entropy_bwd(
        &self,
        targets: &Self,
        tl: &Layout,
        lse: &Self,
        g: &Self,
        ignore: Option<i64>,
    ) -> Result<Self> {
        cross_entropy::cross_entropy_bwd(self, targets, tl, lse, g, ignore)
    }

    fn attention_fwd(&self, k: &Self, v: &Self, dims: AttnDims) -> Result<(Self, Self)> {
        if dims.strided.is_some() {
            return Err(Error::InvalidArgument {
                op: "scaled_dot_product_attention",
                msg: "strided operands are a GPU FlashAttention layout".into(),
            });
        }
        attention::attention_fwd(self, k, v, dims)
    }

    fn attention_bwd(
        &self,
        k: &Self,
        v: &Self,
        _out: &Self,
        probs: &Self,
        g: &Self,
        dims: AttnDims,
    ) -> Result<(Self, Self, Self)> {
        attention::attention_bwd(self, k, v, probs, g, dims)
    }
}
