//! Everything a training run needs to continue exactly, as one checkpoint: the model's
//! parameters and AdamW's moments as tensors (`transformer.…` names, then
//! `optimizer.exp_avg.<name>` / `optimizer.exp_avg_sq.<name>`), and in the sidecar the run's
//! settings, tokenizer, AdamW step counts, both random generators, the training time so far.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rustygradients_core::random;
use rustygradients_io::{Checkpoint, CheckpointManager};
use rustygradients_models::{Gpt, TextDataset};
use rustygradients_nn::optim::{Adam, AdamState, Optimizer};
use rustygradients_nn::Module;
use rustygradients_tokenizers::CharTokenizer;
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
    pub tokenizer: CharTokenizer,
    /// AdamW's update count per parameter, in optimizer order (`None`: never updated).
    pub adam_steps: Vec<Option<u64>>,
    pub global_rng: RngState,
    pub data_rng: RngState,
    pub train_seconds: f64,
}

const M: &str = "optimizer.exp_avg.";
const V: &str = "optimizer.exp_avg_sq.";

/// Optimizer parameter order → parameter name.
fn opt_names(model: &Gpt, opt: &Adam) -> anyhow::Result<Vec<String>> {
    let by_id: HashMap<_, _> = model
        .named_parameters()
        .into_iter()
        .map(|(n, t)| (t.id(), n))
        .collect();
    opt.params()
        .iter()
        .map(|p| {
            by_id
                .get(&p.id())
                .cloned()
                .context("an optimizer parameter is not a model parameter")
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
pub fn save(
    manager: &CheckpointManager,
    args: &TrainArgs,
    model: &Gpt,
    opt: &Adam,
    tok: &CharTokenizer,
    data: &TextDataset,
    step: usize,
    metrics: BTreeMap<String, f64>,
    train_seconds: f64,
) -> anyhow::Result<()> {
    let mut tensors = model.named_parameters();
    let names = opt_names(model, opt)?;
    let mut adam_steps = Vec::with_capacity(names.len());
    for (name, st) in names.iter().zip(opt.state()) {
        adam_steps.push(st.as_ref().map(|s| s.step));
        if let Some(s) = st {
            tensors.push((format!("{M}{name}"), s.m.clone()));
            tensors.push((format!("{V}{name}"), s.v.clone()));
        }
    }
    let state = RunState {
        args: args.clone(),
        tokenizer: tok.clone(),
        adam_steps,
        global_rng: RngState::of(&random::rng_state()),
        data_rng: RngState::of(&data.rng_state()),
        train_seconds,
    };
    manager.save_checkpoint(
        &tensors,
        step as u64,
        metrics,
        serde_json::to_value(&state)?,
    )?;
    Ok(())
}

/// Restores model weights, optimizer state and both generators from `ck`; returns the run's
/// training time so far.
pub fn restore(
    ck: &Checkpoint,
    state: &RunState,
    model: &Gpt,
    opt: &mut Adam,
    data: &mut TextDataset,
) -> anyhow::Result<f64> {
    let weights: Vec<(String, rustygradients_core::Tensor)> = ck
        .tensors
        .iter()
        .filter(|(n, _)| !n.starts_with("optimizer."))
        .cloned()
        .collect();
    model.load_state_dict(&weights, true)?;
    let names = opt_names(model, opt)?;
    if names.len() != state.adam_steps.len() {
        bail!(
            "checkpoint has optimizer state for {} parameters, the model has {}",
            state.adam_steps.len(),
            names.len()
        );
    }
    let mut st = Vec::with_capacity(names.len());
    for (name, step) in names.iter().zip(&state.adam_steps) {
        st.push(match step {
            Some(step) => Some(AdamState {
                m: ck.tensor(&format!("{M}{name}"))?.clone(),
                v: ck.tensor(&format!("{V}{name}"))?.clone(),
                step: *step,
            }),
            None => None,
        });
    }
    opt.set_state(st)?;
    random::set_rng_state(state.global_rng.restore()?);
    data.set_rng_state(state.data_rng.restore()?);
    Ok(state.train_seconds)
}
