//! Integer indexing (`index_select`, `embedding`, `gather`, `scatter_add`), joining and splitting
//! (`cat`, `stack`, `split`, `chunk`) and triangular masks (`tril`, `triu`).

use crate::op::Op;
use crate::storage::Storage;
use crate::{DType, Device, Dim, Error, Layout, Result, Shape, Tensor};

impl Tensor {
    fn check_index(&self, ids: &Tensor, op: &'static str) -> Result<()> {
        if !matches!(ids.dtype(), DType::I64 | DType::U32 | DType::U8) {
            return Err(Error::UnsupportedDType {
                op,
                got: ids.dtype(),
                expected: "an integer index dtype (i64, u32 or u8)",
            });
        }
        if ids.device() != self.device() {
            return Err(Error::DeviceMismatch {
                op,
                lhs: self.device(),
                rhs: ids.device(),
            });
        }
        Ok(())
    }

    /// Rows (or slices along `dim`) picked by a 1-D index tensor.
    pub fn index_select(&self, ids: &Tensor, dim: impl Dim) -> Result<Tensor> {
        let op = "index_select";
        let d = dim.resolve(self.shape(), op)?;
        self.check_index(ids, op)?;
        if ids.rank() != 1 {
            return Err(Error::InvalidShape {
                op,
                msg: "the index must be 1-D".into(),
                shape: ids.shape().clone(),
            });
        }
        let s = self
            .storage()
            .index_select(self.layout(), &ids.storage(), ids.layout(), d)?;
        let mut dims = self.dims().to_vec();
        dims[d] = ids.elem_count();
        Ok(Tensor::from_storage(
            s,
            dims,
            Some(Op::IndexSelect(self.clone(), ids.clone(), d)),
        ))
    }

    /// Looks up rows of this `(vocab, dim)` table: output shape is `ids.shape + [dim]`.
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        if self.rank() != 2 {
            return Err(Error::InvalidShape {
                op: "embedding",
                msg: "the weight must be (num_embeddings, dim)".into(),
                shape: self.shape().clone(),
            });
        }
        let mut dims = ids.dims().to_vec();
        dims.push(self.dims()[1]);
        self.index_select(&ids.flatten_all()?, 0)?.reshape(dims)
    }

    /// `out[i][j] = self[i][ids[i][j]]` along `dim` (PyTorch's `gather`).
    pub fn gather(&self, dim: impl Dim, ids: &Tensor) -> Result<Tensor> {
        let op = "gather";
        let d = dim.resolve(self.shape(), op)?;
        self.check_index(ids, op)?;
        let s = self
            .storage()
            .gather(self.layout(), &ids.storage(), ids.layout(), d)?;
        Ok(Tensor::from_storage(
            s,
            ids.shape().clone(),
            Some(Op::Gather(self.clone(), ids.clone(), d)),
        ))
    }

    /// A copy with `src` added at `ids` along `dim` (PyTorch's `scatter_add`).
    pub fn scatter_add(&self, dim: impl Dim, ids: &Tensor, src: &Tensor) -> Result<Tensor> {
        let op = "scatter_add";
        let d = dim.resolve(self.shape(), op)?;
        self.check_index(ids, op)?;
        if src.dtype() != self.dtype() {
            return Err(Error::DTypeMismatch {
                op,
                lhs: self.dtype(),
                rhs: src.dtype(),
            });
        }
        let s = self.storage().scatter_add(
            self.layout(),
            &ids.storage(),
            ids.layout(),
            &src.storage(),
            src.layout(),
            d,
        )?;
        Ok(Tensor::from_storage(
            s,
            self.shape().clone(),
            Some(Op::ScatterAdd(self.clone(), ids.clone(), src.clone(), d)),
        ))
    }

    /// Joins tensors along an existing dim.
    pub fn cat(tensors: &[Tensor], dim: impl Dim) -> Result<Tensor> {
        let op = "cat";
        let first = tensors.first().ok_or_else(|| Error::InvalidArgument {
            op,
            msg: "needs at least one tensor".into(),
        })?;
        let d = dim.resolve(first.shape(), op)?;
        let mut dims = first.dims().to_vec();
        dims[d] = 0;
        for t in tensors {
            if t.dtype() != first.dtype() {
                return Err(Error::DTypeMismatch {
                    op,
                    lhs: first.dtype(),
                    rhs: t.dtype(),
                });
            }
            if t.device() != first.device() {
                return Err(Error::DeviceMismatch {
                    op,
                    lhs: first.device(),
                    rhs: t.device(),
                });
            }
            let same = t.rank() == first.rank()
                && t.dims()
                    .iter()
                    .zip(first.dims())
                    .enumerate()
                    .all(|(i, (a, b))| i == d || a == b);
            if !same {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: first.shape().clone(),
                    rhs: t.shape().clone(),
                });
            }
            dims[d] += t.dims()[d];
        }
        if tensors.len() == 1 {
            return Ok(first.clone());
        }
        let shape = Shape::new(dims);
        let mut out = Storage::zeros(shape.elem_count(), first.dtype(), first.device())?;
        let out_l = Layout::contiguous(shape.clone());
        let mut start = 0;
        for t in tensors {
            let len = t.dims()[d];
            t.storage()
                .copy_into(t.layout(), &mut out, &out_l.narrow(d, start, len))?;
            start += len;
        }
        Ok(Tensor::from_storage(
            out,
            shape,
            Some(Op::Cat(tensors.to_vec(), d)),
        ))
    }

    /// Joins same-shape tensors along a new dim.
    pub fn stack(tensors: &[Tensor], dim: impl Dim) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| Error::InvalidArgument {
            op: "stack",
            msg: "needs at least one tensor".into(),
        })?;
        let d = dim.resolve_with(first.rank(), 1, first.shape(), "stack")?;
        for t in tensors {
            if t.shape() != first.shape() {
                return Err(Error::ShapeMismatch {
                    op: "stack",
                    lhs: first.shape().clone(),
                    rhs: t.shape().clone(),
                });
            }
        }
        let parts = tensors
            .iter()
            .map(|t| t.unsqueeze(d))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&parts, d)
    }

    /// Pieces of `size` along `dim` (the last may be smaller); views, no copy.
    pub fn split(&self, size: usize, dim: impl Dim) -> Result<Vec<Tensor>> {
        let d = dim.resolve(self.shape(), "split")?;
        if size == 0 {
            return Err(Error::InvalidArgument {
                op: "split",
                msg: "split size must be positive".into(),
            });
        }
        let n = self.dims()[d];
        (0..n)
            .step_by(size)
            .map(|s| self.narrow(d, s, size.min(n - s)))
            .collect()
    }

    /// `chunks` pieces along `dim`, as equal as `torch.chunk` makes them.
    pub fn chunk(&self, chunks: usize, dim: impl Dim) -> Result<Vec<Tensor>> {
        let d = dim.resolve(self.shape(), "chunk")?;
        if chunks == 0 {
            return Err(Error::InvalidArgument {
                op: "chunk",
                msg: "number of chunks must be positive".into(),
            });
        }
        let n = self.dims()[d];
        self.split(n.div_ceil(chunks).max(1), d)
    }

    /// Keeps elements on and below diagonal `k` of the last two dims, zeroing the rest.
    pub fn tril(&self, k: i64) -> Result<Tensor> {
        self.triangle(k, true)
    }
    /// Keeps elements on and above diagonal `k` of the last two dims, zeroing the rest.
    pub fn triu(&self, k: i64) -> Result<Tensor> {
        self.triangle(k, false)
    }

    fn triangle(&self, k: i64, lower: bool) -> Result<Tensor> {
        let op = if lower { "tril" } else { "triu" };
        if self.rank() < 2 {
            return Err(Error::InvalidShape {
                op,
                msg: "needs at least 2 dims".into(),
                shape: self.shape().clone(),
            });
        }
        let (r, c) = (self.dims()[self.rank() - 2], self.dims()[self.rank() - 1]);
        let mask = Tensor::diagonal_mask(r, c, k, lower, self.device())?;
        mask.where_cond(self, &self.scalar_like(0.0)?)
    }

    /// A `(r, c)` `u8` mask, built on `device`, of the positions on and below diagonal `k`
    /// (`lower`) or on and above it: `col - row <= k` or `>= k`.
    pub(crate) fn diagonal_mask(
        r: usize,
        c: usize,
        k: i64,
        lower: bool,
        device: Device,
    ) -> Result<Tensor> {
        let rows = Tensor::arange(0.0, r as f64, 1.0, DType::I64, device)?.reshape([r, 1])?;
        let cols = Tensor::arange(0.0, c as f64, 1.0, DType::I64, device)?.reshape([1, c])?;
        let diag = cols.sub(&rows)?;
        let k = Tensor::full(k as f64, (), DType::I64, device)?;
        if lower {
            diag.le(&k)
        } else {
            diag.ge(&k)
        }
    }
}
