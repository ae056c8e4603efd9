//! Multi-head self-attention (GPT-2 layout: one `c_attn` projection for q, k and v, then
//! `c_proj`), causal for decoders or bidirectional for encoders, with an optional key-padding
//! mask.

use rustygradients_core::{DType, Error, Result, Tensor};

use crate::{Dropout, Forward, Linear, Module};

/// Self-attention over `(batch, time, n_embd)` inputs with `n_head` heads.
#[derive(Module, Clone)]
pub struct SelfAttention {
    /// The q, k and v projections side by side: `(3·n_embd, n_embd)`.
    pub c_attn: Linear,
    /// The output projection.
    pub c_proj: Linear,
    /// Dropout on the attention probabilities (training only).
    pub attn_dropout: Dropout,
    /// Dropout on the output (training only).
    pub resid_dropout: Dropout,
    /// Number of heads; `n_embd` is a multiple of it.
    pub n_head: usize,
    /// Whether position `t` attends only to positions `<= t` (a decoder) or to all (an encoder).
    pub causal: bool,
}

fn check_heads(n_embd: usize, n_head: usize) -> Result<()> {
    if n_head == 0 || !n_embd.is_multiple_of(n_head) {
        return Err(Error::InvalidArgument {
            op: "SelfAttention::new",
            msg: format!("n_embd {n_embd} is not divisible by n_head {n_head}"),
        });
    }
    Ok(())
}

impl SelfAttention {
    /// PyTorch's default `Linear` initialisation, no dropout (see [`SelfAttention::with_dropout`]),
    /// f32 on the CPU (see [`Module::to`]).
    pub fn new(n_embd: usize, n_head: usize, causal: bool) -> Result<Self> {
        check_heads(n_embd, n_head)?;
        Ok(SelfAttention {
            c_attn: Linear::new(n_embd, 3 * n_embd, true)?,
            c_proj: Linear::new(n_embd, n_embd, true)?,
            attn_dropout: Dropout::new(0.0),
            resid_dropout: Dropout::new(0.0),
            n_head,
            causal,
        })
    }

    /// GPT-2's causal attention: Normal(0, 0.02) weights, `c_proj` scaled by `proj_std`, zero
    /// biases.
    pub fn gpt2(n_embd: usize, n_head: usize, dropout: f64, proj_std: f64) -> Result<Self> {
        check_heads(n_embd, n_head)?;
        Ok(SelfAttention {
            c_attn: Linear::normal(n_embd, 3 * n_embd, true, 0.02)?,
            c_proj: Linear::normal(n_embd, n_embd, true, proj_std)?,
            attn_dropout: Dropout::new(dropout),
            resid_dropout: Dropout::new(dropout),
            n_head,
            causal: true,
        })
    }

    /// The same attention with dropout `p` on the attention probabilities and the output.
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.attn_dropout = Dropout::new(p);
        self.resid_dropout = Dropout::new(p);
        self
    }

    /// Attention where `key_padding_mask` (`(batch, time)`, any dtype, nonzero =
    /// padding, as PyTorch's `key_padding_mask`) hides padded keys from every query. A query
    /// whose keys are all hidden gets NaN, as in PyTorch.
    pub fn forward_masked(&self, x: &Tensor, key_padding_mask: Option<&Tensor>) -> Result<Tensor> {
        let y = self.heads(x, key_padding_mask)?;
        self.resid_dropout.forward(&self.c_proj.forward(&y)?)
    }

    /// `residual + self.forward(x)`, a pre-LayerNorm block's attention added to its residual
    /// stream: without residual dropout, `c_proj`'s GEMM makes the sum
    /// ([`Linear::forward_add`]).
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let y = self.heads(x, None)?;
        if self.resid_dropout.is_identity() {
            self.c_proj.forward_add(&y, residual)
        } else {
            residual.add(&self.resid_dropout.forward(&self.c_proj.forward(&y)?)?)
        }
    }

    /// The heads' outputs side by side, `(batch, time, n_embd)`: what `c_proj` reads.
    fn heads(&self, x: &Tensor, key_padding_mask: Option<&Tensor>) -> Result<Tensor> {
        let op = "SelfAttention";
        if x.rank() != 3 {
            return Err(Error::InvalidShape {
                op,
                msg: "expects (batch, time, channels)".into(),
                shape: x.shape().clone(),
            });
        }
        let (b, t, c) = (x.dims()[0], x.dims()[1], x.dims()[2]);
        let expected = self.c_proj.weight.dims()[0];
        if c != expected {
            return Err(Error::InvalidShape {
                op,
                msg: format!("expects {expected} channels (n_embd), got {c}"),
                shape: x.shape().clone(),
            });
        }
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
        let y = match key_padding_mask {
            None => q.scaled_dot_product_attention(&k, &v, self.causal, p)?,
            Some(mask) => {
                if mask.dims() != [b, t] {
                    return Err(Error::InvalidShape {
                        op,
                        msg: format!("key_padding_mask must be (batch, time) = [{b}, {t}]"),
                        shape: mask.shape().clone(),
                    });
                }
                // Hidden keys: the padding, and (when causal) every later position.
                let hidden = if mask.dtype() == DType::U8 {
                    mask.clone()
                } else {
                    mask.ne(&mask.zeros_like()?)?
                };
                let mut hidden = hidden.reshape([b, 1, 1, t])?;
                if self.causal {
                    let future = Tensor::ones([t, t], DType::U8, x.device())?.triu(1)?;
                    hidden = hidden.maximum(&future)?;
                }
                let scores = q
                    .matmul(&k.transpose(2, 3)?)?
                    .mul_scalar(1.0 / (hd as f64).sqrt())?
                    .masked_fill(&hidden, f64::NEG_INFINITY)?;
                let att = scores.softmax(-1)?.dropout(p, p > 0.0)?;
                att.matmul(&v)?
            }
        };
        y.transpose(1, 2)?.reshape([b, t, c])
    }
}

impl Forward for SelfAttention {
    /// `x`: `(batch, time, n_embd)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_masked(x, None)
    }
}
