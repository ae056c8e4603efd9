//! Byte-level BPE through HuggingFace's `tokenizers` crate: any `tokenizer.json`, GPT-2's
//! vocabulary from its `encoder.json`/`vocab.json` + `vocab.bpe`/`merges.txt`, or a vocabulary
//! trained on a corpus.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustygradients_core::{Error, Result};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer, TruncationParams};

/// The largest tokenizer file read (GPT-2's is 1.4 MB; large multilingual ones about 20 MB).
const MAX_FILE: u64 = 256 << 20;

/// A BPE tokenizer (anything a `tokenizer.json` describes, in practice byte-level BPE).
///
/// ```no_run
/// use rustygradients_tokenizers::BpeTokenizer;
/// let tok = BpeTokenizer::gpt2("encoder.json", "vocab.bpe")?;
/// let ids = tok.encode("Hello world")?;
/// assert_eq!(ids, [15496, 995]);
/// assert_eq!(tok.decode(&ids)?, "Hello world");
/// # Ok::<(), rustygradients_core::Error>(())
/// ```
#[derive(Clone)]
pub struct BpeTokenizer {
    /// Shared: a large vocabulary is not copied when the tokenizer is cloned.
    inner: Arc<Tokenizer>,
    /// Counted once: HF's `get_vocab_size` builds a copy of the vocabulary at every call.
    vocab_size: usize,
}

impl std::fmt::Debug for BpeTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BpeTokenizer({} tokens)", self.vocab_size())
    }
}

fn fail(what: &Path, e: impl std::fmt::Display) -> Error {
    Error::format(what.display().to_string(), e.to_string())
}

/// `path` itself, or `path/tokenizer.json` when `path` is a directory.
pub(crate) fn tokenizer_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("tokenizer.json")
    } else {
        path.to_path_buf()
    }
}

/// Checks that `path` is a regular file of at most [`MAX_FILE`] bytes before a library reads it.
pub(crate) fn check_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(fail(path, "not a regular file"));
    }
    if meta.len() > MAX_FILE {
        return Err(fail(
            path,
            format!(
                "{} bytes is more than a tokenizer file may hold ({MAX_FILE})",
                meta.len()
            ),
        ));
    }
    Ok(())
}

/// GPT-2's byte-level pipeline around a BPE model: no prefix space, offsets trimmed, the
/// regex split GPT-2 uses.
fn byte_level(model: BPE) -> Tokenizer {
    let mut tok = Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevel::default()));
    tok
}

impl BpeTokenizer {
    fn of(inner: Tokenizer) -> Self {
        BpeTokenizer {
            vocab_size: inner.get_vocab_size(true),
            inner: Arc::new(inner),
        }
    }

    /// Loads a `tokenizer.json` (or the one inside the directory `path`), as HuggingFace
    /// writes it.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let file = tokenizer_file(path.as_ref());
        check_file(&file)?;
        let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
        let inner = Tokenizer::from_bytes(&bytes).map_err(|e| fail(&file, e))?;
        Ok(BpeTokenizer::of(inner))
    }

    /// Parses the text of a `tokenizer.json`.
    pub fn from_json(json: &str) -> Result<Self> {
        let inner = Tokenizer::from_bytes(json.as_bytes())
            .map_err(|e| Error::format("tokenizer.json", e.to_string()))?;
        Ok(BpeTokenizer::of(inner))
    }

    /// The `tokenizer.json` text of this tokenizer, as HuggingFace writes it (pretty-printed).
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(true)
            .map_err(|e| Error::format("tokenizer.json", e.to_string()))
    }

    /// GPT-2's byte-level BPE from its vocabulary (`encoder.json` / `vocab.json`) and merges
    /// (`vocab.bpe` / `merges.txt`), with `<|endoftext|>` as a special token.
    pub fn gpt2(vocab: impl AsRef<Path>, merges: impl AsRef<Path>) -> Result<Self> {
        let (vocab, merges) = (vocab.as_ref(), merges.as_ref());
        check_file(vocab)?;
        check_file(merges)?;
        let (v, m) = (
            vocab
                .to_str()
                .ok_or_else(|| fail(vocab, "path is not UTF-8"))?,
            merges
                .to_str()
                .ok_or_else(|| fail(merges, "path is not UTF-8"))?,
        );
        let model = BPE::from_file(v, m)
            .build()
            .map_err(|e| fail(vocab, format!("with merges {}: {e}", merges.display())))?;
        let mut inner = byte_level(model);
        inner.add_special_tokens(&[AddedToken::from("<|endoftext|>", true)]);
        Ok(BpeTokenizer::of(inner))
    }

    /// Trains a byte-level BPE vocabulary of `vocab_size` tokens (the 256 byte tokens
    /// included) on the text of `files`.
    pub fn train(files: &[PathBuf], vocab_size: usize) -> Result<Self> {
        if vocab_size < 256 {
            return Err(Error::InvalidArgument {
                op: "BpeTokenizer::train",
                msg: format!(
                    "vocab_size {vocab_size} is below the 256 byte tokens a byte-level BPE starts from"
                ),
            });
        }
        for f in files {
            check_file(f)?;
        }
        let trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut trainer: TrainerWrapper = trainer.into();
        let mut tok = byte_level(BPE::default());
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        tok.train_from_files(&mut trainer, names)
            .map_err(|e| fail(files.first().map_or(Path::new("corpus"), |f| f), e))?;
        Ok(BpeTokenizer::of(tok))
    }

    /// Writes the tokenizer as a `tokenizer.json` (readable by HuggingFace's libraries).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let json = self.inner.to_string(true).map_err(|e| fail(path, e))?;
        std::fs::write(path, json).map_err(|e| Error::io(path, e))
    }

    /// This tokenizer cutting model inputs to `max_len` tokens (special tokens included), or
    /// not cutting them with `None`, whatever its `tokenizer.json` says; for
    /// [`encode_for_model`](BpeTokenizer::encode_for_model).
    pub fn with_max_length(mut self, max_len: Option<usize>) -> Result<Self> {
        if max_len == Some(0) {
            return Err(Error::InvalidArgument {
                op: "BpeTokenizer::with_max_length",
                msg: "a maximum length of 0 leaves no tokens".into(),
            });
        }
        let params = max_len.map(|n| TruncationParams {
            max_length: n,
            ..TruncationParams::default()
        });
        Arc::make_mut(&mut self.inner)
            .with_truncation(params)
            .map_err(|e| Error::format("BpeTokenizer::with_max_length", e.to_string()))?;
        Ok(self)
    }

    /// Token ids of `text` as a model reads them (what transformers' `tokenizer(text)` gives):
    /// the tokenizer's special tokens added (BERT's `[CLS] … [SEP]`, Llama's BOS), truncated as
    /// configured, never padded.
    pub fn encode_for_model(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::format("BpeTokenizer::encode_for_model", e.to_string()))?;
        Ok(enc
            .get_ids()
            .iter()
            .zip(enc.get_attention_mask())
            .filter(|(_, &m)| m == 1)
            .map(|(&id, _)| id)
            .collect())
    }

    /// Token ids of `text` (special tokens in it are recognised; none are added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::format("BpeTokenizer::encode", e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of `ids` (special tokens included); an id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let n = self.vocab_size();
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= n) {
            return Err(Error::IndexOutOfRange {
                op: "BpeTokenizer::decode",
                index: bad as i64,
                size: n,
            });
        }
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::format("BpeTokenizer::decode", e.to_string()))
    }

    /// Tokens in the vocabulary, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The id of a token string (`"<|endoftext|>"`, say), if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}
