//! The layers the HuggingFace families share, built from checkpoint tensors: projections (weight
//! held `(in, out)`: GPT-2's Conv1D layout as stored, `nn.Linear`'s `(out, in)` as a transposed
//! view, no copy) and LayerNorm/RMSNorm.

use rustygradients_core::{Result, Tensor};

use super::weights::Weights;

/// `x · W + b` with `W` `(in, out)`.
#[derive(Debug, Clone)]
pub struct Proj {
    w: Tensor,
    b: Option<Tensor>,
}

impl Proj {
    /// An `nn.Linear` named `name` (`name.weight` `(out, in)`, `name.bias` when `bias`).
    pub fn linear(w: &Weights, name: &str, inp: usize, out: usize, bias: bool) -> Result<Proj> {
        let weight = w.get(&format!("{name}.weight"), &[out, inp])?.t()?;
        let b = bias
            .then(|| w.get(&format!("{name}.bias"), &[out]))
            .transpose()?;
        Ok(Proj { w: weight, b })
    }

    /// A GPT-2 `Conv1D` named `name` (`name.weight` `(in, out)`, `name.bias`).
    pub fn conv1d(w: &Weights, name: &str, inp: usize, out: usize) -> Result<Proj> {
        Ok(Proj {
            w: w.get(&format!("{name}.weight"), &[inp, out])?,
            b: Some(w.get(&format!("{name}.bias"), &[out])?),
        })
    }

    /// A bias-free projection by the transpose of `weight` (`(out, in)`): a tied output head.
    pub fn tied(weight: &Tensor) -> Result<Proj> {
        Ok(Proj {
            w: weight.t()?,
            b: None,
        })
    }

    /// `x · W (+ b)` over the last dim.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.w)?;
        match &self.b {
            Some(b) => y.add(b),
            None => Ok(y),
        }
    }
}

/// LayerNorm weight and bias named `name` (`gamma`/`beta` in old BERT checkpoints).
#[derive(Debug, Clone)]
pub struct Norm {
    w: Tensor,
    b: Option<Tensor>,
    eps: f64,
    rms: bool,
}

impl Norm {
    /// A LayerNorm with weight and bias.
    pub fn layer(w: &Weights, name: &str, dim: usize, eps: f64) -> Result<Norm> {
        let (wn, bn) =
            if w.contains(&format!("{name}.weight")) || !w.contains(&format!("{name}.gamma")) {
                ("weight", "bias")
            } else {
                ("gamma", "beta")
            };
        Ok(Norm {
            w: w.get(&format!("{name}.{wn}"), &[dim])?,
            b: Some(w.get(&format!("{name}.{bn}"), &[dim])?),
            eps,
            rms: false,
        })
    }

    /// An RMSNorm (weight only).
    pub fn rms(w: &Weights, name: &str, dim: usize, eps: f64) -> Result<Norm> {
        Ok(Norm {
            w: w.get(&format!("{name}.weight"), &[dim])?,
            b: None,
            eps,
            rms: true,
        })
    }

    /// Normalises the last dim.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.rms {
            x.rms_norm(Some(&self.w), self.eps)
        } else {
            x.layer_norm(Some(&self.w), self.b.as_ref(), self.eps)
        }
    }
}
