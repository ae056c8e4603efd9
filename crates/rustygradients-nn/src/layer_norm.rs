//! Layer normalisation over the last dim, with learned scale and shift.

use rustygradients_core::{DType, Device, Result, Tensor};

use crate::{init, Forward, Module};

#[derive(Module)]
pub struct LayerNorm {
    #[module(kind = "norm")]
    pub weight: Tensor,
    #[module(kind = "norm")]
    pub bias: Option<Tensor>,
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
