//! FlashAttention on the tensor cores (`kernels/flash.cu`): f16/bf16 operands with head dims
//! 64 or 128 (keys and values alike), causal or not, any lengths. The forward writes the
//! output and each row's logsumexp; nothing of size `t × s` is ever allocated. Other cases,
//! and every case when `RUSTYGRADIENTS_FLASH=0`, take the GEMM + softmax path in `matmul.rs`.
//!
//! What the forward saves for the backward is one buffer of the operands' dtype: a copy of
//! the output (for `rowsum(dO ∘ O)`), then each row's logsumexp as f32 (two elements each).

use std::sync::OnceLock;

use super::compile::Module;
use super::storage::{grid, sfx, CudaStorage, BLOCK};
use crate::backend::{AttnDims, BackendDevice, BackendStorage};
use crate::{DType, Result};

const THREADS: u32 = 128;
const BR: usize = 64;
const BC: usize = 64;

/// Whether the fused kernels run these attention sizes (see the module docs).
pub(super) fn applies(dtype: DType, d: &AttnDims) -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    let enabled =
        *ENABLED.get_or_init(|| std::env::var("RUSTYGRADIENTS_FLASH").map_or(true, |v| v != "0"));
    enabled
        && dtype.is_half()
        && d.d == d.dv
        && matches!(d.d, 64 | 128)
        && d.t > 0
        && d.s > 0
        && d.n <= 65535
}

/// Rows of the backward's query tiles for head dim `d` (the kernels' `BQ`).
fn bq(d: usize) -> usize {
    if d == 64 {
        64
    } else {
        32
    }
}

fn int(v: usize) -> i64 {
    v as i64
}

pub(super) fn forward(
    q: &CudaStorage,
    k: &CudaStorage,
    v: &CudaStorage,
    d: AttnDims,
) -> Result<(CudaStorage, CudaStorage)> {
    let op = "scaled_dot_product_attention";
    let dev = q.dev();
    let rows = d.n * d.t;
    let out = CudaStorage::alloc(dev, op, rows * d.d, q.dtype())?;
    let saved = CudaStorage::alloc(dev, op, rows * d.d + 2 * rows, q.dtype())?;
    let f = dev.function(
        op,
        Module::Flash,
        &format!("flash_fwd_{}_{}", sfx(q.dtype()), d.d),
    )?;
    let (qp, kp, vp, op_, sp, lp) = (
        q.ptr(0),
        k.ptr(0),
        v.ptr(0),
        out.ptr(0),
        saved.ptr(0),
        saved.ptr(rows * d.d),
    );
    let (t, s, sl2, causal) = (
        int(d.t),
        int(d.s),
        (d.scale * std::f64::consts::LOG2_E) as f32,
        d.causal as i32,
    );
    // The query tile and two (key, value) tile pairs, rows padded by 8 elements.
    let smem = ((BR + 4 * BC) * (d.d + 8) * 2) as u32;
    dev.launch_smem(
        op,
        &f,
        (d.t.div_ceil(BR) as u32, d.n as u32),
        THREADS,
        smem,
        &mut args![qp, kp, vp, op_, sp, lp, t, s, sl2, causal],
    )?;
    Ok((out, saved))
}

pub(super) fn backward(
    q: &CudaStorage,
    k: &CudaStorage,
    v: &CudaStorage,
    saved: &CudaStorage,
    g: &CudaStorage,
    d: AttnDims,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    let op = "scaled_dot_product_attention_backward";
    let dev = q.dev();
    let dtype = q.dtype();
    let rows = d.n * d.t;
    let name = |kernel: &str| format!("flash_{kernel}_{}_{}", sfx(dtype), d.d);
    // delta = rowsum(dO ∘ O), one warp per row.
    let delta = CudaStorage::alloc(dev, op, rows, DType::F32)?;
    {
        let f = dev.function(op, Module::Flash, &name("delta"))?;
        let (o, go, dl, r) = (saved.ptr(0), g.ptr(0), delta.ptr(0), int(rows));
        dev.launch(
            op,
            &f,
            rows.div_ceil(4) as u32,
            THREADS,
            &mut args![o, go, dl, r],
        )?;
    }
    let dq_acc = dev.zeros(rows * d.d, DType::F32)?;
    let dk = CudaStorage::alloc(dev, op, d.n * d.s * d.d, dtype)?;
    let dv = CudaStorage::alloc(dev, op, d.n * d.s * d.d, dtype)?;
    {
        let f = dev.function(op, Module::Flash, &name("bwd"))?;
        let bq = bq(d.d);
        // Keys and values, two (q, dO) tile pairs, dSᵀ, and two rows each of logsumexp and
        // delta.
        let smem =
            (2 * BC * (d.d + 8) * 2 + 4 * bq * (d.d + 8) * 2 + BC * (bq + 8) * 2 + 4 * bq * 4)
                as u32;
        let (qp, kp, vp, gp, lp, dl, dqp, dkp, dvp) = (
            q.ptr(0),
            k.ptr(0),
            v.ptr(0),
            g.ptr(0),
            saved.ptr(rows * d.d),
            delta.ptr(0),
            dq_acc.ptr(0),
            dk.ptr(0),
            dv.ptr(0),
        );
        let (t, s, scale, causal) = (int(d.t), int(d.s), d.scale as f32, d.causal as i32);
        dev.launch_smem(
            op,
            &f,
            (d.s.div_ceil(BC) as u32, d.n as u32),
            THREADS,
            smem,
            &mut args![qp, kp, vp, gp, lp, dl, dqp, dkp, dvp, t, s, scale, causal],
        )?;
    }
    let dq = CudaStorage::alloc(dev, op, rows * d.d, dtype)?;
    {
        let f = dev.function(op, Module::Flash, &format!("flash_dq_{}", sfx(dtype)))?;
        let n = rows * d.d;
        let (a, o, nn) = (dq_acc.ptr(0), dq.ptr(0), int(n));
        dev.launch(op, &f, grid(n), BLOCK, &mut args![a, o, nn])?;
    }
    Ok((dq, dk, dv))
}

/// Checks the elements `saved` must hold (an error, never a bad read, on a mismatch).
pub(super) fn saved_len_ok(saved: &CudaStorage, d: &AttnDims) -> bool {
    saved.elem_len() == d.n * d.t * d.d + 2 * d.n * d.t
}
