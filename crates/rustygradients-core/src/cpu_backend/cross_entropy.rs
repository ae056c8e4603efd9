//! Fused cross-entropy over rows of logits: the loss of each row and, for backward, the
//! logits' gradient `softmax - onehot`, without materialising log-probabilities. f16 and bf16
//! logits are computed in f32, and their losses are returned in f32.

use rayon::prelude::*;

use super::lanes::{row_max, sum_map};
use super::strided::{rows_per_task, simd, PAR_MIN};
use super::{HostBuf, HostBuffer};
use crate::backend::BackendStorage;
use crate::{DType, Error, FloatDType, Layout, Result};

const OP: &str = "cross_entropy";

/// The targets as `i64`, each checked to be a class in `0..c` or the ignored index.
fn checked_targets(t: &HostBuffer, tl: &Layout, c: usize, ignore: Option<i64>) -> Result<Vec<i64>> {
    let t: Vec<i64> = t.to_vec(tl);
    if let Some(&bad) = t
        .iter()
        .find(|&&v| Some(v) != ignore && (v < 0 || v as usize >= c))
    {
        return Err(Error::IndexOutOfRange {
            op: OP,
            index: bad,
            size: c,
        });
    }
    Ok(t)
}

/// Runs `f` on each `(row, target, out)` in parallel when the logits are large.
fn rows<T: Copy + Send + Sync, O: Send>(
    x: &[T],
    c: usize,
    t: &[i64],
    out: &mut [O],
    f: impl Fn(&[T], i64, &mut O) + Send + Sync,
) {
    if x.len() >= PAR_MIN && c > 0 {
        out.par_iter_mut()
            .zip(x.par_chunks(c).zip(t.par_iter()))
            .with_min_len(rows_per_task(c))
            .for_each(|(o, (r, &t))| simd(|| f(r, t, o)));
    } else if c > 0 {
        simd(|| {
            out.iter_mut()
                .zip(x.chunks(c).zip(t))
                .for_each(|(o, (r, &t))| f(r, t, o))
        });
    }
}

fn fwd<T: FloatDType>(x: &[T], c: usize, t: &[i64], ignore: Option<i64>) -> (Vec<T>, Vec<T>) {
    let mut out = vec![(T::zero(), T::zero()); t.len()];
    // The closure run inside `simd` is `inline(always)`: otherwise it becomes its own
    // function, compiled without AVX2 (it ran SSE code here before).
    rows(
        x,
        c,
        t,
        &mut out,
        #[inline(always)]
        |r, t, o| {
            let max = row_max(r);
            let lse = max + sum_map(r, |v| (v - max).fast_exp()).ln();
            let nll = if Some(t) == ignore {
                T::zero()
            } else {
                lse - r[t as usize]
            };
            *o = (nll, lse);
        },
    );
    out.into_iter().unzip()
}

fn bwd<T: FloatDType>(
    x: &[T],
    c: usize,
    t: &[i64],
    lse: &[T],
    g: &[T],
    ignore: Option<i64>,
) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    if c == 0 {
        return out;
    }
    let row = |a: Row<'_, T>| bwd_row(a, ignore);
    let per_row = t.iter().zip(lse).zip(g);
    if x.len() >= PAR_MIN {
        out.par_chunks_mut(c)
            .zip(x.par_chunks(c))
            .zip(t.par_iter().zip(lse.par_iter()).zip(g.par_iter()))
            .with_min_len(rows_per_task(c))
            .for_each(|a| {
                simd(
                    #[inline(always)]
                    || row(a),
                )
            });
    } else {
        simd(|| {
            out.chunks_mut(c)
                .zip(x.chunks(c))
                .zip(per_row)
                .for_each(row)
        });
    }
    out
}

/// [`fwd`] and the gradient at output gradient `scale` in one pass per row, the gradient
/// written over the logits `x`: returns the losses.
fn fwd_grad<T: FloatDType>(
    x: &mut [T],
    c: usize,
    t: &[i64],
    scale: T,
    ignore: Option<i64>,
) -> Vec<T> {
    let mut out = vec![T::zero(); t.len()];
    if c == 0 {
        return out;
    }
    let row = |a| fwd_grad_row(a, scale, ignore);
    if x.len() >= PAR_MIN {
        x.par_chunks_mut(c)
            .zip(out.par_iter_mut())
            .zip(t.par_iter())
            .with_min_len(rows_per_task(c))
            .for_each(|a| {
                simd(
                    #[inline(always)]
                    || row(a),
                )
            });
    } else {
        simd(|| x.chunks_mut(c).zip(out.iter_mut()).zip(t).for_each(row));
    }
    out
}

/// One row of [`fwd_grad`] (a function with `inline(always)`, as [`bwd_row`]).
#[inline(always)]
fn fwd_grad_row<T: FloatDType>(
    ((r, nll), &t): ((&mut [T], &mut T), &i64),
    scale: T,
    ignore: Option<i64>,
) {
    if Some(t) == ignore {
        r.iter_mut().for_each(|v| *v = T::zero());
        return;
    }
    let max = row_max(r);
    let lse = max + sum_map(r, |v| (v - max).fast_exp()).ln();
    *nll = lse - r[t as usize];
    for v in r.iter_mut() {
        *v = (*v - lse).fast_exp() * scale;
    }
    r[t as usize] = r[t as usize] - scale;
}

/// Rows of a gradient written at `scale` by [`fwd_grad`], brought to the output gradient `g`.
fn rescale<T: FloatDType>(d: &mut [T], c: usize, g: &[T], scale: T) {
    let row = |(r, &g): (&mut [T], &T)| {
        if g != scale {
            let f = g / scale;
            r.iter_mut().for_each(|v| *v = *v * f);
        }
    };
    if d.len() >= PAR_MIN {
        d.par_chunks_mut(c)
            .zip(g.par_iter())
            .with_min_len(rows_per_task(c))
            .for_each(row);
    } else {
        d.chunks_mut(c).zip(g).for_each(row);
    }
}

type Row<'a, T> = ((&'a mut [T], &'a [T]), ((&'a i64, &'a T), &'a T));

/// One row of [`bwd`]: `(softmax - onehot) · g`. A function with `inline(always)` (not a
/// closure) so that it is compiled into `simd`'s AVX2 frame rather than called out of it.
#[inline(always)]
fn bwd_row<T: FloatDType>(((o, r), ((&t, &lse), &g)): Row<'_, T>, ignore: Option<i64>) {
    if Some(t) == ignore {
        return;
    }
    for (o, &v) in o.iter_mut().zip(r) {
        *o = (v - lse).fast_exp() * g;
    }
    o[t as usize] = o[t as usize] - g;
}

/// f16/bf16 logits are widened to f32 (the result is narrowed back by the caller).
fn widened(x: &HostBuffer, l: &Layout) -> Result<HostBuffer> {
    match x.dtype() {
        DType::F16 | DType::BF16 => x.to_dtype(l, DType::F32),
        _ => x.copy_strided(l),
    }
}

/// The logits' rows as f32 or f64: borrowed in place when they already are contiguous f32 or
/// f64 (the logits of a vocabulary-wide classifier are hundreds of megabytes, and a copy of
/// them cost more than the kernel), else widened or gathered into a new buffer.
enum Rows<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    Owned(HostBuffer),
}

fn rows_of<'a>(x: &'a HostBuffer, l: &Layout) -> Result<Rows<'a>> {
    Ok(match (x, l.contiguous_range()) {
        (HostBuffer::F32(v), Some(r)) => Rows::F32(&v[r]),
        (HostBuffer::F64(v), Some(r)) => Rows::F64(&v[r]),
        _ => Rows::Owned(widened(x, l)?),
    })
}

impl Rows<'_> {
    fn f32(&self) -> Option<&[f32]> {
        match self {
            Rows::F32(v) => Some(v),
            Rows::Owned(HostBuffer::F32(v)) => Some(v),
            _ => None,
        }
    }
    fn f64(&self) -> Option<&[f64]> {
        match self {
            Rows::F64(v) => Some(v),
            Rows::Owned(HostBuffer::F64(v)) => Some(v),
            _ => None,
        }
    }
}

pub(super) fn cross_entropy_fwd(
    x: &HostBuffer,
    l: &Layout,
    t: &HostBuffer,
    tl: &Layout,
    ignore: Option<i64>,
) -> Result<(HostBuffer, HostBuffer)> {
    let c = l.dims()[1];
    let t = checked_targets(t, tl, c, ignore)?;
    let rows = rows_of(x, l)?;
    let (nll, lse) = if let Some(v) = rows.f32() {
        let (a, b) = fwd(v, c, &t, ignore);
        (
            HostBuffer::F32(HostBuf::from(a)),
            HostBuffer::F32(HostBuf::from(b)),
        )
    } else if let Some(v) = rows.f64() {
        let (a, b) = fwd(v, c, &t, ignore);
        (
            HostBuffer::F64(HostBuf::from(a)),
            HostBuffer::F64(HostBuf::from(b)),
        )
    } else {
        return Err(super::float_only(OP, x));
    };
    // The losses stay in the accumulation dtype (f32 for f16/bf16 logits), as the backend
    // contract says; the op narrows them when the caller is not autocasting.
    Ok((nll, lse))
}

pub(super) fn cross_entropy_bwd(
    x: &HostBuffer,
    t: &HostBuffer,
    tl: &Layout,
    lse: &HostBuffer,
    g: &HostBuffer,
    ignore: Option<i64>,
) -> Result<HostBuffer> {
    let n = tl.elem_count();
    let c = x.len().checked_div(n).unwrap_or(0);
    let t = checked_targets(t, tl, c, ignore)?;
    let xl = Layout::contiguous([n, c]);
    let gl = Layout::contiguous(n);
    let (rows, g) = (rows_of(x, &xl)?, rows_of(g, &gl)?);
    let grad = match (rows.f32(), g.f32(), lse) {
        (Some(x), Some(g), HostBuffer::F32(lse)) => {
            HostBuffer::F32(HostBuf::from(bwd(x, c, &t, lse, g, ignore)))
        }
        _ => match (rows.f64(), g.f64(), lse) {
            (Some(x), Some(g), HostBuffer::F64(lse)) => {
                HostBuffer::F64(HostBuf::from(bwd(x, c, &t, lse, g, ignore)))
            }
            _ => return Err(super::float_only(OP, x)),
        },
    };
    // f16/bf16 logits were widened: their gradient goes back to their dtype.
    if grad.dtype() == x.dtype() {
        Ok(grad)
    } else {
        grad.to_dtype(&xl, x.dtype())
    }
}

/// [`cross_entropy_fwd`] with the logits `x` (contiguous, covering the buffer) overwritten by
/// their gradient at output gradient `scale`; `None` for f16/bf16 logits, which this backend
/// computes in a widened copy.
pub(crate) fn cross_entropy_fwd_grad(
    x: &mut HostBuffer,
    l: &Layout,
    t: &HostBuffer,
    tl: &Layout,
    scale: f64,
    ignore: Option<i64>,
) -> Result<Option<HostBuffer>> {
    let c = l.dims()[1];
    let t = checked_targets(t, tl, c, ignore)?;
    Ok(match x {
        HostBuffer::F32(v) => Some(HostBuffer::F32(HostBuf::from(fwd_grad(
            v,
            c,
            &t,
            scale as f32,
            ignore,
        )))),
        HostBuffer::F64(v) => Some(HostBuffer::F64(HostBuf::from(fwd_grad(
            v, c, &t, scale, ignore,
        )))),
        _ => None,
    })
}

/// Gradient rows written at `scale` by [`cross_entropy_fwd_grad`] brought to the contiguous
/// `(N,)` output gradient `g`, in place.
pub(crate) fn cross_entropy_grad_rescale(
    d: &mut HostBuffer,
    g: &HostBuffer,
    scale: f64,
) -> Result<()> {
    let n = g.len();
    let c = d.len().checked_div(n).unwrap_or(0);
    if c == 0 {
        return Ok(());
    }
    match (d, g) {
        (HostBuffer::F32(d), HostBuffer::F32(g)) => rescale(d, c, g, scale as f32),
        (HostBuffer::F64(d), HostBuffer::F64(g)) => rescale(d, c, g, scale),
        (d, g) => {
            return Err(Error::DTypeMismatch {
                op: "cross_entropy_backward",
                lhs: d.dtype(),
                rhs: g.dtype(),
            })
        }
    }
    Ok(())
}
