//! Durable, all-or-nothing file writes: the bytes go to a temporary file in the target's
//! directory, are fsynced, then renamed over the target, and the directory is fsynced.

use std::io::Write;
use std::path::Path;

use rustygradients_core::{Error, Result};

/// Writes `bytes` to `path` so that readers see either the old file or the complete new one.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| {
        let mut f = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(tmp, e))
    })
}

/// Like [`write_atomic`], with the content written by `write` to the temporary path it is given.
pub fn write_atomic_with(
    path: impl AsRef<Path>,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let path = path.as_ref();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::format(path.display().to_string(), "not a file path"))?;
    let tmp = dir.join(format!(
        "{TMP_PREFIX}{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        write(&tmp)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        // Make the rename itself durable.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Temporary files start with this; anything so named is an unfinished write.
pub const TMP_PREFIX: &str = ".";

/// True for the name of a temporary file left by an interrupted [`write_atomic`].
pub fn is_temporary(name: &str) -> bool {
    name.starts_with(TMP_PREFIX) && name.contains(".tmp.")
}

/// Removes the temporary files that killed writers left in `dir` (not recursive); returns how
/// many. Only safe while no other process writes into `dir`: hold the run's lock.
pub fn remove_stale_temporaries(dir: impl AsRef<Path>) -> Result<usize> {
    let dir = dir.as_ref();
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && entry.file_name().to_str().is_some_and(is_temporary) {
            let p = entry.path();
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&p, e)),
                _ => removed += 1,
            }
        }
    }
    Ok(removed)
}
