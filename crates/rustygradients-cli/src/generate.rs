//! `rustygradients generate` (alias `sample`): loads a trained model and streams sampled text.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rustygradients_core::{no_grad, Device, Tensor};
use rustygradients_models::sampling::sample;
use rustygradients_models::{Gpt, SamplingConfig};
use rustygradients_nn::Module;
use rustygradients_tokenizers::Tokenizer;

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Directory written by `rustygradients train`, or a HuggingFace model directory
    /// (config.json + model.safetensors + tokenizer.json of GPT-2, Llama or Mistral).
    #[arg(long, default_value = "out")]
    pub model: PathBuf,
    #[arg(long, default_value = "\n")]
    pub prompt: String,
    #[arg(long, default_value_t = 500)]
    pub max_tokens: usize,
    /// 0 picks the most likely token every time.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Sample among the k most likely tokens (0 for all).
    #[arg(long, default_value_t = 200)]
    pub top_k: usize,
    /// Sample from the smallest set of tokens whose probability reaches p.
    #[arg(long)]
    pub top_p: Option<f64>,
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Penalise tokens already in the text (HuggingFace models; 1 = off, 1.1–1.3 typical).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f64,
    /// Weights converted to f32, f16 or bf16 (HuggingFace models).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Keep generating past the model's end-of-sequence token (HuggingFace models).
    #[arg(long)]
    pub ignore_eos: bool,
}

pub fn run(a: GenerateArgs) -> anyhow::Result<()> {
    let cfg = SamplingConfig {
        temperature: a.temperature,
        top_k: (a.top_k > 0).then_some(a.top_k),
        top_p: a.top_p,
    };
    cfg.validate()
        .context("invalid --temperature, --top-k or --top-p")?;
    if rustygradients_models::hf::is_hf_model_dir(&a.model) {
        return quiet_on_closed_stdout(crate::hf_generate::run(&a, cfg));
    }
    let device = crate::parse_device(&a.device)?;
    let (model, tok, _) = crate::model_dir::load(&a.model, device)?;
    let result = (|| {
        let mut out = std::io::stdout().lock();
        write!(out, "{}", a.prompt)?;
        stream(&model, &tok, &a.prompt, a.max_tokens, &cfg, a.seed, device)?;
        writeln!(out)?;
        Ok(())
    })();
    quiet_on_closed_stdout(result)
}

/// A reader that stopped reading (`generate | head`) ends the command quietly and successfully.
pub fn quiet_on_closed_stdout(result: anyhow::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            Ok(())
        }
        r => r,
    }
}

/// Samples `n` tokens after `prompt`, printing the text as it is produced (a character split
/// over several BPE tokens is printed once it is whole). The context is the last `block_size`
/// tokens (no KV cache yet: each token reruns the window).
pub fn stream(
    model: &Gpt,
    tok: &Tokenizer,
    prompt: &str,
    n: usize,
    cfg: &SamplingConfig,
    seed: u64,
    device: Device,
) -> anyhow::Result<()> {
    model.eval();
    let mut ids = tok.encode(prompt)?;
    if ids.is_empty() {
        anyhow::bail!("the prompt must contain at least one character");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let block = model.config.block_size;
    let mut out = std::io::stdout().lock();
    let mut text = tok.stream(&ids)?;
    for _ in 0..n {
        let ctx: Vec<i64> = ids[ids.len().saturating_sub(block)..]
            .iter()
            .map(|&i| i as i64)
            .collect();
        let t = ctx.len();
        let logits = no_grad(|| model.logits(&Tensor::from_vec(ctx, [1, t], device)?))?;
        let last = logits.narrow(1, t - 1, 1)?.flatten_all()?.to_vec::<f32>()?;
        let next = sample(&last, cfg, &mut rng)? as u32;
        ids.push(next);
        let piece = text.push(next)?;
        if !piece.is_empty() {
            write!(out, "{piece}")?;
            out.flush()?;
        }
    }
    write!(out, "{}", text.finish()?)?;
    out.flush()?;
    Ok(())
}
