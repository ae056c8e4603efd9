//! Fused scaled-dot-product attention over `(N, T, d)` queries, `(N, S, d)` keys and `(N, S, dv)`
//! values, one `(T, S)` score matrix per slice, slices in parallel. The forward pass keeps the
//! attention probabilities for the backward pass (at these sizes they are cheaper to keep than
//! to recompute). Causal masking skips the masked half of every product.

use rayon::prelude::*;

use super::strided::has_avx2;
use super::CpuStorage;
use crate::backend::{AttnDims, BackendStorage};
use crate::{Error, FloatDType, Result};

/// Dot product with eight independent accumulators, so it vectorises.
#[inline(always)]
fn dot<T: FloatDType>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] = acc[j] + x[j] * y[j];
        }
    }
    let mut total = acc.iter().fold(T::zero(), |s, &v| s + v);
    for (&x, &y) in ra.iter().zip(rb) {
        total = total + x * y;
    }
    total
}

/// One `(batch, head)` slice of the forward pass.
#[inline(always)]
fn forward_slice<T: FloatDType>(q: &[T], k: &[T], v: &[T], o: &mut [T], p: &mut [T], a: AttnDims) {
    let (s, d, dv) = (a.s, a.d, a.dv);
    let scale = T::from_f64(a.scale);
    for i in 0..a.t {
        let vis = a.visible(i);
        let qi = &q[i * d..(i + 1) * d];
        let row = &mut p[i * s..i * s + vis];
        let mut max = T::neg_infinity();
        for (j, r) in row.iter_mut().enumerate() {
            *r = dot(qi, &k[j * d..(j + 1) * d]) * scale;
            max = max.max(*r);
        }
        let mut sum = T::zero();
        for r in row.iter_mut() {
            *r = (*r - max).fast_exp();
            sum = sum + *r;
        }
        let inv = sum.recip();
        let oi = &mut o[i * dv..(i + 1) * dv];
        for (j, r) in row.iter_mut().enumerate() {
            *r = *r * inv;
            let pj = *r;
            oi.iter_mut()
                .zip(&v[j * dv..(j + 1) * dv])
                .for_each(|(o, &x)| *o = *o + pj * x);
        }
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

/// One `(batch, head)` slice of the backward pass; `ds` is scratch of length `s`.
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
    let (s, d, dv) = (a.s, a.d, a.dv);
    let scale = T::from_f64(a.scale);
    let mut ds = vec![T::zero(); s];
    for i in 0..a.t {
        let vis = a.visible(i);
        let (gi, pi) = (&g[i * dv..(i + 1) * dv], &p[i * s..i * s + vis]);
        // dP_ij = g_i·v_j; dS_ij = P_ij (dP_ij - Σ_j P_ij dP_ij)
        let mut row_dot = T::zero();
        for j in 0..vis {
            ds[j] = dot(gi, &v[j * dv..(j + 1) * dv]);
            row_dot = row_dot + pi[j] * ds[j];
        }
        let qi = &q[i * d..(i + 1) * d];
        let dqi = &mut dq[i * d..(i + 1) * d];
        for j in 0..vis {
            let pij = pi[j];
            // dV_j += P_ij g_i
            dvb[j * dv..(j + 1) * dv]
                .iter_mut()
                .zip(gi)
                .for_each(|(o, &x)| *o = *o + pij * x);
            let dsij = pij * (ds[j] - row_dot) * scale;
            dqi.iter_mut()
                .zip(&k[j * d..(j + 1) * d])
                .for_each(|(o, &x)| *o = *o + dsij * x);
            dk[j * d..(j + 1) * d]
                .iter_mut()
                .zip(qi)
                .for_each(|(o, &x)| *o = *o + dsij * x);
        }
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
        Ok((wrap(o), wrap(p)))
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
        Ok((wrap(dq), wrap(dk), wrap(dv)))
    })
}
