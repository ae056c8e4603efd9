//! FlashAttention on the tensor cores (`kernels/flash.cu`): f16/bf16 operands with head dims
//! 64 or 128 (keys and values alike), causal or not, any lengths, a positive scale. The
//! forward writes the output and each row's logsumexp; nothing of size `t × s` is ever
//! allocated. Other cases, and every case when `RUSTYGRADIENTS_FLASH=0`, take the GEMM +
//! softmax path in `matmul.rs`. Where cuDNN is installed, self-attention runs on its fused
//! kernels instead (`cudnn_attn.rs`), with the same inputs, results and saved state.
//!
//! What the forward saves for the backward is one buffer of the operands' dtype: a copy of
//! the output (for `rowsum(dO ∘ O)`), then each row's logsumexp as f32 (two elements each).
//!
//! Operands are either contiguous `(n, rows, d)` or, with [`AttnDims::strided`], strided
//! `(batch, heads, rows, d)` views read in place; the outputs are then `(batch, rows, heads,
//! d)`-major (see `Strided` in the kernels).

use std::sync::OnceLock;

use super::compile::Module;
use super::storage::{grid, sfx, CudaStorage, BLOCK};
use crate::backend::{AttnDims, BackendDevice, BackendStorage};
use crate::{DType, Result};

/// Keys per forward tile (the kernels' `FA_BC`).
const BC: usize = 64;

/// A forward tiling: `w` warps, each owning `m` 16-row query tiles.
#[derive(Clone, Copy)]
struct FwdTiles {
    w: usize,
    m: usize,
}

/// A backward tiling: `w` warps, each owning `k` 16-key tiles, over query tiles of `q` rows.
#[derive(Clone, Copy)]
struct BwdTiles {
    w: usize,
    k: usize,
    q: usize,
}

impl FwdTiles {
    fn rows(self) -> usize {
        16 * self.w * self.m
    }
    fn name(self, dtype: DType, d: usize) -> String {
        format!("flash_fwd_{}_{d}_w{}m{}", sfx(dtype), self.w, self.m)
    }
    /// The query tile and two (key, value) tile pairs, rows padded by 8 elements.
    fn smem(self, d: usize) -> u32 {
        ((self.rows() + 4 * BC) * (d + 8) * 2) as u32
    }
}

impl BwdTiles {
    fn keys(self) -> usize {
        16 * self.w * self.k
    }
    fn name(self, dtype: DType, d: usize) -> String {
        format!(
            "flash_bwd_{}_{d}_w{}k{}q{}",
            sfx(dtype),
            self.w,
            self.k,
            self.q
        )
    }
    /// Keys and values, two (q, dO) tile pairs, dSᵀ, and two rows each of logsumexp and delta.
    fn smem(self, d: usize) -> u32 {
        let (bk, bq) = (self.keys(), self.q);
        (2 * bk * (d + 8) * 2 + 4 * bq * (d + 8) * 2 + bk * (bq + 8) * 2 + 4 * bq * 4) as u32
    }
}

/// The tilings the kernels are instantiated for (`FLASH_KERNELS` in `flash.cu`), both head
/// dims.
const FWD: FwdTiles = FwdTiles { w: 4, m: 1 };
const BWD: BwdTiles = BwdTiles { w: 4, k: 1, q: 32 };

/// Whether the fused kernels run these attention sizes (see the module docs).
pub(crate) fn applies(dtype: DType, d: &AttnDims) -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    let enabled =
        *ENABLED.get_or_init(|| std::env::var("RUSTYGRADIENTS_FLASH").map_or(true, |v| v != "0"));
    enabled
        && dtype.is_half()
        && d.d == d.dv
        && matches!(d.d, 64 | 128)
        && d.t > 0
        && d.s > 0
        && d.t < i32::MAX as usize / 2
        && d.s < i32::MAX as usize / 2
        && d.n <= 65535
        // The kernels fold the scale into the softmax's maximum (see `flash.cu`).
        && d.scale > 0.0
        && d.scale.is_finite()
}

fn int(v: usize) -> i64 {
    v as i64
}

/// Mirrors `struct Strided` in the kernels: slice n = (n / heads, n % heads) starts at
/// `ptr + batch·sb + head·sh`, its rows `st` apart (elements).
#[repr(C)]
#[derive(Clone, Copy)]
struct Strided {
    ptr: u64,
    sb: i64,
    sh: i64,
    st: i64,
}

/// Heads per batch entry (1 for contiguous operands).
fn heads(d: &AttnDims) -> usize {
    d.strided.map_or(1, |s| s.heads)
}

/// An input operand: in place when strided, else contiguous `(n, rows, d)`.
fn input(x: &CudaStorage, at: Option<[usize; 4]>, rows: usize, d: usize) -> Strided {
    match at {
        Some([off, sb, sh, st]) => Strided {
            ptr: x.ptr(off),
            sb: int(sb),
            sh: int(sh),
            st: int(st),
        },
        None => Strided {
            ptr: x.ptr(0),
            sb: int(rows * d),
            sh: 0,
            st: int(d),
        },
    }
}

/// An output of `rows` rows per slice: `(batch, rows, heads, d)`-major (which for one head is
/// contiguous `(n, rows, d)`).
fn output(ptr: u64, heads: usize, rows: usize, d: usize) -> Strided {
    Strided {
        ptr,
        sb: int(rows * heads * d),
        sh: int(d),
        st: int(heads * d),
    }
}

pub(super) fn forward(
    q: &CudaStorage,
    k: &CudaStorage,
    v: &CudaStorage,
    d: AttnDims,
) -> Result<(CudaStorage, CudaStorage)> {
    if let Some(r) = super::cudnn_attn::forward(q, k, v, &d)? {
        return Ok(r);
    }
    let op = "scaled_dot_product_attention";
    let dev = q.dev();
    let rows = d.n * d.t;
    let out = CudaStorage::alloc(dev, op, rows * d.d, q.dtype())?;
    // Each row's logsumexp (f32, two elements of the 16-bit dtype).
    let saved = CudaStorage::alloc(dev, op, 2 * rows, q.dtype())?;
    let tiles = FWD;
    let f = dev.function(op, Module::Flash, &tiles.name(q.dtype(), d.d))?;
    let h = heads(&d);
    let at = |f: fn(&crate::backend::AttnStrides) -> [usize; 4]| d.strided.as_ref().map(f);
    let sq = input(q, at(|s| s.q), d.t, d.d);
    let sk = input(k, at(|s| s.k), d.s, d.d);
    let sv = input(v, at(|s| s.v), d.s, d.d);
    let so = output(out.ptr(0), h, d.t, d.d);
    // No second copy of the output: the backward reads the output itself.
    let ss = output(0, h, d.t, d.d);
    let lp = saved.ptr(0);
    let (hh, t, s, sl2, causal) = (
        int(h),
        int(d.t),
        int(d.s),
        (d.scale * std::f64::consts::LOG2_E) as f32,
        d.causal as i32,
    );
    dev.launch_smem(
        op,
        &f,
        (d.t.div_ceil(tiles.rows()) as u32, d.n as u32),
        32 * tiles.w as u32,
        tiles.smem(d.d),
        &mut args![sq, sk, sv, so, ss, lp, hh, t, s, sl2, causal],
    )?;
    Ok((out, saved))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    q: &CudaStorage,
    k: &CudaStorage,
    v: &CudaStorage,
    out: &CudaStorage,
    saved: &CudaStorage,
    g: &CudaStorage,
    d: AttnDims,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    if let Some(r) = super::cudnn_attn::backward(q, k, v, out, saved, g, &d)? {
        return Ok(r);
    }
    let op = "scaled_dot_product_attention_backward";
    let dev = q.dev();
    let dtype = q.dtype();
    let rows = d.n * d.t;
    let h = heads(&d);
    let at = |f: fn(&crate::backend::AttnStrides) -> [usize; 4]| d.strided.as_ref().map(f);
    // The output's gradient has the output's layout.
    let sg = output(g.ptr(0), h, d.t, d.d);
    // delta = rowsum(dO ∘ O), one warp per row.
    let delta = CudaStorage::alloc(dev, op, rows, DType::F32)?;
    {
        let name = format!("flash_delta_{}_{}", sfx(dtype), d.d);
        let f = dev.function(op, Module::Flash, &name)?;
        let so = output(out.ptr(0), h, d.t, d.d);
        let (dl, hh, t, r) = (delta.ptr(0), int(h), int(d.t), int(rows));
        dev.launch(
            op,
            &f,
            rows.div_ceil(4) as u32,
            128,
            &mut args![so, sg, dl, hh, t, r],
        )?;
    }
    let dq_acc = dev.zeros(rows * d.d, DType::F32)?;
    let dk = CudaStorage::alloc(dev, op, d.n * d.s * d.d, dtype)?;
    let dv = CudaStorage::alloc(dev, op, d.n * d.s * d.d, dtype)?;
    {
        let tiles = BWD;
        let f = dev.function(op, Module::Flash, &tiles.name(dtype, d.d))?;
        let sq = input(q, at(|s| s.q), d.t, d.d);
        let sk = input(k, at(|s| s.k), d.s, d.d);
        let sv = input(v, at(|s| s.v), d.s, d.d);
        let sdq = output(dq_acc.ptr(0), h, d.t, d.d);
        let sdk = output(dk.ptr(0), h, d.s, d.d);
        let sdv = output(dv.ptr(0), h, d.s, d.d);
        let (lp, dl) = (saved.ptr(0), delta.ptr(0));
        let (hh, t, s, scale, causal) =
            (int(h), int(d.t), int(d.s), d.scale as f32, d.causal as i32);
        dev.launch_smem(
            op,
            &f,
            (d.s.div_ceil(tiles.keys()) as u32, d.n as u32),
            32 * tiles.w as u32,
            tiles.smem(d.d),
            &mut args![sq, sk, sv, sg, sdq, sdk, sdv, lp, dl, hh, t, s, scale, causal],
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
    saved.elem_len() == 2 * d.n * d.t
}
