//! `rustygradients`: train a GPT (on characters or BPE tokens) and sample from it.
//!
//! - `rustygradients train [--data FILE] ...` — trains, with a progress bar, periodic train/val
//!   evaluation, and an output directory holding the model, tokenizer, metrics and a loss plot.
//! - `rustygradients generate --model DIR --prompt ...` (alias `sample`) — streams sampled text.
//!   A HuggingFace model directory (GPT-2, Llama, Mistral) generates with a KV-cache.
//! - `rustygradients embed --model DIR [--normalize]` — BERT sentence embeddings, one JSON array
//!   per input line.
//! - `rustygradients tokenizer train | encode | decode` — byte-level BPE (see `tokenizer_cmd`).

/// Prints a line to stdout, like `println!`, but a closed stdout (`train | head`) is not a
/// reason to panic or to stop a training run: the line is dropped.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod corpus;
mod embed;
mod generate;
mod hf_generate;
mod memory;
mod model_dir;
mod plot;
mod run_dir;
mod run_state;
mod tokenizer_cmd;
mod train;
mod train_args;

use clap::{Parser, Subcommand};

/// mimalloc keeps freed blocks for reuse; the system allocator returns large activation
/// buffers to the kernel and pays page faults to get them back at every step.
/// `mi_option_purge_delay` in mimalloc v2's `mi_option_e` (the version libmimalloc-sys builds by
/// default; the binding crate does not name this option).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "rustygradients",
    version,
    about = "Train and run GPT models with RustyGradients"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a GPT on characters, or on BPE tokens with --tokenizer.
    #[command(allow_negative_numbers = true)]
    Train(train::TrainArgs),
    /// Generate text from a trained model.
    #[command(alias = "sample", allow_negative_numbers = true)]
    Generate(generate::GenerateArgs),
    /// Sentence embeddings from a BERT model directory: one JSON array per line of stdin.
    Embed(embed::EmbedArgs),
    /// Train a BPE vocabulary, or encode/decode text with one.
    #[command(subcommand)]
    Tokenizer(tokenizer_cmd::TokenizerCommand),
}

/// Keeps freed pages mapped: a training step frees and reallocates the same activation sizes
/// every few milliseconds, and returning them to the kernel costs a page fault and a page
/// clear per 4 KiB on the next step (about 14k faults per 100 baby-GPT steps).
fn keep_freed_pages() {
    // SAFETY: sets a mimalloc option; takes plain integers and has no other preconditions.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

fn main() -> anyhow::Result<()> {
    keep_freed_pages();
    let cli = Cli::parse();
    // The command runs on one of rayon's workers, so each parallel op hands work to the other
    // workers directly instead of waking them from outside the pool and waiting.
    rayon::ThreadPoolBuilder::new()
        .build()?
        .install(|| match cli.command {
            Command::Train(args) => train::run(args),
            Command::Generate(args) => generate::run(args),
            Command::Embed(args) => embed::run(args),
            Command::Tokenizer(cmd) => tokenizer_cmd::run(cmd),
        })
}

/// Parses `cpu` or `cuda`/`cuda:N`.
pub(crate) fn parse_device(s: &str) -> anyhow::Result<rustygradients_core::Device> {
    use rustygradients_core::Device;
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(Device::Cuda(n)),
            _ => anyhow::bail!("unknown device {s:?}: use cpu, cuda or cuda:N"),
        },
    }
}
