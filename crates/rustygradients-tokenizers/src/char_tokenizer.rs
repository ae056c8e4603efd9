//! A character-level tokenizer whose vocabulary is the sorted set of a corpus's characters.

use std::collections::HashMap;

use rustygradients_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// Maps each known character to its index in the sorted vocabulary.
///
/// ```
/// use rustygradients_tokenizers::CharTokenizer;
/// let tok = CharTokenizer::from_text("hello"); // vocabulary: e h l o
/// let ids = tok.encode("hell")?;
/// assert_eq!(ids, [1, 0, 2, 2]);
/// assert_eq!(tok.decode(&ids)?, "hell");
/// assert!(tok.encode("help").is_err()); // 'p' is not in the vocabulary
/// # Ok::<(), rustygradients_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CharTokenizerFile", into = "CharTokenizerFile")]
pub struct CharTokenizer {
    vocab: Vec<char>,
    ids: HashMap<char, u32>,
}

/// The JSON form: `{"type": "char", "vocab": "<every character, in id order>"}`.
#[derive(Serialize, Deserialize)]
struct CharTokenizerFile {
    #[serde(rename = "type")]
    kind: String,
    vocab: String,
}

impl TryFrom<CharTokenizerFile> for CharTokenizer {
    type Error = String;
    fn try_from(f: CharTokenizerFile) -> std::result::Result<Self, String> {
        if f.kind != "char" {
            return Err(format!("tokenizer type is {:?}, expected \"char\"", f.kind));
        }
        CharTokenizer::from_vocab(f.vocab.chars().collect()).map_err(|e| e.to_string())
    }
}

impl From<CharTokenizer> for CharTokenizerFile {
    fn from(t: CharTokenizer) -> Self {
        CharTokenizerFile {
            kind: "char".into(),
            vocab: t.vocab.iter().collect(),
        }
    }
}

impl CharTokenizer {
    /// The vocabulary of `text`: its distinct characters, sorted.
    pub fn from_text(text: &str) -> Self {
        // A set, not a sorted copy of the text: memory in the vocabulary's size, not the corpus's.
        let vocab: std::collections::BTreeSet<char> = text.chars().collect();
        Self::from_vocab(vocab.into_iter().collect())
            .expect("sorted, deduplicated characters are a valid vocabulary")
    }

    /// A tokenizer whose id `i` is `vocab[i]`; characters must be distinct.
    pub fn from_vocab(vocab: Vec<char>) -> Result<Self> {
        let ids: HashMap<char, u32> = vocab
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as u32))
            .collect();
        if ids.len() != vocab.len() {
            return Err(Error::format(
                "char tokenizer",
                "vocabulary has repeated characters",
            ));
        }
        Ok(CharTokenizer { vocab, ids })
    }

    /// The number of distinct ids (`0..vocab_size`).
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Ids of `text`; a character outside the vocabulary is an error naming it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        text.chars()
            .map(|c| {
                self.ids.get(&c).copied().ok_or_else(|| {
                    Error::format(
                        "char tokenizer",
                        format!("character {c:?} is not in the vocabulary"),
                    )
                })
            })
            .collect()
    }

    /// Text of `ids`; an id past the vocabulary is an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        ids.iter()
            .map(|&i| {
                self.vocab.get(i as usize).copied().ok_or_else(|| {
                    Error::format(
                        "char tokenizer",
                        format!("id {i} is past the vocabulary of {}", self.vocab.len()),
                    )
                })
            })
            .collect()
    }

    /// The JSON form, `{"type":"char","vocab":"<every character, in id order>"}` (what
    /// `tokenizer.json` holds).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a tokenizer always serialises")
    }

    /// Parses [`CharTokenizer::to_json`]'s form; another `type`, repeated characters or
    /// malformed JSON is an error.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| Error::format("char tokenizer JSON", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_text_and_json() {
        let t = CharTokenizer::from_text("hello world");
        assert_eq!(t.vocab_size(), 8);
        let ids = t.encode("low");
        assert_eq!(t.decode(&ids.unwrap()).unwrap(), "low");
        let back = CharTokenizer::from_json(&t.to_json()).unwrap();
        assert_eq!(back, t);
        assert!(t.encode("xyz").unwrap_err().to_string().contains("'x'"));
        assert!(t.decode(&[99]).is_err());
        assert!(CharTokenizer::from_json(r#"{"type":"bpe","vocab":"ab"}"#).is_err());
        assert!(CharTokenizer::from_json(r#"{"type":"char","vocab":"aa"}"#).is_err());
    }
}
