//! Tokenizers: text ↔ token ids.
//!
//! - [`CharTokenizer`]: one token per distinct character of a corpus (nanoGPT's `shakespeare_char`).
//! - [`BpeTokenizer`]: byte-level BPE through HuggingFace's `tokenizers` crate: any
//!   `tokenizer.json`, GPT-2's vocabulary and merges, or a vocabulary trained on a corpus.
//! - [`Tokenizer`]: either kind, as a model carries it (its `tokenizer.json` tells which), and
//!   [`TextStream`] to turn generated ids into text as they come.

#![warn(missing_docs)]

mod bpe;
mod char_tokenizer;
mod tokenizer;

pub use bpe::BpeTokenizer;
pub use char_tokenizer::CharTokenizer;
pub use tokenizer::{TextStream, Tokenizer};
