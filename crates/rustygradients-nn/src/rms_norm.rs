//! RMS normalisation over the last dim (Llama's norm), with a learned scale.

use rustygradients_core::{DType, Device, Result, Tensor};

use crate::{init, Forward, Module};

/// RMS normalisation over the last dim (Llama's `RMSNorm`, PyTorch's `nn.RMSNorm`):
/// `x / sqrt(mean(x²) + eps) * weight`, no mean subtracted and no shift.
#[derive(Module)]
pub struct RmsNorm {
    /// Scale, `(dim,)`; ones at construction.
    #[module(kind = "norm")]
    pub weight: Tensor,
    /// Added to the mean square before the square root (Llama uses `1e-5` or `1e-6`).
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
