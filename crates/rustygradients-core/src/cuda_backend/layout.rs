//! Layouts as kernels read them: a fixed-size struct passed by value (no upload per launch).

use crate::Layout;

/// The most dims a kernel layout holds (after merging, for elementwise kernels).
pub(super) const MAX_DIMS: usize = 8;

/// Mirrors `struct Lay` in `kernels/prelude.cuh`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct KLay {
    rank: i32,
    contiguous: i32,
    small: i32,
    pad: i32,
    offset: i64,
    dims: [i64; MAX_DIMS],
    strides: [i64; MAX_DIMS],
}

impl KLay {
    /// `n` elements from offset 0.
    pub(super) fn contiguous(offset: usize) -> KLay {
        KLay {
            rank: 1,
            contiguous: 1,
            small: 0,
            pad: 0,
            offset: offset as i64,
            dims: [1; MAX_DIMS],
            strides: [0; MAX_DIMS],
        }
    }

    fn build(offset: usize, dims: &[usize], strides: &[usize], what: &str) -> Result<KLay, String> {
        if dims.len() > MAX_DIMS {
            return Err(format!(
                "{what} has {} dims that cannot be merged (shape {dims:?}, strides {strides:?}); \
                 GPU kernels take at most {MAX_DIMS}: call contiguous() first",
                dims.len()
            ));
        }
        let mut k = KLay::contiguous(offset);
        k.rank = dims.len() as i32;
        k.contiguous = 0;
        let fits = |v: usize| v < i32::MAX as usize;
        k.small = (fits(dims.iter().product()) && dims.iter().all(|&d| fits(d))) as i32;
        for (i, (&d, &s)) in dims.iter().zip(strides).enumerate() {
            k.dims[i] = d as i64;
            k.strides[i] = s as i64;
        }
        Ok(k)
    }

    /// The layout with size-1 dims dropped and neighbours merged where the strides allow: the
    /// same map from row-major position to storage offset, in as few dims as possible.
    pub(super) fn of(l: &Layout) -> Result<KLay, String> {
        if l.is_contiguous() {
            return Ok(KLay::contiguous(l.offset()));
        }
        let mut dims: Vec<usize> = Vec::with_capacity(l.dims().len());
        let mut strides: Vec<usize> = Vec::with_capacity(l.dims().len());
        for (&d, &s) in l.dims().iter().zip(l.strides()).rev() {
            if d == 1 {
                continue;
            }
            match (dims.last_mut(), strides.last()) {
                (Some(inner_d), Some(&inner_s)) if s == inner_s * *inner_d => *inner_d *= d,
                _ => {
                    dims.push(d);
                    strides.push(s);
                }
            }
        }
        dims.reverse();
        strides.reverse();
        if dims.len() == 1 && strides[0] == 1 || dims.is_empty() {
            return Ok(KLay::contiguous(l.offset()));
        }
        Self::build(l.offset(), &dims, &strides, "a tensor")
    }

    /// `(rows, cols, row stride)` when the merged layout is a matrix with contiguous rows
    /// (`None` for a contiguous layout or any other).
    pub(super) fn rows(&self) -> Option<(i64, i64, i64)> {
        (self.contiguous == 0 && self.rank == 2 && self.strides[1] == 1).then_some((
            self.dims[0],
            self.dims[1],
            self.strides[0],
        ))
    }

    /// Whether this is `offset + i` for the i-th element.
    pub(super) fn is_contiguous(&self) -> bool {
        self.contiguous != 0
    }

    /// The storage offset of the first element.
    pub(super) fn offset(&self) -> usize {
        self.offset as usize
    }

    /// The layout with its dims as they are (for kernels that index dims one by one).
    pub(super) fn exact(l: &Layout) -> Result<KLay, String> {
        Self::build(l.offset(), l.dims(), l.strides(), "a tensor")
    }
}
