//! Row kernels over the last dim: softmax / log-softmax and normalisation (LayerNorm's and
//! RMSNorm's core), forward and backward. Rows run in parallel when the tensor is large.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::lanes::{row_max, sum_map, sum_map2};
use super::strided::{rows_per_task, simd, PAR_MIN};
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
            .with_min_len(rows_per_task(w))
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
            .with_min_len(rows_per_task(w))
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
                .with_min_len(rows_per_task(w))
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

/// One row of [`norm_rows`]: writes `x̂` and returns `1/σ` (the affine row without weight
/// or bias).
#[inline(always)]
fn norm_row<T: FloatDType>(r: &[T], o: &mut [T], n: T, eps: T, rms: bool) -> T {
    // SAFETY: `MaybeUninit<T>` has `T`'s layout, and every element written is initialised.
    let o = unsafe { &mut *(o as *mut [T] as *mut [MaybeUninit<T>]) };
    affine_row(r, o, None, None, n, eps, rms).1
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
                .with_min_len(rows_per_task(w))
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
    if let HostBuffer::F32(v) = x {
        if let Some(out) = super::vec_math::softmax_rows(&v[r.clone()], w, log) {
            return Ok(HostBuffer::F32(HostBuf::from(out)));
        }
    }
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

/// LayerNorm/RMSNorm with its weight and bias in one pass per row, over contiguous `(rows, c)`
/// f32 or f64 from element 0 (what `Tensor::layer_norm` and `rms_norm` use on the CPU):
/// `(y, mean, 1/σ)`, all in the input's dtype. `None` for other dtypes, or parameters of
/// another dtype, which take the composed path.
pub(crate) fn norm_affine(
    x: &HostBuffer,
    w: Option<&HostBuffer>,
    b: Option<&HostBuffer>,
    (rows, c): (usize, usize),
    eps: f64,
    rms: bool,
) -> Option<(HostBuffer, HostBuffer, HostBuffer)> {
    macro_rules! run {
        ($v:ident, $x:expr) => {{
            let w = match w {
                None => None,
                Some(HostBuffer::$v(p)) if p.len() >= c => Some(&p[..c]),
                Some(_) => return None,
            };
            let b = match b {
                None => None,
                Some(HostBuffer::$v(p)) if p.len() >= c => Some(&p[..c]),
                Some(_) => return None,
            };
            let (y, m, r) = affine_rows(&$x[..rows * c], w, b, c, eps, rms);
            Some((
                HostBuffer::$v(HostBuf::from(y)),
                HostBuffer::$v(HostBuf::from(m)),
                HostBuffer::$v(HostBuf::from(r)),
            ))
        }};
    }
    match x {
        HostBuffer::F32(v) if v.len() >= rows * c => run!(F32, v),
        HostBuffer::F64(v) if v.len() >= rows * c => run!(F64, v),
        _ => None,
    }
}

/// The gradients of [`norm_affine`]: `(dx, dw, db)` in the input's dtype, the last two when
/// `want` asks for them.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub(crate) fn norm_affine_bwd(
    x: &HostBuffer,
    w: Option<&HostBuffer>,
    mean: &HostBuffer,
    rstd: &HostBuffer,
    g: &HostBuffer,
    (rows, c): (usize, usize),
    rms: bool,
    want: (bool, bool),
) -> Result<(HostBuffer, Option<HostBuffer>, Option<HostBuffer>)> {
    let op = "layer_norm_backward";
    let bad = |what: &str| Error::InvalidArgument {
        op,
        msg: format!(
            "{what} does not match a ({rows}, {c}) {:?} input",
            x.dtype()
        ),
    };
    macro_rules! run {
        ($v:ident, $x:expr, $m:expr, $r:expr, $g:expr) => {{
            let w = match w {
                None => None,
                Some(HostBuffer::$v(w)) if w.len() >= c => Some(&w[..c]),
                Some(_) => return Err(bad("the weight")),
            };
            if $x.len() < rows * c || $g.len() < rows * c || $m.len() < rows || $r.len() < rows {
                return Err(bad("a saved buffer or the gradient"));
            }
            let (dx, dw, db) = affine_bwd_rows(
                &$x[..rows * c],
                w,
                &$m[..rows],
                &$r[..rows],
                &$g[..rows * c],
                c,
                rms,
                want,
            );
            let wrap = |v: Vec<_>| HostBuffer::$v(HostBuf::from(v));
            Ok((wrap(dx), dw.map(wrap), db.map(wrap)))
        }};
    }
    match (x, mean, rstd, g) {
        (HostBuffer::F32(x), HostBuffer::F32(m), HostBuffer::F32(r), HostBuffer::F32(g)) => {
            run!(F32, x, m, r, g)
        }
        (HostBuffer::F64(x), HostBuffer::F64(m), HostBuffer::F64(r), HostBuffer::F64(g)) => {
            run!(F64, x, m, r, g)
        }
        (x, _, _, g) => Err(Error::DTypeMismatch {
            op,
            lhs: x.dtype(),
            rhs: g.dtype(),
        }),
    }
}

/// Rows per task of the fused norm's backward, whose tasks also sum weight and bias
/// gradients (one partial sum of width `c` each).
fn bwd_rows_per_task(rows: usize, c: usize) -> usize {
    rows_per_task(c).max(rows.div_ceil(4 * rayon::current_num_threads().max(1)))
}

fn affine_rows<T: FloatDType>(
    x: &[T],
    w: Option<&[T]>,
    b: Option<&[T]>,
    c: usize,
    eps: f64,
    rms: bool,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let rows = x.len().checked_div(c).unwrap_or(0);
    let (mut mean, mut rstd) = (vec![T::zero(); rows], vec![T::zero(); rows]);
    if c == 0 {
        return (vec![T::zero(); x.len()], mean, rstd);
    }
    // Written once per element by `affine_row` (no zero-fill pass first).
    let mut y: Vec<T> = Vec::with_capacity(x.len());
    let spare = &mut y.spare_capacity_mut()[..x.len()];
    let (n, eps) = (T::from_f64(c as f64), T::from_f64(eps));
    if x.len() >= PAR_MIN {
        spare
            .par_chunks_mut(c)
            .zip(x.par_chunks(c))
            .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
            .with_min_len(rows_per_task(c))
            .for_each(|((o, r), (m, s))| {
                simd(
                    #[inline(always)]
                    || (*m, *s) = affine_row(r, o, w, b, n, eps, rms),
                )
            });
    } else {
        simd(|| {
            spare
                .chunks_mut(c)
                .zip(x.chunks(c))
                .zip(mean.iter_mut().zip(rstd.iter_mut()))
                .for_each(|((o, r), (m, s))| (*m, *s) = affine_row(r, o, w, b, n, eps, rms))
        });
    }
    // SAFETY: `affine_row` wrote every element of every row (`x.len()` is whole rows).
    unsafe { y.set_len(x.len()) };
    (y, mean, rstd)
}

/// One row of [`affine_rows`]: writes `y`, returns `(mean, 1/σ)`. A function with
/// `inline(always)` (not a closure) so that it is compiled into `simd`'s AVX2 frame rather
/// than called out of it without AVX2.
#[inline(always)]
fn affine_row<T: FloatDType>(
    r: &[T],
    o: &mut [MaybeUninit<T>],
    w: Option<&[T]>,
    b: Option<&[T]>,
    n: T,
    eps: T,
    rms: bool,
) -> (T, T) {
    let mu = if rms {
        T::zero()
    } else {
        sum_map(r, |v| v) / n
    };
    let var = sum_map(r, |v| (v - mu) * (v - mu)) / n;
    let rs = (var + eps).sqrt().recip();
    // One loop per case, so that each vectorises without per-element branches.
    match (w, b) {
        (Some(w), Some(b)) => {
            for (((o, &v), &w), &b) in o.iter_mut().zip(r).zip(w).zip(b) {
                o.write((v - mu) * rs * w + b);
            }
        }
        (Some(w), None) => {
            for ((o, &v), &w) in o.iter_mut().zip(r).zip(w) {
                o.write((v - mu) * rs * w);
            }
        }
        (None, Some(b)) => {
            for ((o, &v), &b) in o.iter_mut().zip(r).zip(b) {
                o.write((v - mu) * rs + b);
            }
        }
        (None, None) => {
            for (o, &v) in o.iter_mut().zip(r) {
                o.write((v - mu) * rs);
            }
        }
    }
    (mu, rs)
}

/// The inputs of [`affine_bwd_rows`], shared by its tasks.
struct BwdJob<'a, T> {
    x: &'a [T],
    w: Option<&'a [T]>,
    mean: &'a [T],
    rstd: &'a [T],
    g: &'a [T],
    c: usize,
    rms: bool,
    want: (bool, bool),
}

impl<T: FloatDType> BwdJob<'_, T> {
    /// Rows `[r0, r0 + dx.len() / c)`: their dx, and their sums of `g·x̂` and `g`. A method
    /// with `inline(always)` (not a closure) so that it is compiled into `simd`'s AVX2 frame.
    #[inline(always)]
    fn task(&self, r0: usize, dx: &mut [T]) -> (Vec<T>, Vec<T>) {
        let c = self.c;
        let n = T::from_f64(c as f64);
        let (mut dw, mut db) = (vec![T::zero(); c], vec![T::zero(); c]);
        let mut gw = vec![T::zero(); c];
        let mut xh = vec![T::zero(); c];
        for (i, o) in dx.chunks_mut(c).enumerate() {
            let r = r0 + i;
            let (xr, gr) = (&self.x[r * c..(r + 1) * c], &self.g[r * c..(r + 1) * c]);
            let (mu, rs) = (self.mean[r], self.rstd[r]);
            for (h, &v) in xh.iter_mut().zip(xr) {
                *h = (v - mu) * rs;
            }
            match self.w {
                Some(w) => {
                    for ((d, &g), &w) in gw.iter_mut().zip(gr).zip(w) {
                        *d = g * w;
                    }
                }
                None => gw.copy_from_slice(gr),
            }
            let a = if self.rms {
                T::zero()
            } else {
                sum_map(&gw, |v| v) / n
            };
            let bb = sum_map2(&gw, &xh, |g, h| g * h) / n;
            for ((o, &d), &h) in o.iter_mut().zip(&gw).zip(&xh) {
                *o = rs * (d - a - h * bb);
            }
            if self.want.0 {
                for ((s, &g), &h) in dw.iter_mut().zip(gr).zip(&xh) {
                    *s = *s + g * h;
                }
            }
            if self.want.1 {
                for (s, &g) in db.iter_mut().zip(gr) {
                    *s = *s + g;
                }
            }
        }
        (dw, db)
    }
}

/// `dx = 1/σ · (g·w - mean(g·w) - x̂ · mean(g·w·x̂))` (RMS: without `mean(g·w)`), and
/// `dw = Σ g·x̂`, `db = Σ g` over rows, summed per task and then across tasks.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn affine_bwd_rows<T: FloatDType>(
    x: &[T],
    w: Option<&[T]>,
    mean: &[T],
    rstd: &[T],
    g: &[T],
    c: usize,
    rms: bool,
    (want_w, want_b): (bool, bool),
) -> (Vec<T>, Option<Vec<T>>, Option<Vec<T>>) {
    let rows = mean.len();
    let mut dx = vec![T::zero(); x.len()];
    let zeros = || (vec![T::zero(); c], vec![T::zero(); c]);
    if c == 0 || rows == 0 {
        let (dw, db) = zeros();
        return (dx, want_w.then_some(dw), want_b.then_some(db));
    }
    let job = BwdJob {
        x,
        w,
        mean,
        rstd,
        g,
        c,
        rms,
        want: (want_w, want_b),
    };
    let add = |(mut aw, mut ab): (Vec<T>, Vec<T>), (bw, bb): (Vec<T>, Vec<T>)| {
        for (a, b) in aw.iter_mut().zip(&bw).chain(ab.iter_mut().zip(&bb)) {
            *a = *a + *b;
        }
        (aw, ab)
    };
    let per = bwd_rows_per_task(rows, c);
    let (dw, db) = if x.len() >= PAR_MIN {
        dx.par_chunks_mut(per * c)
            .enumerate()
            .map(|(i, d)| {
                simd(
                    #[inline(always)]
                    || job.task(i * per, d),
                )
            })
            .reduce(zeros, add)
    } else {
        simd(
            #[inline(always)]
            || job.task(0, &mut dx),
        )
    };
    (dx, want_w.then_some(dw), want_b.then_some(db))
}
