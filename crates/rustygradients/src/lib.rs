//! RustyGradients: a deep-learning framework for training and running GPT-class models.
//!
//! This crate re-exports the public API of the workspace's crates:
//! - tensors, devices, dtypes and autograd from `rustygradients-core`.
#![doc = include_str!("../../../README.md")]

pub use rustygradients_core::*;
