//! The Llama family (Llama 2/3, TinyLlama, SmolLM, Mistral): RMSNorm, rotary positions,
//! grouped-query attention and a SwiGLU MLP, as transformers' `LlamaForCausalLM` names its
//! tensors. Inference with a [`KvCache`].

use rustygradients_core::{no_grad, DType, Device, Result, Tensor};

use super::attention::{attend, step_mask};
use super::causal_lm::{CausalLm, Step};
use super::config::LlamaConfig;
use super::kv_cache::KvCache;
use super::layers::{Norm, Proj};
use super::rope::Rope;
use super::weights::Weights;

#[derive(Debug)]
struct Layer {
    input_norm: Norm,
    q: Proj,
    k: Proj,
    v: Proj,
    o: Proj,
    post_norm: Norm,
    gate: Proj,
    up: Proj,
    down: Proj,
}

/// A Llama-family model loaded from a HuggingFace checkpoint.
#[derive(Debug)]
pub struct Llama {
    /// Its configuration.
    pub config: LlamaConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Norm,
    lm_head: Proj,
    rope: Rope,
    dtype: DType,
    device: Device,
    num_parameters: usize,
}

impl Llama {
    /// Parameters in its checkpoint.
    pub fn num_parameters(&self) -> usize {
        self.num_parameters
    }

    /// Builds the model from `weights` (names with or without the `model.` prefix), checking
    /// every tensor's shape against `config`. Without `lm_head.weight` in the checkpoint the
    /// head is tied to the embedding (as `tie_word_embeddings` says, or as a file saved tied
    /// implies).
    pub fn load(config: &LlamaConfig, weights: &Weights) -> Result<Llama> {
        let c = config;
        let (hid, hd, eps) = (c.hidden_size, c.head_dim, c.rms_norm_eps);
        let (q_out, kv_out) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
        let embed = weights.get("embed_tokens.weight", &[c.vocab_size, hid])?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let p = |n: &str| format!("layers.{i}.{n}");
                let (ab, mb) = (c.attention_bias, c.mlp_bias);
                Ok(Layer {
                    input_norm: Norm::rms(weights, &p("input_layernorm"), hid, eps)?,
                    q: Proj::linear(weights, &p("self_attn.q_proj"), hid, q_out, ab)?,
                    k: Proj::linear(weights, &p("self_attn.k_proj"), hid, kv_out, ab)?,
                    v: Proj::linear(weights, &p("self_attn.v_proj"), hid, kv_out, ab)?,
                    o: Proj::linear(weights, &p("self_attn.o_proj"), q_out, hid, ab)?,
                    post_norm: Norm::rms(weights, &p("post_attention_layernorm"), hid, eps)?,
                    gate: Proj::linear(weights, &p("mlp.gate_proj"), hid, c.intermediate_size, mb)?,
                    up: Proj::linear(weights, &p("mlp.up_proj"), hid, c.intermediate_size, mb)?,
                    down: Proj::linear(weights, &p("mlp.down_proj"), c.intermediate_size, hid, mb)?,
                })
            })
            .collect::<Result<_>>()?;
        // `lm_head` sits outside `model.`: look it up without the prefix first.
        let lm_head = if c.tie_word_embeddings && !weights.contains("lm_head.weight") {
            Proj::tied(&embed)?
        } else {
            Proj::linear(weights, "lm_head", hid, c.vocab_size, false)?
        };
        Ok(Llama {
            config: c.clone(),
            norm: Norm::rms(weights, "norm", hid, eps)?,
            embed,
            layers,
            lm_head,
            rope: Rope::new(&c.rope, hd),
            dtype: weights.dtype(),
            device: weights.device(),
            num_parameters: weights.num_parameters(),
        })
    }
}

impl CausalLm for Llama {
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
    fn max_positions(&self) -> Option<usize> {
        None
    }
    fn eos_token_ids(&self) -> Vec<u32> {
        self.config.eos_token_ids.clone()
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
            c.num_hidden_layers,
            batch,
            c.num_key_value_heads,
            capacity,
            c.head_dim,
            self.dtype,
            self.device,
        )
    }

    fn forward(&self, step: &Step, cache: &mut KvCache) -> Result<Tensor> {
        step.validate(self.config.vocab_size)?;
        cache.check_room(step.len)?;
        no_grad(|| {
            let c = &self.config;
            let (b, t) = (step.batch, step.len);
            let (h, hkv, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
            let (cos, sin) = self
                .rope
                .tables(&step.positions, b, t, self.dtype, self.device)?;
            let mask = step_mask(
                &step.pad,
                cache.len(),
                t,
                true,
                c.sliding_window,
                self.device,
            )?;
            let mut x = self.embed.embedding(&step.ids_tensor(self.device)?)?;
            let heads = |x: Tensor, n: usize| x.reshape([b, t, n, d])?.transpose(1, 2);
            for (l, layer) in self.layers.iter().enumerate() {
                let a = layer.input_norm.forward(&x)?;
                let q = heads(layer.q.forward(&a)?, h)?;
                let k = heads(layer.k.forward(&a)?, hkv)?;
                let v = heads(layer.v.forward(&a)?, hkv)?;
                let q = self.rope.apply(&q, &cos, &sin)?;
                let k = self.rope.apply(&k, &cos, &sin)?;
                let (k, v) = cache.append(l, &k, &v)?;
                let y = attend(&q, &k, &v, mask.as_ref(), 1.0 / (d as f64).sqrt())?;
                let y = y.transpose(1, 2)?.reshape([b, t, h * d])?;
                x = x.add(&layer.o.forward(&y)?)?;
                let m = layer.post_norm.forward(&x)?;
                let m = layer
                    .gate
                    .forward(&m)?
                    .silu()?
                    .mul(&layer.up.forward(&m)?)?;
                x = x.add(&layer.down.forward(&m)?)?;
            }
            cache.advance(t);
            step.logits(&x, &self.norm, &self.lm_head, c.vocab_size)
        })
    }
}
