//! Tokenizers: text ↔ token ids.
//!
//! - [`CharTokenizer`]: one token per distinct character of a corpus (nanoGPT's `shakespeare_char`).

#![warn(missing_docs)]

mod char_tokenizer;

pub use char_tokenizer::CharTokenizer;
