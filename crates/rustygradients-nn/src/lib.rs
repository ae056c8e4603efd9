//! Neural-network building blocks for RustyGradients.
//!
//! - [`Module`] (with `#[derive(Module)]`): PyTorch-named parameters (`h.0.attn.c_attn.weight`),
//!   state dicts, save/load, train/eval mode; [`Forward`]: a one-tensor forward pass.
//! - Layers: [`Linear`], [`Embedding`], [`LayerNorm`], [`RmsNorm`], [`Dropout`],
//!   [`SelfAttention`] (causal or not, key-padding mask), [`Mlp`] (width and [`Activation`]),
//!   [`Block`], [`Sequential`]. Layers are built f32 on the CPU; [`Module::to`] places a model.
//! - [`init`]: parameter initialisers.
//! - [`DataLoader`]: seeded, shuffled mini-batches over tensors.
//! - [`optim`]: SGD, Adam, AdamW, parameter groups, gradient clipping, learning-rate schedules;
//!   optimizer state dicts keyed by parameter name.
//! - [`checkpoint`]: a model and its optimizer saved and restored in one call each.

#![warn(missing_docs)]

// Lets `#[derive(Module)]` name this crate the same way inside it as outside.
extern crate self as rustygradients_nn;

mod attention;
mod block;
pub mod checkpoint;
mod data;
mod dropout;
mod embedding;
pub mod init;
mod layer_norm;
mod linear;
mod mlp;
mod module;
pub mod optim;
mod rms_norm;
mod sequential;

pub use attention::SelfAttention;
pub use block::Block;
pub use checkpoint::{load_latest_checkpoint, restore_checkpoint, save_checkpoint};
pub use data::DataLoader;
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use mlp::{Activation, Mlp};
pub use module::{
    join_name, Forward, LoadReport, Module, ModuleField, ParamKind, Visitor, VisitorMut,
};
pub use rms_norm::RmsNorm;
pub use rustygradients_derive::Module;
pub use sequential::{FnLayer, Sequential};
