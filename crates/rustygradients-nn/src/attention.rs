//! Multi-head causal self-attention (GPT-2 layout: one `c_attn` projection for q, k and v, then
//! `c_proj`).

use rustygradients_core::{DType, Device, Error, Result, Tensor};

use crate::{Dropout, Forward, Linear, Module};

#[derive(Module)]
pub struct CausalSelfAttention {
    pub c_attn: Linear,
    pub c_proj: Linear,
    pub attn_dropout: Dropout,
    pub resid_dropout: Dropout,
    pub n_head: usize,
}

impl CausalSelfAttention {
    /// GPT-2 initialisation: Normal(0, 0.02) weights, `c_proj` scaled by `proj_std`.
    pub fn new(
        n_embd: usize,
        n_head: usize,
        dropout: f64,
        proj_std: f64,
        dtype: DType,
        device: Device,
    ) -> Result<Self> {
        if n_head == 0 || !n_embd.is_multiple_of(n_head) {
            return Err(Error::InvalidArgument {
                op: "CausalSelfAttention::new",
                msg: format!("n_embd {n_embd} is not divisible by n_head {n_head}"),
            });
        }
        Ok(CausalSelfAttention {
            c_attn: Linear::normal(n_embd, 3 * n_embd, true, 0.02, dtype, device)?,
            c_proj: Linear::normal(n_embd, n_embd, true, proj_std, dtype, device)?,
            attn_dropout: Dropout::new(dropout),
            resid_dropout: Dropout::new(dropout),
            n_head,
        })
    }
}

impl Forward for CausalSelfAttention {
    /// `x`: `(batch, time, n_embd)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() != 3 {
            return Err(Error::InvalidShape {
                op: "CausalSelfAttention",
                msg: "expects (batch, time, channels)".into(),
                shape: x.shape().clone(),
            });
        }
        let (b, t, c) = (x.dims()[0], x.dims()[1], x.dims()[2]);
        let hd = c / self.n_head;
        let qkv = self.c_attn.forward(x)?;
        // (B, T, 3C) → three (B, H, T, hd) views: no copies.
        let heads = |i: usize| {
            qkv.narrow(2, i * c, c)?
                .reshape([b, t, self.n_head, hd])?
                .transpose(1, 2)
        };
        let (q, k, v) = (heads(0)?, heads(1)?, heads(2)?);
        let p = if self.attn_dropout.is_training() {
            self.attn_dropout.p
        } else {
            0.0
        };
        let y = q.scaled_dot_product_attention(&k, &v, true, p)?;
        let y = y.transpose(1, 2)?.reshape([b, t, c])?;
        self.resid_dropout.forward(&self.c_proj.forward(&y)?)
    }
}
