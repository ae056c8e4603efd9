//! Walking strided layouts: the loops every CPU kernel is built from. Contiguous inputs take a
//! slice fast path (parallel when large); strided ones walk the innermost dim in a tight loop.

use rayon::prelude::*;

use crate::Layout;

/// Below this many elements, threads cost more than they save.
pub(crate) const PAR_MIN: usize = 1 << 15;

/// Calls `f` with the storage index of every element of `l`, in row-major order.
#[inline]
pub(crate) fn for_each(l: &Layout, mut f: impl FnMut(usize)) {
    if let Some(r) = l.contiguous_range() {
        r.for_each(f);
        return;
    }
    let (outer, n, stride) = l.blocks();
    for start in outer {
        for j in 0..n {
            f(start + j * stride);
        }
    }
}

/// `f` applied to each element that `l` selects, into a new contiguous vector.
pub(crate) fn map1<T: Copy + Sync, U: Send>(
    v: &[T],
    l: &Layout,
    f: impl Fn(T) -> U + Sync + Send,
) -> Vec<U> {
    if let Some(r) = l.contiguous_range() {
        let s = &v[r];
        if s.len() >= PAR_MIN {
            return s.par_iter().map(|&x| f(x)).collect();
        }
        return s.iter().map(|&x| f(x)).collect();
    }
    let mut out = Vec::with_capacity(l.elem_count());
    for_each(l, |i| out.push(f(v[i])));
    out
}

/// `f` applied pairwise to the elements of two same-shape layouts.
pub(crate) fn map2<T: Copy + Sync, U: Copy + Sync, V: Send>(
    a: &[T],
    la: &Layout,
    b: &[U],
    lb: &Layout,
    f: impl Fn(T, U) -> V + Sync + Send,
) -> Vec<V> {
    if let (Some(ra), Some(rb)) = (la.contiguous_range(), lb.contiguous_range()) {
        let (sa, sb) = (&a[ra], &b[rb]);
        if sa.len() >= PAR_MIN {
            return sa
                .par_iter()
                .zip(sb.par_iter())
                .map(|(&x, &y)| f(x, y))
                .collect();
        }
        return sa.iter().zip(sb.iter()).map(|(&x, &y)| f(x, y)).collect();
    }
    let mut out = Vec::with_capacity(la.elem_count());
    let (oa, n, sa) = la.blocks();
    let (ob, _, sb) = lb.blocks();
    for (ia, ib) in oa.zip(ob) {
        for j in 0..n {
            out.push(f(a[ia + j * sa], b[ib + j * sb]));
        }
    }
    out
}

/// A contiguous copy of what `l` selects.
pub(crate) fn copy_strided<T: Copy + Sync + Send>(v: &[T], l: &Layout) -> Vec<T> {
    if let Some(r) = l.contiguous_range() {
        return v[r].to_vec();
    }
    map1(v, l, |x| x)
}

/// Writes the elements `ls` selects from `src` to the positions `ld` selects in `dst`.
pub(crate) fn copy_into<T: Copy>(src: &[T], ls: &Layout, dst: &mut [T], ld: &Layout) {
    if let (Some(rs), Some(rd)) = (ls.contiguous_range(), ld.contiguous_range()) {
        dst[rd].copy_from_slice(&src[rs]);
        return;
    }
    let (os, n, ss) = ls.blocks();
    let (od, _, sd) = ld.blocks();
    for (is, id) in os.zip(od) {
        for j in 0..n {
            dst[id + j * sd] = src[is + j * ss];
        }
    }
}
