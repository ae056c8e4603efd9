//! The settings of `rustygradients train`, and their checks: every value out of range is refused
//! by its flag's name before anything is read or allocated.

use std::path::PathBuf;

use anyhow::bail;
use rustygradients_core::Precision;
use serde::{Deserialize, Serialize};

#[derive(clap::Args, Serialize, Deserialize, Clone, Debug)]
pub struct TrainArgs {
    /// Text file to train on; without it, the corpus built into the binary.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Train on the tokens of this BPE tokenizer (a `tokenizer.json`, or a directory holding
    /// one) instead of characters; the model's vocabulary is the tokenizer's, and the model
    /// directory carries it as its `tokenizer.json`.
    #[arg(long, value_name = "PATH")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<PathBuf>,
    #[arg(long, default_value_t = 4)]
    pub n_layer: usize,
    #[arg(long, default_value_t = 4)]
    pub n_head: usize,
    #[arg(long, default_value_t = 128)]
    pub n_embd: usize,
    #[arg(long, default_value_t = 64)]
    pub block_size: usize,
    #[arg(long, default_value_t = 12)]
    pub batch_size: usize,
    /// Optimizer steps.
    #[arg(long, default_value_t = 2000)]
    pub steps: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Learning rate at the end of the cosine decay.
    #[arg(long, default_value_t = 1e-4)]
    pub min_lr: f64,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 0.9)]
    pub beta1: f64,
    #[arg(long, default_value_t = 0.99)]
    pub beta2: f64,
    /// Clip gradients to this global norm (0 disables).
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f64,
    /// The MLP's nonlinearity: `gelu` (exact erf, nanoGPT's) or `gelu_tanh` (GPT-2's tanh
    /// form, which the GPU runs inside the MLP's GEMMs).
    #[arg(long, default_value = "gelu", value_parser = ["gelu", "gelu_tanh"])]
    #[serde(default = "default_activation")]
    pub activation: String,
    #[arg(long, default_value_t = 250)]
    pub eval_interval: usize,
    /// Batches per split at each evaluation.
    #[arg(long, default_value_t = 20)]
    pub eval_iters: usize,
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    /// Output directory (model, tokenizer, metrics.jsonl, loss.png).
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// How the steps compute: fp32, tf32 (TF32 GPU matmuls), bf16 or fp16 (autocast: matmuls
    /// and attention in half precision, norms, softmax and the loss in f32, f32 master weights
    /// and optimizer state; fp16 adds dynamic loss scaling). On a CPU with AMX tiles,
    /// bf16 keeps f32 tensors and multiplies the matmuls in bf16 on the tiles.
    /// Checkpoints hold f32 either way, so `--resume` may continue in another precision.
    #[arg(long, value_name = "fp32|tf32|bf16|fp16")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// The first loss scale of an fp16 run (halved after each overflow, doubled after 2000
    /// good steps); 65536 when not given.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
    /// Good fp16 steps in a row after which the loss scale doubles (PyTorch's 2000): a run
    /// started at too small a scale (gradients flushing to zero) climbs back this fast.
    #[arg(long, default_value_t = 2000)]
    #[serde(default = "default_growth_interval")]
    pub loss_scale_growth_interval: u64,
    /// Recompute each block's activations in the backward pass instead of keeping them: less
    /// memory for about a third more compute.
    #[arg(long)]
    #[serde(default)]
    pub activation_checkpointing: bool,
    /// Tokens (characters, without --tokenizer) to sample at the end (0 for none).
    #[arg(long, default_value_t = 300)]
    pub sample_chars: usize,
    /// Checkpoints kept in `<out>/checkpoints` (the newest N, plus the best by val loss).
    #[arg(long, default_value_t = 3)]
    pub keep_checkpoints: usize,
    /// Continue the run whose output directory this is, from its latest checkpoint, with its
    /// settings (the other flags are ignored); the result is bit-identical to an
    /// uninterrupted run on the same machine.
    #[arg(long, value_name = "DIR")]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
    /// Stop after this step as if interrupted (a checkpoint is saved); `--resume` continues.
    #[arg(long)]
    #[serde(skip)]
    pub stop_at: Option<usize>,
    /// Delete the run already in `--out` (its checkpoints, model, metrics and plot) and start
    /// afresh; without it, a folder that holds another run is refused.
    #[arg(long)]
    #[serde(skip)]
    pub overwrite: bool,
    /// Steps in a row whose loss or gradient norm is NaN or infinite (each skips its update)
    /// before the run stops with an error.
    #[arg(long, default_value_t = 3)]
    #[serde(default = "default_max_bad_steps")]
    pub max_bad_steps: usize,
}

fn default_max_bad_steps() -> usize {
    3
}

fn default_growth_interval() -> u64 {
    2000
}

impl TrainArgs {
    /// The first loss scale of an fp16 run (`--loss-scale`, 65536 by default).
    pub fn loss_scale(&self) -> f64 {
        self.loss_scale.unwrap_or(65536.0)
    }

    /// Refuses the first setting out of range, by its flag's name.
    pub fn validate(&self) -> anyhow::Result<()> {
        let at_least_one = [
            ("--n-layer", self.n_layer),
            ("--n-head", self.n_head),
            ("--n-embd", self.n_embd),
            ("--block-size", self.block_size),
            ("--batch-size", self.batch_size),
            ("--steps", self.steps),
            ("--eval-interval", self.eval_interval),
            ("--eval-iters", self.eval_iters),
            ("--keep-checkpoints", self.keep_checkpoints),
            ("--max-bad-steps", self.max_bad_steps),
            (
                "--loss-scale-growth-interval",
                self.loss_scale_growth_interval as usize,
            ),
        ];
        for (flag, v) in at_least_one {
            if v == 0 {
                bail!("invalid {flag} 0: must be at least 1");
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            bail!(
                "invalid --n-embd {}: must be a multiple of --n-head {}",
                self.n_embd,
                self.n_head
            );
        }
        // Each check is written so that NaN fails it.
        let checks = [
            (
                "--lr",
                self.lr,
                self.lr > 0.0 && self.lr.is_finite(),
                "a finite number > 0",
            ),
            (
                "--min-lr",
                self.min_lr,
                self.min_lr >= 0.0 && self.min_lr <= self.lr,
                "a number >= 0 and at most --lr",
            ),
            (
                "--weight-decay",
                self.weight_decay,
                self.weight_decay >= 0.0 && self.weight_decay.is_finite(),
                "a finite number >= 0",
            ),
            (
                "--beta1",
                self.beta1,
                (0.0..1.0).contains(&self.beta1),
                "in [0, 1)",
            ),
            (
                "--beta2",
                self.beta2,
                (0.0..1.0).contains(&self.beta2),
                "in [0, 1)",
            ),
            (
                "--grad-clip",
                self.grad_clip,
                self.grad_clip >= 0.0 && self.grad_clip.is_finite(),
                "a finite number >= 0 (0 disables clipping)",
            ),
            (
                "--loss-scale",
                self.loss_scale(),
                self.loss_scale() > 0.0 && self.loss_scale().is_finite(),
                "a finite number > 0",
            ),
            (
                "--dropout",
                self.dropout,
                (0.0..1.0).contains(&self.dropout),
                "in [0, 1)",
            ),
        ];
        if let Some((flag, v, _, want)) = checks.iter().find(|c| !c.2) {
            bail!("invalid {flag} {v}: must be {want}");
        }
        Ok(())
    }
}

/// Runs saved before `--activation` existed used the exact GELU.
fn default_activation() -> String {
    "gelu".into()
}
