//! Training checkpoints: `checkpoint_step_000123.safetensors` (tensors: weights, optimizer
//! moments, ...) plus `checkpoint_step_000123.json` (a [`CheckpointInfo`]: step, metrics, time,
//! and whatever state the trainer needs to continue exactly).
//!
//! Crash safety: the tensors file is written atomically first, then the sidecar, which names the
//! tensors file and its length; a checkpoint exists once its sidecar does. Old checkpoints are
//! removed only after the new one is durable, sidecar first. Temporary files left by a killed
//! writer are never taken for checkpoints and are cleared when a manager opens the directory.
//!
//! Integrity: a checkpoint holds only finite values (saving NaN or infinite tensors or metrics
//! is refused, so a diverged run can never make its own "best" or push good checkpoints out).
//! Every tensor's bytes carry a CRC-32 in the safetensors metadata and the sidecar carries one of
//! the file's header; loading checks both and the values' finiteness, and
//! [`CheckpointManager::load_latest`] falls back to the newest checkpoint that passes.
//!
//! ```
//! use std::collections::BTreeMap;
//! use rustygradients_core::{Device, Tensor};
//! use rustygradients_io::CheckpointManager;
//! # let dir = std::env::temp_dir().join(format!("rg-doc-ckpt-{}", std::process::id()));
//! let manager = CheckpointManager::new(&dir, 2)?;
//! for step in [10u64, 20, 30] {
//!     let w = Tensor::full(step as f64, [2, 2], rustygradients_core::DType::F32, Device::Cpu)?;
//!     let metrics = BTreeMap::from([("val_loss".to_string(), 1.0 / step as f64)]);
//!     manager.save_checkpoint(&[("w".into(), w)], step, metrics, serde_json::json!({}))?;
//! }
//! let latest = manager.load_latest(Device::Cpu)?;
//! assert_eq!(latest.info.step, 30);
//! assert_eq!(manager.list()?.len(), 2); // the last two (the best, step 30, is one of them)
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), rustygradients_core::Error>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rustygradients_core::{Device, Error, Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::atomic::{remove_stale_temporaries, write_atomic};
use crate::bounded::{limits, read_to_string_limited};
use crate::safetensors::{save_safetensors, SafetensorsFile};

const PREFIX: &str = "checkpoint_step_";

/// The sidecar of one checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckpointInfo {
    /// The training step it was saved at; also names its files (`checkpoint_step_{step:06}.*`).
    pub step: u64,
    /// Scalar results at this step (losses, accuracy, ...).
    pub metrics: BTreeMap<String, f64>,
    /// When it was saved, in seconds since the Unix epoch.
    pub saved_at: f64,
    /// The tensors file's name (in the same directory): `checkpoint_step_{step:06}.safetensors`.
    pub tensors_file: String,
    /// The tensors file's exact length in bytes; a checkpoint whose file differs is incomplete.
    pub tensors_bytes: u64,
    /// CRC-32 (8 hex digits) of the tensors file's header; the tensors' own checksums are in
    /// that header. Absent in checkpoints written before checksums existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_crc32: Option<String>,
    /// Everything else the trainer needs to continue: model config, tokenizer, optimizer
    /// counters, RNG states, data position, schedule position.
    pub state: serde_json::Value,
}

impl CheckpointInfo {
    /// Parses and checks a sidecar; `what` names it in errors.
    pub fn from_json(what: &str, text: &str) -> Result<CheckpointInfo> {
        let info: CheckpointInfo =
            serde_json::from_str(text).map_err(|e| Error::format(what, e.to_string()))?;
        let expected = tensors_name(info.step);
        if info.tensors_file != expected {
            return Err(Error::format(
                what,
                format!(
                    "names tensors file {:?}; step {} must use {expected:?}",
                    info.tensors_file, info.step
                ),
            ));
        }
        if let Some((k, v)) = info.metrics.iter().find(|(_, v)| !v.is_finite()) {
            return Err(Error::format(what, format!("metric {k} is {v}")));
        }
        Ok(info)
    }
}

/// A loaded checkpoint.
pub struct Checkpoint {
    /// Its sidecar.
    pub info: CheckpointInfo,
    /// Every tensor of the tensors file, by name, in the file's order, on the requested device.
    pub tensors: Vec<(String, Tensor)>,
    /// Newer checkpoints that [`CheckpointManager::load_latest`] passed over, with the reason
    /// (a failed checksum, non-finite values, an unreadable file), newest first.
    pub skipped: Vec<(u64, String)>,
}

impl Checkpoint {
    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| {
                Error::format(
                    format!("checkpoint of step {}", self.info.step),
                    format!("no tensor named {name:?}"),
                )
            })
    }
}

/// Whether a larger or a smaller value of the ranking metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// Lower is better (a loss).
    Minimize,
    /// Higher is better (an accuracy).
    Maximize,
}

/// Saves checkpoints into one directory, keeping the last `keep_last` plus the best one.
pub struct CheckpointManager {
    dir: PathBuf,
    keep_last: usize,
    metric: String,
    goal: Goal,
}

fn tensors_name(step: u64) -> String {
    format!("{PREFIX}{step:06}.safetensors")
}
fn sidecar_name(step: u64) -> String {
    format!("{PREFIX}{step:06}.json")
}
/// The step in a `checkpoint_step_NNNNNN.{ext}` file name.
fn step_of(name: &str, ext: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(ext)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl CheckpointManager {
    /// Opens (creating if needed) `dir`; ranks checkpoints by `val_loss`, lower is better
    /// (see [`CheckpointManager::with_best_metric`]). Removes temporary files that a killed
    /// writer left behind.
    pub fn new(dir: impl AsRef<Path>, keep_last: usize) -> Result<CheckpointManager> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        remove_stale_temporaries(&dir)?;
        Ok(CheckpointManager {
            dir,
            keep_last: keep_last.max(1),
            metric: "val_loss".into(),
            goal: Goal::Minimize,
        })
    }

    /// Ranks checkpoints by `metric` (checkpoints without it are never "best").
    pub fn with_best_metric(mut self, metric: &str, goal: Goal) -> Self {
        self.metric = metric.into();
        self.goal = goal;
        self
    }

    /// The directory it manages.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Saves one checkpoint durably, then removes those no longer kept. Returns the sidecar's
    /// path. Saving a step that already has a checkpoint replaces it. A NaN or infinite metric
    /// or tensor value is an error naming it, and nothing is written.
    pub fn save_checkpoint(
        &self,
        tensors: &[(String, Tensor)],
        step: u64,
        metrics: BTreeMap<String, f64>,
        state: serde_json::Value,
    ) -> Result<PathBuf> {
        let what = format!("checkpoint of step {step}");
        if let Some((k, v)) = metrics.iter().find(|(_, v)| !v.is_finite()) {
            return Err(Error::format(
                what,
                format!("metric {k} is {v}; only finite values are saved"),
            ));
        }
        for (name, t) in tensors {
            if !t.all_finite()? {
                return Err(Error::format(
                    what,
                    format!("tensor {name} holds NaN or infinite values; not saved"),
                ));
            }
        }
        let tensors_path = self.dir.join(tensors_name(step));
        let meta = [("step".to_string(), step.to_string())].into();
        save_safetensors(&tensors_path, tensors, Some(meta))?;
        let bytes = std::fs::metadata(&tensors_path)
            .map_err(|e| Error::io(&tensors_path, e))?
            .len();
        let header_crc32 = format!(
            "{:08x}",
            crc32fast::hash(SafetensorsFile::open(&tensors_path)?.header_bytes())
        );
        let info = CheckpointInfo {
            step,
            metrics,
            saved_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            tensors_file: tensors_name(step),
            tensors_bytes: bytes,
            header_crc32: Some(header_crc32),
            state,
        };
        let sidecar = self.dir.join(sidecar_name(step));
        let text = serde_json::to_string_pretty(&info)
            .map_err(|e| Error::format(sidecar.display().to_string(), e.to_string()))?;
        write_atomic(&sidecar, text.as_bytes())?;
        self.prune()?;
        Ok(sidecar)
    }

    /// Every complete checkpoint (a valid sidecar whose tensors file exists with the recorded
    /// length), oldest first.
    pub fn list(&self) -> Result<Vec<CheckpointInfo>> {
        let mut out = Vec::new();
        for name in file_names(&self.dir)? {
            let Some(step) = step_of(&name, ".json") else {
                continue;
            };
            let path = self.dir.join(&name);
            let Ok(text) = read_to_string_limited(&path, limits::SIDECAR) else {
                continue;
            };
            let Ok(info) = CheckpointInfo::from_json(&path.display().to_string(), &text) else {
                continue;
            };
            let len = std::fs::metadata(self.dir.join(&info.tensors_file)).map(|m| m.len());
            if info.step == step && len.ok() == Some(info.tensors_bytes) {
                out.push(info);
            }
        }
        out.sort_by_key(|i| i.step);
        Ok(out)
    }

    /// The best complete checkpoint's sidecar by the ranking metric (the latest on ties).
    pub fn best_info(&self) -> Result<Option<CheckpointInfo>> {
        Ok(self.best_of(&self.list()?).cloned())
    }

    fn best_of<'a>(&self, all: &'a [CheckpointInfo]) -> Option<&'a CheckpointInfo> {
        let better = |a: f64, b: f64| match self.goal {
            Goal::Minimize => a <= b,
            Goal::Maximize => a >= b,
        };
        let mut best: Option<(&CheckpointInfo, f64)> = None;
        for info in all {
            if let Some(&v) = info.metrics.get(&self.metric) {
                if best.is_none_or(|(_, b)| better(v, b)) {
                    best = Some((info, v));
                }
            }
        }
        best.map(|(i, _)| i)
    }

    /// Loads the newest complete checkpoint that passes its checks (checksums, finite values);
    /// the newer ones it passes over are listed in [`Checkpoint::skipped`]. An error when none
    /// passes, naming each checkpoint and why.
    pub fn load_latest(&self, device: Device) -> Result<Checkpoint> {
        let all = self.list()?;
        if all.is_empty() {
            return Err(self.none_error());
        }
        let mut skipped = Vec::new();
        for info in all.iter().rev() {
            match self.load(info, device) {
                Ok(mut ck) => {
                    ck.skipped = skipped;
                    return Ok(ck);
                }
                Err(e) => skipped.push((info.step, e.to_string())),
            }
        }
        let reasons: Vec<String> = skipped
            .iter()
            .map(|(step, e)| format!("step {step}: {e}"))
            .collect();
        Err(Error::format(
            self.dir.display().to_string(),
            format!("no checkpoint passes its checks ({})", reasons.join("; ")),
        ))
    }

    /// Moves checkpoint `step` out of the manager's view (its files gain a `.corrupt` suffix and
    /// stay on disk for inspection); for checkpoints that [`CheckpointManager::load_latest`]
    /// skipped, before a run continues from an older one.
    pub fn set_aside(&self, step: u64) -> Result<()> {
        // Sidecar first: from then on this is no longer a checkpoint.
        for name in [sidecar_name(step), tensors_name(step)] {
            let from = self.dir.join(&name);
            let to = self.dir.join(format!("{name}.corrupt"));
            match std::fs::rename(&from, &to) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(&from, e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Loads the best complete checkpoint by the ranking metric.
    pub fn load_best(&self, device: Device) -> Result<Checkpoint> {
        let all = self.list()?;
        let info = self.best_of(&all).ok_or_else(|| {
            Error::format(
                self.dir.display().to_string(),
                format!(
                    "no complete checkpoint records the metric {:?}",
                    self.metric
                ),
            )
        })?;
        self.load(info, device)
    }

    /// Loads the checkpoint that `info` describes, checking the header's and every tensor's
    /// checksum and that every value is finite.
    pub fn load(&self, info: &CheckpointInfo, device: Device) -> Result<Checkpoint> {
        let path = self.dir.join(&info.tensors_file);
        let what = path.display().to_string();
        let file = SafetensorsFile::open(&path)?;
        if let Some(want) = &info.header_crc32 {
            let got = format!("{:08x}", crc32fast::hash(file.header_bytes()));
            if &got != want {
                return Err(Error::format(
                    what,
                    format!(
                        "the header fails its checksum (recorded {want}, read {got}): \
                         the file is corrupt"
                    ),
                ));
            }
        }
        let (tensors, _) = file.load_all(device)?;
        for (name, t) in &tensors {
            if !t.all_finite()? {
                return Err(Error::format(
                    &what,
                    format!("tensor {name} holds NaN or infinite values"),
                ));
            }
        }
        Ok(Checkpoint {
            info: info.clone(),
            tensors,
            skipped: Vec::new(),
        })
    }

    fn none_error(&self) -> Error {
        Error::format(
            self.dir.display().to_string(),
            "no complete checkpoint (checkpoint_step_NNNNNN.json with its .safetensors) here",
        )
    }

    /// Removes checkpoints that are neither among the last `keep_last` nor the best, and
    /// tensors files older than the newest checkpoint that no sidecar claims (a crash between
    /// the two writes of a save).
    fn prune(&self) -> Result<()> {
        let all = self.list()?;
        let Some(newest) = all.last().map(|i| i.step) else {
            return Ok(());
        };
        let best = self.best_of(&all).map(|i| i.step);
        let keep_from = all.len().saturating_sub(self.keep_last);
        let kept: Vec<u64> = all[keep_from..]
            .iter()
            .map(|i| i.step)
            .chain(best)
            .collect();
        let remove = |name: String| -> Result<()> {
            let p = self.dir.join(name);
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&p, e)),
                _ => Ok(()),
            }
        };
        for info in &all {
            if !kept.contains(&info.step) {
                // Sidecar first: from then on this is no longer a checkpoint.
                remove(sidecar_name(info.step))?;
                remove(info.tensors_file.clone())?;
            }
        }
        for name in file_names(&self.dir)? {
            if let Some(step) = step_of(&name, ".safetensors") {
                if step < newest && !self.dir.join(sidecar_name(step)).exists() {
                    remove(name)?;
                }
            }
        }
        Ok(())
    }
}

fn file_names(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            out.push(name);
        }
    }
    Ok(out)
}
