//! A pre-LayerNorm transformer block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.

use rustygradients_core::{DType, Device, Result, Tensor};

use crate::{CausalSelfAttention, Forward, LayerNorm, Mlp, Module};

#[derive(Module)]
pub struct Block {
    pub ln_1: LayerNorm,
    pub attn: CausalSelfAttention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
}

impl Block {
    /// `proj_std` is the init std of the residual projections (GPT-2: `0.02 / sqrt(2 n_layer)`).
    pub fn new(
        n_embd: usize,
        n_head: usize,
        dropout: f64,
        proj_std: f64,
        dtype: DType,
        device: Device,
    ) -> Result<Self> {
        Ok(Block {
            ln_1: LayerNorm::new(n_embd, true, dtype, device)?,
            attn: CausalSelfAttention::new(n_embd, n_head, dropout, proj_std, dtype, device)?,
            ln_2: LayerNorm::new(n_embd, true, dtype, device)?,
            mlp: Mlp::new(n_embd, dropout, proj_std, dtype, device)?,
        })
    }
}

impl Forward for Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.add(&self.attn.forward(&self.ln_1.forward(x)?)?)?;
        x.add(&self.mlp.forward(&self.ln_2.forward(&x)?)?)
    }
}
