//! `rustygradients tokenizer train | encode | decode`: byte-level BPE from the command line.
//!
//! - `train --data FILE --vocab-size N --out tokenizer.json` learns a vocabulary.
//! - `convert --vocab V --merges M --out tokenizer.json` writes GPT-2-style files as one
//!   `tokenizer.json` (what `rustygradients train --tokenizer` reads).
//! - `encode (--tokenizer PATH | --vocab V --merges M) [--whole]` reads text on stdin and prints
//!   token ids separated by spaces: one line per input line, or one line for all of stdin with
//!   `--whole` (byte-exact: nothing added or stripped). PATH is a `tokenizer.json` or a directory
//!   holding one; `--vocab`/`--merges` take GPT-2-style `vocab.json`/`merges.txt` (or
//!   `encoder.json`/`vocab.bpe`).
//! - `decode` (same tokenizer options) reads ids, one sequence per line (or all of stdin with
//!   `--whole`), and prints the text.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use rustygradients_tokenizers::BpeTokenizer;

/// The `tokenizer` subcommands.
#[derive(Subcommand)]
pub enum TokenizerCommand {
    /// Learn a byte-level BPE vocabulary from a text file.
    Train {
        /// The training text.
        #[arg(long)]
        data: PathBuf,
        /// Tokens in the vocabulary (the 256 byte tokens included).
        #[arg(long)]
        vocab_size: usize,
        /// Where to write the `tokenizer.json`.
        #[arg(long, default_value = "tokenizer.json")]
        out: PathBuf,
    },
    /// Write a GPT-2-style vocabulary and merges as one `tokenizer.json` (for `train
    /// --tokenizer`).
    Convert {
        /// GPT-2-style vocabulary (`vocab.json` / `encoder.json`).
        #[arg(long)]
        vocab: PathBuf,
        /// GPT-2-style merges (`merges.txt` / `vocab.bpe`).
        #[arg(long)]
        merges: PathBuf,
        /// Where to write the `tokenizer.json`.
        #[arg(long, default_value = "tokenizer.json")]
        out: PathBuf,
    },
    /// Text on stdin to token ids on stdout.
    Encode(CodecArgs),
    /// Token ids on stdin to text on stdout.
    Decode(CodecArgs),
}

/// Which tokenizer, and how stdin is split.
#[derive(Args)]
pub struct CodecArgs {
    /// A `tokenizer.json`, or a directory holding one.
    #[arg(long, conflicts_with_all = ["vocab", "merges"])]
    tokenizer: Option<PathBuf>,
    /// GPT-2-style vocabulary (`vocab.json` / `encoder.json`), with `--merges`.
    #[arg(long, requires = "merges")]
    vocab: Option<PathBuf>,
    /// GPT-2-style merges (`merges.txt` / `vocab.bpe`), with `--vocab`.
    #[arg(long, requires = "vocab")]
    merges: Option<PathBuf>,
    /// All of stdin is one text (one id sequence), byte for byte, instead of one per line.
    #[arg(long)]
    whole: bool,
}

impl CodecArgs {
    fn load(&self) -> anyhow::Result<BpeTokenizer> {
        Ok(match (&self.tokenizer, &self.vocab, &self.merges) {
            (Some(t), _, _) => BpeTokenizer::from_file(t)?,
            (None, Some(v), Some(m)) => BpeTokenizer::gpt2(v, m)?,
            _ => anyhow::bail!("give --tokenizer PATH, or --vocab V and --merges M"),
        })
    }
}

/// Runs one `tokenizer` subcommand.
pub fn run(cmd: TokenizerCommand) -> anyhow::Result<()> {
    match cmd {
        TokenizerCommand::Train {
            data,
            vocab_size,
            out,
        } => {
            let tok = BpeTokenizer::train(std::slice::from_ref(&data), vocab_size)?;
            tok.save(&out)?;
            crate::say!(
                "trained a {}-token BPE vocabulary on {}; wrote {}",
                tok.vocab_size(),
                data.display(),
                out.display()
            );
            Ok(())
        }
        TokenizerCommand::Convert { vocab, merges, out } => {
            let tok = BpeTokenizer::gpt2(&vocab, &merges)?;
            tok.save(&out)?;
            crate::say!(
                "wrote the {}-token vocabulary of {} and {} to {}",
                tok.vocab_size(),
                vocab.display(),
                merges.display(),
                out.display()
            );
            Ok(())
        }
        TokenizerCommand::Encode(a) => {
            let tok = a.load()?;
            let ids_line = |text: &str| -> anyhow::Result<String> {
                let ids = tok.encode(text)?;
                Ok(ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" "))
            };
            emit(a.whole, ids_line)
        }
        TokenizerCommand::Decode(a) => {
            let tok = a.load()?;
            let text_of = |line: &str| -> anyhow::Result<String> {
                let ids = line
                    .split_whitespace()
                    .map(|s| {
                        s.parse::<u32>()
                            .with_context(|| format!("{s:?} is not a token id"))
                    })
                    .collect::<anyhow::Result<Vec<u32>>>()?;
                Ok(tok.decode(&ids)?)
            };
            if a.whole {
                let mut all = String::new();
                std::io::stdin().read_to_string(&mut all)?;
                print_raw(&text_of(&all)?)
            } else {
                emit(false, text_of)
            }
        }
    }
}

/// Applies `f` to all of stdin (`whole`, printed without a newline added) or to each line
/// (printed one per line). Stdin must be UTF-8.
fn emit(whole: bool, f: impl Fn(&str) -> anyhow::Result<String>) -> anyhow::Result<()> {
    if whole {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes)?;
        let text = String::from_utf8(bytes).context("stdin is not UTF-8")?;
        return print_raw(&format!("{}\n", f(&text)?));
    }
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.context("reading stdin (it must be UTF-8)")?;
        print_raw(&format!("{}\n", f(&line)?))?;
    }
    Ok(())
}

/// Writes to stdout; a closed pipe ends the command quietly.
fn print_raw(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
