//! A lookup table: integer ids → rows of a `(num_embeddings, dim)` weight.

use rustygradients_core::{DType, Device, Result, Tensor};

use crate::{init, Forward, Module};

#[derive(Module)]
pub struct Embedding {
    #[module(kind = "embedding")]
    pub weight: Tensor,
}

impl Embedding {
    /// Weight from Normal(0, `std`) (PyTorch uses 1.0; GPT-2 uses 0.02).
    pub fn new(
        num_embeddings: usize,
        dim: usize,
        std: f64,
        dtype: DType,
        device: Device,
    ) -> Result<Self> {
        Ok(Embedding {
            weight: init::normal([num_embeddings, dim], std, dtype, device)?,
        })
    }
}

impl Forward for Embedding {
    /// `ids` of any shape (integer dtype) → `ids.shape + [dim]`.
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.weight.embedding(ids)
    }
}
