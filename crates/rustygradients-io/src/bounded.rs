//! Reading files that a user (or a damaged disk) hands us without trusting their size or kind:
//! only regular files (a link to `/dev/zero` or a FIFO is refused, not read without end), and
//! never more than a stated number of bytes.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use rustygradients_core::{Error, Result};

/// Size limits for the small documents a model directory or a run folder holds.
pub mod limits {
    /// `config.json` of a model.
    pub const CONFIG: u64 = 16 << 20;
    /// `tokenizer.json` (HuggingFace tokenizers of large vocabularies reach tens of MB).
    pub const TOKENIZER: u64 = 256 << 20;
    /// A checkpoint's JSON sidecar.
    pub const SIDECAR: u64 = 256 << 20;
    /// One line of `metrics.jsonl`.
    pub const METRICS_LINE: u64 = 1 << 20;
    /// Legacy JSON weights (text of every value: large, but not endless).
    pub const LEGACY_JSON: u64 = 64 << 30;
}

/// Opens `path` for reading if it is a regular file (after following links); returns the file
/// and its length.
pub fn open_regular(path: impl AsRef<Path>) -> Result<(File, u64)> {
    let path = path.as_ref();
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::format(
            path.display().to_string(),
            format!(
                "not a regular file ({}); refusing to read it",
                kind_of(&meta.file_type())
            ),
        ));
    }
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // The link may have been swapped between the two calls: check what was opened.
    let opened = file.metadata().map_err(|e| Error::io(path, e))?;
    if !opened.is_file() {
        return Err(Error::format(
            path.display().to_string(),
            "not a regular file; refusing to read it",
        ));
    }
    Ok((file, opened.len()))
}

fn kind_of(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_fifo() {
            return "a pipe";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a directory"
    } else {
        "not a plain file"
    }
}

/// Reads a regular file of at most `limit` bytes.
pub fn read_limited(path: impl AsRef<Path>, limit: u64) -> Result<Vec<u8>> {
    let path = path.as_ref();
    let (file, len) = open_regular(path)?;
    let what = path.display().to_string();
    if len > limit {
        return Err(Error::format(
            what,
            format!("is {len} bytes, more than the {limit} bytes allowed for this file"),
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // `take` guards against a file that grows while it is read.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::format(
            what,
            format!("grew past the {limit} bytes allowed while being read"),
        ));
    }
    Ok(bytes)
}

/// Reads a regular file of at most `limit` bytes as UTF-8 text.
pub fn read_to_string_limited(path: impl AsRef<Path>, limit: u64) -> Result<String> {
    let path = path.as_ref();
    String::from_utf8(read_limited(path, limit)?)
        .map_err(|e| Error::format(path.display().to_string(), format!("not UTF-8 text: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_devices_links_to_them_and_oversized_files() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; 100]).unwrap();
        assert_eq!(read_to_string_limited(&big, 100).unwrap().len(), 100);
        let e = read_to_string_limited(&big, 99).unwrap_err().to_string();
        assert!(e.contains("big.json") && e.contains("100 bytes"), "{e}");
        #[cfg(unix)]
        {
            let e = read_to_string_limited("/dev/zero", 1 << 20)
                .unwrap_err()
                .to_string();
            assert!(e.contains("character device"), "{e}");
            let link = dir.path().join("config.json");
            std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
            let e = read_to_string_limited(&link, 1 << 20)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("config.json") && e.contains("not a regular file"),
                "{e}"
            );
        }
        let e = read_to_string_limited(dir.path(), 10)
            .unwrap_err()
            .to_string();
        assert!(e.contains("directory"), "{e}");
        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, [0xff, 0xfe]).unwrap();
        assert!(read_to_string_limited(&bad, 10)
            .unwrap_err()
            .to_string()
            .contains("UTF-8"));
    }
}
