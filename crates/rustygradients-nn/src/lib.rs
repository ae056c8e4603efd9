//! Neural-network building blocks for RustyGradients.
//!
//! - [`Module`]: forward, PyTorch-named parameters (`h.0.attn.c_attn.weight`), train/eval mode.
//! - Layers: [`Linear`], [`Embedding`], [`LayerNorm`], [`RmsNorm`], [`Dropout`],
//!   [`CausalSelfAttention`], [`Mlp`], [`Block`], [`Sequential`].
//! - [`init`]: parameter initialisers.
//! - [`optim`]: SGD, Adam, AdamW, parameter groups, gradient clipping, learning-rate schedules.

mod attention;
mod block;
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

pub use attention::CausalSelfAttention;
pub use block::Block;
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use mlp::Mlp;
pub use module::{join_name, Module, ParamKind};
pub use rms_norm::RmsNorm;
pub use sequential::Sequential;
