//! Everything a training run needs to continue exactly, as one checkpoint: the model's and
//! AdamW's state dicts as tensors (`transformer.…`, then `optimizer.exp_avg.<name>`,
//! `optimizer.exp_avg_sq.<name>`, `optimizer.step.<name>`), and in the sidecar the run's
//! settings, tokenizer, both random generators and the training time so far.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rustygradients_core::{random, Tensor};
use rustygradients_io::{Checkpoint, CheckpointManager};
use rustygradients_models::{Gpt, TextDataset};
use rustygradients_nn::checkpoint::OPTIMIZER_PREFIX;
use rustygradients_nn::optim::{AdamW, GradScaler, Optimizer};
use rustygradients_nn::{restore_checkpoint, save_checkpoint};
use rustygradients_tokenizers::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::train::TrainArgs;

/// A ChaCha8 generator's exact position.
#[derive(Serialize, Deserialize)]
pub struct RngState {
    seed: String,
    stream: u64,
    /// A u128 as a decimal string (JSON numbers stop at 2^53).
    word_pos: String,
}

impl RngState {
    pub fn of(rng: &ChaCha8Rng) -> RngState {
        RngState {
            seed: rng.get_seed().iter().map(|b| format!("{b:02x}")).collect(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }
    pub fn restore(&self) -> anyhow::Result<ChaCha8Rng> {
        if self.seed.len() != 64 {
            bail!("random state: seed must be 64 hex digits");
        }
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = u8::from_str_radix(&self.seed[2 * i..2 * i + 2], 16)
                .context("random state: seed is not hex")?;
        }
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos.parse().context("random state: word_pos")?);
        Ok(rng)
    }
}

/// The sidecar `state` of a training checkpoint.
#[derive(Serialize, Deserialize)]
pub struct RunState {
    pub args: TrainArgs,
    /// The run's tokenizer (characters or BPE), in its `tokenizer.json` form.
    pub tokenizer: Tokenizer,
    /// Checkpoints written before the optimizer's state dict carried its update counts kept
    /// them here, per parameter in optimizer order; read for those, never written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adam_steps: Option<Vec<Option<u64>>>,
    pub global_rng: RngState,
    pub data_rng: RngState,
    pub train_seconds: f64,
    /// An fp16 run's loss scale and its count of good steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scaler: Option<GradScaler>,
}

#[allow(clippy::too_many_arguments)]
pub fn save(
    manager: &CheckpointManager,
    args: &TrainArgs,
    model: &Gpt,
    opt: &AdamW,
    tok: &Tokenizer,
    data: &TextDataset,
    step: usize,
    metrics: BTreeMap<String, f64>,
    train_seconds: f64,
    loss_scaler: Option<&GradScaler>,
) -> anyhow::Result<()> {
    let state = RunState {
        args: args.clone(),
        tokenizer: tok.clone(),
        adam_steps: None,
        global_rng: RngState::of(&random::rng_state()),
        data_rng: RngState::of(&data.rng_state()),
        train_seconds,
        loss_scaler: loss_scaler.copied(),
    };
    save_checkpoint(
        manager,
        model,
        opt,
        step as u64,
        metrics,
        serde_json::to_value(&state)?,
    )?;
    Ok(())
}

/// Restores model weights, optimizer state and both generators from `ck`; returns the run's
/// training time so far.
pub fn restore(
    ck: &mut Checkpoint,
    state: &RunState,
    model: &Gpt,
    opt: &mut AdamW,
    data: &mut TextDataset,
) -> anyhow::Result<f64> {
    if let Some(steps) = &state.adam_steps {
        // An older checkpoint: the update counts come from the sidecar.
        let names = opt.param_names();
        if names.len() != steps.len() {
            bail!(
                "checkpoint has optimizer state for {} parameters, the model has {}",
                steps.len(),
                names.len()
            );
        }
        for (name, step) in names.iter().zip(steps) {
            if let Some(step) = step {
                let t = Tensor::scalar(*step as i64, rustygradients_core::Device::Cpu)?;
                ck.tensors
                    .push((format!("{OPTIMIZER_PREFIX}step.{name}"), t));
            }
        }
    }
    restore_checkpoint(ck, model, opt)?;
    random::set_rng_state(state.global_rng.restore()?);
    data.set_rng_state(state.data_rng.restore()?);
    Ok(state.train_seconds)
}
