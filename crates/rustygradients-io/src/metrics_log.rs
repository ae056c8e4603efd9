//! A training run's log: one JSON object per step or evaluation, one per line (`metrics.jsonl`),
//! appended as training goes.
//!
//! JSON has no NaN or infinity, so a diverged step's loss is written as the string `"NaN"`,
//! `"inf"` or `"-inf"` (and `null`, which older logs hold, reads back as NaN): the log always
//! reads back, whatever the run did.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use rustygradients_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::bounded::limits;

/// One line of `metrics.jsonl`: a training step's or an evaluation's numbers. Non-finite floats
/// are written as `"NaN"`, `"inf"` or `"-inf"`; the optional fields are left out when `None`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Record {
    /// Optimizer steps completed when it was written (0 for the evaluation before training).
    pub step: usize,
    /// The training batch's loss at this step (on evaluation records, the latest step's).
    #[serde(with = "float")]
    pub train_loss: f64,
    /// Set on evaluation records: the loss estimated over `eval_iters` validation batches.
    #[serde(default, with = "opt_float", skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// Set on evaluation records: the loss estimated over `eval_iters` training batches.
    #[serde(default, with = "opt_float", skip_serializing_if = "Option::is_none")]
    pub eval_train_loss: Option<f64>,
    /// The gradients' global norm before clipping (training steps only).
    #[serde(default, with = "opt_float", skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// True when the step's loss or gradient norm was not finite and its update was skipped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// The learning rate the schedule gave this step.
    #[serde(with = "float")]
    pub lr: f64,
    /// Training throughput so far: tokens per second of training time (evaluation excluded).
    #[serde(with = "float")]
    pub tokens_per_s: f64,
    /// Wall-clock seconds since the writing process started training.
    #[serde(with = "float")]
    pub time_s: f64,
}

/// An f64 as a JSON number when finite, else as `"NaN"`, `"inf"` or `"-inf"`.
mod float {
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Number(f64),
        Text(String),
        Null(()),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Number(v) => Ok(v),
            Repr::Null(()) => Ok(f64::NAN),
            Repr::Text(t) => match t.to_ascii_lowercase().as_str() {
                "nan" => Ok(f64::NAN),
                "inf" | "+inf" | "infinity" => Ok(f64::INFINITY),
                "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
                _ => Err(de::Error::custom(format!("{t:?} is not a number"))),
            },
        }
    }
}

/// [`float`] for optional fields (absent stays `None`).
mod opt_float {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> std::result::Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::float::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<f64>, D::Error> {
        super::float::deserialize(d).map(Some)
    }
}

/// An open `metrics.jsonl`, appended to record by record.
pub struct MetricsLog {
    path: std::path::PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Starts `path` holding `kept` (the records a resumed run keeps; none for a new run),
    /// replaced atomically so a crash here never loses the old log, then appended to.
    pub fn start(path: &Path, kept: &[Record]) -> Result<Self> {
        let mut text = String::new();
        for r in kept {
            text.push_str(&line_of(path, r)?);
        }
        crate::write_atomic(path, text.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one record as one line (a single write, so a killed process leaves at most a
    /// partial last line, which [`read_until`] reports by its number).
    pub fn write(&mut self, r: &Record) -> Result<()> {
        let line = line_of(&self.path, r)?;
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| Error::io(&self.path, e))
    }
}

fn line_of(path: &Path, r: &Record) -> Result<String> {
    let mut line = serde_json::to_string(r)
        .map_err(|e| Error::format(path.display().to_string(), e.to_string()))?;
    line.push('\n');
    Ok(line)
}

/// The records of an earlier run up to and including `step` (what a resumed run keeps), read
/// line by line from a regular file, each line at most [`limits::METRICS_LINE`] bytes.
pub fn read_until(path: &Path, step: usize) -> Result<Vec<Record>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let (file, _) = crate::open_regular(path)?;
    parse_until(&path.display().to_string(), BufReader::new(file), step)
}

/// [`read_until`] over any reader (what the fuzz target drives); `what` names it in errors.
pub fn parse_until(what: &str, mut reader: impl BufRead, step: usize) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    let mut line = Vec::new();
    let bad = |number: usize, msg: String| Error::format(what, format!("line {number}: {msg}"));
    for number in 1.. {
        line.clear();
        let n = (&mut reader)
            .take(limits::METRICS_LINE + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io(what, e))?;
        if n == 0 {
            break;
        }
        if n as u64 > limits::METRICS_LINE {
            return Err(bad(
                number,
                format!("longer than {} bytes", limits::METRICS_LINE),
            ));
        }
        let text = std::str::from_utf8(&line)
            .map_err(|e| bad(number, e.to_string()))?
            .trim();
        if text.is_empty() {
            continue;
        }
        let r: Record = serde_json::from_str(text).map_err(|e| bad(number, e.to_string()))?;
        if r.step <= step {
            out.push(r);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_values_round_trip() {
        let r = Record {
            step: 3,
            train_loss: f64::NAN,
            val_loss: Some(f64::INFINITY),
            eval_train_loss: Some(f64::NEG_INFINITY),
            grad_norm: Some(f64::NAN),
            skipped: true,
            lr: 1e-3,
            tokens_per_s: 10.5,
            time_s: 0.25,
        };
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains(r#""train_loss":"NaN""#), "{line}");
        let back = parse_until("t", format!("{line}\n").as_bytes(), 10).unwrap();
        assert_eq!(back.len(), 1);
        let b = &back[0];
        assert!(b.train_loss.is_nan() && b.grad_norm.unwrap().is_nan() && b.skipped);
        assert_eq!(b.val_loss, Some(f64::INFINITY));
        assert_eq!(b.eval_train_loss, Some(f64::NEG_INFINITY));
        assert_eq!((b.lr, b.tokens_per_s, b.time_s), (1e-3, 10.5, 0.25));
        // What older logs wrote for NaN.
        let old = r#"{"step":1,"train_loss":null,"lr":0.1,"tokens_per_s":1,"time_s":1}"#;
        assert!(parse_until("t", old.as_bytes(), 5).unwrap()[0]
            .train_loss
            .is_nan());
        // Records after the step are dropped; a bad line is an error naming it.
        let two = format!("{line}\n{}\n", line.replace(r#""step":3"#, r#""step":9"#));
        assert_eq!(parse_until("t", two.as_bytes(), 5).unwrap().len(), 1);
        let e = parse_until("t", format!("{line}\n{{\"step\":\n").as_bytes(), 5).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let long = vec![b'x'; limits::METRICS_LINE as usize + 10];
        assert!(parse_until("t", &long[..], 5).is_err());
    }
}
