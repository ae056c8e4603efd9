//! `y = x Wᵀ + b`, with `W` stored `(out_features, in_features)` as in PyTorch.

use rustygradients_core::{DType, Device, Error, Result, Tensor};

use crate::{init, Forward, Module};

/// A fully connected layer (PyTorch's `nn.Linear`): `y = x Wᵀ + b` over the last dim of `x`,
/// `(…, in_features)` to `(…, out_features)`.
#[derive(Module, Clone)]
pub struct Linear {
    /// `W`, `(out_features, in_features)` as PyTorch stores it.
    pub weight: Tensor,
    /// `b`, `(out_features,)`; `None` for a layer without bias.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// PyTorch's default initialisation: uniform in `±1/sqrt(in_features)` for weight and bias.
    /// f32 on the CPU; place the model with [`Module::to`].
    pub fn new(in_features: usize, out_features: usize, bias: bool) -> Result<Self> {
        let (dtype, device) = (DType::F32, Device::Cpu);
        let bound = 1.0 / (in_features as f64).sqrt();
        Ok(Linear {
            weight: init::uniform([out_features, in_features], bound, dtype, device)?,
            bias: if bias {
                Some(init::uniform(out_features, bound, dtype, device)?)
            } else {
                None
            },
        })
    }

    /// Weight from Normal(0, `std`), zero bias (the GPT-2 initialisation).
    pub fn normal(in_features: usize, out_features: usize, bias: bool, std: f64) -> Result<Self> {
        let (dtype, device) = (DType::F32, Device::Cpu);
        Ok(Linear {
            weight: init::normal([out_features, in_features], std, dtype, device)?,
            bias: if bias {
                Some(init::constant(out_features, 0.0, dtype, device)?)
            } else {
                None
            },
        })
    }

    /// Wraps existing tensors (e.g. loaded weights); `weight` must be `(out, in)`.
    pub fn from_weights(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        if weight.rank() != 2
            || bias
                .as_ref()
                .is_some_and(|b| b.dims() != [weight.dims()[0]])
        {
            return Err(Error::InvalidArgument {
                op: "Linear::from_weights",
                msg: format!(
                    "weight {} and bias {:?} do not form a linear layer",
                    weight.shape(),
                    bias.as_ref().map(|b| b.shape().clone())
                ),
            });
        }
        Ok(Linear { weight, bias })
    }
}

impl Linear {
    /// `residual + self.forward(x)` as one op ([`Tensor::linear_add`]): on the GPU the GEMM
    /// adds the residual stream as it writes.
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        x.linear_add(&self.weight, self.bias.as_ref(), residual)
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        let (out_f, in_f) = (self.weight.dims()[0], self.weight.dims()[1]);
        if x.rank() == 0 || x.dims()[x.rank() - 1] != in_f {
            return Err(Error::InvalidShape {
                op: "Linear",
                msg: format!(
                    "Linear(in {in_f}, out {out_f}) needs inputs whose last dim is {in_f}"
                ),
                shape: x.shape().clone(),
            });
        }
        Ok(())
    }
}

impl Forward for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        // One op: on the GPU the bias is added, and its gradient summed, inside the GEMMs.
        // Under autocast weight and bias join the half-precision product (as PyTorch's linear).
        x.linear(&self.weight, self.bias.as_ref())
    }
}
