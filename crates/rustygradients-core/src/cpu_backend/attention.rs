//! Fused scaled-dot-product attention over `(N, T, d)` queries, `(N, S, d)` keys and `(N, S, dv)`
//! values, one `(T, S)` score matrix per slice, slices in parallel. The forward pass keeps the
//! attention probabilities for the backward pass (at these sizes they are cheaper to keep than
//! to recompute). Causal masking skips the masked half of every product.

use rayon::prelude::*;

use super::lanes::{row_max, sum_map, sum_map2};
use super::strided::{isa, Isa};
use super::HostBuf;
use super::HostBuffer;
use crate::backend::AttnDims;
use crate::{Error, FloatDType, Result};

/// `outs[k][..] = Σ_{r ∈ rows} coef(r)[k] · row(r)[..n]` for `R` outputs of one length `n` at
/// once: each row is loaded once for all `R` of them, and the accumulators stay in registers,
/// 32 lanes per output (with `R = 2`, eight independent vector chains), then 8 lanes, then
/// scalars. Every product in this file is one of these.
#[inline(always)]
fn lincomb<'a, T: FloatDType, const R: usize, const W: usize>(
    mut outs: [&mut [T]; R],
    rows: std::ops::Range<usize>,
    coef: impl Fn(usize) -> [T; R],
    row: impl Fn(usize) -> &'a [T],
) {
    let n = outs[0].len();
    debug_assert!(outs.iter().all(|o| o.len() == n));
    let mut o = 0;
    while W > 32 && o + W <= n {
        lincomb_block::<T, R, W>(&mut outs, o, rows.clone(), &coef, &row);
        o += W;
    }
    while o + 32 <= n {
        lincomb_block::<T, R, 32>(&mut outs, o, rows.clone(), &coef, &row);
        o += 32;
    }
    while o + 8 <= n {
        lincomb_block::<T, R, 8>(&mut outs, o, rows.clone(), &coef, &row);
        o += 8;
    }
    for j in o..n {
        let mut acc = [T::zero(); R];
        for r in rows.clone() {
            let (c, x) = (coef(r), row(r)[j]);
            for k in 0..R {
                acc[k] = c[k].mul_add(x, acc[k]);
            }
        }
        for (out, a) in outs.iter_mut().zip(acc) {
            out[j] = a;
        }
    }
}

/// Columns `o..o + B` of every output of [`lincomb`], accumulated in `R × B` registers.
#[inline(always)]
fn lincomb_block<'a, T: FloatDType, const R: usize, const B: usize>(
    outs: &mut [&mut [T]; R],
    o: usize,
    rows: std::ops::Range<usize>,
    coef: &impl Fn(usize) -> [T; R],
    row: &impl Fn(usize) -> &'a [T],
) {
    let mut acc = [[T::zero(); B]; R];
    for r in rows {
        let (c, x) = (coef(r), &row(r)[o..o + B]);
        for k in 0..R {
            for l in 0..B {
                acc[k][l] = c[k].mul_add(x[l], acc[k][l]);
            }
        }
    }
    for k in 0..R {
        outs[k][o..o + B].copy_from_slice(&acc[k]);
    }
}

/// The `(cols, rows)` transpose of a row-major `(rows, cols)` block, in bands of 16 rows: each
/// band's rows are read side by side and each output row gets 16 consecutive elements (a
/// column walk over all rows would touch a new cache line per element).
#[inline(always)]
fn transpose<T: FloatDType>(x: &[T], rows: usize, cols: usize) -> Vec<T> {
    const BAND: usize = 16;
    let mut t = vec![T::zero(); rows * cols];
    for r0 in (0..rows).step_by(BAND) {
        let band = BAND.min(rows - r0);
        for c in 0..cols {
            let out = &mut t[c * rows + r0..c * rows + r0 + band];
            for (r, o) in out.iter_mut().enumerate() {
                *o = x[(r0 + r) * cols + c];
            }
        }
    }
    t
}

/// A row of scores in place to probabilities, in separate passes so each one vectorises: max,
/// exponentials, their sum.
#[inline(always)]
fn softmax_row<T: FloatDType>(row: &mut [T]) {
    let max = row_max(row);
    for r in row.iter_mut() {
        *r = (*r - max).fast_exp();
    }
    let inv = sum_map(row, |x| x).recip();
    row.iter_mut().for_each(|r| *r = *r * inv);
}

/// A row length of `n` visible keys rounded up to whole 32-lane blocks (within the `s` keys
/// that exist): computing a few masked scores, zeroed afterwards, is much cheaper than the
/// scalar tail of a product.
#[inline(always)]
fn padded(n: usize, s: usize) -> usize {
    n.next_multiple_of(32).min(s).max(n)
}

/// `G` consecutive rows of a row-major matrix with rows of length `w`, from row `i`.
#[inline(always)]
fn rows_mut<T, const G: usize>(m: &mut [T], i: usize, w: usize) -> [&mut [T]; G] {
    let mut rows = m[i * w..(i + G) * w].chunks_mut(w);
    std::array::from_fn(|_| rows.next().expect("G rows"))
}

/// Queries `i .. i + G` of one `(batch, head)` slice of the forward pass, together, so every
/// key and value row loaded serves all `G`. The earlier queries of a group see up to `G - 1`
/// keys fewer than the last; their probabilities for those keys are set to zero, so the whole
/// group runs over the last one's range.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_group<T: FloatDType, const G: usize, const W: usize>(
    i: usize,
    q: &[T],
    kt: &[T],
    v: &[T],
    o: &mut [T],
    p: &mut [T],
    a: AttnDims,
    scale: T,
) {
    let (s, d, dv) = (a.s, a.d, a.dv);
    let last = a.visible(i + G - 1);
    let m = padded(last, s);
    let qs: [&[T]; G] = std::array::from_fn(|r| &q[(i + r) * d..(i + r + 1) * d]);
    let mut ps = rows_mut::<T, G>(p, i, s);
    // Scores: Σ_c q_ic · Kᵀ[c, ..].
    lincomb::<T, G, W>(
        ps.each_mut().map(|r| &mut r[..m]),
        0..d,
        |c| std::array::from_fn(|r| qs[r][c] * scale),
        |c| &kt[c * s..c * s + m],
    );
    for (r, row) in ps.iter_mut().enumerate() {
        let n = a.visible(i + r);
        softmax_row(&mut row[..n]);
        row[n..m].fill(T::zero());
    }
    let ps = ps.map(|r| &*r);
    lincomb::<T, G, W>(
        rows_mut::<T, G>(o, i, dv),
        0..last,
        |j| std::array::from_fn(|r| ps[r][j]),
        |j| &v[j * dv..(j + 1) * dv],
    );
}

/// One `(batch, head)` slice of the forward pass: queries in groups of `G` (the rest one by
/// one), products `W` lanes wide.
#[inline(always)]
fn forward_slice<T: FloatDType, const G: usize, const W: usize>(
    q: &[T],
    k: &[T],
    v: &[T],
    o: &mut [T],
    p: &mut [T],
    a: AttnDims,
) {
    let scale = T::from_f64(a.scale);
    let kt = transpose(k, a.s, a.d);
    let mut i = 0;
    while i + G <= a.t {
        forward_group::<T, G, W>(i, q, &kt, v, o, p, a, scale);
        i += G;
    }
    while i < a.t {
        forward_group::<T, 1, W>(i, q, &kt, v, o, p, a, scale);
        i += 1;
    }
}

/// The code the slices run: AVX-512 (64 lanes) on Intel CPUs that have it, AVX2 (32 lanes)
/// on other AVX-512 CPUs and AVX2 ones, else portable. At B 8, H 12, T 256, D 64 (fwd+bwd),
/// 64 lanes measured 96–97 against 86–87 GFLOP/s for AVX2 on an Intel Xeon (2026-11-28); on
/// a Zen 5 the AVX-512 build of the 32-lane loops measured slower than AVX2 (114 against
/// 134, 2026-11-27) and the 64-lane one has not been measured there. Query groups of 4 rows
/// instead of 2 measured slower on the Xeon (75 against 78 in a single-purpose run).
fn slice_isa() -> Isa {
    match isa() {
        Isa::Avx512 if !super::caches::is_intel() => Isa::Avx2,
        other => other,
    }
}

/// `forward_slice` compiled for AVX2 + FMA (its body is inlined here), 32 lanes wide.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_slice_avx2<T: FloatDType>(
    q: &[T],
    k: &[T],
    v: &[T],
    o: &mut [T],
    p: &mut [T],
    a: AttnDims,
) {
    forward_slice::<T, 2, 32>(q, k, v, o, p, a)
}

/// `forward_slice` compiled for AVX-512, its products 64 lanes wide (four 16-lane vectors per
/// output, so that two outputs keep eight FMA chains in flight, as 32 lanes do at AVX2).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn forward_slice_avx512<T: FloatDType>(
    q: &[T],
    k: &[T],
    v: &[T],
    o: &mut [T],
    p: &mut [T],
    a: AttnDims,
) {
    forward_slice::<T, 2, 64>(q, k, v, o, p, a)
}

fn forward<T: FloatDType>(q: &[T], k: &[T], v: &[T], a: AttnDims) -> (Vec<T>, Vec<T>) {
    let (t, s, d, dv) = (a.t, a.s, a.d, a.dv);
    let mut out = vec![T::zero(); a.n * t * dv];
    let mut probs = vec![T::zero(); a.n * t * s];
    let isa = slice_isa();
    out.par_chunks_mut(t * dv)
        .zip(probs.par_chunks_mut(t * s))
        .enumerate()
        .for_each(|(b, (o, p))| {
            let (q, k, v) = (
                &q[b * t * d..(b + 1) * t * d],
                &k[b * s * d..(b + 1) * s * d],
                &v[b * s * dv..(b + 1) * s * dv],
            );
            // SAFETY (both calls): `isa` checked the CPU features.
            #[cfg(target_arch = "x86_64")]
            match isa {
                Isa::Avx512 => return unsafe { forward_slice_avx512(q, k, v, o, p, a) },
                Isa::Avx2 => return unsafe { forward_slice_avx2(q, k, v, o, p, a) },
                Isa::Scalar => {}
            }
            forward_slice::<T, 2, 32>(q, k, v, o, p, a)
        });
    (out, probs)
}

/// The first query that sees key `j` (visibility only grows with the query index).
#[inline(always)]
fn first_query(a: &AttnDims, j: usize) -> usize {
    if a.causal {
        j
    } else {
        0
    }
}

/// `dP` of one query's row (visible part) in place to `dS = P ∘ (dP − Σ P ∘ dP) · scale`.
#[inline(always)]
fn softmax_grad_row<T: FloatDType>(ds: &mut [T], p: &[T], scale: T) {
    let dot = sum_map2(p, ds, |p, x| p * x);
    for (x, &p) in ds.iter_mut().zip(p) {
        *x = p * (*x - dot) * scale;
    }
}

/// Query rows `i .. i + G` of dS (scaled) and dQ, together (see [`forward_group`]):
/// dP = G Vᵀ, dS = P ∘ (dP − rowsum(P ∘ dP)) · scale, dQ = dS K.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_query_group<T: FloatDType, const G: usize, const W: usize>(
    i: usize,
    k: &[T],
    vt: &[T],
    p: &[T],
    g: &[T],
    ds: &mut [T],
    dq: &mut [T],
    a: AttnDims,
    scale: T,
) {
    let (s, d, dv) = (a.s, a.d, a.dv);
    let last = a.visible(i + G - 1);
    let m = padded(last, s);
    let gs: [&[T]; G] = std::array::from_fn(|r| &g[(i + r) * dv..(i + r + 1) * dv]);
    let mut dss = rows_mut::<T, G>(ds, i, s);
    lincomb::<T, G, W>(
        dss.each_mut().map(|r| &mut r[..m]),
        0..dv,
        |c| std::array::from_fn(|r| gs[r][c]),
        |c| &vt[c * s..c * s + m],
    );
    for (r, row) in dss.iter_mut().enumerate() {
        let n = a.visible(i + r);
        softmax_grad_row(&mut row[..n], &p[(i + r) * s..(i + r) * s + n], scale);
        row[n..m].fill(T::zero());
    }
    let dss = dss.map(|r| &*r);
    lincomb::<T, G, W>(
        rows_mut::<T, G>(dq, i, d),
        0..last,
        |j| std::array::from_fn(|r| dss[r][j]),
        |j| &k[j * d..(j + 1) * d],
    );
}

/// Key rows `j .. j + G` of dK = dSᵀ Q and dV = Pᵀ G, together: masked entries of `P` and dS
/// are zero, so the group runs over the queries that see its first key.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_key_group<T: FloatDType, const G: usize, const W: usize>(
    j: usize,
    q: &[T],
    p: &[T],
    g: &[T],
    ds: &[T],
    dk: &mut [T],
    dvb: &mut [T],
    a: AttnDims,
) {
    let (t, s, d, dv) = (a.t, a.s, a.d, a.dv);
    let lo = first_query(&a, j).min(t);
    lincomb::<T, G, W>(
        rows_mut::<T, G>(dk, j, d),
        lo..t,
        |i| std::array::from_fn(|r| ds[i * s + j + r]),
        |i| &q[i * d..(i + 1) * d],
    );
    lincomb::<T, G, W>(
        rows_mut::<T, G>(dvb, j, dv),
        lo..t,
        |i| std::array::from_fn(|r| p[i * s + j + r]),
        |i| &g[i * dv..(i + 1) * dv],
    );
}

/// One `(batch, head)` slice of the backward pass, as five small products:
/// dP = G Vᵀ, dS = P ∘ (dP − rowsum(P ∘ dP)), dQ = dS K, dK = dSᵀ Q, dV = Pᵀ G;
/// rows in groups of `G` (the rest one by one), products `W` lanes wide.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_slice<T: FloatDType, const G: usize, const W: usize>(
    q: &[T],
    k: &[T],
    v: &[T],
    p: &[T],
    g: &[T],
    dq: &mut [T],
    dk: &mut [T],
    dvb: &mut [T],
    a: AttnDims,
) {
    let (t, s) = (a.t, a.s);
    let scale = T::from_f64(a.scale);
    let vt = transpose(v, s, a.dv);
    // dS (scaled), row-major (t, s); masked entries stay zero.
    let mut ds = vec![T::zero(); t * s];
    let mut i = 0;
    while i + G <= t {
        backward_query_group::<T, G, W>(i, k, &vt, p, g, &mut ds, dq, a, scale);
        i += G;
    }
    while i < t {
        backward_query_group::<T, 1, W>(i, k, &vt, p, g, &mut ds, dq, a, scale);
        i += 1;
    }
    let mut j = 0;
    while j + G <= s {
        backward_key_group::<T, G, W>(j, q, p, g, &ds, dk, dvb, a);
        j += G;
    }
    while j < s {
        backward_key_group::<T, 1, W>(j, q, p, g, &ds, dk, dvb, a);
        j += 1;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn backward_slice_avx2<T: FloatDType>(
    q: &[T],
    k: &[T],
    v: &[T],
    p: &[T],
    g: &[T],
    dq: &mut [T],
    dk: &mut [T],
    dvb: &mut [T],
    a: AttnDims,
) {
    backward_slice::<T, 2, 32>(q, k, v, p, g, dq, dk, dvb, a)
}

/// `backward_slice` compiled for AVX-512, 64 lanes wide (see `forward_slice_avx512`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn backward_slice_avx512<T: FloatDType>(
    q: &[T],
    k: &[T],
    v: &[T],
    p: &[T],
    g: &[T],
    dq: &mut [T],
    dk: &mut [T],
    dvb: &mut [T],
    a: AttnDims,
) {
    backward_slice::<T, 2, 64>(q, k, v, p, g, dq, dk, dvb, a)
}

#[allow(clippy::type_complexity)]
fn backward<T: FloatDType>(
    q: &[T],
    k: &[T],
    v: &[T],
    p: &[T],
    g: &[T],
    a: AttnDims,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (t, s, d, dv) = (a.t, a.s, a.d, a.dv);
    let mut dq = vec![T::zero(); a.n * t * d];
    let mut dk = vec![T::zero(); a.n * s * d];
    let mut dvv = vec![T::zero(); a.n * s * dv];
    let isa = slice_isa();
    dq.par_chunks_mut(t * d)
        .zip(dk.par_chunks_mut(s * d))
        .zip(dvv.par_chunks_mut(s * dv))
        .enumerate()
        .for_each(|(b, ((dq, dk), dvb))| {
            let q = &q[b * t * d..(b + 1) * t * d];
            let k = &k[b * s * d..(b + 1) * s * d];
            let v = &v[b * s * dv..(b + 1) * s * dv];
            let p = &p[b * t * s..(b + 1) * t * s];
            let g = &g[b * t * dv..(b + 1) * t * dv];
            // SAFETY (both calls): `isa` checked the CPU features.
            #[cfg(target_arch = "x86_64")]
            match isa {
                Isa::Avx512 => {
                    return unsafe { backward_slice_avx512(q, k, v, p, g, dq, dk, dvb, a) }
                }
                Isa::Avx2 => return unsafe { backward_slice_avx2(q, k, v, p, g, dq, dk, dvb, a) },
                Isa::Scalar => {}
            }
            backward_slice::<T, 2, 32>(q, k, v, p, g, dq, dk, dvb, a)
        });
    (dq, dk, dvv)
}

macro_rules! per_float {
    ($op:expr, ($($s:ident),+), $f:ident => $body:expr) => {
        match ($($s),+) {
            ($(HostBuffer::F32($s)),+) => { let $f = HostBuffer::F32; $body }
            ($(HostBuffer::F64($s)),+) => { let $f = HostBuffer::F64; $body }
            ($(HostBuffer::F16($s)),+) => { let $f = HostBuffer::F16; $body }
            ($(HostBuffer::BF16($s)),+) => { let $f = HostBuffer::BF16; $body }
            (first, ..) => {
                return Err(Error::UnsupportedDType { op: $op, got: first.dtype(), expected: "one floating-point dtype for every operand" })
            }
        }
    };
}

/// Inputs are contiguous with offset 0 (the caller copies them so).
pub(crate) fn attention_fwd(
    q: &HostBuffer,
    k: &HostBuffer,
    v: &HostBuffer,
    a: AttnDims,
) -> Result<(HostBuffer, HostBuffer)> {
    per_float!("scaled_dot_product_attention", (q, k, v), wrap => {
        let (o, p) = forward(q, k, v, a);
        Ok((wrap(HostBuf::from(o)), wrap(HostBuf::from(p))))
    })
}

#[allow(clippy::type_complexity)]
pub(crate) fn attention_bwd(
    q: &HostBuffer,
    k: &HostBuffer,
    v: &HostBuffer,
    p: &HostBuffer,
    g: &HostBuffer,
    a: AttnDims,
) -> Result<(HostBuffer, HostBuffer, HostBuffer)> {
    per_float!("scaled_dot_product_attention_backward", (q, k, v, p, g), wrap => {
        let (dq, dk, dv) = backward(q, k, v, p, g, a);
        Ok((wrap(HostBuf::from(dq)), wrap(HostBuf::from(dk)), wrap(HostBuf::from(dv))))
    })
}
