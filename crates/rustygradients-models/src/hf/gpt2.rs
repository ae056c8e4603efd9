//! GPT-2 as HuggingFace stores it: Conv1D projections (weights `(in, out)`), learned positions,
//! pre-LN blocks, the output head tied to `wte`. Inference with a [`KvCache`].

use rustygradients_core::{no_grad, DType, Device, Result, Tensor};

use super::attention::{attend, step_mask};
use super::causal_lm::{CausalLm, Step};
use super::config::Gpt2Config;
use super::kv_cache::KvCache;
use super::layers::{Norm, Proj};
use super::weights::Weights;

#[derive(Debug)]
struct Block {
    ln_1: Norm,
    c_attn: Proj,
    attn_proj: Proj,
    ln_2: Norm,
    c_fc: Proj,
    mlp_proj: Proj,
}

/// A GPT-2 family model loaded from a HuggingFace checkpoint.
#[derive(Debug)]
pub struct Gpt2 {
    /// Its configuration.
    pub config: Gpt2Config,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: Norm,
    lm_head: Proj,
    dtype: DType,
    device: Device,
    num_parameters: usize,
}

impl Gpt2 {
    /// Parameters in its checkpoint.
    pub fn num_parameters(&self) -> usize {
        self.num_parameters
    }

    /// Builds the model from `weights` (names with or without the `transformer.` prefix),
    /// checking every tensor's shape against `config`.
    pub fn load(config: &Gpt2Config, weights: &Weights) -> Result<Gpt2> {
        let (c, eps) = (config.n_embd, config.layer_norm_epsilon);
        let inner = config.inner();
        let wte = weights.get("wte.weight", &[config.vocab_size, c])?;
        let blocks = (0..config.n_layer)
            .map(|i| {
                let p = |n: &str| format!("h.{i}.{n}");
                Ok(Block {
                    ln_1: Norm::layer(weights, &p("ln_1"), c, eps)?,
                    c_attn: Proj::conv1d(weights, &p("attn.c_attn"), c, 3 * c)?,
                    attn_proj: Proj::conv1d(weights, &p("attn.c_proj"), c, c)?,
                    ln_2: Norm::layer(weights, &p("ln_2"), c, eps)?,
                    c_fc: Proj::conv1d(weights, &p("mlp.c_fc"), c, inner)?,
                    mlp_proj: Proj::conv1d(weights, &p("mlp.c_proj"), inner, c)?,
                })
            })
            .collect::<Result<_>>()?;
        let lm_head = if config.tie_word_embeddings || !weights.contains("lm_head.weight") {
            Proj::tied(&wte)?
        } else {
            Proj::linear(weights, "lm_head", c, config.vocab_size, false)?
        };
        Ok(Gpt2 {
            config: config.clone(),
            wpe: weights.get("wpe.weight", &[config.n_positions, c])?,
            wte,
            blocks,
            ln_f: Norm::layer(weights, "ln_f", c, eps)?,
            lm_head,
            dtype: weights.dtype(),
            device: weights.device(),
            num_parameters: weights.num_parameters(),
        })
    }

    fn gelu(&self, x: &Tensor) -> Result<Tensor> {
        match self.config.activation_function.as_str() {
            "gelu" => x.gelu(),
            _ => x.gelu_tanh(),
        }
    }
}

impl CausalLm for Gpt2 {
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
    fn max_positions(&self) -> Option<usize> {
        Some(self.config.n_positions)
    }
    fn eos_token_ids(&self) -> Vec<u32> {
        self.config.eos_token_ids()
    }
    fn device(&self) -> Device {
        self.device
    }
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn new_cache(&self, batch: usize, capacity: usize) -> Result<KvCache> {
        let c = &self.config;
        KvCache::new(
            c.n_layer,
            batch,
            c.n_head,
            capacity,
            c.n_embd / c.n_head,
            self.dtype,
            self.device,
        )
    }

    fn forward(&self, step: &Step, cache: &mut KvCache) -> Result<Tensor> {
        step.validate(self.config.vocab_size)?;
        cache.check_room(step.len)?;
        if let Some(&bad) = step
            .positions
            .iter()
            .find(|&&p| p < 0 || p as usize >= self.config.n_positions)
        {
            return Err(rustygradients_core::Error::IndexOutOfRange {
                op: "Gpt2::forward (position)",
                index: bad,
                size: self.config.n_positions,
            });
        }
        no_grad(|| {
            let (b, t) = (step.batch, step.len);
            let (c, h) = (self.config.n_embd, self.config.n_head);
            let d = c / h;
            let ids = step.ids_tensor(self.device)?;
            let pos = Tensor::from_vec(step.positions.clone(), [b, t], self.device)?;
            let mut x = self.wte.embedding(&ids)?.add(&self.wpe.embedding(&pos)?)?;
            let mask = step_mask(&step.pad, cache.len(), t, true, None, self.device)?;
            let heads = |x: Tensor| x.reshape([b, t, h, d])?.transpose(1, 2);
            for (l, blk) in self.blocks.iter().enumerate() {
                let qkv = blk.c_attn.forward(&blk.ln_1.forward(&x)?)?;
                let q = heads(qkv.narrow(2, 0, c)?)?.contiguous()?;
                let k = heads(qkv.narrow(2, c, c)?)?;
                let v = heads(qkv.narrow(2, 2 * c, c)?)?;
                let (k, v) = cache.append(l, &k, &v)?;
                let y = attend(&q, &k, &v, mask.as_ref(), 1.0 / (d as f64).sqrt())?;
                let y = y.transpose(1, 2)?.reshape([b, t, c])?;
                x = x.add(&blk.attn_proj.forward(&y)?)?;
                let m = self.gelu(&blk.c_fc.forward(&blk.ln_2.forward(&x)?)?)?;
                x = x.add(&blk.mlp_proj.forward(&m)?)?;
            }
            cache.advance(t);
            step.logits(&x, &self.ln_f, &self.lm_head, self.config.vocab_size)
        })
    }
}
