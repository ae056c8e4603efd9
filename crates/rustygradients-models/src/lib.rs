//! Model families and what they need around them.
//!
//! - [`gpt`]: the GPT of nanoGPT / GPT-2 (learned positions, pre-LN blocks, tied `lm_head`).
//! - [`data`]: a token stream split 90/10 into train/val, sampled as seeded `(B, T)` batches.
//! - [`hf`]: HuggingFace model directories (GPT-2, Llama, BERT) and KV-cache generation.
//! - [`sampling`]: temperature, top-k and top-p sampling of the next token.

#![warn(missing_docs)]

pub mod data;
pub mod gpt;
pub mod hf;
pub mod sampling;

pub use data::{Split, TextDataset};
pub use gpt::{Gpt, GptConfig, MemoryEstimate};
pub use sampling::SamplingConfig;
