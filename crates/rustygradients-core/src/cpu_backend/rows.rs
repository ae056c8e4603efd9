//! Row kernels over the last dim: softmax / log-softmax and normalisation (LayerNorm's and
//! RMSNorm's core), forward and backward. Rows run in parallel when the tensor is large.

use rayon::prelude::*;

use super::lanes::{row_max, sum_map, sum_map2};
use super::strided::{simd, PAR_MIN};
use super::HostBuf;
use super::{float_map, float_map2, float_only, HostBuffer};
use crate::{Error, FloatDType, Layout, Result};
use std::ops::Range;

/// Applies `f(row_in, row_out)` to every row of width `w`, in parallel when large.
fn per_row<T: Copy + Send + Sync>(
    x: &[T],
    w: usize,
    out: &mut [T],
    f: impl Fn(&[T], &mut [T]) + Sync + Send,
) {
    if w == 0 {
        return;
    }
    if x.len() >= PAR_MIN {
        out.par_chunks_mut(w)
            .zip(x.par_chunks(w))
            .for_each(|(o, r)| {
                simd(
                    #[inline(always)]
                    || f(r, o),
                )
            });
    } else {
        simd(
            #[inline(always)]
            || {
                out.chunks_mut(w)
                    .zip(x.chunks(w))
                    .for_each(|(o, r)| f(r, o))
            },
        );
    }
}

/// Like [`per_row`] with two inputs of the same shape.
fn per_row2<T: Copy + Send + Sync>(
    a: &[T],
    b: &[T],
    w: usize,
    out: &mut [T],
    f: impl Fn(&[T], &[T], &mut [T]) + Sync + Send,
) {
    if w == 0 {
        return;
    }
    if a.len() >= PAR_MIN {
        out.par_chunks_mut(w)
            .zip(a.par_chunks(w).zip(b.par_chunks(w)))
            .for_each(|(o, (x, y))| {
                simd(
                    #[inline(always)]
                    || f(x, y, o),
                )
            });
    } else {
        simd(
            #[inline(always)]
            || {
                out.chunks_mut(w)
                    .zip(a.chunks(w).zip(b.chunks(w)))
                    .for_each(|(o, (x, y))| f(x, y, o))
            },
        );
    }
}

fn softmax_rows<T: FloatDType>(x: &[T], w: usize, log: bool) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    per_row(
        x,
        w,
        &mut out,
        #[inline(always)]
        |r, o| {
            let max = row_max(r);
            // A row of -inf (fully masked) gives NaN, as in PyTorch.
            for (o, &v) in o.iter_mut().zip(r) {
                *o = (v - max).fast_exp();
            }
            let sum = sum_map(o, |v| v);
            if log {
                let lse = max + sum.ln();
                for (o, &v) in o.iter_mut().zip(r) {
                    *o = v - lse;
                }
            } else {
                let inv = sum.recip();
                o.iter_mut().for_each(|o| *o = *o * inv);
            }
        },
    );
    out
}

fn softmax_bwd_rows<T: FloatDType>(y: &[T], g: &[T], w: usize, log: bool) -> Vec<T> {
    let mut out = vec![T::zero(); y.len()];
    per_row2(
        y,
        g,
        w,
        &mut out,
        #[inline(always)]
        |y, g, o| {
            if log {
                // d/dx of log_softmax: g - softmax · Σg
                let s = sum_map(g, |v| v);
                for ((o, &y), &g) in o.iter_mut().zip(y).zip(g) {
                    *o = g - y.fast_exp() * s;
                }
            } else {
                // d/dx of softmax: y · (g - Σ g·y)
                let dot = sum_map2(y, g, |y, g| y * g);
                for ((o, &y), &g) in o.iter_mut().zip(y).zip(g) {
                    *o = y * (g - dot);
                }
            }
        },
    );
    out
}

/// `(x̂, 1/σ)` per row: `x̂ = (x - mean) / sqrt(var + eps)` (RMS: no centring, `var = mean(x²)`).
fn norm_rows<T: FloatDType>(x: &[T], w: usize, eps: f64, rms: bool) -> (Vec<T>, Vec<T>) {
    let mut out = vec![T::zero(); x.len()];
    let rows = x.len().checked_div(w).unwrap_or(0);
    let mut rstd = vec![T::zero(); rows];
    let n = T::from_f64(w as f64);
    let eps = T::from_f64(eps);
    let row = |r: &[T], o: &mut [T]| norm_row(r, o, n, eps, rms);
    if w > 0 {
        if x.len() >= PAR_MIN {
            out.par_chunks_mut(w)
                .zip(x.par_chunks(w))
                .zip(rstd.par_iter_mut())
                .for_each(|((o, r), s)| {
                    *s = simd(
                        #[inline(always)]
                        || row(r, o),
                    )
                });
        } else {
            simd(
                #[inline(always)]
                || {
                    out.chunks_mut(w)
                        .zip(x.chunks(w))
                        .zip(rstd.iter_mut())
                        .for_each(|((o, r), s)| *s = row(r, o))
                },
            );
        }
    }
    (out, rstd)
}

/// One row of [`norm_rows`]: writes `x̂` and returns `1/σ`.
#[inline(always)]
fn norm_row<T: FloatDType>(r: &[T], o: &mut [T], n: T, eps: T, rms: bool) -> T {
    let mean = if rms {
        T::zero()
    } else {
        sum_map(r, |v| v) / n
    };
    let var = sum_map(r, |v| (v - mean) * (v - mean)) / n;
    let rs = (var + eps).sqrt().recip();
    for (o, &v) in o.iter_mut().zip(r) {
        *o = (v - mean) * rs;
    }
    rs
}

/// One row of [`norm_bwd_rows`].
#[inline(always)]
fn norm_bwd_row<T: FloatDType>(x: &[T], g: &[T], rs: T, o: &mut [T], n: T, rms: bool) {
    let mg = if rms {
        T::zero()
    } else {
        sum_map(g, |v| v) / n
    };
    let mgx = sum_map2(x, g, |x, g| x * g) / n;
    for ((o, &x), &g) in o.iter_mut().zip(x).zip(g) {
        *o = rs * (g - mg - x * mgx);
    }
}

/// `dx = rstd · (g - mean(g) - x̂ · mean(g·x̂))` (RMS: without the `mean(g)` term).
fn norm_bwd_rows<T: FloatDType>(xhat: &[T], rstd: &[T], g: &[T], w: usize, rms: bool) -> Vec<T> {
    let mut out = vec![T::zero(); xhat.len()];
    let n = T::from_f64(w as f64);
    let row = |x: &[T], g: &[T], rs: T, o: &mut [T]| norm_bwd_row(x, g, rs, o, n, rms);
    if w > 0 {
        if xhat.len() >= PAR_MIN {
            out.par_chunks_mut(w)
                .zip(xhat.par_chunks(w).zip(g.par_chunks(w)))
                .zip(rstd.par_iter())
                .for_each(|((o, (x, g)), &s)| {
                    simd(
                        #[inline(always)]
                        || row(x, g, s, o),
                    )
                });
        } else {
            simd(
                #[inline(always)]
                || {
                    out.chunks_mut(w)
                        .zip(xhat.chunks(w).zip(g.chunks(w)))
                        .zip(rstd.iter())
                        .for_each(|((o, (x, g)), &s)| row(x, g, s, o))
                },
            );
        }
    }
    out
}

/// The storage range of a layout that must be contiguous, and its last dim.
fn rows_of(op: &'static str, l: &Layout) -> Result<(Range<usize>, usize)> {
    let r = l.contiguous_range().ok_or_else(|| Error::NotContiguous {
        op,
        shape: l.shape().clone(),
        strides: l.strides().to_vec(),
        target: l.shape().clone(),
    })?;
    Ok((r, l.dims().last().copied().unwrap_or(1)))
}

pub(crate) fn softmax_last(x: &HostBuffer, l: &Layout, log: bool) -> Result<HostBuffer> {
    let (r, w) = rows_of("softmax", l)?;
    Ok(float_map!("softmax", x, v => HostBuf::from(softmax_rows(&v[r], w, log))))
}

pub(crate) fn softmax_last_bwd(
    y: &HostBuffer,
    yl: &Layout,
    g: &HostBuffer,
    gl: &Layout,
    log: bool,
) -> Result<HostBuffer> {
    let ((ry, w), (rg, _)) = (
        rows_of("softmax_backward", yl)?,
        rows_of("softmax_backward", gl)?,
    );
    Ok(
        float_map2!("softmax_backward", y, g, (a, b) => HostBuf::from(softmax_bwd_rows(&a[ry], &b[rg], w, log))),
    )
}

pub(crate) fn norm_last(
    x: &HostBuffer,
    l: &Layout,
    eps: f64,
    rms: bool,
) -> Result<(HostBuffer, HostBuffer)> {
    let (r, w) = rows_of("layer_norm", l)?;
    Ok(match x {
        HostBuffer::F32(v) => {
            let (a, b) = norm_rows(&v[r.clone()], w, eps, rms);
            (
                HostBuffer::F32(HostBuf::from(a)),
                HostBuffer::F32(HostBuf::from(b)),
            )
        }
        HostBuffer::F64(v) => {
            let (a, b) = norm_rows(&v[r.clone()], w, eps, rms);
            (
                HostBuffer::F64(HostBuf::from(a)),
                HostBuffer::F64(HostBuf::from(b)),
            )
        }
        HostBuffer::F16(v) => {
            let (a, b) = norm_rows(&v[r.clone()], w, eps, rms);
            (
                HostBuffer::F16(HostBuf::from(a)),
                HostBuffer::F16(HostBuf::from(b)),
            )
        }
        HostBuffer::BF16(v) => {
            let (a, b) = norm_rows(&v[r.clone()], w, eps, rms);
            (
                HostBuffer::BF16(HostBuf::from(a)),
                HostBuffer::BF16(HostBuf::from(b)),
            )
        }
        other => return Err(float_only("layer_norm", other)),
    })
}

/// `xhat` and `rstd` come from [`norm_last`] (contiguous, offset 0); `g` is contiguous.
pub(crate) fn norm_last_bwd(
    xhat: &HostBuffer,
    rstd: &HostBuffer,
    g: &HostBuffer,
    gl: &Layout,
    rms: bool,
) -> Result<HostBuffer> {
    let (rg, w) = rows_of("layer_norm_backward", gl)?;
    Ok(match (xhat, rstd, g) {
        (HostBuffer::F32(x), HostBuffer::F32(r), HostBuffer::F32(g)) => {
            HostBuffer::F32(HostBuf::from(norm_bwd_rows(x, r, &g[rg.clone()], w, rms)))
        }
        (HostBuffer::F64(x), HostBuffer::F64(r), HostBuffer::F64(g)) => {
            HostBuffer::F64(HostBuf::from(norm_bwd_rows(x, r, &g[rg.clone()], w, rms)))
        }
        (HostBuffer::F16(x), HostBuffer::F16(r), HostBuffer::F16(g)) => {
            HostBuffer::F16(HostBuf::from(norm_bwd_rows(x, r, &g[rg.clone()], w, rms)))
        }
        (HostBuffer::BF16(x), HostBuffer::BF16(r), HostBuffer::BF16(g)) => {
            HostBuffer::BF16(HostBuf::from(norm_bwd_rows(x, r, &g[rg.clone()], w, rms)))
        }
        (x, _, g) => {
            return Err(Error::DTypeMismatch {
                op: "layer_norm_backward",
                lhs: x.dtype(),
                rhs: g.dtype(),
            })
        }
    })
}
