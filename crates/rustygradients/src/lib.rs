//! RustyGradients: a deep-learning framework for training and running GPT-class models.
//!
//! This crate re-exports the workspace's public API:
//! - tensors, devices, dtypes and autograd (`rustygradients-core`) at the top level;
//! - [`nn`] (modules) and [`optim`] (optimizers, schedules, clipping);
//! - [`tokenizers`], [`models`] (GPT, datasets, sampling) and [`io`] (safetensors, checkpoints,
//!   the metrics log).
#![doc = include_str!("../../../README.md")]
#![warn(missing_docs)]

pub use rustygradients_core::*;

// The member crates are inlined as modules, so this crate's docs hold every page of theirs (a
// plain `pub use crate as name` only links to the crate's own docs, which `cargo doc --no-deps`
// of this crate alone does not build).
#[doc(inline)]
pub use rustygradients_io as io;
/// The JSON crate of checkpoint sidecars and configs (so `save_checkpoint` needs no extra
/// dependency).
pub use rustygradients_io::serde_json;
#[doc(inline)]
pub use rustygradients_models as models;
#[doc(inline)]
pub use rustygradients_nn as nn;
pub use rustygradients_nn::optim;
#[doc(inline)]
pub use rustygradients_tokenizers as tokenizers;
