//! Layer normalisation over the last dim, with learned scale and shift.

use rustygradients_core::{DType, Device, Result, Tensor};

use crate::{init, Forward, Module};

/// Layer normalisation over the last dim (PyTorch's `nn.LayerNorm(dim)`):
/// `(x - mean) / sqrt(var + eps) * weight + bias`, with the biased variance.
#[derive(Module, Clone)]
pub struct LayerNorm {
    /// Scale, `(dim,)`; ones at construction.
    #[module(kind = "norm")]
    pub weight: Tensor,
    /// Shift, `(dim,)`; zeros at construction, `None` for a layer built with `bias = false`.
    #[module(kind = "norm")]
    pub bias: Option<Tensor>,
    /// Added to the variance before the square root; `1e-5` by default, as in PyTorch.
    pub eps: f64,
}

impl LayerNorm {
    /// Ones and zeros, `eps = 1e-5` (PyTorch's defaults); f32 on the CPU (see [`Module::to`]).
    pub fn new(dim: usize, bias: bool) -> Result<Self> {
        let (dtype, device) = (DType::F32, Device::Cpu);
        Ok(LayerNorm {
            weight: init::constant(dim, 1.0, dtype, device)?,
            bias: if bias {
                Some(init::constant(dim, 0.0, dtype, device)?)
            } else {
                None
            },
            eps: 1e-5,
        })
    }
}

impl Forward for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.layer_norm(Some(&self.weight), self.bias.as_ref(), self.eps)
    }
}
