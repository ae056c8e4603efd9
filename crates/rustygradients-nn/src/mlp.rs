//! The transformer feed-forward block: `c_fc` (4× wider), GELU, `c_proj`, dropout.

use rustygradients_core::{DType, Device, Result, Tensor};

use crate::{Dropout, Forward, Linear, Module};

#[derive(Module)]
pub struct Mlp {
    pub c_fc: Linear,
    pub c_proj: Linear,
    pub dropout: Dropout,
}

impl Mlp {
    pub fn new(
        n_embd: usize,
        dropout: f64,
        proj_std: f64,
        dtype: DType,
        device: Device,
    ) -> Result<Self> {
        Ok(Mlp {
            c_fc: Linear::normal(n_embd, 4 * n_embd, true, 0.02, dtype, device)?,
            c_proj: Linear::normal(4 * n_embd, n_embd, true, proj_std, dtype, device)?,
            dropout: Dropout::new(dropout),
        })
    }
}

impl Forward for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.dropout
            .forward(&self.c_proj.forward(&self.c_fc.forward(x)?.gelu()?)?)
    }
}
