//! The training log: one JSON object per line (`metrics.jsonl`), appended as training goes.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

#[derive(Serialize, Clone, Debug)]
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
