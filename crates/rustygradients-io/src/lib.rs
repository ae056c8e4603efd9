//! Reading and writing models.
//!
//! - [`safetensors`]: named tensors of every dtype in HuggingFace's safetensors format, read
//!   through a memory map ([`SafetensorsFile`]), whole or by name, single files or shards.
//! - [`checkpoint`]: [`CheckpointManager`], which keeps the last N checkpoints and the best one,
//!   each a safetensors file plus a JSON sidecar, written so a crash never leaves a broken one.
//! - [`legacy_json`]: the older JSON weight format, for import and export.
//! - [`metrics_log`]: `metrics.jsonl`, a training run's per-step log (non-finite values kept).
//! - [`atomic`]: write-to-temp, fsync, rename — a crash never leaves a half-written file.
//! - [`bounded`]: reading documents only from regular files and only up to a size limit.

#![warn(missing_docs)]

pub mod atomic;
pub mod bounded;
pub mod checkpoint;
pub mod legacy_json;
pub mod metrics_log;
pub mod safetensors;

/// The JSON crate the checkpoint sidecar's `state` uses, so callers need not depend on it.
pub use serde_json;

pub use atomic::{remove_stale_temporaries, write_atomic, write_atomic_with};
pub use bounded::{open_regular, read_to_string_limited};
pub use checkpoint::{Checkpoint, CheckpointInfo, CheckpointManager, Goal};
pub use metrics_log::{MetricsLog, Record};
pub use safetensors::{
    load_safetensors, load_safetensors_bytes, load_sharded, save_safetensors, save_sharded,
    SafetensorsFile, CHECKSUM_KEY,
};
