//! A trained model on disk: `config.json` (model shape and training settings), `model.safetensors`
//! (parameters, nanoGPT names) and `tokenizer.json`.

use std::path::Path;

use anyhow::Context;
use rustygradients_core::{DType, Device};
use rustygradients_io::{load_safetensors, save_safetensors, write_atomic};
use rustygradients_models::{Gpt, GptConfig};
use rustygradients_nn::Module;
use rustygradients_tokenizers::CharTokenizer;
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
    tok: &CharTokenizer,
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
    write_atomic(dir.join("tokenizer.json"), tok.to_json().as_bytes())?;
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

pub fn load(dir: &Path, device: Device) -> anyhow::Result<(Gpt, CharTokenizer, SavedConfig)> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .with_context(|| format!("reading {}", dir.join(name).display()))
    };
    let cfg: SavedConfig = serde_json::from_str(&read("config.json")?)
        .with_context(|| format!("parsing {}/config.json", dir.display()))?;
    let tok = CharTokenizer::from_json(&read("tokenizer.json")?)?;
    let model = Gpt::new(cfg.model.clone(), DType::F32, device)?;
    let (tensors, _) = load_safetensors(dir.join("model.safetensors"), device)?;
    model.load_named(&tensors)?;
    Ok((model, tok, cfg))
}
