//! Matmul through cuBLAS (`cublasGemmStridedBatchedEx`) and attention built on it: two batched
//! GEMMs around the fused (causal) softmax kernel. Operands whose matrices are row- or
//! column-major with one batch stride (0 for a broadcast batch) are passed as they are; others
//! are copied to contiguous first. f16/bf16 accumulate in f32; f32 uses TF32 only when
//! [`crate::set_matmul_allow_tf32`] allows it.

use std::ffi::c_void;

use cudarc::cublas::{result as blas, sys as bsys};

use super::storage::CudaStorage;
use crate::backend::{AttnDims, BackendStorage};
use crate::{DType, Error, Layout, Result, Shape};

/// One GEMM operand as cuBLAS sees it (column-major): its address, whether it is transposed,
/// its leading dimension and the stride between batch entries.
#[derive(Clone, Copy)]
struct Operand {
    ptr: u64,
    trans: bool,
    ld: i64,
    stride: i64,
}

/// Describes the `[.., r, c]` matrices of `l` without a copy, if cuBLAS can read them.
fn describe(l: &Layout) -> Option<(bool, i64, i64)> {
    let rank = l.dims().len();
    let (r, c) = (l.dims()[rank - 2], l.dims()[rank - 1]);
    let (s0, s1) = (l.strides()[rank - 2], l.strides()[rank - 1]);
    // Row-major: [r, c] with ld = s0; as column-major that is the transpose, so `trans` is
    // false for the row-major case in the swapped (Cᵀ = Bᵀ Aᵀ) formulation below.
    let (trans, ld) = if c == 1 || s1 == 1 {
        (false, if r == 1 { c.max(1) } else { s0 })
    } else if r == 1 || s0 == 1 {
        (true, if c == 1 { r.max(1) } else { s1 })
    } else {
        return None;
    };
    let need = if trans { r } else { c };
    if ld < need.max(1) {
        return None;
    }
    // The batch dims must collapse into one stride.
    let mut stride: Option<usize> = None;
    let mut span = 1usize;
    for d in (0..rank - 2).rev() {
        let (n, s) = (l.dims()[d], l.strides()[d]);
        if n == 1 {
            continue;
        }
        match stride {
            None => stride = Some(s),
            Some(inner) => {
                if s != inner * span {
                    return None;
                }
            }
        }
        span *= n;
    }
    Some((trans, ld as i64, stride.unwrap_or(0) as i64))
}

/// `out[b] = alpha · a[b] @ bm[b]` (row-major `m×k` times `k×n`) for `batch` entries, into
/// contiguous `out`.
#[allow(clippy::too_many_arguments)]
fn gemm(
    s: &CudaStorage,
    op: &'static str,
    a: Operand,
    b: Operand,
    m: usize,
    n: usize,
    k: usize,
    batch: usize,
    alpha: f64,
    out: u64,
) -> Result<()> {
    let dev = s.dev();
    let int = |v: usize| {
        i32::try_from(v)
            .map_err(|_| dev.error(op, format!("size {v} is beyond cuBLAS's 32-bit sizes")))
    };
    let (mi, ni, ki, bi) = (int(m)?, int(n)?, int(k)?, int(batch)?);
    let (dtype, compute) = match s.dtype() {
        DType::F32 if crate::matmul_allow_tf32() => (
            bsys::cudaDataType::CUDA_R_32F,
            bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
        ),
        DType::F32 => (
            bsys::cudaDataType::CUDA_R_32F,
            bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        ),
        DType::F64 => (
            bsys::cudaDataType::CUDA_R_64F,
            bsys::cublasComputeType_t::CUBLAS_COMPUTE_64F,
        ),
        DType::F16 => (
            bsys::cudaDataType::CUDA_R_16F,
            bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        ),
        DType::BF16 => (
            bsys::cudaDataType::CUDA_R_16BF,
            bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        ),
        other => {
            return Err(Error::UnsupportedDType {
                op,
                got: other,
                expected: "a floating-point dtype (cuBLAS has no integer matmul here)",
            })
        }
    };
    let (alpha32, beta32, alpha64, beta64) = (alpha as f32, 0f32, alpha, 0f64);
    let (pa, pb): (*const c_void, *const c_void) = if s.dtype() == DType::F64 {
        (&alpha64 as *const f64 as _, &beta64 as *const f64 as _)
    } else {
        (&alpha32 as *const f32 as _, &beta32 as *const f32 as _)
    };
    let t = |x: bool| {
        if x {
            bsys::cublasOperation_t::CUBLAS_OP_T
        } else {
            bsys::cublasOperation_t::CUBLAS_OP_N
        }
    };
    let blas_handle = dev.0.blas.lock().unwrap_or_else(|e| e.into_inner());
    let name = || format!("cublas gemm {:?} {batch}x({m}x{k})x({k}x{n})", s.dtype());
    // Row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ: B is cuBLAS's first operand.
    // SAFETY: the operands and `out` are live buffers of this device holding the sizes and
    // strides described; alpha/beta point at host scalars of the compute type.
    dev.profiled(name, || unsafe {
        blas::gemm_strided_batched_ex(
            *blas_handle.handle(),
            t(b.trans),
            t(a.trans),
            ni,
            mi,
            ki,
            pa,
            b.ptr as *const c_void,
            dtype,
            b.ld as i32,
            b.stride,
            a.ptr as *const c_void,
            dtype,
            a.ld as i32,
            a.stride,
            pb,
            out as *mut c_void,
            dtype,
            ni,
            (m * n) as i64,
            bi,
            compute,
            bsys::cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
        )
        .map_err(|e| {
            dev.error(
                op,
                format!(
                    "cuBLAS gemm of {batch}×({m}×{k})·({k}×{n}) in {:?}: {e:?}",
                    s.dtype()
                ),
            )
        })
    })
}

/// An operand for `l`, copying the data to contiguous when cuBLAS cannot read it in place.
fn operand(s: &CudaStorage, l: &Layout, keep: &mut Option<CudaStorage>) -> Result<Operand> {
    let elem = s.dtype().size_in_bytes() as u64;
    if let Some((trans, ld, stride)) = describe(l) {
        return Ok(Operand {
            ptr: s.ptr(0) + l.offset() as u64 * elem,
            trans,
            ld,
            stride,
        });
    }
    let dense = keep.insert(s.copy_strided(l)?);
    let dl = Layout::contiguous(l.shape().clone());
    let (trans, ld, stride) = describe(&dl).expect("a contiguous layout is row-major");
    Ok(Operand {
        ptr: dense.ptr(0),
        trans,
        ld,
        stride,
    })
}

pub(super) fn matmul(
    a: &CudaStorage,
    l: &Layout,
    b: &CudaStorage,
    r: &Layout,
) -> Result<CudaStorage> {
    let op = "matmul";
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch {
            op,
            lhs: a.dtype(),
            rhs: b.dtype(),
        });
    }
    let rank = l.dims().len();
    let (m, k, n) = (l.dims()[rank - 2], l.dims()[rank - 1], r.dims()[rank - 1]);
    let batch: usize = l.dims()[..rank - 2].iter().product();
    let mut dims = l.dims()[..rank - 2].to_vec();
    dims.extend([m, n]);
    let shape = Shape::new(dims);
    let dev = a.dev();
    if k == 0 {
        return crate::backend::BackendDevice::zeros(dev, shape.elem_count(), a.dtype());
    }
    let out = CudaStorage::alloc(dev, op, shape.elem_count(), a.dtype())?;
    if shape.elem_count() == 0 {
        return Ok(out);
    }
    let (mut ka, mut kb) = (None, None);
    let (oa, ob) = (operand(a, l, &mut ka)?, operand(b, r, &mut kb)?);
    gemm(a, op, oa, ob, m, n, k, batch, 1.0, out.ptr(0))?;
    Ok(out)
}

/// Row-major `[rows, cols]` matrices, contiguous, one after another.
fn dense(s: &CudaStorage, cols: usize, rows: usize) -> Operand {
    Operand {
        ptr: s.ptr(0),
        trans: false,
        ld: cols as i64,
        stride: (rows * cols) as i64,
    }
}

/// The transposes of [`dense`] matrices, read in place.
fn dense_t(s: &CudaStorage, cols: usize, rows: usize) -> Operand {
    Operand {
        trans: true,
        ..dense(s, cols, rows)
    }
}

pub(super) fn attention_fwd(
    q: &CudaStorage,
    k: &CudaStorage,
    v: &CudaStorage,
    d: AttnDims,
) -> Result<(CudaStorage, CudaStorage)> {
    if super::flash::applies(q.dtype(), &d) {
        return super::flash::forward(q, k, v, d);
    }
    let op = "scaled_dot_product_attention";
    let dev = q.dev();
    let causal_t = if d.causal { d.t } else { 0 };
    // scores = scale · q kᵀ, then the causal softmax in place, then out = probs v. Only each
    // row's logsumexp is kept: the backward recomputes the probabilities with one more GEMM.
    let probs = CudaStorage::alloc(dev, op, d.n * d.t * d.s, q.dtype())?;
    gemm(
        q,
        op,
        dense(q, d.d, d.t),
        dense_t(k, d.d, d.s),
        d.t,
        d.s,
        d.d,
        d.n,
        d.scale,
        probs.ptr(0),
    )?;
    let lse = super::rows::softmax_in_place(&probs, d.n * d.t * d.s, d.s, causal_t)?;
    let out = CudaStorage::alloc(dev, op, d.n * d.t * d.dv, q.dtype())?;
    gemm(
        q,
        op,
        dense(&probs, d.s, d.t),
        dense(v, d.dv, d.s),
        d.t,
        d.dv,
        d.s,
        d.n,
        1.0,
        out.ptr(0),
    )?;
    Ok((out, lse))
}

pub(super) fn attention_bwd(
    q: &CudaStorage,
    k: &CudaStorage,
    v: &CudaStorage,
    out: &CudaStorage,
    lse: &CudaStorage,
    g: &CudaStorage,
    d: AttnDims,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    let op = "scaled_dot_product_attention_backward";
    if super::flash::applies(q.dtype(), &d) {
        if !super::flash::saved_len_ok(lse, &d) {
            return Err(q
                .dev()
                .error(op, "the forward's saved state does not match these sizes"));
        }
        return super::flash::backward(q, k, v, out, lse, g, d);
    }
    let dev = q.dev();
    let causal_t = if d.causal { d.t } else { 0 };
    // p = softmax(scale · q kᵀ) again, from the saved logsumexp; then
    // dv = pᵀ g;  dp = g vᵀ;  ds = softmax'(p, dp);  dq = scale · ds k;  dk = scale · dsᵀ q.
    let probs = CudaStorage::alloc(dev, op, d.n * d.t * d.s, q.dtype())?;
    gemm(
        q,
        op,
        dense(q, d.d, d.t),
        dense_t(k, d.d, d.s),
        d.t,
        d.s,
        d.d,
        d.n,
        d.scale,
        probs.ptr(0),
    )?;
    super::rows::probs_from_lse(&probs, lse, d.n * d.t * d.s, d.s, causal_t)?;
    let dv = CudaStorage::alloc(dev, op, d.n * d.s * d.dv, q.dtype())?;
    gemm(
        q,
        op,
        dense_t(&probs, d.s, d.t),
        dense(g, d.dv, d.t),
        d.s,
        d.dv,
        d.t,
        d.n,
        1.0,
        dv.ptr(0),
    )?;
    let dp = CudaStorage::alloc(dev, op, d.n * d.t * d.s, q.dtype())?;
    gemm(
        q,
        op,
        dense(g, d.dv, d.t),
        dense_t(v, d.dv, d.s),
        d.t,
        d.s,
        d.dv,
        d.n,
        1.0,
        dp.ptr(0),
    )?;
    let ds = super::rows::softmax_bwd(&probs, 0, &dp, 0, d.n * d.t * d.s, d.s, false)?;
    drop((dp, probs));
    let dq = CudaStorage::alloc(dev, op, d.n * d.t * d.d, q.dtype())?;
    gemm(
        q,
        op,
        dense(&ds, d.s, d.t),
        dense(k, d.d, d.s),
        d.t,
        d.d,
        d.s,
        d.n,
        d.scale,
        dq.ptr(0),
    )?;
    let dk = CudaStorage::alloc(dev, op, d.n * d.s * d.d, q.dtype())?;
    gemm(
        q,
        op,
        dense_t(&ds, d.s, d.t),
        dense(q, d.d, d.t),
        d.s,
        d.d,
        d.t,
        d.n,
        d.scale,
        dk.ptr(0),
    )?;
    Ok((dq, dk, dv))
}
