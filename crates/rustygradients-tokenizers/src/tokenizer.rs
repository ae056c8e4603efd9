//! A model's tokenizer, whichever kind it is: characters or BPE, told apart by the JSON of a
//! `tokenizer.json`, with text streamed out of ids without splitting a character.

use std::path::Path;

use rustygradients_core::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::bpe::{check_file, tokenizer_file};
use crate::{BpeTokenizer, CharTokenizer};

/// A character-level or a BPE tokenizer.
///
/// Its JSON is the kind's own: `{"type": "char", "vocab": "…"}` for characters, HuggingFace's
/// `tokenizer.json` (an object with a `"model"`) for BPE, so HF tools read a BPE model's
/// tokenizer as it is. [`Tokenizer::from_json`] tells the two apart.
///
/// ```
/// use rustygradients_tokenizers::{CharTokenizer, Tokenizer};
/// let tok = Tokenizer::Char(CharTokenizer::from_text("hello"));
/// let back = Tokenizer::from_json(&tok.to_json()?)?;
/// assert_eq!(back.kind(), "char");
/// assert_eq!(back.decode(&back.encode("hell")?)?, "hell");
/// # Ok::<(), rustygradients_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub enum Tokenizer {
    /// One token per character of the training text.
    Char(CharTokenizer),
    /// Anything a HuggingFace `tokenizer.json` describes (in practice byte-level BPE).
    Bpe(BpeTokenizer),
}

impl Tokenizer {
    /// Reads a tokenizer file (or `path/tokenizer.json` when `path` is a directory) of either
    /// kind; errors name the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let file = tokenizer_file(path.as_ref());
        check_file(&file)?;
        let json = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        Self::parse(&json, &file.display().to_string())
    }

    /// Parses a tokenizer's JSON, telling the kind from its content: `"type": "char"` is a
    /// character tokenizer, an object with a `"model"` a HuggingFace `tokenizer.json`.
    pub fn from_json(json: &str) -> Result<Self> {
        Self::parse(json, "tokenizer JSON")
    }

    /// [`Tokenizer::from_json`], naming `what` in errors.
    fn parse(json: &str, what: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(json)
            .map_err(|e| Error::format(what, format!("not JSON: {e}")))?;
        let bpe = || BpeTokenizer::from_json(json);
        Self::of_kind(&value, what, bpe)
    }

    /// The tokenizer `value` holds; `bpe` parses it as a HuggingFace `tokenizer.json`.
    fn of_kind(
        value: &Value,
        what: &str,
        bpe: impl FnOnce() -> Result<BpeTokenizer>,
    ) -> Result<Self> {
        let rewrap = |e: Error| match e {
            Error::Format { msg, .. } => Error::format(what, msg),
            e => e,
        };
        match (value.get("type"), value.get("model")) {
            (Some(Value::String(t)), _) if t == "char" => CharTokenizer::deserialize(value)
                .map(Tokenizer::Char)
                .map_err(|e| Error::format(what, format!("character tokenizer: {e}"))),
            (_, Some(_)) => bpe().map(Tokenizer::Bpe).map_err(rewrap),
            (Some(t), None) => Err(Error::format(
                what,
                format!(
                    "unknown tokenizer type {t} (expected \"char\", or a HuggingFace \
                     tokenizer.json)"
                ),
            )),
            (None, None) => Err(Error::format(
                what,
                "neither a character tokenizer ({\"type\": \"char\", …}) nor a HuggingFace \
                 tokenizer.json (an object with a \"model\")",
            )),
        }
    }

    /// The JSON [`Tokenizer::from_json`] reads back: the character tokenizer's compact form,
    /// or HuggingFace's `tokenizer.json`.
    pub fn to_json(&self) -> Result<String> {
        match self {
            Tokenizer::Char(t) => Ok(t.to_json()),
            Tokenizer::Bpe(t) => t.to_json(),
        }
    }

    /// Writes [`Tokenizer::to_json`] to `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let json = self.to_json()?;
        std::fs::write(path, json).map_err(|e| Error::io(path, e))
    }

    /// `"char"` or `"bpe"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Tokenizer::Char(_) => "char",
            Tokenizer::Bpe(_) => "bpe",
        }
    }

    /// The number of ids (`0..vocab_size`).
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Char(t) => t.vocab_size(),
            Tokenizer::Bpe(t) => t.vocab_size(),
        }
    }

    /// Token ids of `text`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Char(t) => t.encode(text),
            Tokenizer::Bpe(t) => t.encode(text),
        }
    }

    /// The text of `ids`; with byte-level BPE, bytes that are not whole UTF-8 characters
    /// become U+FFFD (see [`TextStream`] for decoding ids as they come).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Tokenizer::Char(t) => t.decode(ids),
            Tokenizer::Bpe(t) => t.decode(ids),
        }
    }

    /// A [`TextStream`] that continues after `context` (the ids already shown, e.g. the
    /// prompt's; some decoders' output depends on what comes before).
    pub fn stream(&self, context: &[u32]) -> Result<TextStream<'_>> {
        TextStream::new(self, context)
    }
}

/// The same tokenizer: the same kind and the same JSON.
impl PartialEq for Tokenizer {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Tokenizer::Char(a), Tokenizer::Char(b)) => a == b,
            (Tokenizer::Bpe(a), Tokenizer::Bpe(b)) => {
                matches!((a.to_json(), b.to_json()), (Ok(x), Ok(y)) if x == y)
            }
            _ => false,
        }
    }
}

/// Serialised as [`Tokenizer::to_json`]'s JSON (a checkpoint's run state embeds it).
impl Serialize for Tokenizer {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        match self {
            Tokenizer::Char(t) => t.serialize(s),
            Tokenizer::Bpe(t) => {
                let json = t.to_json().map_err(S::Error::custom)?;
                serde_json::from_str::<Value>(&json)
                    .map_err(S::Error::custom)?
                    .serialize(s)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Tokenizer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = Value::deserialize(d)?;
        let bpe = || BpeTokenizer::from_json(&value.to_string());
        Tokenizer::of_kind(&value, "tokenizer", bpe).map_err(D::Error::custom)
    }
}

/// Text of ids as they are produced, each character whole: with byte-level BPE a token can
/// end inside a character's UTF-8 bytes, and that character waits for the tokens that finish
/// it. Each new piece is decoded together with the piece before it, for decoders whose output
/// depends on context (HuggingFace's `DecodeStream` works the same way).
///
/// ```
/// use rustygradients_tokenizers::{CharTokenizer, Tokenizer};
/// let tok = Tokenizer::Char(CharTokenizer::from_text("ab"));
/// let mut stream = tok.stream(&[])?;
/// assert_eq!(stream.push(1)?, "b");
/// assert_eq!(stream.finish()?, "");
/// # Ok::<(), rustygradients_core::Error>(())
/// ```
pub struct TextStream<'a> {
    tok: &'a Tokenizer,
    /// The context (ids already shown) followed by the ids not yet shown.
    ids: Vec<u32>,
    /// The text of `ids[..shown]`.
    prefix: String,
    /// How many leading ids of `ids` have been shown.
    shown: usize,
}

impl<'a> TextStream<'a> {
    fn new(tok: &'a Tokenizer, context: &[u32]) -> Result<Self> {
        Ok(TextStream {
            tok,
            ids: context.to_vec(),
            prefix: tok.decode(context)?,
            shown: context.len(),
        })
    }

    /// Adds `id`; returns the text it completes (empty while a character is still
    /// incomplete).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = self.tok.decode(&self.ids)?;
        if text.len() <= self.prefix.len() || text.ends_with(char::REPLACEMENT_CHARACTER) {
            return Ok(String::new());
        }
        let new = text[common_prefix(&self.prefix, &text)..].to_string();
        // The piece just shown is the context of the next one.
        self.ids.drain(..self.shown);
        self.prefix = self.tok.decode(&self.ids)?;
        self.shown = self.ids.len();
        Ok(new)
    }

    /// The text still waiting (bytes of an unfinished character come out as U+FFFD).
    pub fn finish(self) -> Result<String> {
        let text = self.tok.decode(&self.ids)?;
        Ok(text[common_prefix(&self.prefix, &text)..].to_string())
    }
}

/// The byte length of the longest common prefix of `a` and `b` that ends on a character
/// boundary (all of `a` when `b` starts with it).
fn common_prefix(a: &str, b: &str) -> usize {
    if b.starts_with(a) {
        return a.len();
    }
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte-level BPE vocabulary trained on a small text (a temporary file: HF trains from
    /// files).
    fn bpe() -> Tokenizer {
        // One file per call: tests run in parallel.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "rustygradients-tokenizer-test-{}-{n}.txt",
            std::process::id()
        ));
        std::fs::write(
            &path,
            "to be or not to be, that is the question\n".repeat(50),
        )
        .unwrap();
        let tok = BpeTokenizer::train(std::slice::from_ref(&path), 280);
        std::fs::remove_file(&path).unwrap();
        Tokenizer::Bpe(tok.unwrap())
    }

    #[test]
    fn tells_the_kinds_apart() {
        let char_tok = Tokenizer::Char(CharTokenizer::from_text("hello world"));
        let json = char_tok.to_json().unwrap();
        assert!(json.contains("\"type\":\"char\""), "{json}");
        let back = Tokenizer::from_json(&json).unwrap();
        assert_eq!(back.kind(), "char");
        assert_eq!(back, char_tok);

        let bpe = bpe();
        let json = bpe.to_json().unwrap();
        // HuggingFace's own format, which its libraries read.
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["model"]["type"], "BPE");
        let back = Tokenizer::from_json(&json).unwrap();
        assert_eq!(back.kind(), "bpe");
        assert_eq!(back, bpe);
        assert_eq!(back.vocab_size(), bpe.vocab_size());
        assert_ne!(back, char_tok);
        let ids = back.encode("to be or not").unwrap();
        assert!(ids.len() < 12, "merges shorten the text: {ids:?}");
        assert_eq!(back.decode(&ids).unwrap(), "to be or not");
    }

    #[test]
    fn serde_round_trips_both_kinds() {
        for tok in [Tokenizer::Char(CharTokenizer::from_text("abc")), bpe()] {
            let v = serde_json::to_value(&tok).unwrap();
            let back: Tokenizer = serde_json::from_value(v).unwrap();
            assert_eq!(back, tok);
        }
        // The character form is the one checkpoints have always held.
        let v = serde_json::to_value(Tokenizer::Char(CharTokenizer::from_text("ba"))).unwrap();
        assert_eq!(v, serde_json::json!({"type": "char", "vocab": "ab"}));
    }

    #[test]
    fn bad_json_is_an_error_naming_the_file() {
        let bad = [
            ("{", "not JSON"),
            ("[1, 2]", "neither"),
            (r#"{"vocab": "ab"}"#, "neither"),
            (
                r#"{"type": "word", "vocab": "ab"}"#,
                "unknown tokenizer type \"word\"",
            ),
            (r#"{"type": "char", "vocab": "aa"}"#, "repeated"),
            (r#"{"model": {"type": "nope"}}"#, "tokenizer JSON"),
        ];
        for (json, want) in bad {
            let e = Tokenizer::from_json(json).unwrap_err().to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
        let dir = std::env::temp_dir().join(format!(
            "rustygradients-tokenizer-dir-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tokenizer.json"), "[]").unwrap();
        let e = Tokenizer::from_file(&dir).unwrap_err().to_string();
        assert!(
            e.contains(&dir.join("tokenizer.json").display().to_string()) && e.contains("neither"),
            "{e}"
        );
        std::fs::write(
            dir.join("tokenizer.json"),
            Tokenizer::Char(CharTokenizer::from_text("xy"))
                .to_json()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(Tokenizer::from_file(&dir).unwrap().kind(), "char");
        std::fs::remove_dir_all(&dir).unwrap();
        let e = Tokenizer::from_file("/nonexistent/tok.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/tok.json"), "{e}");
    }

    #[test]
    fn streams_whole_characters() {
        let tok = bpe();
        // Characters the vocabulary never saw are their UTF-8 bytes, one token each.
        let text = "to be é日😀 or";
        let ids = tok.encode(text).unwrap();
        let context = tok.encode("question\n").unwrap();
        let mut stream = tok.stream(&context).unwrap();
        let mut pieces = Vec::new();
        for &id in &ids {
            let piece = stream.push(id).unwrap();
            assert!(!piece.contains(char::REPLACEMENT_CHARACTER), "{piece:?}");
            pieces.push(piece);
        }
        assert_eq!(stream.finish().unwrap(), "");
        assert_eq!(pieces.concat(), text);
        // Some tokens were parts of a character, and waited.
        assert!(pieces.iter().any(String::is_empty), "{pieces:?}");

        // A stream that ends inside a character shows what it has.
        let mut stream = tok.stream(&[]).unwrap();
        let e = tok.encode("日").unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(stream.push(e[0]).unwrap(), "");
        assert_eq!(stream.finish().unwrap(), "\u{FFFD}");

        let chars = Tokenizer::Char(CharTokenizer::from_text("abc"));
        let mut stream = chars.stream(&[0]).unwrap();
        assert_eq!(stream.push(2).unwrap(), "c");
        assert_eq!(stream.push(1).unwrap(), "b");
        assert!(stream.push(9).is_err());
    }

    #[test]
    fn common_prefix_ends_on_a_character() {
        assert_eq!(common_prefix("ab", "abc"), 2);
        assert_eq!(common_prefix("aé", "aè"), 1);
        assert_eq!(common_prefix("abc", "ab"), 2);
        assert_eq!(common_prefix("", "x"), 0);
    }
}
