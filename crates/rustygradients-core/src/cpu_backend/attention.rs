//! Fused scaled-dot-product attention over `(N, T, d)` queries, `(N, S, d)` keys and `(N, S, dv)`
//! values, one `(T, S)` score matrix per slice, slices in parallel. The forward pass keeps the
//! attention probabilities for the backward pass (at these sizes they are cheaper to keep than
//! to recompute). Causal masking skips the masked half of every product.

use rayon::prelude::*;

use super::lanes::{row_max, sum_map, sum_map2};
use super::strided::has_avx2;
use super::HostBuf;
use super::HostBuffer;
use crate::backend::AttnDims;
use crate::{Error, FloatDType, Result};

/// `outs[k][..] = Σ_{r ∈ rows} coef(r)[k] · row(r)[..n]` for `R` outputs of one length `n` at
/// once: each row is loaded once for all `R` of them, and the accumulators stay in registers,
/// 32 lanes per output (with `R = 2`, eight independent vector chains), then 8 lanes, then
/// scalars. Every product in this file is one of these.
#[inline(always)]
fn lincomb<'a, T: FloatDType, const R: usize>(
    mut outs: [&mut [T]; R],
    rows: std::ops::Range<usize>,
    coef: impl Fn(usize) -> [T; R],
    row: impl Fn(usize) -> &'a [T],
) {
    let n = outs[0].len();
    debug_assert!(outs.iter().all(|o| o.len() == n));
    let mut o = 0;
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

/// The `(cols, rows)` transpose of a row-major `(rows, cols)` block, written column by column.
#[inline(always)]
fn transpose<T: FloatDType>(x: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut t = Vec::with_capacity(rows * cols);
    for c in 0..cols {
        t.extend(x[c..].iter().step_by(cols).take(rows).copied());
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

/// Two consecutive rows `i`, `i + 1` of a row-major matrix with rows of length `w`.
#[inline(always)]
fn row_pair<T>(m: &mut [T], i: usize, w: usize) -> (&mut [T], &mut [T]) {
    m[i * w..(i + 2) * w].split_at_mut(w)
}

/// One `(batch, head)` slice of the forward pass. Queries go two at a time, so every key and
/// value row loaded serves both; the first query of a pair sees at most one key fewer, and its
/// probability for that key is set to zero, so both can run over the longer range.
#[inline(always)]
fn forward_slice<T: FloatDType>(q: &[T], k: &[T], v: &[T], o: &mut [T], p: &mut [T], a: AttnDims) {
    let (s, d, dv) = (a.s, a.d, a.dv);
    let scale = T::from_f64(a.scale);
    let kt = transpose(k, s, d);
    let mut i = 0;
    while i + 1 < a.t {
        let (n0, n1) = (a.visible(i), a.visible(i + 1));
        let m = padded(n1, s);
        let (q0, q1) = (&q[i * d..(i + 1) * d], &q[(i + 1) * d..(i + 2) * d]);
        let (p0, p1) = row_pair(p, i, s);
        // Scores: Σ_c q_ic · Kᵀ[c, ..].
        lincomb(
            [&mut p0[..m], &mut p1[..m]],
            0..d,
            |c| [q0[c] * scale, q1[c] * scale],
            |c| &kt[c * s..c * s + m],
        );
        softmax_row(&mut p0[..n0]);
        p0[n0..m].fill(T::zero());
        softmax_row(&mut p1[..n1]);
        p1[n1..m].fill(T::zero());
        let (p0, p1) = (&*p0, &*p1);
        let (o0, o1) = row_pair(o, i, dv);
        lincomb(
            [o0, o1],
            0..n1,
            |j| [p0[j], p1[j]],
            |j| &v[j * dv..(j + 1) * dv],
        );
        i += 2;
    }
    if i < a.t {
        let (n, m) = (a.visible(i), padded(a.visible(i), s));
        let qi = &q[i * d..(i + 1) * d];
        let row = &mut p[i * s..i * s + m];
        lincomb(
            [&mut *row],
            0..d,
            |c| [qi[c] * scale],
            |c| &kt[c * s..c * s + m],
        );
        softmax_row(&mut row[..n]);
        row[n..].fill(T::zero());
        let row = &p[i * s..i * s + n];
        let oi = &mut o[i * dv..(i + 1) * dv];
        lincomb([oi], 0..n, |j| [row[j]], |j| &v[j * dv..(j + 1) * dv]);
    }
}

/// `forward_slice` compiled for AVX2 + FMA (its body is inlined here). Not `simd()`'s AVX-512
/// frame: 16-wide, these loops measured slower (fwd+bwd 114 against 134 GFLOP/s, B 8, H 12,
/// T 256, D 64, Zen 5, 2026-11-27).
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
    forward_slice(q, k, v, o, p, a)
}

fn forward<T: FloatDType>(q: &[T], k: &[T], v: &[T], a: AttnDims) -> (Vec<T>, Vec<T>) {
    let (t, s, d, dv) = (a.t, a.s, a.d, a.dv);
    let mut out = vec![T::zero(); a.n * t * dv];
    let mut probs = vec![T::zero(); a.n * t * s];
    let avx2 = has_avx2();
    out.par_chunks_mut(t * dv)
        .zip(probs.par_chunks_mut(t * s))
        .enumerate()
        .for_each(|(b, (o, p))| {
            let (q, k, v) = (
                &q[b * t * d..(b + 1) * t * d],
                &k[b * s * d..(b + 1) * s * d],
                &v[b * s * dv..(b + 1) * s * dv],
            );
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: `has_avx2` checked the CPU features.
                return unsafe { forward_slice_avx2(q, k, v, o, p, a) };
            }
            forward_slice(q, k, v, o, p, a)
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

/// One `(batch, head)` slice of the backward pass, as five small products:
/// dP = G Vᵀ, dS = P ∘ (dP − rowsum(P ∘ dP)), dQ = dS K, dK = dSᵀ Q, dV = Pᵀ G.
/// Rows go in pairs as in the forward pass; masked entries of `P` and `dS` are zero, so a pair
/// can run over the longer of its two ranges.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_slice<T: FloatDType>(
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
    let (t, s, d, dv) = (a.t, a.s, a.d, a.dv);
    let scale = T::from_f64(a.scale);
    let vt = transpose(v, s, dv);
    // dS (scaled), row-major (t, s); masked entries stay zero.
    let mut ds = vec![T::zero(); t * s];
    let mut i = 0;
    while i + 1 < t {
        let (n0, n1) = (a.visible(i), a.visible(i + 1));
        let m = padded(n1, s);
        let (g0, g1) = (&g[i * dv..(i + 1) * dv], &g[(i + 1) * dv..(i + 2) * dv]);
        let (d0, d1) = row_pair(&mut ds, i, s);
        lincomb(
            [&mut d0[..m], &mut d1[..m]],
            0..dv,
            |c| [g0[c], g1[c]],
            |c| &vt[c * s..c * s + m],
        );
        softmax_grad_row(&mut d0[..n0], &p[i * s..i * s + n0], scale);
        d0[n0..m].fill(T::zero());
        softmax_grad_row(&mut d1[..n1], &p[(i + 1) * s..(i + 1) * s + n1], scale);
        d1[n1..m].fill(T::zero());
        let (d0, d1) = (&*d0, &*d1);
        let (dq0, dq1) = row_pair(dq, i, d);
        lincomb(
            [dq0, dq1],
            0..n1,
            |j| [d0[j], d1[j]],
            |j| &k[j * d..(j + 1) * d],
        );
        i += 2;
    }
    if i < t {
        let (n, m) = (a.visible(i), padded(a.visible(i), s));
        let gi = &g[i * dv..(i + 1) * dv];
        let dsi = &mut ds[i * s..i * s + m];
        lincomb([&mut *dsi], 0..dv, |c| [gi[c]], |c| &vt[c * s..c * s + m]);
        softmax_grad_row(&mut dsi[..n], &p[i * s..i * s + n], scale);
        dsi[n..].fill(T::zero());
        let dsi = &ds[i * s..i * s + n];
        let dqi = &mut dq[i * d..(i + 1) * d];
        lincomb([dqi], 0..n, |j| [dsi[j]], |j| &k[j * d..(j + 1) * d]);
    }
    let mut j = 0;
    while j + 1 < s {
        let lo = first_query(&a, j).min(t);
        let (k0, k1) = row_pair(dk, j, d);
        lincomb(
            [k0, k1],
            lo..t,
            |i| [ds[i * s + j], ds[i * s + j + 1]],
            |i| &q[i * d..(i + 1) * d],
        );
        let (v0, v1) = row_pair(dvb, j, dv);
        lincomb(
            [v0, v1],
            lo..t,
            |i| [p[i * s + j], p[i * s + j + 1]],
            |i| &g[i * dv..(i + 1) * dv],
        );
        j += 2;
    }
    if j < s {
        let lo = first_query(&a, j).min(t);
        lincomb(
            [&mut dk[j * d..(j + 1) * d]],
            lo..t,
            |i| [ds[i * s + j]],
            |i| &q[i * d..(i + 1) * d],
        );
        lincomb(
            [&mut dvb[j * dv..(j + 1) * dv]],
            lo..t,
            |i| [p[i * s + j]],
            |i| &g[i * dv..(i + 1) * dv],
        );
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
    backward_slice(q, k, v, p, g, dq, dk, dvb, a)
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
    let avx2 = has_avx2();
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
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: `has_avx2` checked the CPU features.
                return unsafe { backward_slice_avx2(q, k, v, p, g, dq, dk, dvb, a) };
            }
            backward_slice(q, k, v, p, g, dq, dk, dvb, a)
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
