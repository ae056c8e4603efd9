//! Named tensors in HuggingFace's safetensors format, through the `safetensors` crate.

use std::collections::HashMap;
use std::path::Path;

use half::{bf16, f16};
use rustygradients_core::{DType, Device, Error, Result, Tensor};
use safetensors::tensor::{Dtype as StDtype, TensorView};

fn to_st_dtype(d: DType) -> StDtype {
    match d {
        DType::F32 => StDtype::F32,
        DType::F64 => StDtype::F64,
        DType::F16 => StDtype::F16,
        DType::BF16 => StDtype::BF16,
        DType::I64 => StDtype::I64,
        DType::U32 => StDtype::U32,
        DType::U8 => StDtype::U8,
    }
}

/// Little-endian bytes of a tensor's elements in row-major order.
fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    fn le<T, const N: usize>(v: Vec<T>, f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        v.into_iter().flat_map(f).collect()
    }
    Ok(match t.dtype() {
        DType::F32 => le(t.to_vec::<f32>()?, f32::to_le_bytes),
        DType::F64 => le(t.to_vec::<f64>()?, f64::to_le_bytes),
        DType::F16 => le(t.to_vec::<f16>()?, f16::to_le_bytes),
        DType::BF16 => le(t.to_vec::<bf16>()?, bf16::to_le_bytes),
        DType::I64 => le(t.to_vec::<i64>()?, i64::to_le_bytes),
        DType::U32 => le(t.to_vec::<u32>()?, u32::to_le_bytes),
        DType::U8 => t.to_vec::<u8>()?,
    })
}

/// A tensor from little-endian bytes; the length must match the shape exactly.
fn tensor_from_bytes(
    what: &str,
    dtype: StDtype,
    shape: &[usize],
    b: &[u8],
    device: Device,
) -> Result<Tensor> {
    fn read<T: rustygradients_core::WithDType, const N: usize>(
        b: &[u8],
        f: impl Fn([u8; N]) -> T,
    ) -> Vec<T> {
        b.chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunks_exact gives N bytes")))
            .collect()
    }
    let shape = shape.to_vec();
    let n: usize = shape.iter().product();
    let size = match dtype {
        StDtype::F64 | StDtype::I64 => 8,
        StDtype::F32 | StDtype::U32 => 4,
        StDtype::F16 | StDtype::BF16 => 2,
        StDtype::U8 => 1,
        other => return Err(Error::format(what, format!("unsupported dtype {other:?}"))),
    };
    if n.checked_mul(size) != Some(b.len()) {
        return Err(Error::format(
            what,
            format!("{} bytes do not hold {shape:?} of {dtype:?}", b.len()),
        ));
    }
    match dtype {
        StDtype::F32 => Tensor::from_vec(read(b, f32::from_le_bytes), shape, device),
        StDtype::F64 => Tensor::from_vec(read(b, f64::from_le_bytes), shape, device),
        StDtype::F16 => Tensor::from_vec(read(b, f16::from_le_bytes), shape, device),
        StDtype::BF16 => Tensor::from_vec(read(b, bf16::from_le_bytes), shape, device),
        StDtype::I64 => Tensor::from_vec(read(b, i64::from_le_bytes), shape, device),
        StDtype::U32 => Tensor::from_vec(read(b, u32::from_le_bytes), shape, device),
        _ => Tensor::from_vec(b.to_vec(), shape, device),
    }
}

/// Writes named tensors (and optional `__metadata__`) atomically to `path`.
pub fn save_safetensors(
    path: impl AsRef<Path>,
    tensors: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let path = path.as_ref();
    let what = path.display().to_string();
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, t)| tensor_bytes(t))
        .collect::<Result<_>>()?;
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, t), b)| {
            TensorView::new(to_st_dtype(t.dtype()), t.dims().to_vec(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::format(&what, format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let data =
        safetensors::serialize(views, metadata).map_err(|e| Error::format(&what, e.to_string()))?;
    crate::write_atomic(path, &data)
}

/// Named tensors in file order, and the file's `__metadata__`.
pub type NamedTensors = (Vec<(String, Tensor)>, HashMap<String, String>);

/// Reads every tensor of a safetensors file onto `device`, in file order, with the metadata.
pub fn load_safetensors(path: impl AsRef<Path>, device: Device) -> Result<NamedTensors> {
    let path = path.as_ref();
    let what = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::format(&what, e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::format(&what, e.to_string()))?;
    let mut out = Vec::new();
    for (name, view) in st.iter() {
        let t = tensor_from_bytes(
            &format!("{what}: tensor {name}"),
            view.dtype(),
            view.shape(),
            view.data(),
            device,
        )?;
        out.push((name.to_string(), t));
    }
    // File order (by offset), so a model's parameters come back in the order they were saved.
    let order: HashMap<String, usize> = meta
        .offset_keys()
        .into_iter()
        .enumerate()
        .map(|(i, k)| (k, i))
        .collect();
    out.sort_by_key(|(n, _)| order.get(n).copied().unwrap_or(usize::MAX));
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}
