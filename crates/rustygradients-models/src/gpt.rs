//! GPT (nanoGPT's and GPT-2's architecture): token and learned position embeddings, pre-LN
//! transformer blocks, a final LayerNorm, and an output head tied to the token embedding.
//! Parameter names match nanoGPT's `state_dict` (`transformer.h.0.attn.c_attn.weight`, ...).

use rustygradients_core::{DType, Device, Error, Reduction, Result, Tensor};
use rustygradients_nn::{join_name, Block, Dropout, Embedding, LayerNorm, Module, ParamKind};
use serde::{Deserialize, Serialize};

/// The shape of a GPT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    pub vocab_size: usize,
    pub block_size: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub dropout: f64,
}

pub struct Gpt {
    pub config: GptConfig,
    pub wte: Embedding,
    pub wpe: Embedding,
    pub drop: Dropout,
    pub h: Vec<Block>,
    pub ln_f: LayerNorm,
}

impl Gpt {
    /// GPT-2 initialisation: Normal(0, 0.02) weights and embeddings, zero biases, and residual
    /// projections scaled to `0.02 / sqrt(2 n_layer)`. Values come from the global seeded
    /// generator.
    pub fn new(config: GptConfig, dtype: DType, device: Device) -> Result<Self> {
        if config.vocab_size == 0 || config.block_size == 0 || config.n_layer == 0 {
            return Err(Error::InvalidArgument {
                op: "Gpt::new",
                msg: format!("invalid config {config:?}"),
            });
        }
        let c = config.n_embd;
        let proj_std = 0.02 / (2.0 * config.n_layer as f64).sqrt();
        let wte = Embedding::new(config.vocab_size, c, 0.02, dtype, device)?;
        let wpe = Embedding::new(config.block_size, c, 0.02, dtype, device)?;
        let h = (0..config.n_layer)
            .map(|_| Block::new(c, config.n_head, config.dropout, proj_std, dtype, device))
            .collect::<Result<Vec<_>>>()?;
        Ok(Gpt {
            drop: Dropout::new(config.dropout),
            ln_f: LayerNorm::new(c, true, dtype, device)?,
            wte,
            wpe,
            h,
            config,
        })
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
        let mut x = self
            .drop
            .forward(&self.wte.forward(idx)?.add(&self.wpe.forward(&pos)?)?)?;
        for block in &self.h {
            x = block.forward(&x)?;
        }
        // lm_head shares the token embedding's weight (weight tying).
        self.ln_f.forward(&x)?.matmul(&self.wte.weight.t()?)
    }

    /// Mean cross-entropy of next-token predictions: `idx` and `targets` are `(B, T)`.
    pub fn loss(&self, idx: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let logits = self.logits(idx)?;
        let v = self.config.vocab_size;
        logits.reshape([logits.elem_count() / v, v])?.cross_entropy(
            &targets.flatten_all()?,
            None,
            Reduction::Mean,
        )
    }

    /// Copies named tensors (as from [`Module::named_parameters`] or a checkpoint) into the
    /// parameters. Every parameter must be present with its exact shape and dtype.
    pub fn load_named(&self, tensors: &[(String, Tensor)]) -> Result<()> {
        let by_name: std::collections::HashMap<&str, &Tensor> =
            tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        // Everything is checked before anything is copied: a bad file leaves the model as it was.
        let mut pairs = Vec::new();
        for (name, p) in self.named_parameters() {
            let src = by_name
                .get(name.as_str())
                .ok_or_else(|| Error::format("GPT weights", format!("missing tensor {name}")))?;
            if src.shape() != p.shape() {
                return Err(Error::format(
                    "GPT weights",
                    format!(
                        "{name}: shape {} but the model needs {}",
                        src.shape(),
                        p.shape()
                    ),
                ));
            }
            pairs.push((p, *src));
        }
        for (p, src) in pairs {
            p.copy_(&src.to_dtype(p.dtype())?.to_device(p.device())?)?;
        }
        Ok(())
    }
}

impl Module for Gpt {
    /// Logits for token ids (see [`Gpt::logits`]).
    fn forward(&self, idx: &Tensor) -> Result<Tensor> {
        self.logits(idx)
    }

    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, ParamKind)) {
        let tr = join_name(prefix, "transformer");
        self.wte.visit_parameters(&join_name(&tr, "wte"), f);
        self.wpe.visit_parameters(&join_name(&tr, "wpe"), f);
        for (i, b) in self.h.iter().enumerate() {
            b.visit_parameters(&join_name(&tr, &format!("h.{i}")), f);
        }
        self.ln_f.visit_parameters(&join_name(&tr, "ln_f"), f);
    }

    fn set_training(&self, training: bool) {
        self.drop.set_training(training);
        for b in &self.h {
            b.set_training(training);
        }
    }
}
