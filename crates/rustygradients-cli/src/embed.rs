//! `rustygradients embed --model DIR [--normalize]`: sentence embeddings from a BERT encoder
//! (all-MiniLM-L6-v2 and the like). One sentence per line on stdin, one JSON array of floats per
//! line on stdout: the mean of the last hidden states over the sentence's tokens, unit length
//! with `--normalize`. Sentences longer than the model's limit are truncated as
//! sentence-transformers truncates them.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::Context;
use rustygradients_models::hf::{sentence_max_length, HfModel};
use rustygradients_tokenizers::BpeTokenizer;

#[derive(clap::Args, Debug)]
pub struct EmbedArgs {
    /// A HuggingFace BERT model directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Scale every embedding to unit length.
    #[arg(long)]
    pub normalize: bool,
    /// Sentences encoded together.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

pub fn run(a: EmbedArgs) -> anyhow::Result<()> {
    let device = crate::parse_device(&a.device)?;
    let dtype = crate::hf_generate::parse_dtype(&a.dtype)?;
    if a.batch_size == 0 {
        anyhow::bail!("--batch-size must be at least 1");
    }
    let model = HfModel::load(&a.model, dtype, device)
        .with_context(|| format!("loading the model in {}", a.model.display()))?;
    let bert = model.bert().ok_or_else(|| {
        anyhow::anyhow!(
            "{} holds a {} model; embed needs a BERT encoder",
            a.model.display(),
            model.model_type()
        )
    })?;
    let max_len = sentence_max_length(&a.model, bert.max_len())?;
    let tok = BpeTokenizer::from_file(&a.model)
        .and_then(|t| t.with_max_length(Some(max_len)))
        .with_context(|| format!("reading the tokenizer of {}", a.model.display()))?;
    let stdin = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    let mut batch: Vec<Vec<u32>> = Vec::new();
    let flush = |batch: &mut Vec<Vec<u32>>, out: &mut std::io::StdoutLock| -> anyhow::Result<()> {
        for e in bert.embed(batch, a.normalize)? {
            writeln!(out, "{}", serde_json::to_string(&e)?)?;
        }
        batch.clear();
        Ok(())
    };
    let result = (|| {
        for (n, line) in stdin.lines().enumerate() {
            let line = line.context("reading stdin")?;
            let ids = tok.encode_for_model(&line)?;
            if ids.is_empty() {
                anyhow::bail!("line {} encodes to no tokens: nothing to embed", n + 1);
            }
            batch.push(ids);
            if batch.len() == a.batch_size {
                flush(&mut batch, &mut out)?;
            }
        }
        flush(&mut batch, &mut out)?;
        out.flush()?;
        Ok(())
    })();
    crate::generate::quiet_on_closed_stdout(result)
}
