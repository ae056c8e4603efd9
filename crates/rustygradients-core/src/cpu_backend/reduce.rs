//! Reductions over any set of dims. The layout is permuted so that reduced dims come last; each
//! output element is then the fold of one run of `r` consecutive elements in that order.
//! Sums of integer dtypes are `i64` (PyTorch's promotion), accumulated exactly in `i64`.

use rayon::prelude::*;

use super::strided::{simd, CHUNK, PAR_MIN};
use super::HostBuf;
use super::{map_all, with_all, HostBuffer};
use crate::backend::ReduceOp;
use crate::{Error, Layout, Result, WithDType};

pub(crate) fn reduce(
    s: &HostBuffer,
    l: &Layout,
    op: ReduceOp,
    dims: &[usize],
) -> Result<HostBuffer> {
    let rank = l.shape().rank();
    let mut perm: Vec<usize> = (0..rank).filter(|d| !dims.contains(d)).collect();
    let n_out: usize = perm.iter().map(|&d| l.dims()[d]).product();
    perm.extend_from_slice(dims);
    let pl = l.permute(&perm);
    let r: usize = dims.iter().map(|&d| l.dims()[d]).product();
    if r == 0 && op != ReduceOp::Sum {
        return Err(Error::EmptyTensor {
            op: op.name(),
            shape: l.shape().clone(),
        });
    }
    if op == ReduceOp::Sum {
        let ints = match s {
            HostBuffer::I64(v) => Some(int_sum(v, &pl, r, n_out)),
            HostBuffer::U32(v) => Some(int_sum(v, &pl, r, n_out)),
            HostBuffer::U8(v) => Some(int_sum(v, &pl, r, n_out)),
            _ => None,
        };
        if let Some(out) = ints {
            return Ok(HostBuffer::I64(HostBuf::from(out)));
        }
    }
    // Summing the leading dims of a contiguous tensor (a bias gradient, say): add whole rows.
    let leading = dims.iter().enumerate().all(|(i, &d)| i == d);
    if op == ReduceOp::Sum && leading && l.is_contiguous() && r > 0 {
        let range = l.offset()..l.offset() + l.elem_count();
        if n_out == 1 {
            // Everything: one vectorised run per thread.
            return Ok(map_all!(s, v => vec![sum_all(&v[range.clone()])]));
        }
        return Ok(map_all!(s, v => sum_rows(&v[range.clone()], n_out)));
    }
    Ok(match op {
        ReduceOp::Sum => map_all!(s, v => fold(v, &pl, r, n_out, sum_run)),
        ReduceOp::Max => map_all!(s, v => fold(v, &pl, r, n_out, |run| extreme(run, true).0)),
        ReduceOp::Min => map_all!(s, v => fold(v, &pl, r, n_out, |run| extreme(run, false).0)),
        ReduceOp::ArgMax => HostBuffer::I64(
            with_all!(s, v => HostBuf::from(fold(v, &pl, r, n_out, |run| extreme(run, true).1))),
        ),
        ReduceOp::ArgMin => HostBuffer::I64(
            with_all!(s, v => HostBuf::from(fold(v, &pl, r, n_out, |run| extreme(run, false).1))),
        ),
    })
}

/// Integer element types, widened exactly to `i64` for summing.
trait ToI64: WithDType {
    fn to_i64(self) -> i64;
}
impl ToI64 for i64 {
    #[inline(always)]
    fn to_i64(self) -> i64 {
        self
    }
}
impl ToI64 for u32 {
    #[inline(always)]
    fn to_i64(self) -> i64 {
        self as i64
    }
}
impl ToI64 for u8 {
    #[inline(always)]
    fn to_i64(self) -> i64 {
        self as i64
    }
}

/// Sums of runs of `r` integers as `i64`, wrapping on overflow as PyTorch does. Integer addition
/// is associative, so a long single run is split across threads with no effect on the result.
fn int_sum<T: ToI64>(v: &[T], pl: &Layout, r: usize, n_out: usize) -> Vec<i64> {
    let run_sum = |run: &[T]| {
        run.iter()
            .fold(0i64, |acc, &x| acc.wrapping_add(x.to_i64()))
    };
    if n_out == 1 && r >= PAR_MIN {
        if let Some(range) = pl.contiguous_range() {
            let total = v[range]
                .par_chunks(PAR_MIN)
                .map(run_sum)
                .reduce(|| 0, i64::wrapping_add);
            return vec![total];
        }
    }
    fold(v, pl, r, n_out, run_sum)
}

/// Applies `f` to each run of `r` elements; contiguous runs are borrowed and folded in parallel.
fn fold<T: WithDType, U: Send>(
    v: &[T],
    pl: &Layout,
    r: usize,
    n_out: usize,
    f: impl Fn(&[T]) -> U + Sync + Send,
) -> Vec<U> {
    if r == 0 {
        return (0..n_out).map(|_| f(&[])).collect();
    }
    if let Some(range) = pl.contiguous_range() {
        let s = &v[range];
        if s.len() >= PAR_MIN && n_out > 1 {
            return s.par_chunks(r).map(&f).collect();
        }
        return s.chunks(r).map(&f).collect();
    }
    let mut out = Vec::with_capacity(n_out);
    let mut run = Vec::with_capacity(r);
    pl.for_each_offset(|i| {
        run.push(v[i]);
        if run.len() == r {
            out.push(f(&run));
            run.clear();
        }
    });
    out
}

/// Sums in f64 (exact for every integer below 2^53, and stable for f16/bf16/f32), with eight
/// independent accumulators so the loop vectorises.
fn sum_run<T: WithDType>(run: &[T]) -> T {
    T::from_f64(sum_run_f64(run))
}

fn sum_run_f64<T: WithDType>(run: &[T]) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = run.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..8 {
            acc[j] += c[j].to_f64();
        }
    }
    let mut total: f64 = acc.iter().sum();
    for &x in tail {
        total += x.to_f64();
    }
    total
}

/// The sum of a contiguous run, split across threads when long.
fn sum_all<T: WithDType>(v: &[T]) -> T {
    if v.len() < PAR_MIN {
        return simd(|| sum_run(v));
    }
    // Partial sums are collected and added in order, so the result never depends on scheduling.
    let parts: Vec<f64> = v
        .par_chunks(PAR_MIN)
        .map(|c| simd(|| sum_run_f64(c)))
        .collect();
    T::from_f64(parts.iter().sum())
}

/// Column sums of a row-major `(rows, width)` block: `out[j] = Σ_i v[i * width + j]`, in f64.
/// Large blocks are cut into bands of rows fixed by the shape alone, summed in parallel, and
/// the band sums added in order: the result never depends on scheduling.
fn sum_rows<T: WithDType>(v: &[T], width: usize) -> Vec<T> {
    if width == 0 {
        return Vec::new();
    }
    let acc = if v.len() >= PAR_MIN {
        let band = (CHUNK / width).max(1) * width;
        let parts: Vec<Vec<f64>> = v
            .par_chunks(band)
            .map(|c| {
                simd(
                    #[inline(always)]
                    || column_sums(c, width),
                )
            })
            .collect();
        let mut acc = vec![0f64; width];
        for p in parts {
            acc.iter_mut().zip(p).for_each(|(a, x)| *a += x);
        }
        acc
    } else {
        simd(
            #[inline(always)]
            || column_sums(v, width),
        )
    };
    acc.into_iter().map(T::from_f64).collect()
}

#[inline(always)]
fn column_sums<T: WithDType>(v: &[T], width: usize) -> Vec<f64> {
    let mut acc = vec![0f64; width];
    for row in v.chunks_exact(width) {
        for (a, &x) in acc.iter_mut().zip(row) {
            *a += x.to_f64();
        }
    }
    acc
}

/// The largest (or smallest) element and its first index; a NaN wins, as in PyTorch.
fn extreme<T: WithDType>(run: &[T], max: bool) -> (T, i64) {
    let (mut best, mut idx) = (run[0], 0usize);
    #[allow(clippy::eq_op)]
    for (j, &x) in run.iter().enumerate() {
        if x != x {
            return (x, j as i64);
        }
        if (max && x > best) || (!max && x < best) {
            best = x;
            idx = j;
        }
    }
    (best, idx as i64)
}
