//! The training log: one JSON object per line (`metrics.jsonl`), appended as training goes.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Record {
    pub step: usize,
    pub train_loss: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// Set on evaluation records: the loss estimated over `eval_iters` training batches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_train_loss: Option<f64>,
    pub lr: f64,
    pub tokens_per_s: f64,
    pub time_s: f64,
}

pub struct MetricsLog {
    file: std::fs::File,
}

impl MetricsLog {
    pub fn create(path: &Path, append: bool) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(path)?;
        Ok(MetricsLog { file })
    }
    pub fn write(&mut self, r: &Record) -> anyhow::Result<()> {
        writeln!(self.file, "{}", serde_json::to_string(r)?)?;
        Ok(())
    }
}

/// The records of an earlier run up to and including `step` (what a resumed run keeps).
pub fn read_until(path: &Path, step: usize) -> anyhow::Result<Vec<Record>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let r: Record = serde_json::from_str(line)
            .with_context(|| format!("{} line {}", path.display(), i + 1))?;
        if r.step <= step {
            out.push(r);
        }
    }
    Ok(out)
}
