//! A BERT encoder (post-LN, learned absolute positions, token types) with mean pooling: what
//! sentence-transformers models such as all-MiniLM-L6-v2 compute.

use rustygradients_core::{no_grad, DType, Device, Error, Result, Tensor};

use super::attention::attend;
use super::config::BertConfig;
use super::layers::{Norm, Proj};
use super::weights::Weights;

#[derive(Debug)]
struct Layer {
    q: Proj,
    k: Proj,
    v: Proj,
    attn_out: Proj,
    attn_norm: Norm,
    inter: Proj,
    out: Proj,
    out_norm: Norm,
}

/// A BERT encoder loaded from a HuggingFace checkpoint.
#[derive(Debug)]
pub struct Bert {
    /// Its configuration.
    pub config: BertConfig,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    embed_norm: Norm,
    layers: Vec<Layer>,
    dtype: DType,
    device: Device,
    num_parameters: usize,
}

impl Bert {
    /// Parameters in its checkpoint.
    pub fn num_parameters(&self) -> usize {
        self.num_parameters
    }

    /// Builds the encoder from `weights` (names with or without the `bert.` prefix; a pooler
    /// or MLM head in the file is ignored), checking every shape against `config`.
    pub fn load(config: &BertConfig, weights: &Weights) -> Result<Bert> {
        let c = config;
        let (hid, eps) = (c.hidden_size, c.layer_norm_eps);
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let p = |n: &str| format!("encoder.layer.{i}.{n}");
                Ok(Layer {
                    q: Proj::linear(weights, &p("attention.self.query"), hid, hid, true)?,
                    k: Proj::linear(weights, &p("attention.self.key"), hid, hid, true)?,
                    v: Proj::linear(weights, &p("attention.self.value"), hid, hid, true)?,
                    attn_out: Proj::linear(weights, &p("attention.output.dense"), hid, hid, true)?,
                    attn_norm: Norm::layer(weights, &p("attention.output.LayerNorm"), hid, eps)?,
                    inter: Proj::linear(
                        weights,
                        &p("intermediate.dense"),
                        hid,
                        c.intermediate_size,
                        true,
                    )?,
                    out: Proj::linear(weights, &p("output.dense"), c.intermediate_size, hid, true)?,
                    out_norm: Norm::layer(weights, &p("output.LayerNorm"), hid, eps)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Bert {
            config: c.clone(),
            word: weights.get("embeddings.word_embeddings.weight", &[c.vocab_size, hid])?,
            position: weights.get(
                "embeddings.position_embeddings.weight",
                &[c.max_position_embeddings, hid],
            )?,
            token_type: weights.get(
                "embeddings.token_type_embeddings.weight",
                &[c.type_vocab_size, hid],
            )?,
            embed_norm: Norm::layer(weights, "embeddings.LayerNorm", hid, eps)?,
            layers,
            dtype: weights.dtype(),
            device: weights.device(),
            num_parameters: weights.num_parameters(),
        })
    }

    /// The dtype it computes in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The longest input (in tokens, special tokens included).
    pub fn max_len(&self) -> usize {
        self.config.max_position_embeddings
    }

    /// Last hidden states `(batch, len, hidden)` of right-padded sequences: `ids` and the `u8`
    /// `attention_mask` (1 for real tokens) are `batch × len`, row-major; token type 0.
    pub fn hidden_states(
        &self,
        ids: &[i64],
        attention_mask: &[u8],
        batch: usize,
        len: usize,
    ) -> Result<Tensor> {
        let c = &self.config;
        if batch == 0 || len == 0 || ids.len() != batch * len || attention_mask.len() != ids.len() {
            return Err(Error::InvalidArgument {
                op: "Bert::hidden_states",
                msg: format!(
                    "batch {batch} × len {len} needs that many ids ({}) and mask values ({})",
                    ids.len(),
                    attention_mask.len()
                ),
            });
        }
        if len > c.max_position_embeddings {
            return Err(Error::InvalidArgument {
                op: "Bert::hidden_states",
                msg: format!(
                    "{len} tokens exceed max_position_embeddings {}",
                    c.max_position_embeddings
                ),
            });
        }
        if let Some(&bad) = ids.iter().find(|&&i| i < 0 || i as usize >= c.vocab_size) {
            return Err(Error::IndexOutOfRange {
                op: "Bert::hidden_states",
                index: bad,
                size: c.vocab_size,
            });
        }
        no_grad(|| {
            let (h, hid) = (c.num_attention_heads, c.hidden_size);
            let d = hid / h;
            let dev = self.device;
            let ids = Tensor::from_vec(ids.to_vec(), [batch, len], dev)?;
            let pos = Tensor::arange(0.0, len as f64, 1.0, DType::I64, dev)?;
            let x = self
                .word
                .embedding(&ids)?
                .add(&self.position.embedding(&pos)?)?
                .add(&self.token_type.narrow(0, 0, 1)?)?;
            let mut x = self.embed_norm.forward(&x)?;
            // Padding keys are hidden from every query.
            let hidden: Vec<u8> = (0..batch)
                .flat_map(|b| {
                    let row: Vec<u8> = attention_mask[b * len..(b + 1) * len]
                        .iter()
                        .map(|&m| u8::from(m == 0))
                        .collect();
                    std::iter::repeat_n(row, len).flatten()
                })
                .collect();
            let mask = Tensor::from_vec(hidden, [batch, 1, len, len], dev)?;
            let heads = |x: Tensor| x.reshape([batch, len, h, d])?.transpose(1, 2);
            for layer in &self.layers {
                let q = heads(layer.q.forward(&x)?)?.contiguous()?;
                let k = heads(layer.k.forward(&x)?)?;
                let v = heads(layer.v.forward(&x)?)?;
                let y = attend(&q, &k, &v, Some(&mask), 1.0 / (d as f64).sqrt())?;
                let y = layer
                    .attn_out
                    .forward(&y.transpose(1, 2)?.reshape([batch, len, hid])?)?;
                x = layer.attn_norm.forward(&x.add(&y)?)?;
                let m = layer.inter.forward(&x)?;
                let m = if c.hidden_act == "gelu" {
                    m.gelu()?
                } else {
                    m.gelu_tanh()?
                };
                x = layer.out_norm.forward(&x.add(&layer.out.forward(&m)?)?)?;
            }
            Ok(x)
        })
    }

    /// Sentence embeddings: the mean of each sequence's last hidden states over its tokens,
    /// scaled to unit length when `normalize`. `sequences` are token ids with special tokens
    /// already added; longer ones than [`max_len`](Bert::max_len) are an error.
    pub fn embed(&self, sequences: &[Vec<u32>], normalize: bool) -> Result<Vec<Vec<f32>>> {
        if sequences.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(i) = sequences.iter().position(Vec::is_empty) {
            return Err(Error::InvalidArgument {
                op: "Bert::embed",
                msg: format!("sequence {i} has no tokens (nothing to pool)"),
            });
        }
        let len = sequences.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let batch = sequences.len();
        let mut ids = vec![0i64; batch * len];
        let mut mask = vec![0u8; batch * len];
        for (b, s) in sequences.iter().enumerate() {
            for (i, &id) in s.iter().enumerate() {
                ids[b * len + i] = id as i64;
                mask[b * len + i] = 1;
            }
        }
        let hidden = self.hidden_states(&ids, &mask, batch, len)?;
        no_grad(|| {
            let m = Tensor::from_vec(
                mask.iter().map(|&x| x as f32).collect::<Vec<_>>(),
                [batch, len, 1],
                self.device,
            )?
            .to_dtype(hidden.dtype())?;
            let summed = hidden.mul(&m)?.sum(1, false)?;
            let count = m.sum(1, false)?.clamp(1e-9, f64::INFINITY)?;
            let mut pooled = summed.div(&count)?;
            if normalize {
                let norm = pooled
                    .sqr()?
                    .sum(1, true)?
                    .sqrt()?
                    .clamp(1e-12, f64::INFINITY)?;
                pooled = pooled.div(&norm)?;
            }
            let v = pooled.to_dtype(DType::F32)?.to_vec::<f32>()?;
            Ok(v.chunks(self.config.hidden_size)
                .map(<[f32]>::to_vec)
                .collect())
        })
    }
}

/// The longest input (in tokens, special ones included) for sentence embeddings from `dir`:
/// sentence-transformers' `max_seq_length` from `sentence_bert_config.json` when the directory
/// has one, else `model_max` (the position table), and never more than `model_max`.
pub fn sentence_max_length(dir: &std::path::Path, model_max: usize) -> Result<usize> {
    let path = dir.join("sentence_bert_config.json");
    if !path.is_file() {
        return Ok(model_max);
    }
    let text = rustygradients_io::read_to_string_limited(
        &path,
        rustygradients_io::bounded::limits::CONFIG,
    )?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(path.display().to_string(), e.to_string()))?;
    match v.get("max_seq_length") {
        None | Some(serde_json::Value::Null) => Ok(model_max),
        Some(n) => n
            .as_u64()
            .filter(|&n| n > 0)
            .map(|n| (n as usize).min(model_max))
            .ok_or_else(|| {
                Error::format(
                    path.display().to_string(),
                    format!("max_seq_length {n} is not a positive integer"),
                )
            }),
    }
}
