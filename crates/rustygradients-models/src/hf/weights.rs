//! The weights of a HuggingFace model directory: `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`. Files are memory-mapped; each tensor is read when asked for,
//! checked against the shape the architecture expects, converted to the compute dtype and moved
//! to the device.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rustygradients_core::{DType, Device, Error, Result, Tensor};
use rustygradients_io::bounded::{limits, read_to_string_limited};
use rustygradients_io::SafetensorsFile;
use serde_json::Value;

/// Where each tensor of a model lives, and how to hand it out.
pub struct Weights {
    dir: PathBuf,
    files: Vec<SafetensorsFile>,
    by_name: HashMap<String, usize>,
    /// Name prefixes tried in turn (`transformer.`, `model.`, `bert.` or none: checkpoints
    /// differ in whether the architecture's own prefix is kept).
    prefixes: Vec<&'static str>,
    dtype: DType,
    device: Device,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Weights({}, {} tensors)",
            self.dir.display(),
            self.by_name.len()
        )
    }
}

impl Weights {
    /// Opens the weights in `dir`: `model.safetensors`, else the shards that
    /// `model.safetensors.index.json` names. Tensors come out as `dtype` on `device`.
    pub fn open(dir: &Path, dtype: DType, device: Device) -> Result<Weights> {
        if !dtype.is_float() {
            return Err(Error::UnsupportedDType {
                op: "Weights::open",
                got: dtype,
                expected: "a float type",
            });
        }
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let mut files = Vec::new();
        let mut by_name = HashMap::new();
        if single.is_file() {
            let f = SafetensorsFile::open(&single)?;
            for n in f.names() {
                by_name.insert(n, 0);
            }
            files.push(f);
        } else if index.is_file() {
            let what = index.display().to_string();
            let text = read_to_string_limited(&index, limits::CONFIG)?;
            let v: Value =
                serde_json::from_str(&text).map_err(|e| Error::format(&what, e.to_string()))?;
            let map = v
                .get("weight_map")
                .and_then(Value::as_object)
                .ok_or_else(|| Error::format(&what, "no \"weight_map\" object"))?;
            let mut shard_of: HashMap<String, usize> = HashMap::new();
            for (name, file) in map {
                let file = file
                    .as_str()
                    .filter(|f| !f.contains('/') && !f.contains('\\') && *f != "..")
                    .ok_or_else(|| Error::format(&what, format!("weight_map entry {name:?} is not a file name in the index's directory")))?;
                let i = match shard_of.get(file) {
                    Some(&i) => i,
                    None => {
                        files.push(SafetensorsFile::open(dir.join(file))?);
                        shard_of.insert(file.to_string(), files.len() - 1);
                        files.len() - 1
                    }
                };
                if !files[i].names().iter().any(|n| n == name) {
                    return Err(Error::format(
                        &what,
                        format!("{name:?} is listed in {file} but that shard does not hold it"),
                    ));
                }
                by_name.insert(name.clone(), i);
            }
        } else {
            return Err(Error::format(
                dir.display().to_string(),
                "no model.safetensors or model.safetensors.index.json in this directory",
            ));
        }
        Ok(Weights {
            dir: dir.to_path_buf(),
            files,
            by_name,
            prefixes: vec![""],
            dtype,
            device,
        })
    }

    /// Tries `prefixes` (in order) before each name as well as the bare name.
    pub fn with_prefixes(mut self, prefixes: &[&'static str]) -> Self {
        self.prefixes = prefixes.to_vec();
        if !self.prefixes.contains(&"") {
            self.prefixes.push("");
        }
        self
    }

    /// The dtype tensors are converted to.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device tensors are moved to.
    pub fn device(&self) -> Device {
        self.device
    }

    fn resolve(&self, name: &str) -> Option<(String, usize)> {
        self.prefixes.iter().find_map(|p| {
            let full = format!("{p}{name}");
            self.by_name.get(&full).map(|&i| (full, i))
        })
    }

    /// Elements of every float tensor in the checkpoint: the parameter count (buffers such as
    /// BERT's integer `position_ids` are not parameters).
    pub fn num_parameters(&self) -> usize {
        self.by_name
            .iter()
            .filter_map(|(n, &i)| self.files[i].info(n).ok())
            .filter(|(dt, _)| dt.is_float())
            .map(|(_, dims)| dims.iter().product::<usize>())
            .sum()
    }

    /// Whether the checkpoint holds `name` (under any of the prefixes).
    pub fn contains(&self, name: &str) -> bool {
        self.resolve(name).is_some()
    }

    /// The tensor `name`, which must have exactly `shape`: converted and moved. A missing or
    /// misshapen tensor is an error naming it, its shape and the directory.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let (full, i) = self.resolve(name).ok_or_else(|| {
            Error::format(
                self.dir.display().to_string(),
                format!("the checkpoint has no tensor {name:?} (expected shape {shape:?})"),
            )
        })?;
        let file = &self.files[i];
        let (stored, dims) = file.info(&full)?;
        if dims != shape {
            return Err(Error::format(
                file.path().display().to_string(),
                format!("tensor {full:?} has shape {dims:?}, but the config needs {shape:?}"),
            ));
        }
        if !stored.is_float() {
            return Err(Error::format(
                file.path().display().to_string(),
                format!("tensor {full:?} is {stored:?}, not a float type"),
            ));
        }
        // Convert on the CPU straight from the map, then move once.
        let t = file.tensor(&full, Device::Cpu)?.to_dtype(self.dtype)?;
        t.to_device(self.device)
    }
}
