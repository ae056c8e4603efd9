//! RMS normalisation over the last dim (Llama's norm), with a learned scale.

use rustygradients_core::{DType, Device, Result, Tensor};

use crate::{init, Forward, Module};

#[derive(Module)]
pub struct RmsNorm {
    #[module(kind = "norm")]
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    /// Ones; f32 on the CPU (see [`Module::to`]).
    pub fn new(dim: usize, eps: f64) -> Result<Self> {
        let (dtype, device) = (DType::F32, Device::Cpu);
        Ok(RmsNorm {
            weight: init::constant(dim, 1.0, dtype, device)?,
            eps,
        })
    }
}

impl Forward for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.rms_norm(Some(&self.weight), self.eps)
    }
}
