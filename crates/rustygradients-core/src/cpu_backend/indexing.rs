//! Integer-indexed reads and writes: `index_select`, `gather`, `scatter_add`. Every index is
//! range-checked before any element moves, so a bad index is an error, never a wild access.

use super::elementwise::Arith;
use super::strided::{combine_into, copy_strided};
use super::{map_all, map_pair, HostBuffer};
use crate::backend::check_index_shape;
use crate::{Error, Layout, Result, Shape, WithDType};

/// The index tensor as i64s, each checked against `size`.
fn checked_ids(op: &'static str, ids: &HostBuffer, il: &Layout, size: usize) -> Result<Vec<i64>> {
    let v: Vec<i64> = match ids {
        HostBuffer::I64(_) | HostBuffer::U32(_) | HostBuffer::U8(_) => ids.to_vec(il),
        other => {
            return Err(Error::UnsupportedDType {
                op,
                got: other.dtype(),
                expected: "an integer index dtype (i64, u32 or u8)",
            })
        }
    };
    if let Some(&bad) = v.iter().find(|&&i| i < 0 || i as usize >= size) {
        return Err(Error::IndexOutOfRange {
            op,
            index: bad,
            size,
        });
    }
    Ok(v)
}

/// Calls `f(multi_index, linear_position)` for every position of `shape`, row-major.
fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize], usize)) {
    let n: usize = shape.iter().product();
    let mut idx = vec![0; shape.len()];
    for pos in 0..n {
        f(&idx, pos);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

fn offset_of(l: &Layout, idx: &[usize], dim: usize, at: usize) -> usize {
    l.offset()
        + idx
            .iter()
            .zip(l.strides())
            .enumerate()
            .map(|(d, (&i, &s))| if d == dim { at * s } else { i * s })
            .sum::<usize>()
}

pub(crate) fn index_select(
    s: &HostBuffer,
    l: &Layout,
    ids: &HostBuffer,
    il: &Layout,
    dim: usize,
) -> Result<HostBuffer> {
    let ids = checked_ids("index_select", ids, il, l.dims()[dim])?;
    let mut dims = l.dims().to_vec();
    dims[dim] = ids.len();
    let out_l = Layout::contiguous(Shape::new(dims));
    Ok(map_all!(s, v => {
        let mut out = vec![v.first().copied().unwrap_or_else(|| WithDType::from_f64(0.0)); out_l.elem_count()];
        for (i, &id) in ids.iter().enumerate() {
            combine_into(v, &l.narrow(dim, id as usize, 1), &mut out, &out_l.narrow(dim, i, 1), |d, s| *d = s);
        }
        out
    }))
}

pub(crate) fn gather(
    s: &HostBuffer,
    l: &Layout,
    ids: &HostBuffer,
    il: &Layout,
    dim: usize,
) -> Result<HostBuffer> {
    check_index_shape("gather", l, il, dim)?;
    let ids = checked_ids("gather", ids, il, l.dims()[dim])?;
    Ok(map_all!(s, v => {
        let mut out = Vec::with_capacity(ids.len());
        for_each_index(il.dims(), |idx, pos| out.push(v[offset_of(l, idx, dim, ids[pos] as usize)]));
        out
    }))
}

fn scatter_add_typed<T: Arith>(
    v: &[T],
    l: &Layout,
    ids: &[i64],
    il: &Layout,
    src: &[T],
    sl: &Layout,
    dim: usize,
) -> Vec<T> {
    let mut out = copy_strided(v, l);
    let ol = Layout::contiguous(l.shape().clone());
    // Whole rows (an index constant along every dim but the first, as the embedding and
    // index_select gradients make): add each source row into its target row.
    let rows_only = dim == 0
        && il.strides()[1..].iter().all(|&s| s == 0)
        && il.dims()[1..] == l.dims()[1..]
        && sl.dims() == il.dims();
    if let (true, Some(rs)) = (rows_only, sl.contiguous_range()) {
        let width: usize = l.dims()[1..].iter().product();
        let src = &src[rs];
        for r in 0..il.dims()[0] {
            let target = ids[r * width.max(1)] as usize;
            let o = &mut out[target * width..(target + 1) * width];
            let s = &src[r * width..(r + 1) * width];
            o.iter_mut()
                .zip(s)
                .for_each(|(o, &x)| *o = <T as Arith>::add(*o, x));
        }
        return out;
    }
    for_each_index(il.dims(), |idx, pos| {
        let o = offset_of(&ol, idx, dim, ids[pos] as usize);
        let si = offset_of(sl, idx, usize::MAX, 0);
        out[o] = <T as Arith>::add(out[o], src[si]);
    });
    out
}

pub(crate) fn scatter_add(
    s: &HostBuffer,
    l: &Layout,
    ids: &HostBuffer,
    il: &Layout,
    src: &HostBuffer,
    sl: &Layout,
    dim: usize,
) -> Result<HostBuffer> {
    check_index_shape("scatter_add", l, il, dim)?;
    check_index_shape("scatter_add", sl, il, usize::MAX)?;
    let ids = checked_ids("scatter_add", ids, il, l.dims()[dim])?;
    Ok(map_pair!("scatter_add", s, src, (x, y) => scatter_add_typed(x, l, &ids, il, y, sl, dim)))
}
