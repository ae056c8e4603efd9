//! HuggingFace model directories: `config.json` + `model.safetensors` (or shards listed by
//! `model.safetensors.index.json`) + `tokenizer.json`, as `save_pretrained` writes them.
//!
//! - [`config`]: the supported families (`gpt2`, `llama`/`mistral`, `bert`) and their settings.
//! - [`weights`]: memory-mapped tensors, checked against the shapes the config implies.
//! - [`Gpt2`], [`Llama`]: decoder-only models that generate with a [`KvCache`] ([`generate()`]).
//! - [`Bert`]: an encoder with mean pooling for sentence embeddings.

pub mod attention;
mod bert;
pub mod causal_lm;
pub mod config;
pub mod generate;
mod gpt2;
pub mod kv_cache;
mod layers;
mod llama;
pub mod rope;
pub mod weights;

use std::path::Path;

use rustygradients_core::{DType, Device, Result};

pub use bert::{sentence_max_length, Bert};
pub use causal_lm::{CausalLm, Step};
pub use config::HfConfig;
pub use generate::{generate, GenerationConfig};
pub use gpt2::Gpt2;
pub use kv_cache::KvCache;
pub use llama::Llama;
pub use weights::Weights;

/// A model loaded from a HuggingFace directory.
#[derive(Debug)]
pub enum HfModel {
    /// GPT-2 family.
    Gpt2(Gpt2),
    /// Llama family.
    Llama(Llama),
    /// BERT encoder.
    Bert(Bert),
}

impl HfModel {
    /// Loads the model in `dir`, its weights converted to `dtype` (a float type) on `device`.
    ///
    /// ```no_run
    /// use rustygradients_core::{DType, Device};
    /// use rustygradients_models::hf::{generate, GenerationConfig, HfModel};
    /// let model = HfModel::load("models/gpt2", DType::F32, Device::Cpu)?;
    /// let lm = model.causal_lm().expect("a decoder");
    /// let out = generate(lm, &[vec![15496, 995]], &GenerationConfig::greedy(8), |_, _| Ok(()))?;
    /// assert_eq!(out[0].len(), 8);
    /// # Ok::<(), rustygradients_core::Error>(())
    /// ```
    pub fn load(dir: impl AsRef<Path>, dtype: DType, device: Device) -> Result<HfModel> {
        let dir = dir.as_ref();
        let config = HfConfig::from_file(dir)?;
        let weights = Weights::open(dir, dtype, device)?;
        Ok(match &config {
            HfConfig::Gpt2(c) => {
                HfModel::Gpt2(Gpt2::load(c, &weights.with_prefixes(&["transformer."]))?)
            }
            HfConfig::Llama(c) => {
                HfModel::Llama(Llama::load(c, &weights.with_prefixes(&["model."]))?)
            }
            HfConfig::Bert(c) => HfModel::Bert(Bert::load(c, &weights.with_prefixes(&["bert."]))?),
        })
    }

    /// The decoder-only model, if it is one.
    pub fn causal_lm(&self) -> Option<&dyn CausalLm> {
        match self {
            HfModel::Gpt2(m) => Some(m),
            HfModel::Llama(m) => Some(m),
            HfModel::Bert(_) => None,
        }
    }

    /// The encoder, if it is one.
    pub fn bert(&self) -> Option<&Bert> {
        match self {
            HfModel::Bert(m) => Some(m),
            _ => None,
        }
    }

    /// Parameters in its checkpoint.
    pub fn num_parameters(&self) -> usize {
        match self {
            HfModel::Gpt2(m) => m.num_parameters(),
            HfModel::Llama(m) => m.num_parameters(),
            HfModel::Bert(m) => m.num_parameters(),
        }
    }

    /// Its `model_type`.
    pub fn model_type(&self) -> &str {
        match self {
            HfModel::Gpt2(_) => "gpt2",
            HfModel::Llama(m) => &m.config.model_type,
            HfModel::Bert(_) => "bert",
        }
    }
}

/// Whether `dir` holds a HuggingFace model (its `config.json` names a `model_type`), as
/// opposed to a model this project's `train` wrote.
pub fn is_hf_model_dir(dir: &Path) -> bool {
    // Bounded, regular files only: a config.json that is a link to a device is not read here
    // (the loader that runs next reports it).
    rustygradients_io::read_to_string_limited(
        dir.join("config.json"),
        rustygradients_io::bounded::limits::CONFIG,
    )
    .ok()
    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    .is_some_and(|v| v.get("model_type").is_some())
}
