//! `config.json` of a HuggingFace model directory, read into one of the supported families.
//!
//! Only the fields the architectures need are read; unknown fields are ignored, missing
//! optional ones take transformers' defaults. Both ways transformers has written RoPE settings
//! are accepted: top-level `rope_theta` + `rope_scaling` (4.x) and `rope_parameters` (5.x).

use std::path::Path;

use rustygradients_core::{Error, Result};
use serde::Deserialize;
use serde_json::Value;

/// The families [`HfConfig::from_file`] knows, by `model_type`.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["gpt2", "llama", "mistral", "bert"];

/// GPT-2 (`model_type: "gpt2"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Gpt2Config {
    /// Rows of `wte`.
    pub vocab_size: usize,
    /// Rows of `wpe`: the longest sequence the model reads.
    pub n_positions: usize,
    /// Residual width.
    pub n_embd: usize,
    /// Blocks.
    pub n_layer: usize,
    /// Attention heads.
    pub n_head: usize,
    /// MLP width (`null`: 4 × `n_embd`).
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// LayerNorm epsilon.
    #[serde(default = "default_gpt2_eps")]
    pub layer_norm_epsilon: f64,
    /// `gelu_new` (tanh form, GPT-2's) or `gelu` (erf form).
    #[serde(default = "default_gelu_new")]
    pub activation_function: String,
    /// Scale scores by 1/sqrt(head dim) (GPT-2 always does).
    #[serde(default = "yes")]
    pub scale_attn_weights: bool,
    /// Extra 1/(layer+1) score scaling (not supported when true).
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// End-of-text token.
    #[serde(default)]
    pub eos_token_id: Option<Value>,
    /// The output head is `wte` (GPT-2 always ties it).
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
}

/// Llama and the architectures that share its layout (`model_type` `llama`, `mistral`).
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// The `model_type` it was read from.
    pub model_type: String,
    /// Rows of `embed_tokens`.
    pub vocab_size: usize,
    /// Residual width.
    pub hidden_size: usize,
    /// SwiGLU width.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than the query heads).
    pub num_key_value_heads: usize,
    /// Width of one head (`hidden_size / num_attention_heads` unless given).
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// The position range the model was trained for (RoPE works past it, unscaled).
    pub max_position_embeddings: usize,
    /// `lm_head` is `embed_tokens` (no `lm_head.weight` in the file).
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v/o projections.
    pub attention_bias: bool,
    /// Biases on the MLP projections.
    pub mlp_bias: bool,
    /// Keys further back than this are not attended to (Mistral); `None`: all.
    pub sliding_window: Option<usize>,
    /// Rotary embedding settings.
    pub rope: RopeConfig,
    /// End-of-sequence tokens.
    pub eos_token_ids: Vec<u32>,
}

/// Rotary position embedding: base and frequency scaling.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    /// The base θ of the inverse frequencies `θ^(-2i/d)`.
    pub theta: f64,
    /// How frequencies are rescaled for longer contexts.
    pub scaling: RopeScaling,
}

/// The RoPE frequency scalings supported (`rope_type`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// `default`: unscaled.
    None,
    /// `linear`: every frequency divided by `factor` (positions interpolated).
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// `llama3`: low frequencies divided by `factor`, high ones kept, a smooth ramp between.
    Llama3 {
        /// The divisor of the low frequencies.
        factor: f64,
        /// Wavelengths above `original / low_freq_factor` are scaled.
        low_freq_factor: f64,
        /// Wavelengths below `original / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The context the model was pretrained for.
        original_max_position_embeddings: f64,
    },
}

/// BERT encoder (`model_type: "bert"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BertConfig {
    /// Rows of `word_embeddings`.
    pub vocab_size: usize,
    /// Width.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// `gelu` (erf) or `gelu_new`.
    #[serde(default = "default_gelu")]
    pub hidden_act: String,
    /// Rows of `position_embeddings`: the longest input.
    pub max_position_embeddings: usize,
    /// Rows of `token_type_embeddings`.
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_bert_eps")]
    pub layer_norm_eps: f64,
    /// Only `absolute` is supported.
    #[serde(default = "default_absolute")]
    pub position_embedding_type: String,
}

/// A supported model's configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum HfConfig {
    /// GPT-2 family.
    Gpt2(Gpt2Config),
    /// Llama family (Llama 2/3, TinyLlama, SmolLM, Mistral).
    Llama(LlamaConfig),
    /// BERT encoders.
    Bert(BertConfig),
}

fn yes() -> bool {
    true
}
fn two() -> usize {
    2
}
fn default_gpt2_eps() -> f64 {
    1e-5
}
fn default_bert_eps() -> f64 {
    1e-12
}
fn default_gelu_new() -> String {
    "gelu_new".into()
}
fn default_gelu() -> String {
    "gelu".into()
}
fn default_absolute() -> String {
    "absolute".into()
}

/// Token ids from a JSON integer or list of integers (`eos_token_id` takes both forms).
fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| x as u32).into_iter().collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().map(|x| x as u32))
            .collect(),
        _ => Vec::new(),
    }
}

impl Gpt2Config {
    /// End-of-text token ids.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        token_ids(self.eos_token_id.as_ref())
    }
    /// MLP width.
    pub fn inner(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }
}

impl HfConfig {
    /// Reads `dir/config.json` (or the file `path` itself).
    pub fn from_file(path: impl AsRef<Path>) -> Result<HfConfig> {
        let path = path.as_ref();
        let file = if path.is_dir() {
            path.join("config.json")
        } else {
            path.to_path_buf()
        };
        let text = rustygradients_io::read_to_string_limited(
            &file,
            rustygradients_io::bounded::limits::CONFIG,
        )?;
        Self::from_json(&text).map_err(|e| match e {
            Error::Format { msg, .. } => Error::format(file.display().to_string(), msg),
            e => e,
        })
    }

    /// Parses the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<HfConfig> {
        let what = "config.json";
        let v: Value =
            serde_json::from_str(text).map_err(|e| Error::format(what, e.to_string()))?;
        let model_type = v
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::format(what, "no \"model_type\" field"))?;
        let parse = |e: serde_json::Error| Error::format(what, format!("{model_type}: {e}"));
        let cfg = match model_type {
            "gpt2" => HfConfig::Gpt2(serde_json::from_value(v.clone()).map_err(parse)?),
            "llama" | "mistral" => HfConfig::Llama(LlamaConfig::from_value(model_type, &v)?),
            "bert" => HfConfig::Bert(serde_json::from_value(v.clone()).map_err(parse)?),
            other => {
                return Err(Error::format(
                    what,
                    format!(
                        "model_type {other:?} is not supported (supported: {})",
                        SUPPORTED_MODEL_TYPES.join(", ")
                    ),
                ))
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The `model_type` string.
    pub fn model_type(&self) -> &str {
        match self {
            HfConfig::Gpt2(_) => "gpt2",
            HfConfig::Llama(c) => &c.model_type,
            HfConfig::Bert(_) => "bert",
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::format("config.json", msg));
        let positive = |fields: &[(&str, usize)]| -> Result<()> {
            for (name, v) in fields {
                if *v == 0 {
                    return bad(format!("{name} is 0"));
                }
            }
            Ok(())
        };
        match self {
            HfConfig::Gpt2(c) => {
                positive(&[
                    ("vocab_size", c.vocab_size),
                    ("n_positions", c.n_positions),
                    ("n_embd", c.n_embd),
                    ("n_layer", c.n_layer),
                    ("n_head", c.n_head),
                ])?;
                if c.n_embd % c.n_head != 0 {
                    return bad(format!(
                        "n_embd {} is not a multiple of n_head {}",
                        c.n_embd, c.n_head
                    ));
                }
                if !matches!(
                    c.activation_function.as_str(),
                    "gelu_new" | "gelu" | "gelu_pytorch_tanh"
                ) {
                    return bad(format!(
                        "activation_function {:?} is not supported",
                        c.activation_function
                    ));
                }
                if c.scale_attn_by_inverse_layer_idx || !c.scale_attn_weights {
                    return bad("scale_attn_by_inverse_layer_idx / scale_attn_weights=false are not supported".into());
                }
            }
            HfConfig::Llama(c) => {
                positive(&[
                    ("vocab_size", c.vocab_size),
                    ("hidden_size", c.hidden_size),
                    ("intermediate_size", c.intermediate_size),
                    ("num_hidden_layers", c.num_hidden_layers),
                    ("num_attention_heads", c.num_attention_heads),
                    ("num_key_value_heads", c.num_key_value_heads),
                    ("head_dim", c.head_dim),
                ])?;
                if c.num_attention_heads % c.num_key_value_heads != 0 {
                    return bad(format!(
                        "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                        c.num_attention_heads, c.num_key_value_heads
                    ));
                }
                if c.head_dim % 2 != 0 {
                    return bad(format!("head_dim {} must be even for RoPE", c.head_dim));
                }
            }
            HfConfig::Bert(c) => {
                positive(&[
                    ("vocab_size", c.vocab_size),
                    ("hidden_size", c.hidden_size),
                    ("num_hidden_layers", c.num_hidden_layers),
                    ("num_attention_heads", c.num_attention_heads),
                    ("intermediate_size", c.intermediate_size),
                    ("max_position_embeddings", c.max_position_embeddings),
                ])?;
                if c.hidden_size % c.num_attention_heads != 0 {
                    return bad(format!(
                        "hidden_size {} is not a multiple of num_attention_heads {}",
                        c.hidden_size, c.num_attention_heads
                    ));
                }
                if !matches!(c.hidden_act.as_str(), "gelu" | "gelu_new") {
                    return bad(format!("hidden_act {:?} is not supported", c.hidden_act));
                }
                if c.position_embedding_type != "absolute" {
                    return bad(format!(
                        "position_embedding_type {:?} is not supported",
                        c.position_embedding_type
                    ));
                }
            }
        }
        Ok(())
    }
}

impl LlamaConfig {
    fn from_value(model_type: &str, v: &Value) -> Result<LlamaConfig> {
        let what = "config.json";
        let usize_field = |name: &str| -> Result<Option<usize>> {
            match v.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                    Error::format(
                        what,
                        format!("{name} must be a non-negative integer, not {x}"),
                    )
                }),
            }
        };
        let need = |name: &str| -> Result<usize> {
            usize_field(name)?
                .ok_or_else(|| Error::format(what, format!("{model_type}: missing field {name:?}")))
        };
        let float = |x: &Value, name: &str| -> Result<f64> {
            x.as_f64()
                .ok_or_else(|| Error::format(what, format!("{name} must be a number, not {x}")))
        };
        let flag =
            |name: &str, default: bool| v.get(name).and_then(Value::as_bool).unwrap_or(default);
        let hidden = need("hidden_size")?;
        let heads = need("num_attention_heads")?;
        if heads == 0 {
            return Err(Error::format(what, "num_attention_heads is 0"));
        }
        if let Some(act) = v.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return Err(Error::format(
                    what,
                    format!("hidden_act {act:?} is not supported (Llama uses silu)"),
                ));
            }
        }
        // RoPE: `rope_parameters` (transformers 5) or `rope_theta` + `rope_scaling` (4.x).
        let params = v.get("rope_parameters").filter(|p| p.is_object());
        let scaling = params.or_else(|| v.get("rope_scaling").filter(|p| p.is_object()));
        let theta = match params
            .and_then(|p| p.get("rope_theta"))
            .or_else(|| v.get("rope_theta"))
        {
            Some(x) => float(x, "rope_theta")?,
            None => 10000.0,
        };
        let scaling = match scaling {
            None => RopeScaling::None,
            Some(s) => {
                let kind = s
                    .get("rope_type")
                    .or_else(|| s.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                let num = |name: &str| -> Result<f64> {
                    let x = s.get(name).ok_or_else(|| {
                        Error::format(what, format!("rope scaling {kind:?} needs {name:?}"))
                    })?;
                    float(x, name)
                };
                match kind {
                    "default" => RopeScaling::None,
                    "linear" => RopeScaling::Linear { factor: num("factor")? },
                    "llama3" => RopeScaling::Llama3 {
                        factor: num("factor")?,
                        low_freq_factor: num("low_freq_factor")?,
                        high_freq_factor: num("high_freq_factor")?,
                        original_max_position_embeddings: num("original_max_position_embeddings")?,
                    },
                    other => {
                        return Err(Error::format(
                            what,
                            format!("rope_type {other:?} is not supported (supported: default, linear, llama3)"),
                        ))
                    }
                }
            }
        };
        Ok(LlamaConfig {
            model_type: model_type.to_string(),
            vocab_size: need("vocab_size")?,
            hidden_size: hidden,
            intermediate_size: need("intermediate_size")?,
            num_hidden_layers: need("num_hidden_layers")?,
            num_attention_heads: heads,
            num_key_value_heads: usize_field("num_key_value_heads")?.unwrap_or(heads),
            head_dim: usize_field("head_dim")?.unwrap_or(hidden / heads),
            rms_norm_eps: match v.get("rms_norm_eps") {
                Some(x) => float(x, "rms_norm_eps")?,
                None => 1e-6,
            },
            max_position_embeddings: usize_field("max_position_embeddings")?.unwrap_or(2048),
            tie_word_embeddings: flag("tie_word_embeddings", false),
            attention_bias: flag("attention_bias", false),
            mlp_bias: flag("mlp_bias", false),
            sliding_window: if model_type == "mistral" {
                usize_field("sliding_window")?
            } else {
                None
            },
            rope: RopeConfig { theta, scaling },
            eos_token_ids: token_ids(v.get("eos_token_id")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_settings_in_both_forms() {
        let old = r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,
            "num_hidden_layers":1,"num_attention_heads":2,"rope_theta":500000.0,
            "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,
            "high_freq_factor":4.0,"original_max_position_embeddings":8192}}"#;
        let new = r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,
            "num_hidden_layers":1,"num_attention_heads":2,
            "rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,
            "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}"#;
        let (HfConfig::Llama(a), HfConfig::Llama(b)) = (
            HfConfig::from_json(old).unwrap(),
            HfConfig::from_json(new).unwrap(),
        ) else {
            panic!("not llama")
        };
        assert_eq!(a.rope, b.rope);
        assert_eq!(a.rope.theta, 500000.0);
        assert_eq!(a.num_key_value_heads, 2);
        assert_eq!(a.head_dim, 4);
        assert!(matches!(a.rope.scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
    }

    #[test]
    fn unsupported_and_broken_configs_are_named() {
        let e = HfConfig::from_json(r#"{"model_type":"t5"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("t5") && e.contains("gpt2"), "{e}");
        let e = HfConfig::from_json(r#"{"model_type":"llama","vocab_size":10}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("hidden_size"), "{e}");
        let e = HfConfig::from_json(
            r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,
            "num_hidden_layers":1,"num_attention_heads":2,"rope_scaling":{"rope_type":"yarn","factor":4.0}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("yarn"), "{e}");
        let e = HfConfig::from_json(
            r#"{"model_type":"gpt2","vocab_size":10,"n_positions":8,"n_embd":6,"n_layer":1,"n_head":4}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("n_head"), "{e}");
    }
}
