//! A lookup table: integer ids → rows of a `(num_embeddings, dim)` weight.

use rustygradients_core::{DType, Device, Error, Result, Tensor};

use crate::{init, Forward, Module};

/// A table of `num_embeddings` vectors of size `dim` (PyTorch's `nn.Embedding`): the forward
/// pass maps integer ids to rows of `weight`.
#[derive(Module)]
pub struct Embedding {
    /// `(num_embeddings, dim)`, row `i` the vector of id `i`. Its kind is
    /// [`ParamKind::Embedding`](crate::ParamKind::Embedding), so
    /// [`decay_groups`](crate::optim::decay_groups) does not decay it.
    #[module(kind = "embedding")]
    pub weight: Tensor,
}

impl Embedding {
    /// Weight from Normal(0, 1), PyTorch's default; f32 on the CPU (see [`Module::to`]).
    pub fn new(num_embeddings: usize, dim: usize) -> Result<Self> {
        Self::normal(num_embeddings, dim, 1.0)
    }

    /// Weight from Normal(0, `std`) (GPT-2 uses 0.02).
    pub fn normal(num_embeddings: usize, dim: usize, std: f64) -> Result<Self> {
        Ok(Embedding {
            weight: init::normal([num_embeddings, dim], std, DType::F32, Device::Cpu)?,
        })
    }
}

impl Forward for Embedding {
    /// `ids` of any shape (integer dtype) → `ids.shape + [dim]`.
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (n, dim) = (self.weight.dims()[0], self.weight.dims()[1]);
        self.weight
            .embedding(ids)
            .map_err(|e| Error::InvalidArgument {
                op: "Embedding",
                msg: format!("Embedding({n}, {dim}) on ids of shape {}: {e}", ids.shape()),
            })
    }
}
