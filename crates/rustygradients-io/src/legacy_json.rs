//! The legacy JSON weight format, kept for import and export: one document
//! `{"format": "rustygradients-json", "version": 1, "tensors": [{"name", "dtype", "shape",
//! "data"}]}` with the elements as JSON numbers in row-major order. Floats are written in their
//! shortest round-tripping form, so f32/f16/bf16/f64 values come back bit for bit; integers must
//! lie within ±2^53 (what a JSON number carries exactly).
//!
//! It is several times larger and slower than safetensors (see PERFORMANCE.md); use it only to
//! exchange weights with tools that read nothing else.

use std::io::{BufWriter, Write};
use std::path::Path;

use half::{bf16, f16};
use rustygradients_core::{DType, Device, Error, Result, Tensor};
use serde::{Deserialize, Serialize};

const FORMAT: &str = "rustygradients-json";

#[derive(Serialize)]
struct DocOut<'a> {
    format: &'a str,
    version: u32,
    tensors: Vec<TensorOut<'a>>,
}

#[derive(Serialize)]
struct TensorOut<'a> {
    name: &'a str,
    dtype: &'static str,
    shape: &'a [usize],
    data: DataOut,
}

#[derive(Serialize)]
#[serde(untagged)]
enum DataOut {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    U32(Vec<u32>),
    U8(Vec<u8>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocIn {
    format: String,
    version: u32,
    tensors: Vec<TensorIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorIn {
    name: String,
    dtype: String,
    shape: Vec<usize>,
    data: Vec<f64>,
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F64 => "f64",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::I64 => "i64",
        DType::U32 => "u32",
        DType::U8 => "u8",
    }
}

/// Writes named tensors as legacy JSON, atomically.
pub fn save_json(path: impl AsRef<Path>, tensors: &[(String, Tensor)]) -> Result<()> {
    let path = path.as_ref();
    let what = path.display().to_string();
    let mut out = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let data = match t.dtype() {
            // Half-precision values widen to f32 exactly and narrow back exactly.
            DType::F32 | DType::F16 | DType::BF16 => {
                DataOut::F32(t.to_dtype(DType::F32)?.to_vec()?)
            }
            DType::F64 => DataOut::F64(t.to_vec()?),
            DType::I64 => {
                let v: Vec<i64> = t.to_vec()?;
                if let Some(x) = v.iter().find(|x| x.unsigned_abs() > 1 << 53) {
                    return Err(Error::format(
                        &what,
                        format!(
                            "tensor {name}: {x} is beyond ±2^53, which JSON numbers carry exactly"
                        ),
                    ));
                }
                DataOut::I64(v)
            }
            DType::U32 => DataOut::U32(t.to_vec()?),
            DType::U8 => DataOut::U8(t.to_vec()?),
        };
        out.push(TensorOut {
            name,
            dtype: dtype_name(t.dtype()),
            shape: t.dims(),
            data,
        });
    }
    let doc = DocOut {
        format: FORMAT,
        version: 1,
        tensors: out,
    };
    crate::atomic::write_atomic_with(path, |tmp| {
        let f = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        serde_json::to_writer(&mut w, &doc).map_err(|e| Error::format(&what, e.to_string()))?;
        w.flush().map_err(|e| Error::io(tmp, e))
    })
}

/// Reads legacy JSON weights onto `device`, in file order.
pub fn load_json(path: impl AsRef<Path>, device: Device) -> Result<Vec<(String, Tensor)>> {
    let path = path.as_ref();
    let text = crate::bounded::read_limited(path, crate::bounded::limits::LEGACY_JSON)?;
    parse_json(&path.display().to_string(), &text, device)
}

/// Parses a legacy JSON document held in memory; `what` names it in errors.
pub fn parse_json(what: &str, text: &[u8], device: Device) -> Result<Vec<(String, Tensor)>> {
    let doc: DocIn =
        serde_json::from_slice(text).map_err(|e| Error::format(what, e.to_string()))?;
    if doc.format != FORMAT || doc.version != 1 {
        return Err(Error::format(
            what,
            format!(
                "format {:?} version {} (expected {FORMAT:?} version 1)",
                doc.format, doc.version
            ),
        ));
    }
    let mut out = Vec::with_capacity(doc.tensors.len());
    for t in doc.tensors {
        let bad = |msg: String| Error::format(what, format!("tensor {}: {msg}", t.name));
        let n = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad(format!("shape {:?} overflows", t.shape)))?;
        if n != t.data.len() {
            return Err(bad(format!(
                "{} values do not fill shape {:?}",
                t.data.len(),
                t.shape
            )));
        }
        let ints = |lo: f64, hi: f64| -> Result<()> {
            match t
                .data
                .iter()
                .find(|&&x| x.fract() != 0.0 || x < lo || x > hi)
            {
                Some(x) => Err(bad(format!("{x} is not a {} value", t.dtype))),
                None => Ok(()),
            }
        };
        let d = t.data.as_slice();
        let shape = t.shape.clone();
        let tensor = match t.dtype.as_str() {
            "f32" => Tensor::from_vec(d.iter().map(|&x| x as f32).collect(), shape, device),
            "f64" => Tensor::from_vec(d.to_vec(), shape, device),
            "f16" => Tensor::from_vec(d.iter().map(|&x| f16::from_f64(x)).collect(), shape, device),
            "bf16" => Tensor::from_vec(
                d.iter().map(|&x| bf16::from_f64(x)).collect(),
                shape,
                device,
            ),
            "i64" => {
                ints(-(2f64.powi(53)), 2f64.powi(53))?;
                Tensor::from_vec(d.iter().map(|&x| x as i64).collect(), shape, device)
            }
            "u32" => {
                ints(0.0, u32::MAX as f64)?;
                Tensor::from_vec(d.iter().map(|&x| x as u32).collect(), shape, device)
            }
            "u8" => {
                ints(0.0, 255.0)?;
                Tensor::from_vec(d.iter().map(|&x| x as u8).collect(), shape, device)
            }
            other => return Err(bad(format!("unknown dtype {other:?}"))),
        }?;
        out.push((t.name, tensor));
    }
    Ok(out)
}
