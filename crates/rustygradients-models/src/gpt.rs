//! GPT (nanoGPT's and GPT-2's architecture): token and learned position embeddings, pre-LN
//! transformer blocks, a final LayerNorm, and an output head tied to the token embedding.
//! Parameter names match nanoGPT's `state_dict` (`transformer.h.0.attn.c_attn.weight`, ...).

use rustygradients_core::{DType, Device, Error, Reduction, Result, Tensor};
use rustygradients_nn::{Activation, Block, Dropout, Embedding, Forward, LayerNorm, Module};
use serde::{Deserialize, Serialize};

const GIB: f64 = (1u64 << 30) as f64;

/// The shape of a GPT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    /// Tokens the model knows: rows of the token embedding, columns of the logits.
    pub vocab_size: usize,
    /// The longest sequence (context) it reads: rows of the position embedding.
    pub block_size: usize,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block; must divide `n_embd`.
    pub n_head: usize,
    /// Width of the residual stream (embedding dimension).
    pub n_embd: usize,
    /// Dropout probability in `[0, 1)`, after the embeddings and in every block (train mode only).
    pub dropout: f64,
    /// The MLP's nonlinearity: GELU with the exact erf (nanoGPT's, the default when a saved
    /// config has none) or its tanh form (OpenAI GPT-2's, which the GPU fuses into the MLP's
    /// GEMMs).
    #[serde(default)]
    pub activation: Activation,
}

/// What a GPT needs in memory, in bytes (f32 values), estimated from its shape before anything
/// is allocated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryEstimate {
    /// The weights.
    pub parameters: f64,
    /// Gradients plus AdamW's two moments (zero when not training).
    pub training_state: f64,
    /// Activations of one forward (and, when training, backward) pass at the given batch size.
    pub activations: f64,
}

impl MemoryEstimate {
    /// Everything together, in bytes.
    pub fn total(&self) -> f64 {
        self.parameters + self.training_state + self.activations
    }
}

impl GptConfig {
    /// Checks every field, naming the first that is out of range.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| {
            Err(Error::InvalidArgument {
                op: "GptConfig",
                msg,
            })
        };
        if self.vocab_size == 0 {
            return bad(
                "vocab_size is 0: the tokenizer has no tokens (empty training data?)".into(),
            );
        }
        for (name, v) in [
            ("block_size", self.block_size),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_embd", self.n_embd),
        ] {
            if v == 0 {
                return bad(format!("{name} is 0: must be at least 1"));
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!(
                "n_embd {} is not a multiple of n_head {}",
                self.n_embd, self.n_head
            ));
        }
        if !(self.dropout >= 0.0 && self.dropout < 1.0) {
            return bad(format!("dropout {} must be in [0, 1)", self.dropout));
        }
        Ok(())
    }

    /// The number of parameters (as f64: a mistyped size must not overflow before it is refused).
    pub fn num_parameters(&self) -> f64 {
        let (v, t, l, c) = (
            self.vocab_size as f64,
            self.block_size as f64,
            self.n_layer as f64,
            self.n_embd as f64,
        );
        // Embeddings, per block 12·C² weights + 13·C biases and norms, the final LayerNorm.
        (v + t) * c + l * (12.0 * c * c + 13.0 * c) + 2.0 * c
    }

    /// Memory for a batch of `batch` sequences of `block_size` tokens, for training (weights,
    /// gradients, AdamW moments, activations kept for backward) or for inference.
    pub fn memory_estimate(&self, batch: usize, training: bool) -> MemoryEstimate {
        const F32: f64 = 4.0;
        let (b, t, c, h, v) = (
            batch as f64,
            self.block_size as f64,
            self.n_embd as f64,
            self.n_head as f64,
            self.vocab_size as f64,
        );
        let params = self.num_parameters() * F32;
        // Per token and layer: about 24·C values kept (LayerNorm outputs, q/k/v and their head
        // copies, attention and MLP outputs, residuals) plus a row of attention probabilities per
        // head; then the logits and their softmax and gradient.
        let per_layer = b * t * (24.0 * c + 2.0 * h * t) * F32;
        let head = b * t * (3.0 * v + 4.0 * c) * F32;
        let (layers, backward, state) = if training {
            (self.n_layer as f64, 2.0, 3.0 * params)
        } else {
            (1.0, 1.0, 0.0)
        };
        MemoryEstimate {
            parameters: params,
            training_state: state,
            activations: (layers * per_layer + head) * backward,
        }
    }
}

/// Parameters under nanoGPT's (and GPT-2's) names: `transformer.wte.weight`, `transformer.h.0.…`.
#[derive(Module)]
pub struct Gpt {
    /// Its shape (not a parameter).
    #[module(skip)]
    pub config: GptConfig,
    /// Token embedding `(vocab_size, n_embd)`, also the output head's weight (tied).
    #[module(rename = "transformer.wte")]
    pub wte: Embedding,
    /// Learned position embedding `(block_size, n_embd)`.
    #[module(rename = "transformer.wpe")]
    pub wpe: Embedding,
    /// Dropout on the sum of the two embeddings.
    pub drop: Dropout,
    /// The `n_layer` pre-LN transformer blocks, in order.
    #[module(rename = "transformer.h")]
    pub h: Vec<Block>,
    /// The LayerNorm before the output head.
    #[module(rename = "transformer.ln_f")]
    pub ln_f: LayerNorm,
    /// Recompute each block's activations in the backward pass instead of keeping them
    /// ([`Tensor::checkpoint`] per block): activation memory of one block instead of
    /// `n_layer`, for about a third more compute. Off by default.
    #[module(skip)]
    pub activation_checkpointing: bool,
}

impl Gpt {
    /// GPT-2 initialisation: Normal(0, 0.02) weights and embeddings, zero biases, and residual
    /// projections scaled to `0.02 / sqrt(2 n_layer)`. Values come from the global seeded
    /// generator.
    ///
    /// The config is validated first, and the weights' size is checked against the device's
    /// available memory before anything is allocated.
    pub fn new(config: GptConfig, dtype: DType, device: Device) -> Result<Self> {
        config.validate()?;
        let bytes = config.num_parameters() * dtype.size_in_bytes() as f64;
        if let Some(avail) = device.available_memory() {
            if bytes > avail as f64 {
                return Err(Error::InvalidArgument {
                    op: "Gpt::new",
                    msg: format!(
                        "{} parameters need {:.1} GiB but {device} has {:.1} GiB available",
                        config.num_parameters(),
                        bytes / GIB,
                        avail as f64 / GIB
                    ),
                });
            }
        }
        let c = config.n_embd;
        let proj_std = 0.02 / (2.0 * config.n_layer as f64).sqrt();
        let wte = Embedding::normal(config.vocab_size, c, 0.02)?;
        let wpe = Embedding::normal(config.block_size, c, 0.02)?;
        let h = (0..config.n_layer)
            .map(|_| {
                let mut b = Block::new(c, config.n_head, config.dropout, proj_std)?;
                b.mlp.activation = config.activation;
                Ok(b)
            })
            .collect::<Result<Vec<_>>>()?;
        // Built f32 on the CPU, then placed (a no-op for f32 CPU models).
        let mut gpt = Gpt {
            drop: Dropout::new(config.dropout),
            ln_f: LayerNorm::new(c, true)?,
            wte,
            wpe,
            h,
            config,
            activation_checkpointing: false,
        };
        gpt.to(device, dtype)?;
        Ok(gpt)
    }

    /// Logits `(B, T, vocab)` for token ids `(B, T)`.
    pub fn logits(&self, idx: &Tensor) -> Result<Tensor> {
        if idx.rank() != 2 {
            return Err(Error::InvalidShape {
                op: "Gpt::forward",
                msg: "expects token ids of shape (batch, time)".into(),
                shape: idx.shape().clone(),
            });
        }
        let t = idx.dims()[1];
        if t > self.config.block_size {
            return Err(Error::InvalidShape {
                op: "Gpt::forward",
                msg: format!(
                    "sequence length {t} exceeds block_size {}",
                    self.config.block_size
                ),
                shape: idx.shape().clone(),
            });
        }
        let pos = Tensor::arange(0.0, t as f64, 1.0, DType::I64, idx.device())?;
        // Under autocast the residual stream itself is half precision (as llm.c keeps it):
        // every op along it then reads and writes half the bytes, while the normalisations
        // and the loss still compute in f32.
        let mut x = self
            .drop
            .forward(&self.wte.forward(idx)?.add(&self.wpe.forward(&pos)?)?)?
            .autocast_half()?;
        for block in &self.h {
            x = if self.activation_checkpointing {
                let block = block.clone();
                x.checkpoint(move |x| block.forward(x))?
            } else {
                block.forward(&x)?
            };
        }
        // lm_head shares the token embedding's weight (weight tying): `x · wteᵀ` as a linear
        // layer without bias, so the weight is cast to half as it is stored and its gradient
        // comes out (vocab, embd)-major.
        self.ln_f.forward(&x)?.linear(&self.wte.weight, None)
    }

    /// Mean cross-entropy of next-token predictions: `idx` and `targets` are `(B, T)`.
    pub fn loss(&self, idx: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let v = self.config.vocab_size;
        // The logits are handed over whole (their (B, T, V) handle dropped with this
        // statement), so the loss may write their gradient over them as it reads them.
        let logits = {
            let l = self.logits(idx)?;
            l.reshape([l.elem_count() / v, v])?
        };
        logits.into_cross_entropy(&targets.flatten_all()?, None, Reduction::Mean)
    }
}

impl Forward for Gpt {
    /// Logits for token ids (see [`Gpt::logits`]).
    fn forward(&self, idx: &Tensor) -> Result<Tensor> {
        self.logits(idx)
    }
}
