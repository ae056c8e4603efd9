//! The transformer feed-forward block: `c_fc` (to a hidden width), an activation, `c_proj`,
//! dropout.

use rustygradients_core::{Result, Tensor};

use crate::{Dropout, Forward, Linear, Module};

/// The nonlinearity between an [`Mlp`]'s two projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// GELU with the exact erf (GPT-2 and BERT as trained in PyTorch).
    Gelu,
    /// GELU's tanh approximation.
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

impl Forward for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.activation.apply(&self.c_fc.forward(x)?)?;
        self.dropout.forward(&self.c_proj.forward(&h)?)
    }
}
