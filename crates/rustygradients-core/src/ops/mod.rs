//! The public tensor operations, grouped by kind. Each file adds methods to [`crate::Tensor`].

mod creation;
mod elementwise;
mod feed_forward;
mod indexing;
pub(crate) mod linear;
mod matmul;
mod nn;
mod optim;
mod reduce;
mod views;

pub use nn::Reduction;
