//! Reading and writing models.
//!
//! - [`safetensors`]: named tensors of every dtype in HuggingFace's safetensors format.
//! - [`atomic`]: write-to-temp, fsync, rename — a crash never leaves a half-written file.

pub mod atomic;
pub mod safetensors;

pub use atomic::write_atomic;
pub use safetensors::{load_safetensors, save_safetensors};
