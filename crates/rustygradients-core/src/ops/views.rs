//! Views: new layouts over the same storage (no copy), plus `contiguous` and `reshape`, which copy
//! only when the layout demands it.

use crate::op::Op;
use crate::{Dim, Error, Result, Shape, Tensor};

impl Tensor {
    /// A contiguous tensor with the same values (this tensor itself if already contiguous).
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        self.copy()
    }

    /// Contiguous and starting at storage offset 0 (what kernels that take whole storages need);
    /// copies only when this tensor is not already so.
    pub(crate) fn dense(&self) -> Result<Tensor> {
        if self.is_contiguous() && self.layout().offset() == 0 {
            return Ok(self.clone());
        }
        self.copy()
    }

    /// Same data, new shape, never a copy; fails when the strides cannot express it (use
    /// [`Tensor::reshape`], which copies then).
    pub fn view(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.elem_count() != self.elem_count() {
            return Err(Error::ElementCountMismatch {
                op: "view",
                len: self.elem_count(),
                shape,
            });
        }
        let Some(strides) = self.layout().view_strides(&shape) else {
            return Err(Error::NotContiguous {
                op: "view",
                shape: self.shape().clone(),
                strides: self.stride().to_vec(),
                target: shape,
            });
        };
        let layout = self.layout().restrided(shape, strides);
        Ok(self.view_with(layout, Some(Op::Reshape(self.clone()))))
    }

    /// New shape with the same elements in row-major order: a view when the strides allow it,
    /// else a contiguous copy.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.elem_count() != self.elem_count() {
            return Err(Error::ElementCountMismatch {
                op: "reshape",
                len: self.elem_count(),
                shape,
            });
        }
        if &shape == self.shape() {
            return Ok(self.clone());
        }
        if self.layout().view_strides(&shape).is_some() {
            return self.view(shape);
        }
        self.contiguous()?.view(shape)
    }

    /// Merges dims `start..=end` into one.
    pub fn flatten(&self, start: impl Dim, end: impl Dim) -> Result<Tensor> {
        if self.rank() == 0 {
            return self.reshape(1);
        }
        let (s, e) = (
            start.resolve(self.shape(), "flatten")?,
            end.resolve(self.shape(), "flatten")?,
        );
        if s > e {
            return Err(Error::InvalidArgument {
                op: "flatten",
                msg: format!("start dim {s} is after end dim {e}"),
            });
        }
        let d = self.dims();
        let mut dims = d[..s].to_vec();
        dims.push(d[s..=e].iter().product());
        dims.extend_from_slice(&d[e + 1..]);
        self.reshape(dims)
    }

    /// All elements as one dim.
    pub fn flatten_all(&self) -> Result<Tensor> {
        self.reshape(self.elem_count())
    }

    /// Reorders dims: output dim `i` is input dim `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let mut seen = vec![false; self.rank()];
        let valid = perm.len() == self.rank()
            && perm
                .iter()
                .all(|&p| p < self.rank() && !std::mem::replace(&mut seen[p], true));
        if !valid {
            return Err(Error::InvalidArgument {
                op: "permute",
                msg: format!(
                    "{perm:?} is not a permutation of the dims of shape {}",
                    self.shape()
                ),
            });
        }
        Ok(self.view_with(
            self.layout().permute(perm),
            Some(Op::Permute(self.clone(), perm.to_vec())),
        ))
    }

    /// Swaps two dims.
    pub fn transpose(&self, d0: impl Dim, d1: impl Dim) -> Result<Tensor> {
        let (a, b) = (
            d0.resolve(self.shape(), "transpose")?,
            d1.resolve(self.shape(), "transpose")?,
        );
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Transpose of a tensor with at most 2 dims (PyTorch's `t()`).
    pub fn t(&self) -> Result<Tensor> {
        match self.rank() {
            0 | 1 => Ok(self.clone()),
            2 => self.transpose(0, 1),
            _ => Err(Error::InvalidShape {
                op: "t",
                msg: "expects a tensor with <= 2 dims; use transpose(d0, d1)".into(),
                shape: self.shape().clone(),
            }),
        }
    }

    /// The `len` elements from `start` along `dim`.
    pub fn narrow(&self, dim: impl Dim, start: usize, len: usize) -> Result<Tensor> {
        let d = dim.resolve(self.shape(), "narrow")?;
        let size = self.dims()[d];
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::InvalidArgument {
                op: "narrow",
                msg: format!(
                    "range {start}..{} exceeds size {size} of dim {d} in shape {}",
                    start.saturating_add(len),
                    self.shape()
                ),
            });
        }
        if start == 0 && len == size {
            return Ok(self.clone());
        }
        Ok(self.view_with(
            self.layout().narrow(d, start, len),
            Some(Op::Narrow(self.clone(), d, start)),
        ))
    }

    /// Elements `range` along `dim` (a narrow with Rust range syntax).
    pub fn slice(&self, dim: impl Dim, range: std::ops::Range<usize>) -> Result<Tensor> {
        self.narrow(dim, range.start, range.end.saturating_sub(range.start))
    }

    /// Index `i` of the first dim, with that dim removed (`x[i]`).
    pub fn get(&self, i: usize) -> Result<Tensor> {
        if self.rank() == 0 {
            return Err(Error::InvalidShape {
                op: "get",
                msg: "cannot index a 0-d tensor".into(),
                shape: self.shape().clone(),
            });
        }
        if i >= self.dims()[0] {
            return Err(Error::IndexOutOfRange {
                op: "get",
                index: i as i64,
                size: self.dims()[0],
            });
        }
        self.narrow(0, i, 1)?.squeeze(0)
    }

    /// Removes a size-1 dim (a no-op for other sizes, as in PyTorch).
    pub fn squeeze(&self, dim: impl Dim) -> Result<Tensor> {
        if self.rank() == 0 {
            return Ok(self.clone());
        }
        let d = dim.resolve(self.shape(), "squeeze")?;
        if self.dims()[d] != 1 {
            return Ok(self.clone());
        }
        let mut dims = self.dims().to_vec();
        let mut strides = self.stride().to_vec();
        dims.remove(d);
        strides.remove(d);
        Ok(self.view_with(
            self.layout().restrided(Shape::new(dims), strides),
            Some(Op::Reshape(self.clone())),
        ))
    }

    /// Inserts a size-1 dim at `dim` (which may equal the rank).
    pub fn unsqueeze(&self, dim: impl Dim) -> Result<Tensor> {
        let d = dim.resolve_with(self.rank(), 1, self.shape(), "unsqueeze")?;
        let mut dims = self.dims().to_vec();
        let mut strides = self.stride().to_vec();
        let s = if d < self.rank() {
            dims[d] * strides[d]
        } else {
            1
        };
        dims.insert(d, 1);
        strides.insert(d, s);
        Ok(self.view_with(
            self.layout().restrided(Shape::new(dims), strides),
            Some(Op::Reshape(self.clone())),
        ))
    }

    /// A broadcast view to `shape` (size-1 and missing leading dims repeat without copying).
    pub fn broadcast_to(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if &shape == self.shape() {
            return Ok(self.clone());
        }
        let layout = self.layout().broadcast_as(&shape, "broadcast_to")?;
        Ok(self.view_with(layout, Some(Op::Expand(self.clone()))))
    }

    /// PyTorch's name for [`Tensor::broadcast_to`].
    pub fn expand(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        self.broadcast_to(shape)
    }
}
