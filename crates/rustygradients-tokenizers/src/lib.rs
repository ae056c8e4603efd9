//! Tokenizers: text ↔ token ids.
//!
//! - [`CharTokenizer`]: one token per distinct character of a corpus (nanoGPT's `shakespeare_char`).
//! - [`BpeTokenizer`]: byte-level BPE through HuggingFace's `tokenizers` crate: any
//!   `tokenizer.json`, GPT-2's vocabulary and merges, or a vocabulary trained on a corpus.

#![warn(missing_docs)]

mod bpe;
mod char_tokenizer;

pub use bpe::BpeTokenizer;
pub use char_tokenizer::CharTokenizer;
