//! `rustygradients generate --model DIR` for a HuggingFace model directory (GPT-2, Llama,
//! Mistral): the prompt is encoded with the directory's `tokenizer.json` (special tokens added
//! as transformers adds them), continued with a KV-cache, and the text streamed as it comes.

use std::io::Write;

use anyhow::Context;
use rustygradients_core::DType;
use rustygradients_models::hf::{generate, GenerationConfig, HfModel};
use rustygradients_models::SamplingConfig;
use rustygradients_tokenizers::{BpeTokenizer, Tokenizer};

use crate::generate::GenerateArgs;

/// Parses `--dtype`.
pub fn parse_dtype(s: &str) -> anyhow::Result<DType> {
    match s {
        "f32" | "float32" => Ok(DType::F32),
        "f16" | "float16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        _ => anyhow::bail!("unknown --dtype {s:?}: use f32, f16 or bf16"),
    }
}

pub fn run(a: &GenerateArgs, sampling: SamplingConfig) -> anyhow::Result<()> {
    let device = crate::parse_device(&a.device)?;
    let dtype = parse_dtype(&a.dtype)?;
    let model = HfModel::load(&a.model, dtype, device)
        .with_context(|| format!("loading the model in {}", a.model.display()))?;
    let lm = model.causal_lm().ok_or_else(|| {
        anyhow::anyhow!(
            "{} holds a {} encoder, which does not generate text (use `rustygradients embed`)",
            a.model.display(),
            model.model_type()
        )
    })?;
    let bpe = BpeTokenizer::from_file(&a.model)
        .with_context(|| format!("reading the tokenizer of {}", a.model.display()))?;
    let ids = bpe.encode_for_model(&a.prompt)?;
    if ids.is_empty() {
        anyhow::bail!("the prompt encodes to no tokens");
    }
    let cfg = GenerationConfig {
        max_new_tokens: a.max_tokens,
        sampling,
        repetition_penalty: a.repetition_penalty,
        seed: a.seed,
        stop_tokens: if a.ignore_eos {
            Vec::new()
        } else {
            lm.eos_token_ids()
        },
        use_cache: true,
    };
    let tok = Tokenizer::Bpe(bpe);
    let mut text = tok.stream(&ids)?;
    let mut out = std::io::stdout().lock();
    write!(out, "{}", a.prompt)?;
    let stops = cfg.stop_tokens.clone();
    generate(lm, &[ids], &cfg, |_, id| {
        if stops.contains(&id) {
            return Ok(());
        }
        let piece = text.push(id)?;
        if !piece.is_empty() {
            write!(out, "{piece}")
                .and_then(|_| out.flush())
                .map_err(|e| rustygradients_core::Error::io("stdout", e))?;
        }
        Ok(())
    })?;
    writeln!(out, "{}", text.finish()?)?;
    Ok(())
}
