//! Row kernels over the last dim of contiguous tensors: softmax (with attention's causal mask),
//! layer/RMS normalisation and fused cross-entropy, forward and backward. One block per row.

use super::compile::Module;
use super::storage::{float_only, row_block, sfx, CudaStorage};
use crate::backend::BackendStorage;
use crate::{DType, Error, Result};

/// The widest row the one-warp-per-row kernels hold in registers (`32 × WARP_MAX`).
const WARP_ROW_MAX: usize = 1024;

/// Blocks of 8 warps for one row per warp.
fn warp_blocks(s: &CudaStorage, op: &'static str, rows: usize) -> Result<u32> {
    blocks(s, op, rows.div_ceil(8))
}

/// Blocks for `rows` rows.
fn blocks(s: &CudaStorage, op: &'static str, rows: usize) -> Result<u32> {
    u32::try_from(rows).map_err(|_| {
        s.dev()
            .error(op, format!("{rows} rows are more than one launch holds"))
    })
}

/// Softmax over rows of `w` of the `n` elements from `off`; `causal_t > 0` masks row `i` of
/// each `(causal_t, w)` slice to its first `i % causal_t + 1` keys.
pub(super) fn softmax(
    x: &CudaStorage,
    off: usize,
    n: usize,
    w: usize,
    log: bool,
    causal_t: usize,
) -> Result<CudaStorage> {
    let op = if log { "log_softmax" } else { "softmax" };
    float_only(op, x.dtype())?;
    let dev = x.dev();
    let out = CudaStorage::alloc(dev, op, n, x.dtype())?;
    if n == 0 || w == 0 {
        return Ok(out);
    }
    if w <= WARP_ROW_MAX {
        let f = dev.function(
            op,
            Module::Rows,
            &format!("softmax_warp_{}", sfx(x.dtype())),
        )?;
        let (xp, yp, rows, ww, lg, ct, no_lse) = (
            x.ptr(off),
            out.ptr(0),
            (n / w) as i64,
            w as i64,
            log as i32,
            causal_t as i64,
            0u64,
        );
        dev.launch(
            op,
            &f,
            warp_blocks(x, op, n / w)?,
            256,
            &mut args![xp, yp, rows, ww, lg, ct, no_lse],
        )?;
        return Ok(out);
    }
    let f = dev.function(op, Module::Rows, &format!("softmax_{}", sfx(x.dtype())))?;
    let (xp, yp, ww, lg, ct, no_lse) = (
        x.ptr(off),
        out.ptr(0),
        w as i64,
        log as i32,
        causal_t as i64,
        0u64,
    );
    dev.launch(
        op,
        &f,
        blocks(x, op, n / w)?,
        row_block(w),
        &mut args![xp, yp, ww, lg, ct, no_lse],
    )?;
    Ok(out)
}

/// Attention's form, in place: the `n` scores (rows of `w`) become probabilities, and each
/// row's logsumexp is returned (f32; f64 for f64).
pub(super) fn softmax_in_place(
    s: &CudaStorage,
    n: usize,
    w: usize,
    causal_t: usize,
) -> Result<CudaStorage> {
    let op = "scaled_dot_product_attention";
    let dev = s.dev();
    let rows = n / w;
    let lse = CudaStorage::alloc(dev, op, rows, lse_dtype(s.dtype()))?;
    if w <= WARP_ROW_MAX {
        let f = dev.function(
            op,
            Module::Rows,
            &format!("softmax_warp_{}", sfx(s.dtype())),
        )?;
        let (p, nr, ww, lg, ct, lp) = (
            s.ptr(0),
            rows as i64,
            w as i64,
            0i32,
            causal_t as i64,
            lse.ptr(0),
        );
        dev.launch(
            op,
            &f,
            warp_blocks(s, op, rows)?,
            256,
            &mut args![p, p, nr, ww, lg, ct, lp],
        )?;
        return Ok(lse);
    }
    let f = dev.function(op, Module::Rows, &format!("softmax_{}", sfx(s.dtype())))?;
    let (p, ww, lg, ct, lp) = (s.ptr(0), w as i64, 0i32, causal_t as i64, lse.ptr(0));
    dev.launch(
        op,
        &f,
        blocks(s, op, rows)?,
        row_block(w),
        &mut args![p, p, ww, lg, ct, lp],
    )?;
    Ok(lse)
}

/// The inverse for attention's backward: the scores (in place) become probabilities again,
/// from the forward's logsumexp.
pub(super) fn probs_from_lse(
    s: &CudaStorage,
    lse: &CudaStorage,
    n: usize,
    w: usize,
    causal_t: usize,
) -> Result<()> {
    let op = "scaled_dot_product_attention_backward";
    let dev = s.dev();
    let f = dev.function(
        op,
        Module::Rows,
        &format!("probs_from_lse_{}", sfx(s.dtype())),
    )?;
    let (p, lp, nn, ww, ct) = (s.ptr(0), lse.ptr(0), n as i64, w as i64, causal_t as i64);
    dev.launch(
        op,
        &f,
        super::storage::grid(n),
        super::storage::BLOCK,
        &mut args![p, lp, nn, ww, ct],
    )
}

pub(super) fn softmax_bwd(
    y: &CudaStorage,
    yo: usize,
    g: &CudaStorage,
    go: usize,
    n: usize,
    w: usize,
    log: bool,
) -> Result<CudaStorage> {
    let op = "softmax_backward";
    float_only(op, y.dtype())?;
    if y.dtype() != g.dtype() {
        return Err(Error::DTypeMismatch {
            op,
            lhs: y.dtype(),
            rhs: g.dtype(),
        });
    }
    let dev = y.dev();
    let out = CudaStorage::alloc(dev, op, n, y.dtype())?;
    if n == 0 || w == 0 {
        return Ok(out);
    }
    if w <= WARP_ROW_MAX {
        let f = dev.function(
            op,
            Module::Rows,
            &format!("softmax_bwd_warp_{}", sfx(y.dtype())),
        )?;
        let (yp, gp, o, rows, ww, lg) = (
            y.ptr(yo),
            g.ptr(go),
            out.ptr(0),
            (n / w) as i64,
            w as i64,
            log as i32,
        );
        dev.launch(
            op,
            &f,
            warp_blocks(y, op, n / w)?,
            256,
            &mut args![yp, gp, o, rows, ww, lg],
        )?;
        return Ok(out);
    }
    let f = dev.function(op, Module::Rows, &format!("softmax_bwd_{}", sfx(y.dtype())))?;
    let (yp, gp, o, ww, lg) = (y.ptr(yo), g.ptr(go), out.ptr(0), w as i64, log as i32);
    dev.launch(
        op,
        &f,
        blocks(y, op, n / w)?,
        row_block(w),
        &mut args![yp, gp, o, ww, lg],
    )?;
    Ok(out)
}

pub(super) fn norm(
    x: &CudaStorage,
    off: usize,
    n: usize,
    w: usize,
    eps: f64,
    rms: bool,
) -> Result<(CudaStorage, CudaStorage)> {
    let op = if rms { "rms_norm" } else { "layer_norm" };
    float_only(op, x.dtype())?;
    let dev = x.dev();
    let rows = n.checked_div(w).unwrap_or(0);
    let xhat = CudaStorage::alloc(dev, op, n, x.dtype())?;
    let rstd = CudaStorage::alloc(dev, op, rows, x.dtype())?;
    if rows == 0 {
        return Ok((xhat, rstd));
    }
    let f = dev.function(op, Module::Rows, &format!("norm_{}", sfx(x.dtype())))?;
    let (xp, hp, rp, ww, r) = (x.ptr(off), xhat.ptr(0), rstd.ptr(0), w as i64, rms as i32);
    dev.launch(
        op,
        &f,
        blocks(x, op, rows)?,
        row_block(w),
        &mut args![xp, hp, rp, ww, eps, r],
    )?;
    Ok((xhat, rstd))
}

pub(super) fn norm_bwd(
    xhat: &CudaStorage,
    rstd: &CudaStorage,
    g: &CudaStorage,
    go: usize,
    n: usize,
    w: usize,
    rms: bool,
) -> Result<CudaStorage> {
    let op = "layer_norm_backward";
    if xhat.dtype() != g.dtype() {
        return Err(Error::DTypeMismatch {
            op,
            lhs: xhat.dtype(),
            rhs: g.dtype(),
        });
    }
    let dev = xhat.dev();
    let out = CudaStorage::alloc(dev, op, n, xhat.dtype())?;
    let rows = n.checked_div(w).unwrap_or(0);
    if rows == 0 {
        return Ok(out);
    }
    let f = dev.function(op, Module::Rows, &format!("norm_bwd_{}", sfx(xhat.dtype())))?;
    let (hp, rp, gp, o, ww, r) = (
        xhat.ptr(0),
        rstd.ptr(0),
        g.ptr(go),
        out.ptr(0),
        w as i64,
        rms as i32,
    );
    dev.launch(
        op,
        &f,
        blocks(xhat, op, rows)?,
        row_block(w),
        &mut args![hp, rp, gp, o, ww, r],
    )?;
    Ok(out)
}

/// The dtype cross-entropy keeps each row's logsumexp in.
fn lse_dtype(d: DType) -> DType {
    if d == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

pub(super) fn cross_entropy_fwd(
    x: &CudaStorage,
    off: usize,
    n: usize,
    c: usize,
    t: &CudaStorage,
    ignore: Option<i64>,
) -> Result<(CudaStorage, CudaStorage)> {
    let op = "cross_entropy";
    float_only(op, x.dtype())?;
    let dev = x.dev();
    let nll = CudaStorage::alloc(dev, op, n, lse_dtype(x.dtype()))?;
    let lse = CudaStorage::alloc(dev, op, n, lse_dtype(x.dtype()))?;
    if n == 0 {
        return Ok((nll, lse));
    }
    if c == 0 {
        return Err(Error::IndexOutOfRange {
            op,
            index: 0,
            size: 0,
        });
    }
    let f = dev.function(op, Module::Rows, &format!("ce_fwd_{}", sfx(x.dtype())))?;
    let (xp, tp, np, lp, cc) = (x.ptr(off), t.ptr(0), nll.ptr(0), lse.ptr(0), c as i64);
    let (ig, has, err) = (ignore.unwrap_or(0), ignore.is_some() as i32, dev.0.err);
    dev.launch(
        op,
        &f,
        blocks(x, op, n)?,
        row_block(c),
        &mut args![xp, tp, np, lp, cc, ig, has, err],
    )?;
    Ok((nll, lse))
}

pub(super) fn cross_entropy_bwd(
    x: &CudaStorage,
    t: &CudaStorage,
    lse: &CudaStorage,
    g: &CudaStorage,
    ignore: Option<i64>,
) -> Result<CudaStorage> {
    let out = CudaStorage::alloc(x.dev(), "cross_entropy_backward", x.elem_len(), x.dtype())?;
    cross_entropy_bwd_into(x, t, lse, g, ignore, out.ptr(0))?;
    Ok(out)
}

/// The gradient of the logits `x` written at `out`, which may be `x` itself: each element is
/// read once, by the thread that then writes its gradient.
pub(super) fn cross_entropy_bwd_into(
    x: &CudaStorage,
    t: &CudaStorage,
    lse: &CudaStorage,
    g: &CudaStorage,
    ignore: Option<i64>,
    out: u64,
) -> Result<()> {
    let op = "cross_entropy_backward";
    float_only(op, x.dtype())?;
    let dev = x.dev();
    let n = t.elem_len();
    let c = x.elem_len().checked_div(n).unwrap_or(0);
    if n == 0 || c == 0 {
        return Ok(());
    }
    let f = dev.function(op, Module::Rows, &format!("ce_bwd_{}", sfx(x.dtype())))?;
    let (xp, tp, lp, gp, o, cc) = (x.ptr(0), t.ptr(0), lse.ptr(0), g.ptr(0), out, c as i64);
    let (ig, has, err) = (ignore.unwrap_or(0), ignore.is_some() as i32, dev.0.err);
    dev.launch(
        op,
        &f,
        blocks(x, op, n)?,
        row_block(c),
        &mut args![xp, tp, lp, gp, o, cc, ig, has, err],
    )?;
    Ok(())
}

/// The widest row (in bytes) `ce_fwd_grad_smem` keeps in shared memory: two blocks per SM of a
/// Hopper GPU (228 KiB) fit with it, GPT-2's bf16 vocabulary row (98.25 KiB) among them.
const CE_SMEM_ROW: usize = 112 * 1024;
/// That kernel's threads per block.
const CE_SMEM_THREADS: u32 = 512;

/// [`cross_entropy_fwd`] for logits whose memory nothing else reads: the losses, and the rows
/// of `x` overwritten by their gradient at output gradient `scale` (see `ce_fwd_grad_impl`).
pub(super) fn cross_entropy_fwd_grad(
    x: &CudaStorage,
    n: usize,
    c: usize,
    t: &CudaStorage,
    scale: f64,
    ignore: Option<i64>,
) -> Result<CudaStorage> {
    let op = "cross_entropy";
    float_only(op, x.dtype())?;
    let dev = x.dev();
    let nll = CudaStorage::alloc(dev, op, n, lse_dtype(x.dtype()))?;
    if n == 0 {
        return Ok(nll);
    }
    if c == 0 {
        return Err(Error::IndexOutOfRange {
            op,
            index: 0,
            size: 0,
        });
    }
    // Rows of whole 16-byte packs that two blocks per SM can hold in shared memory are read
    // from global memory once; others are read twice.
    let bytes = c * x.dtype().size_in_bytes();
    let (name, block, smem) =
        if bytes.is_multiple_of(16) && x.ptr(0).is_multiple_of(16) && bytes <= CE_SMEM_ROW {
            ("ce_fwd_grad_smem", CE_SMEM_THREADS, bytes as u32)
        } else {
            ("ce_fwd_grad", row_block(c), 0)
        };
    let f = dev.function(op, Module::Rows, &format!("{name}_{}", sfx(x.dtype())))?;
    let (xp, tp, np, cc) = (x.ptr(0), t.ptr(0), nll.ptr(0), c as i64);
    let (ig, has, err) = (ignore.unwrap_or(0), ignore.is_some() as i32, dev.0.err);
    let grid = (blocks(x, op, n)?, 1);
    if x.dtype() == DType::F64 {
        let s = scale;
        let a = &mut args![xp, tp, np, cc, s, ig, has, err];
        dev.launch_smem(op, &f, grid, block, smem, a)?;
    } else {
        let s = scale as f32;
        let a = &mut args![xp, tp, np, cc, s, ig, has, err];
        dev.launch_smem(op, &f, grid, block, smem, a)?;
    }
    Ok(nll)
}

/// Brings the gradient rows [`cross_entropy_fwd_grad`] wrote at `scale` to the contiguous
/// `(N,)` output gradient `g`, in place; rows where `g` is `scale` are not touched.
pub(super) fn cross_entropy_grad_rescale(
    d: &CudaStorage,
    g: &CudaStorage,
    scale: f64,
) -> Result<()> {
    let op = "cross_entropy_backward";
    let dev = d.dev();
    if g.dtype() != lse_dtype(d.dtype()) {
        return Err(Error::DTypeMismatch {
            op,
            lhs: d.dtype(),
            rhs: g.dtype(),
        });
    }
    let n = g.elem_len();
    let c = d.elem_len().checked_div(n).unwrap_or(0);
    if n == 0 || c == 0 {
        return Ok(());
    }
    let f = dev.function(
        op,
        Module::Rows,
        &format!("ce_grad_rescale_{}", sfx(d.dtype())),
    )?;
    let (dp, gp, rows, cc) = (d.ptr(0), g.ptr(0), n as i64, c as i64);
    let grid = blocks(d, op, n.min(LN_BWD_BLOCKS))?;
    if d.dtype() == DType::F64 {
        let s = scale;
        dev.launch(op, &f, grid, row_block(c), &mut args![dp, gp, rows, cc, s])?;
    } else {
        let s = scale as f32;
        dev.launch(op, &f, grid, row_block(c), &mut args![dp, gp, rows, cc, s])?;
    }
    Ok(())
}

/// Eight rows (warps) per block, and the most blocks the normalisation backward spreads over
/// (each adds its column sums to the weight and bias gradients once).
const LN_WARPS: usize = 8;
const LN_BWD_BLOCKS: usize = 264;
/// The packed backward's warps per block; it runs as many blocks as the device holds at once.
const LN8_BWD_WARPS: usize = 4;

/// Which normalisation kernel serves rows of `c`: `"8x{v}"` for the packed kernels (rows a whole
/// number of 8-element packs, at most `32·v` of them per row, `v <= 4`, and every pointer given
/// aligned to a pack; null pointers don't count), `""` for the element-wise ones.
fn ln_packs(c: usize, ptrs: &[(u64, DType)]) -> String {
    let packs = c / 8;
    let aligned = ptrs
        .iter()
        .all(|&(p, d)| p % (8 * d.size_in_bytes()) as u64 == 0);
    if c.is_multiple_of(8) && packs > 0 && packs <= 128 && aligned {
        format!("8x{}", packs.div_ceil(32))
    } else {
        String::new()
    }
}

/// LayerNorm (RMSNorm when `rms`) with its affine weight and bias fused, over the last dim of
/// contiguous `(rows, c)` `x`: `y` in `out` dtype, and each row's mean and 1/σ in f32. `w` and
/// `b` (contiguous `(c,)`, `x`'s dtype) are optional.
#[allow(clippy::too_many_arguments)]
pub(super) fn layer_norm_fwd(
    x: &CudaStorage,
    off: usize,
    rows: usize,
    c: usize,
    w: Option<&CudaStorage>,
    b: Option<&CudaStorage>,
    eps: f64,
    rms: bool,
    out: DType,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    let op = if rms { "rms_norm" } else { "layer_norm" };
    let dev = x.dev();
    let y = CudaStorage::alloc(dev, op, rows * c, out)?;
    let mean = CudaStorage::alloc(dev, op, rows, DType::F32)?;
    let rstd = CudaStorage::alloc(dev, op, rows, DType::F32)?;
    if rows == 0 {
        return Ok((y, mean, rstd));
    }
    let pd = w.or(b).map_or(x.dtype(), |p| p.dtype());
    let (wp, bp) = (w.map_or(0, |w| w.ptr(0)), b.map_or(0, |b| b.ptr(0)));
    let packs = ln_packs(c, &[(x.ptr(off), x.dtype()), (wp, pd), (bp, pd)]);
    let name = format!("ln_fwd{packs}_{}_{}_{}", sfx(x.dtype()), sfx(pd), sfx(out));
    let f = dev.function(op, Module::Rows, &name)?;
    let (xp, yp, mp, rp) = (x.ptr(off), y.ptr(0), mean.ptr(0), rstd.ptr(0));
    let (r, cc, e, rm) = (rows as i64, c as i64, eps as f32, rms as i32);
    dev.launch(
        op,
        &f,
        blocks(x, op, rows.div_ceil(LN_WARPS))?,
        (32 * LN_WARPS) as u32,
        &mut args![xp, wp, bp, yp, mp, rp, r, cc, e, rm],
    )?;
    Ok((y, mean, rstd))
}

/// The gradients of [`layer_norm_fwd`]: `dx` in `x`'s dtype, and the f32 sums over rows for the
/// weight (`want_dw`) and the bias (`want_db`). With `acc` (dense, `x`'s dtype and size), `dx`
/// is added into it instead of returned: a residual stream's gradient summed in place.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub(super) fn layer_norm_bwd(
    x: &CudaStorage,
    w: Option<&CudaStorage>,
    mean: &CudaStorage,
    rstd: &CudaStorage,
    g: &CudaStorage,
    (rows, c): (usize, usize),
    rms: bool,
    (want_dw, want_db): (bool, bool),
    acc: Option<&mut CudaStorage>,
) -> Result<(
    Option<CudaStorage>,
    Option<CudaStorage>,
    Option<CudaStorage>,
)> {
    let op = if rms {
        "rms_norm_backward"
    } else {
        "layer_norm_backward"
    };
    let dev = x.dev();
    if let Some(a) = &acc {
        if a.dtype() != x.dtype() || a.elem_len() != rows * c {
            return Err(dev.error(
                op,
                format!(
                    "the gradient to add into ({:?}, {} elements) does not match the ({rows}, \
                     {c}) {:?} input",
                    a.dtype(),
                    a.elem_len(),
                    x.dtype()
                ),
            ));
        }
    }
    let (dx, dxp, accumulate) = match acc {
        Some(a) => (None, a.ptr(0), 1i32),
        None => {
            let dx = CudaStorage::alloc(dev, op, rows * c, x.dtype())?;
            let p = dx.ptr(0);
            (Some(dx), p, 0)
        }
    };
    let zeros = |want: bool| -> Result<Option<CudaStorage>> {
        want.then(|| crate::backend::BackendDevice::zeros(dev, c, DType::F32))
            .transpose()
    };
    let (dw, db) = (zeros(want_dw)?, zeros(want_db)?);
    if rows == 0 || c == 0 {
        return Ok((dx, dw, db));
    }
    let pd = w.map_or(DType::F32, |p| p.dtype());
    let wp = w.map_or(0, |w| w.ptr(0));
    let packs = ln_packs(
        c,
        &[
            (x.ptr(0), x.dtype()),
            (wp, pd),
            (g.ptr(0), g.dtype()),
            (dxp, x.dtype()),
        ],
    );
    let name = format!(
        "ln_bwd{packs}_{}_{}_{}",
        sfx(x.dtype()),
        sfx(pd),
        sfx(g.dtype())
    );
    let f = dev.function(op, Module::Rows, &name)?;
    let (xp, mp, rp, gp, dwp, dbp) = (
        x.ptr(0),
        mean.ptr(0),
        rstd.ptr(0),
        g.ptr(0),
        dw.as_ref().map_or(0, |t| t.ptr(0)),
        db.as_ref().map_or(0, |t| t.ptr(0)),
    );
    let (r, cc, rm) = (rows as i64, c as i64, rms as i32);
    if packs.is_empty() {
        // Column sums in the block's shared memory, added into `dw`/`db` with atomics.
        let grid = rows.div_ceil(LN_WARPS).min(LN_BWD_BLOCKS) as u32;
        dev.launch_smem(
            op,
            &f,
            (grid, 1),
            (32 * LN_WARPS) as u32,
            (2 * c * 4) as u32,
            &mut args![xp, wp, mp, rp, gp, dxp, dwp, dbp, r, cc, rm, accumulate],
        )?;
    } else {
        // Each warp's column sums in shared memory, each block's in its row of `part`, then
        // `ln_cols` adds the rows into `dw`/`db` (32 columns by 64 rows a block).
        let smem = (2 * c * 4 * LN8_BWD_WARPS) as u32;
        let full = dev.resident_blocks(op, &f, (32 * LN8_BWD_WARPS) as u32, smem)?;
        let grid = rows.div_ceil(LN8_BWD_WARPS).min(full);
        let part = CudaStorage::alloc(dev, op, grid * 2 * c, DType::F32)?;
        let pp = part.ptr(0);
        dev.launch_smem(
            op,
            &f,
            (grid as u32, 1),
            (32 * LN8_BWD_WARPS) as u32,
            smem,
            &mut args![xp, wp, mp, rp, gp, dxp, pp, r, cc, rm, accumulate],
        )?;
        if want_dw || want_db {
            let cols = dev.function(op, Module::Rows, "ln_cols")?;
            let nb = grid as i64;
            let blocks = ((2 * c).div_ceil(32) as u32, grid.div_ceil(64) as u32);
            dev.launch_2d(op, &cols, blocks, 256, &mut args![pp, nb, cc, dwp, dbp])?;
        }
    }
    Ok((dx, dw, db))
}
