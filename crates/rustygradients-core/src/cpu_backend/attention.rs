//! Fused scaled-dot-product attention over `(N, T, d)` queries, `(N, S, d)` keys and `(N, S, dv)`
//! values, one `(T, S)` score matrix per slice, slices in parallel. The forward pass keeps the
//! attention probabilities for the backward pass (at these sizes they are cheaper to keep than
//! to recompute). Causal masking skips the masked half of every product.

use rayon::prelude::*;

use super::strided::has_avx2;
use super::CpuBuf;
use super::CpuStorage;
use crate::backend::{AttnDims, BackendStorage};
use crate::{Error, FloatDType, Result};

/// `out[..] = Σ_{r ∈ rows} coef(r) · row(r)[..out.len()]`, with the accumulators held in
/// registers: 32 lanes (four independent vector chains) at a time, then 8 lanes with two chains,
/// then scalars. Every product in this file is one of these.
#[inline(always)]
fn lincomb<'a, T: FloatDType>(
    out: &mut [T],
    rows: std::ops::Range<usize>,
    coef: impl Fn(usize) -> T,
    row: impl Fn(usize) -> &'a [T],
) {
    const W: usize = 32;
    const L: usize = 8;
    let n = out.len();
    let mut o = 0;
    while o + W <= n {
        let mut acc = [T::zero(); W];
        for r in rows.clone() {
            let (c, x) = (coef(r), &row(r)[o..o + W]);
            for l in 0..W {
                acc[l] = c.mul_add(x[l], acc[l]);
            }
        }
        out[o..o + W].copy_from_slice(&acc);
        o += W;
    }
    while o + L <= n {
        let (mut a0, mut a1) = ([T::zero(); L], [T::zero(); L]);
        let mut r = rows.start;
        while r + 1 < rows.end {
            let (c0, x0) = (coef(r), &row(r)[o..o + L]);
            let (c1, x1) = (coef(r + 1), &row(r + 1)[o..o + L]);
            for l in 0..L {
                a0[l] = c0.mul_add(x0[l], a0[l]);
                a1[l] = c1.mul_add(x1[l], a1[l]);
            }
            r += 2;
        }
        if r < rows.end {
            let (c0, x0) = (coef(r), &row(r)[o..o + L]);
            for l in 0..L {
                a0[l] = c0.mul_add(x0[l], a0[l]);
            }
        }
        for l in 0..L {
            out[o + l] = a0[l] + a1[l];
        }
        o += L;
    }
    for (j, y) in out.iter_mut().enumerate().skip(o) {
        *y = rows
            .clone()
            .fold(T::zero(), |a, r| coef(r).mul_add(row(r)[j], a));
    }
}

/// The `(cols, rows)` transpose of a row-major `(rows, cols)` block.
fn transpose<T: FloatDType>(x: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut t = vec![T::zero(); rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = x[r * cols + c];
        }
    }
    t
}

/// One `(batch, head)` slice of the forward pass.
#[inline(always)]
fn forward_slice<T: FloatDType>(q: &[T], k: &[T], v: &[T], o: &mut [T], p: &mut [T], a: AttnDims) {
    let (s, d, dv) = (a.s, a.d, a.dv);
    let scale = T::from_f64(a.scale);
    let kt = transpose(k, s, d);
    for i in 0..a.t {
        let vis = a.visible(i);
        let qi = &q[i * d..(i + 1) * d];
        let row = &mut p[i * s..i * s + vis];
        // Scores of query i against every visible key: Σ_c q_ic · Kᵀ[c, ..].
        lincomb(row, 0..d, |c| qi[c] * scale, |c| &kt[c * s..c * s + vis]);
        let max = row.iter().fold(T::neg_infinity(), |m, &x| m.max(x));
        let mut sum = T::zero();
        for r in row.iter_mut() {
            *r = (*r - max).fast_exp();
            sum = sum + *r;
        }
        let inv = sum.recip();
        row.iter_mut().for_each(|r| *r = *r * inv);
        let row = &p[i * s..i * s + vis];
        lincomb(
            &mut o[i * dv..(i + 1) * dv],
            0..vis,
            |j| row[j],
            |j| &v[j * dv..(j + 1) * dv],
        );
    }
}

/// `forward_slice` compiled for AVX2 + FMA (its body is inlined here).
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

/// One `(batch, head)` slice of the backward pass, as five small products:
/// dP = G Vᵀ, dS = P ∘ (dP − rowsum(P ∘ dP)), dQ = dS K, dK = dSᵀ Q, dV = Pᵀ G.
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
    // dS (scaled), row-major (t, s); masked entries stay zero and are never read.
    let mut ds = vec![T::zero(); t * s];
    for i in 0..t {
        let vis = a.visible(i);
        let (gi, pi) = (&g[i * dv..(i + 1) * dv], &p[i * s..i * s + vis]);
        let dsi = &mut ds[i * s..i * s + vis];
        lincomb(dsi, 0..dv, |c| gi[c], |c| &vt[c * s..c * s + vis]);
        let row_dot = pi
            .iter()
            .zip(dsi.iter())
            .fold(T::zero(), |acc, (&p, &x)| acc + p * x);
        for (x, &p) in dsi.iter_mut().zip(pi) {
            *x = p * (*x - row_dot) * scale;
        }
        let dsi = &ds[i * s..i * s + vis];
        lincomb(
            &mut dq[i * d..(i + 1) * d],
            0..vis,
            |j| dsi[j],
            |j| &k[j * d..(j + 1) * d],
        );
    }
    for j in 0..s {
        let lo = first_query(&a, j).min(t);
        lincomb(
            &mut dk[j * d..(j + 1) * d],
            lo..t,
            |i| ds[i * s + j],
            |i| &q[i * d..(i + 1) * d],
        );
        lincomb(
            &mut dvb[j * dv..(j + 1) * dv],
            lo..t,
            |i| p[i * s + j],
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
            ($(CpuStorage::F32($s)),+) => { let $f = CpuStorage::F32; $body }
            ($(CpuStorage::F64($s)),+) => { let $f = CpuStorage::F64; $body }
            ($(CpuStorage::F16($s)),+) => { let $f = CpuStorage::F16; $body }
            ($(CpuStorage::BF16($s)),+) => { let $f = CpuStorage::BF16; $body }
            (first, ..) => {
                return Err(Error::UnsupportedDType { op: $op, got: first.dtype(), expected: "one floating-point dtype for every operand" })
            }
        }
    };
}

/// Inputs are contiguous with offset 0 (the caller copies them so).
pub(crate) fn attention_fwd(
    q: &CpuStorage,
    k: &CpuStorage,
    v: &CpuStorage,
    a: AttnDims,
) -> Result<(CpuStorage, CpuStorage)> {
    per_float!("scaled_dot_product_attention", (q, k, v), wrap => {
        let (o, p) = forward(q, k, v, a);
        Ok((wrap(CpuBuf::from(o)), wrap(CpuBuf::from(p))))
    })
}

#[allow(clippy::type_complexity)]
pub(crate) fn attention_bwd(
    q: &CpuStorage,
    k: &CpuStorage,
    v: &CpuStorage,
    p: &CpuStorage,
    g: &CpuStorage,
    a: AttnDims,
) -> Result<(CpuStorage, CpuStorage, CpuStorage)> {
    per_float!("scaled_dot_product_attention_backward", (q, k, v, p, g), wrap => {
        let (dq, dk, dv) = backward(q, k, v, p, g, a);
        Ok((wrap(CpuBuf::from(dq)), wrap(CpuBuf::from(dk)), wrap(CpuBuf::from(dv))))
    })
}
