//! A training run's output folder: one run per folder, held under an exclusive lock for the whole
//! run. A new run refuses a folder that holds another run's files (unless told to overwrite
//! them); a resumed run needs the folder to exist already and never creates it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rustygradients_io::remove_stale_temporaries;

/// The lock file; it stays after the run (the lock, not the file, is what is held).
const LOCK: &str = ".rustygradients.lock";
/// What a run writes at the top of its folder.
const ARTIFACTS: &[&str] = &[
    "model.safetensors",
    "config.json",
    "tokenizer.json",
    "metrics.jsonl",
    "loss.png",
];
pub const CHECKPOINTS: &str = "checkpoints";

/// The locked output folder of the running process; the lock ends when this is dropped (or the
/// process dies, whatever the cause).
pub struct RunDir {
    pub path: PathBuf,
    _lock: File,
}

impl RunDir {
    /// For a new run: creates `out` if needed and locks it. A folder holding another run is
    /// refused with what was found and the ways on, or cleared first when `overwrite`.
    pub fn create(out: &Path, overwrite: bool) -> anyhow::Result<RunDir> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let dir = RunDir::lock(out)?;
        if let Some(found) = describe_run(out)? {
            if !overwrite {
                bail!(
                    "{} already holds a training run ({found}). Continue it with `--resume {0}`, \
                     train into another folder with `--out`, or pass `--overwrite` to delete it \
                     and start afresh",
                    out.display()
                );
            }
            clear_run(out)?;
        }
        Ok(dir)
    }

    /// For `--resume`: `out` must be an existing run folder; locks it.
    pub fn resume(out: &Path) -> anyhow::Result<RunDir> {
        if !out.is_dir() {
            bail!(
                "cannot resume: {} does not exist (no complete checkpoint to resume from)",
                out.display()
            );
        }
        if !out.join(CHECKPOINTS).is_dir() {
            bail!(
                "cannot resume from {}: no complete checkpoint (it has no {CHECKPOINTS} folder)",
                out.display()
            );
        }
        RunDir::lock(out)
    }

    fn lock(out: &Path) -> anyhow::Result<RunDir> {
        let path = out.join(LOCK);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let pid = if holder.is_empty() { "unknown" } else { holder };
                bail!(
                    "{} is in use by another training run (PID {pid}); wait for it to end or \
                     train into another folder with `--out`",
                    out.display()
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
        // Under the lock: record the holder, and clear what killed writers left behind.
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        file.flush()?;
        // The checkpoints folder's leftovers are cleared by its `CheckpointManager`.
        remove_stale_temporaries(out)?;
        Ok(RunDir {
            path: out.to_path_buf(),
            _lock: file,
        })
    }
}

/// What of a run `out` holds, in words; `None` when it holds none of a run's files.
fn describe_run(out: &Path) -> anyhow::Result<Option<String>> {
    let mut found = Vec::new();
    let ck = out.join(CHECKPOINTS);
    if ck.is_dir() {
        let mut steps: Vec<u64> = std::fs::read_dir(&ck)
            .with_context(|| format!("reading {}", ck.display()))?
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let digits = name.strip_prefix("checkpoint_step_")?.split('.').next()?;
                digits.parse().ok()
            })
            .collect();
        steps.sort_unstable();
        steps.dedup();
        if let Some(last) = steps.last() {
            found.push(format!(
                "{} checkpoint(s), the newest of step {last}",
                steps.len()
            ));
        }
    }
    for name in ARTIFACTS {
        if out.join(name).exists() {
            found.push((*name).to_string());
        }
    }
    Ok((!found.is_empty()).then(|| found.join(", ")))
}

/// Deletes a run's files from `out` (only those a run writes; anything else is left alone).
fn clear_run(out: &Path) -> anyhow::Result<()> {
    let ck = out.join(CHECKPOINTS);
    if ck.is_dir() {
        std::fs::remove_dir_all(&ck).with_context(|| format!("deleting {}", ck.display()))?;
    }
    for name in ARTIFACTS {
        let p = out.join(name);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("deleting {}", p.display()))
            }
            _ => {}
        }
    }
    Ok(())
}
