//! The transformer feed-forward block: `c_fc` (to a hidden width), an activation, `c_proj`,
//! dropout.

use rustygradients_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Dropout, Forward, Linear, Module};

/// The nonlinearity between an [`Mlp`]'s two projections (in configs: `"gelu"`,
/// `"gelu_tanh"`, `"relu"`, `"silu"`, `"tanh"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// GELU with the exact erf (nanoGPT's and BERT's, as PyTorch's `nn.GELU()`).
    #[default]
    Gelu,
    /// GELU's tanh approximation (OpenAI GPT-2's `gelu_new`). In an [`Mlp`] on the GPU it
    /// runs inside the GEMMs ([`Tensor::feed_forward_gelu_tanh`]).
    GeluTanh,
    /// `max(x, 0)`.
    Relu,
    /// `x · sigmoid(x)` (SiLU / swish).
    Silu,
    /// The hyperbolic tangent.
    Tanh,
}

impl Activation {
    /// Applies the activation.
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Gelu => x.gelu(),
            Activation::GeluTanh => x.gelu_tanh(),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
            Activation::Tanh => x.tanh(),
        }
    }
}

/// `dropout(c_proj(act(c_fc(x))))`.
#[derive(Module, Clone)]
pub struct Mlp {
    /// `n_embd → hidden`.
    pub c_fc: Linear,
    /// `hidden → n_embd`.
    pub c_proj: Linear,
    /// Dropout on the output (training only).
    pub dropout: Dropout,
    /// The nonlinearity.
    #[module(skip)]
    pub activation: Activation,
}

impl Mlp {
    /// `n_embd → hidden → n_embd` with PyTorch's default `Linear` initialisation, no dropout,
    /// f32 on the CPU (see [`Module::to`]).
    pub fn new(n_embd: usize, hidden: usize, activation: Activation) -> Result<Self> {
        Ok(Mlp {
            c_fc: Linear::new(n_embd, hidden, true)?,
            c_proj: Linear::new(hidden, n_embd, true)?,
            dropout: Dropout::new(0.0),
            activation,
        })
    }

    /// GPT-2's block: 4× wider, GELU, Normal(0, 0.02) weights with `c_proj` scaled by
    /// `proj_std`, zero biases.
    pub fn gpt2(n_embd: usize, dropout: f64, proj_std: f64) -> Result<Self> {
        Ok(Mlp {
            c_fc: Linear::normal(n_embd, 4 * n_embd, true, 0.02)?,
            c_proj: Linear::normal(4 * n_embd, n_embd, true, proj_std)?,
            dropout: Dropout::new(dropout),
            activation: Activation::Gelu,
        })
    }

    /// The same block with dropout `p` on its output.
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.dropout = Dropout::new(p);
        self
    }
}

impl Mlp {
    /// `residual + self.forward(x)`, a pre-LayerNorm block's MLP added to its residual stream:
    /// without dropout, the second GEMM makes the sum ([`Tensor::linear_add`],
    /// [`Tensor::feed_forward_gelu_tanh_add`]).
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        if !self.dropout.is_identity() {
            return residual.add(&self.forward(x)?);
        }
        match self.activation {
            Activation::GeluTanh => x.feed_forward_gelu_tanh_add(
                &self.c_fc.weight,
                self.c_fc.bias.as_ref(),
                &self.c_proj.weight,
                self.c_proj.bias.as_ref(),
                residual,
            ),
            act => self
                .c_proj
                .forward_add(&act.apply(&self.c_fc.forward(x)?)?, residual),
        }
    }
}

impl Forward for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match self.activation {
            // GPT-2's MLP as one op: on the GPU the GELU runs inside the GEMMs.
            Activation::GeluTanh => x.feed_forward_gelu_tanh(
                &self.c_fc.weight,
                self.c_fc.bias.as_ref(),
                &self.c_proj.weight,
                self.c_proj.bias.as_ref(),
            )?,
            act => self.c_proj.forward(&act.apply(&self.c_fc.forward(x)?)?)?,
        };
        self.dropout.forward(&y)
    }
}
