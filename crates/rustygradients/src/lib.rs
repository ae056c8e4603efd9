//! RustyGradients: a deep-learning framework for training and running GPT-class models.
//!
//! This crate re-exports the workspace's public API:
//! - tensors, devices, dtypes and autograd (`rustygradients-core`) at the top level;
//! - [`nn`] (modules) and [`optim`] (optimizers, schedules, clipping);
//! - [`tokenizers`], [`models`] (GPT, datasets, sampling) and [`io`] (safetensors).
#![doc = include_str!("../../../README.md")]

pub use rustygradients_core::*;
pub use rustygradients_io as io;
/// The JSON crate of checkpoint sidecars and configs (so `save_checkpoint` needs no extra
/// dependency).
pub use rustygradients_io::serde_json;
pub use rustygradients_models as models;
pub use rustygradients_nn as nn;
pub use rustygradients_nn::optim;
pub use rustygradients_tokenizers as tokenizers;
