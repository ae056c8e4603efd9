//! How a tensor's elements sit in its storage: shape, strides (in elements) and a start offset.
//! Every view (`permute`, `narrow`, `expand`, ...) is a new `Layout` over the same storage.

use crate::{Error, Result, Shape};

/// Where a tensor's elements sit in its storage: a shape, a stride per dim (in elements) and
/// the storage index of the first element. The methods that build views do not check their
/// arguments; the tensor ops validate them first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Shape,
    strides: Vec<usize>,
    offset: usize,
}

impl Layout {
    /// Row-major strides over `shape`, starting at storage index 0.
    pub fn contiguous(shape: impl Into<Shape>) -> Self {
        let shape = shape.into();
        let strides = shape.stride_contiguous();
        Layout {
            shape,
            strides,
            offset: 0,
        }
    }
    /// A layout from its parts, unchecked (`strides` needs one entry per dim).
    pub fn new(shape: Shape, strides: Vec<usize>, offset: usize) -> Self {
        Layout {
            shape,
            strides,
            offset,
        }
    }
    /// The sizes of the dims.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    /// The sizes of the dims as a slice.
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }
    /// The storage step, in elements, along each dim (0 on broadcast dims).
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    /// The storage index of the first element.
    pub fn offset(&self) -> usize {
        self.offset
    }
    /// Number of elements the layout selects.
    pub fn elem_count(&self) -> usize {
        self.shape.elem_count()
    }

    /// Row-major contiguous (size-1 dims may have any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut acc = 1;
        for (&d, &s) in self.dims().iter().zip(self.strides.iter()).rev() {
            if d != 1 && s != acc {
                return false;
            }
            acc *= d;
        }
        true
    }

    /// The storage range `offset..offset+n` if the layout is contiguous.
    pub fn contiguous_range(&self) -> Option<std::ops::Range<usize>> {
        self.is_contiguous()
            .then(|| self.offset..self.offset + self.elem_count())
    }

    /// Largest storage index touched plus one (0 for an empty tensor).
    pub fn storage_extent(&self) -> usize {
        if self.elem_count() == 0 {
            return 0;
        }
        self.offset
            + self
                .dims()
                .iter()
                .zip(self.strides.iter())
                .map(|(&d, &s)| (d - 1) * s)
                .sum::<usize>()
            + 1
    }

    /// Dims reordered: dim `i` of the result is dim `perm[i]` of `self`. `perm` must be a
    /// permutation of `0..rank` (indices out of range panic).
    pub fn permute(&self, perm: &[usize]) -> Layout {
        Layout {
            shape: Shape::new(perm.iter().map(|&p| self.dims()[p]).collect()),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            offset: self.offset,
        }
    }

    /// `len` entries of `dim` from `start`: the offset moves, the strides stay. `dim` must be
    /// in range (else it panics) and `start + len` within the dim's size (not checked).
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Layout {
        let mut dims = self.dims().to_vec();
        dims[dim] = len;
        Layout {
            shape: Shape::new(dims),
            strides: self.strides.clone(),
            offset: self.offset + start * self.strides[dim],
        }
    }

    /// Broadcast view (stride 0 on new or size-1 dims). `shape` must be a valid broadcast target.
    pub fn broadcast_as(&self, shape: &Shape, op: &'static str) -> Result<Layout> {
        let target = shape.dims();
        let rank = target.len();
        if rank < self.shape.rank() {
            return Err(Error::BroadcastIncompatible {
                op,
                lhs: self.shape.clone(),
                rhs: shape.clone(),
            });
        }
        let extra = rank - self.shape.rank();
        let mut strides = vec![0; rank];
        for i in 0..rank {
            if i < extra {
                continue;
            }
            let (d, s) = (self.dims()[i - extra], self.strides[i - extra]);
            strides[i] = if d == target[i] {
                s
            } else if d == 1 {
                0
            } else {
                return Err(Error::BroadcastIncompatible {
                    op,
                    lhs: self.shape.clone(),
                    rhs: shape.clone(),
                });
            };
        }
        Ok(Layout {
            shape: shape.clone(),
            strides,
            offset: self.offset,
        })
    }

    /// Strides that show the same elements, in row-major order, as `shape` without a copy; `None`
    /// when no such strides exist. Dims are merged or split only within runs of dims that are
    /// laid out contiguously with each other.
    pub fn view_strides(&self, shape: &Shape) -> Option<Vec<usize>> {
        if shape.elem_count() != self.elem_count() {
            return None;
        }
        if self.shape.rank() == 0 || self.elem_count() == 0 {
            return Some(shape.stride_contiguous());
        }
        let (od, os, nd) = (self.dims(), &self.strides, shape.dims());
        let mut out = vec![0; nd.len()];
        // Walk the old dims from the right in chunks whose elements are evenly spaced, and give
        // each chunk the new dims whose sizes multiply to the chunk's size.
        let mut next_new = nd.len();
        let mut base = os[od.len() - 1];
        let (mut chunk, mut taken) = (1usize, 1usize);
        for d in (0..od.len()).rev() {
            chunk *= od[d];
            let chunk_ends = d == 0 || (od[d - 1] != 1 && os[d - 1] != chunk * base);
            if !chunk_ends {
                continue;
            }
            while next_new > 0 && (taken < chunk || nd[next_new - 1] == 1) {
                next_new -= 1;
                out[next_new] = taken * base;
                taken *= nd[next_new];
            }
            if taken != chunk {
                return None;
            }
            if d > 0 {
                base = os[d - 1];
                chunk = 1;
                taken = 1;
            }
        }
        (next_new == 0).then_some(out)
    }

    /// A view with new dims and strides over the same offset.
    pub fn restrided(&self, shape: Shape, strides: Vec<usize>) -> Layout {
        Layout {
            shape,
            strides,
            offset: self.offset,
        }
    }

    /// Calls `f` with the storage offset of every element, in row-major order.
    pub(crate) fn for_each_offset(&self, mut f: impl FnMut(usize)) {
        if let Some(r) = self.contiguous_range() {
            r.for_each(f);
            return;
        }
        let (outer, n, stride) = self.blocks();
        for start in outer {
            for j in 0..n {
                f(start + j * stride);
            }
        }
    }

    /// Iterates the storage index of each element in row-major order.
    pub fn offsets(&self) -> StridedOffsets<'_> {
        StridedOffsets::new(self)
    }

    /// Iterates `(outer storage start, inner count, inner stride)` blocks: the innermost dimension is
    /// walked by the caller, which keeps kernels tight for the common strided cases.
    pub fn blocks(&self) -> (StridedOffsets<'_>, usize, usize) {
        match self.dims().last() {
            None => (StridedOffsets::new(self), 1, 0),
            Some(&n) => {
                let rank = self.shape.rank();
                (
                    StridedOffsets::with_dims(
                        &self.dims()[..rank - 1],
                        &self.strides[..rank - 1],
                        self.offset,
                        self.elem_count() == 0,
                    ),
                    n,
                    self.strides[rank - 1],
                )
            }
        }
    }
}

/// Row-major walk over storage indices of a strided layout, without per-element allocation.
pub struct StridedOffsets<'a> {
    dims: &'a [usize],
    strides: &'a [usize],
    index: Vec<usize>,
    next: Option<usize>,
}

impl<'a> StridedOffsets<'a> {
    fn new(l: &'a Layout) -> Self {
        Self::with_dims(l.dims(), &l.strides, l.offset, l.elem_count() == 0)
    }
    fn with_dims(dims: &'a [usize], strides: &'a [usize], offset: usize, empty: bool) -> Self {
        StridedOffsets {
            dims,
            strides,
            index: vec![0; dims.len()],
            next: if empty { None } else { Some(offset) },
        }
    }
}

impl Iterator for StridedOffsets<'_> {
    type Item = usize;
    #[inline]
    fn next(&mut self) -> Option<usize> {
        let cur = self.next?;
        let mut next = cur;
        let mut done = true;
        for d in (0..self.dims.len()).rev() {
            if self.index[d] + 1 < self.dims[d] {
                self.index[d] += 1;
                next += self.strides[d];
                done = false;
                break;
            }
            next -= self.index[d] * self.strides[d];
            self.index[d] = 0;
        }
        self.next = if done { None } else { Some(next) };
        Some(cur)
    }
}
