//! The corpus compiled into the binary, so `train` works offline with no `--data`: the project's
//! own writing (its README and the source of its core and models), nothing third-party.

pub const BUILTIN: &[&str] = &[
    include_str!("../../../README.md"),
    include_str!("../../rustygradients-core/src/tensor.rs"),
    include_str!("../../rustygradients-core/src/backprop.rs"),
    include_str!("../../rustygradients-core/src/layout.rs"),
    include_str!("../../rustygradients-core/src/ops/nn.rs"),
    include_str!("../../rustygradients-core/src/ops/views.rs"),
    include_str!("../../rustygradients-nn/src/attention.rs"),
    include_str!("../../rustygradients-models/src/gpt.rs"),
    include_str!("../../rustygradients-models/src/data.rs"),
];

/// The built-in corpus as one text.
pub fn builtin() -> String {
    BUILTIN.join("\n\n")
}

/// Training text: the built-in corpus, or a file mapped into memory (read by the tokenizer in
/// place, never copied whole).
pub enum Text {
    Builtin(String),
    Mapped(memmap2::Mmap),
}

impl Text {
    /// The built-in corpus, or `path` if given: a regular, non-empty UTF-8 file.
    pub fn load(path: Option<&std::path::Path>) -> anyhow::Result<Text> {
        use anyhow::{bail, Context};
        let Some(path) = path else {
            return Ok(Text::Builtin(builtin()));
        };
        let (file, len) = rustygradients_io::open_regular(path)
            .with_context(|| format!("reading the training data {}", path.display()))?;
        if len == 0 {
            bail!("the training data {} is empty", path.display());
        }
        // SAFETY: a read-only private map; the file must not be truncated while training reads
        // it (a map cannot turn that into an error), as with any memory-mapped input.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("mapping the training data {}", path.display()))?;
        if let Err(e) = std::str::from_utf8(&map) {
            bail!(
                "the training data {} is not UTF-8 text (invalid bytes at offset {})",
                path.display(),
                e.valid_up_to()
            );
        }
        Ok(Text::Mapped(map))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Text::Builtin(s) => s,
            // Checked to be UTF-8 when mapped; a map's bytes do not change under a read-only
            // private mapping unless the file itself is rewritten.
            Text::Mapped(m) => std::str::from_utf8(m).unwrap_or(""),
        }
    }
}
