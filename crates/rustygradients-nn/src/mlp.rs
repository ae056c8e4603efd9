//! The transformer feed-forward block: `c_fc` (4× wider), GELU, `c_proj`, dropout.

use rustygradients_core::{DType, Device, Result, Tensor};

use crate::{join_name, Dropout, Linear, Module, ParamKind};

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

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.dropout
            .forward(&self.c_proj.forward(&self.c_fc.forward(x)?.gelu()?)?)
    }
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, ParamKind)) {
        self.c_fc.visit_parameters(&join_name(prefix, "c_fc"), f);
        self.c_proj
            .visit_parameters(&join_name(prefix, "c_proj"), f);
    }
    fn set_training(&self, training: bool) {
        self.dropout.set_training(training);
    }
}
