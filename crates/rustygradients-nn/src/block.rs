//! A pre-LayerNorm transformer block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.

use rustygradients_core::{Result, Tensor};

use crate::{Forward, LayerNorm, Mlp, Module, SelfAttention};

/// A pre-LayerNorm transformer block (GPT-2's): `x + attn(ln_1(x))`, then
/// `x + mlp(ln_2(x))`, on `(batch, seq, n_embd)` inputs. Parameters are named as in GPT-2
/// checkpoints (`ln_1.weight`, `attn.c_attn.weight`, `mlp.c_proj.bias`, …).
#[derive(Module, Clone)]
pub struct Block {
    /// Normalises the input of `attn`.
    pub ln_1: LayerNorm,
    /// Self-attention (causal in GPT-2), added back to the residual stream.
    pub attn: SelfAttention,
    /// Normalises the input of `mlp`.
    pub ln_2: LayerNorm,
    /// The feed-forward block (4× wide with GELU in GPT-2), added back to the residual stream.
    pub mlp: Mlp,
}

impl Block {
    /// GPT-2's block (f32 on the CPU; see [`Module::to`]): causal attention and a 4× GELU MLP
    /// with GPT-2 initialisation; `proj_std` is the init std of the residual projections
    /// (GPT-2: `0.02 / sqrt(2 n_layer)`).
    pub fn new(n_embd: usize, n_head: usize, dropout: f64, proj_std: f64) -> Result<Self> {
        Ok(Block {
            ln_1: LayerNorm::new(n_embd, true)?,
            attn: SelfAttention::gpt2(n_embd, n_head, dropout, proj_std)?,
            ln_2: LayerNorm::new(n_embd, true)?,
            mlp: Mlp::gpt2(n_embd, dropout, proj_std)?,
        })
    }
}

impl Forward for Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Each branch is added to the stream by its last GEMM (see `forward_add`).
        let x = self.attn.forward_add(&self.ln_1.forward(x)?, x)?;
        self.mlp.forward_add(&self.ln_2.forward(&x)?, &x)
    }
}
