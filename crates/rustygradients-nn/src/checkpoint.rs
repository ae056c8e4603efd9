//! A model and its optimizer saved as one training checkpoint, and restored, in one call each,
//! through [`rustygradients_io::CheckpointManager`] (retention, checksums, crash safety). The
//! tensors file holds the model's state dict under its own names and the optimizer's under
//! `optimizer.<state>.<parameter>`; the sidecar holds the step, metrics and the caller's JSON.
//!
//! ```
//! use std::collections::BTreeMap;
//! use rustygradients_core::{DType, Device};
//! use rustygradients_io::CheckpointManager;
//! use rustygradients_nn::optim::{AdamW, AdamWConfig};
//! use rustygradients_nn::{load_latest_checkpoint, save_checkpoint, Linear};
//!
//! # fn main() -> rustygradients_core::Result<()> {
//! # let dir = std::env::temp_dir().join(format!("rg-doc-nn-ckpt-{}", std::process::id()));
//! let model = Linear::new(4, 2, true)?;
//! let mut opt = AdamW::new(&model, AdamWConfig::default());
//! let manager = CheckpointManager::new(&dir, 3)?;
//! let metrics = BTreeMap::from([("val_loss".to_string(), 0.5)]);
//! save_checkpoint(&manager, &model, &opt, 100, metrics, serde_json::json!({"epoch": 2}))?;
//! let ck = load_latest_checkpoint(&manager, &model, &mut opt)?;
//! assert_eq!((ck.info.step, ck.info.state["epoch"].as_u64()), (100, Some(2)));
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use rustygradients_core::{Device, Result, Tensor};
use rustygradients_io::{Checkpoint, CheckpointManager};

use crate::optim::Optimizer;
use crate::Module;

type Named = Vec<(String, Tensor)>;

/// Optimizer state tensors are stored under this prefix.
pub const OPTIMIZER_PREFIX: &str = "optimizer.";

/// Saves `model`'s and `opt`'s state dicts as checkpoint `step`, with `metrics` (the manager
/// ranks "best" by one of them) and `state`, any JSON the caller needs to continue.
pub fn save_checkpoint(
    manager: &CheckpointManager,
    model: &dyn Module,
    opt: &dyn Optimizer,
    step: u64,
    metrics: BTreeMap<String, f64>,
    state: serde_json::Value,
) -> Result<PathBuf> {
    let mut tensors = model.state_dict();
    tensors.extend(
        opt.state_dict()
            .into_iter()
            .map(|(n, t)| (format!("{OPTIMIZER_PREFIX}{n}"), t)),
    );
    manager.save_checkpoint(&tensors, step, metrics, state)
}

/// Loads a checkpoint's tensors into `model` (strictly: every parameter, nothing extra) and
/// `opt`. Nothing is changed unless both fit.
pub fn restore_checkpoint(
    ck: &Checkpoint,
    model: &dyn Module,
    opt: &mut dyn Optimizer,
) -> Result<()> {
    let (optim, weights): (Named, Named) = ck
        .tensors
        .iter()
        .cloned()
        .partition(|(n, _)| n.starts_with(OPTIMIZER_PREFIX));
    let optim: Named = optim
        .into_iter()
        .map(|(n, t)| (n[OPTIMIZER_PREFIX.len()..].to_string(), t))
        .collect();
    // Both loads check everything before changing anything; checking the model's part first
    // means neither is changed unless both fit.
    model.check_state_dict(&weights, true)?;
    opt.load_state_dict(&optim)?;
    model.load_state_dict(&weights, true)?;
    Ok(())
}

/// Loads the newest good checkpoint of `manager` (see [`CheckpointManager::load_latest`]) into
/// `model` and `opt`, and returns it (step, metrics, the caller's JSON, skipped checkpoints).
pub fn load_latest_checkpoint(
    manager: &CheckpointManager,
    model: &dyn Module,
    opt: &mut dyn Optimizer,
) -> Result<Checkpoint> {
    let ck = manager.load_latest(Device::Cpu)?;
    restore_checkpoint(&ck, model, opt)?;
    Ok(ck)
}
