//! A trained model on disk: `config.json` (model shape and training settings), `model.safetensors`
//! (parameters, nanoGPT names) and `tokenizer.json` (a character vocabulary, or HuggingFace's
//! format for a BPE tokenizer).

use std::path::Path;

use anyhow::Context;
use rustygradients_core::{DType, Device};
use rustygradients_io::bounded::limits;
use rustygradients_io::{load_safetensors, read_to_string_limited, save_safetensors, write_atomic};
use rustygradients_models::{Gpt, GptConfig};
use rustygradients_nn::Module;
use rustygradients_tokenizers::Tokenizer;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct SavedConfig {
    pub model: GptConfig,
    /// The training settings that produced the weights (for the record).
    pub train: serde_json::Value,
    pub step: usize,
}

pub fn save(
    dir: &Path,
    model: &Gpt,
    tok: &Tokenizer,
    train: serde_json::Value,
    step: usize,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // One metadata key only: the safetensors crate writes `__metadata__` in HashMap order, so
    // two keys would make identical saves differ byte for byte. The step is in config.json.
    let meta = [("format".to_string(), "pt".to_string())]
        .into_iter()
        .collect();
    save_safetensors(
        dir.join("model.safetensors"),
        &model.named_parameters(),
        Some(meta),
    )?;
    // The tokenizer's own format: the character vocabulary, or HuggingFace's tokenizer.json.
    write_atomic(dir.join("tokenizer.json"), tok.to_json()?.as_bytes())?;
    let cfg = SavedConfig {
        model: model.config.clone(),
        train,
        step,
    };
    write_atomic(
        dir.join("config.json"),
        serde_json::to_string_pretty(&cfg)?.as_bytes(),
    )?;
    Ok(())
}

/// Loads a model directory: config and tokenizer read with size limits from regular files, the
/// config checked and the model's memory checked against the device before anything is
/// allocated, the weights verified against their checksums and matched to the config exactly.
pub fn load(dir: &Path, device: Device) -> anyhow::Result<(Gpt, Tokenizer, SavedConfig)> {
    let read = |name: &str, limit: u64| {
        read_to_string_limited(dir.join(name), limit)
            .with_context(|| format!("reading the model in {}", dir.display()))
    };
    let cfg: SavedConfig = serde_json::from_str(&read("config.json", limits::CONFIG)?)
        .with_context(|| format!("parsing {}/config.json", dir.display()))?;
    cfg.model
        .validate()
        .with_context(|| format!("{}/config.json", dir.display()))?;
    // Either kind: a character vocabulary or a HuggingFace tokenizer.json (BPE).
    let tok = Tokenizer::from_json(&read("tokenizer.json", limits::TOKENIZER)?)
        .with_context(|| format!("parsing {}/tokenizer.json", dir.display()))?;
    if tok.vocab_size() != cfg.model.vocab_size {
        anyhow::bail!(
            "{}: tokenizer.json has {} tokens but config.json says vocab_size {}",
            dir.display(),
            tok.vocab_size(),
            cfg.model.vocab_size
        );
    }
    crate::memory::check(
        &cfg.model.memory_estimate(1, false),
        0.0,
        device,
        &format!("the model in {}", dir.display()),
        "",
    )?;
    let model = Gpt::new(cfg.model.clone(), DType::F32, device)?;
    let (tensors, _) = load_safetensors(dir.join("model.safetensors"), device)?;
    model
        .load_state_dict(&tensors, true)
        .with_context(|| format!("{}/model.safetensors", dir.display()))?;
    Ok((model, tok, cfg))
}
