//! Named tensors in HuggingFace's safetensors format. The format itself (header parsing and
//! validation, layout on disk) is the `safetensors` crate's; this module maps it to [`Tensor`]s.
//!
//! Reading goes through [`SafetensorsFile`], which memory-maps the file: opening parses and
//! validates only the header, and a tensor's bytes are read when that tensor is asked for.
//!
//! Integrity: [`save_safetensors`] records a CRC-32 of every tensor's bytes in the file's
//! `__metadata__` (under [`CHECKSUM_KEY`]), and every read of a tensor from a file that carries
//! them checks its bytes, so a flipped bit is an error naming the tensor, not a silent wrong
//! weight. Files from other writers (PyTorch, HuggingFace) have no checksums and load as before.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::{bf16, f16};
use memmap2::Mmap;
use rustygradients_core::{
    DType, Device, Error, HostBuffer, Result, SharedBytes, Tensor, WithDType,
};
use safetensors::tensor::{Dtype as StDtype, Metadata, TensorInfo};
use safetensors::{SafeTensors, View};

#[cfg(target_endian = "big")]
compile_error!("safetensors stores little-endian bytes; big-endian hosts are not supported");

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

fn from_st_dtype(d: StDtype) -> Option<DType> {
    Some(match d {
        StDtype::F32 => DType::F32,
        StDtype::F64 => DType::F64,
        StDtype::F16 => DType::F16,
        StDtype::BF16 => DType::BF16,
        StDtype::I64 => DType::I64,
        StDtype::U32 => DType::U32,
        StDtype::U8 => DType::U8,
        _ => return None,
    })
}

struct HostTensor {
    dtype: StDtype,
    shape: Vec<usize>,
    /// The elements, handed to the `safetensors` serializer as bytes without another copy.
    data: HostBuffer,
}

impl HostTensor {
    fn of(t: &Tensor) -> Result<HostTensor> {
        Ok(HostTensor {
            dtype: to_st_dtype(t.dtype()),
            shape: t.dims().to_vec(),
            data: t.to_host()?,
        })
    }
    fn bytes(&self) -> &[u8] {
        self.data.as_bytes()
    }
}

impl View for &HostTensor {
    fn dtype(&self) -> StDtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.bytes())
    }
    fn data_len(&self) -> usize {
        self.bytes().len()
    }
}

/// The `__metadata__` key holding a JSON object that maps each tensor name to the CRC-32 of its
/// bytes, as 8 hex digits.
pub const CHECKSUM_KEY: &str = "rustygradients.crc32";

/// Writes named tensors (and optional `__metadata__`) to `path`, atomically: readers see the
/// old file or the complete new one, never a mix. The metadata gains [`CHECKSUM_KEY`], and its
/// entries are written in sorted order, so the same tensors always give the same bytes.
pub fn save_safetensors(
    path: impl AsRef<Path>,
    tensors: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let path = path.as_ref();
    let what = path.display().to_string();
    let mut seen = std::collections::HashSet::new();
    for (name, _) in tensors {
        if !seen.insert(name.as_str()) {
            return Err(Error::format(
                &what,
                format!("tensor name {name:?} appears twice"),
            ));
        }
    }
    let host: Vec<(String, HostTensor)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), HostTensor::of(t)?)))
        .collect::<Result<_>>()?;
    let sums: BTreeMap<&str, String> = host
        .iter()
        .map(|(n, h)| (n.as_str(), format!("{:08x}", crc32fast::hash(h.bytes()))))
        .collect();
    let mut metadata = metadata.unwrap_or_default();
    metadata.insert(
        CHECKSUM_KEY.to_string(),
        serde_json::to_string(&sums).map_err(|e| Error::format(&what, e.to_string()))?,
    );
    // Streamed into the temporary file tensor by tensor (no whole-file buffer).
    crate::atomic::write_atomic_with(path, |tmp| {
        safetensors::serialize_to_file(
            host.iter().map(|(n, h)| (n.as_str(), h)),
            Some(metadata.clone()),
            tmp,
        )
        .map_err(|e| Error::format(&what, e.to_string()))?;
        sort_metadata(tmp, &metadata)
    })
}

/// Rewrites the `__metadata__` object that the `safetensors` crate wrote in `HashMap` order
/// with the same entries in sorted order (same length, so nothing else moves).
fn sort_metadata(path: &Path, metadata: &HashMap<String, String>) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    const PREFIX: &[u8] = b"{\"__metadata__\":";
    let io = |e| Error::io(path, e);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    let sorted: BTreeMap<&String, &String> = metadata.iter().collect();
    let object = serde_json::to_string(&sorted)
        .map_err(|e| Error::format(path.display().to_string(), e.to_string()))?;
    let mut head = vec![0u8; 8 + PREFIX.len() + object.len()];
    f.read_exact(&mut head).map_err(io)?;
    let written = &head[8 + PREFIX.len()..];
    let same = head[8..].starts_with(PREFIX)
        && serde_json::from_slice::<HashMap<String, String>>(written)
            .ok()
            .as_ref()
            == Some(metadata);
    if !same {
        return Err(Error::format(
            path.display().to_string(),
            "the safetensors writer laid out __metadata__ unexpectedly",
        ));
    }
    f.seek(SeekFrom::Start((8 + PREFIX.len()) as u64))
        .map_err(io)?;
    f.write_all(object.as_bytes()).map_err(io)
}

/// Parses the [`CHECKSUM_KEY`] entry: one 8-hex-digit CRC per tensor, for exactly the tensors
/// the header lists (a name changed by a damaged header has no checksum and is caught here).
fn parse_sums(what: &str, text: &str, meta: &Metadata) -> Result<HashMap<String, u32>> {
    let bad = |msg: String| Error::format(what, format!("__metadata__ {CHECKSUM_KEY}: {msg}"));
    let raw: HashMap<String, String> = serde_json::from_str(text)
        .map_err(|e| bad(format!("not a JSON object of strings: {e}")))?;
    let mut sums = HashMap::with_capacity(raw.len());
    for (name, hex) in raw {
        if meta.info(&name).is_none() {
            return Err(bad(format!(
                "names tensor {name:?}, which the file does not hold (the header is damaged)"
            )));
        }
        let v = (hex.len() == 8)
            .then(|| u32::from_str_radix(&hex, 16).ok())
            .flatten()
            .ok_or_else(|| bad(format!("{hex:?} for {name} is not 8 hex digits")))?;
        sums.insert(name, v);
    }
    if let Some(name) = meta
        .offset_keys()
        .into_iter()
        .find(|n| !sums.contains_key(n))
    {
        return Err(bad(format!(
            "tensor {name} has no checksum (the header is damaged)"
        )));
    }
    Ok(sums)
}

/// Named tensors, and the file's `__metadata__`.
pub type NamedTensors = (Vec<(String, Tensor)>, HashMap<String, String>);

/// A validated header, and the reads it makes possible from the image it was parsed from.
struct Header {
    /// Names the source in errors.
    what: String,
    len: usize,
    meta: Metadata,
    /// CRC-32 of each tensor's bytes, when the file records them.
    sums: Option<HashMap<String, u32>>,
}

impl Header {
    /// Validates a whole safetensors image: header size, JSON, dtypes, shapes against byte
    /// lengths, offsets (contiguous, in range, not overlapping) and the total length.
    fn parse(what: String, bytes: &[u8]) -> Result<Header> {
        let (len, meta) =
            SafeTensors::read_metadata(bytes).map_err(|e| Error::format(&what, format!("{e}")))?;
        let sums = match meta.metadata().as_ref().and_then(|m| m.get(CHECKSUM_KEY)) {
            None => None,
            Some(text) => Some(parse_sums(&what, text, &meta)?),
        };
        Ok(Header {
            what,
            len,
            meta,
            sums,
        })
    }

    /// Checks `bytes`, the data of `name`, against the recorded checksum (if the file has them).
    fn verify(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let Some(sums) = &self.sums else {
            return Ok(());
        };
        let stored = sums[name];
        let actual = crc32fast::hash(bytes);
        if stored != actual {
            return Err(Error::format(
                &self.what,
                format!(
                    "tensor {name} fails its checksum (recorded {stored:08x}, read {actual:08x}): \
                     the file is corrupt"
                ),
            ));
        }
        Ok(())
    }

    fn entry(&self, name: &str) -> Result<(DType, &TensorInfo)> {
        let info = self.meta.info(name).ok_or_else(|| {
            Error::format(&self.what, format!("no tensor named {name:?} in the file"))
        })?;
        let dtype = from_st_dtype(info.dtype).ok_or_else(|| {
            Error::format(
                &self.what,
                format!("tensor {name}: dtype {:?} is not supported", info.dtype),
            )
        })?;
        Ok((dtype, info))
    }

    /// Reads `name` from `image`, the bytes this header was parsed from. When the image is
    /// `shared` and the tensor goes to the CPU, its elements are borrowed in place if aligned.
    fn tensor(
        &self,
        image: &[u8],
        shared: Option<&SharedBytes>,
        name: &str,
        device: Device,
    ) -> Result<Tensor> {
        let (dtype, info) = self.entry(name)?;
        let (s, e) = info.data_offsets;
        let start = 8 + self.len;
        // The offsets were validated against the image's length by `parse`.
        self.verify(name, &image[start + s..start + e])?;
        if let (Some(bytes), Device::Cpu) = (shared, device) {
            let borrowed =
                Tensor::from_shared_bytes(bytes.clone(), start + s, dtype, info.shape.clone())?;
            if let Some(t) = borrowed {
                return Ok(t);
            }
        }
        tensor_from_bytes(
            dtype,
            info.shape.clone(),
            &image[start + s..start + e],
            device,
        )
    }

    fn load_all(
        &self,
        image: &[u8],
        shared: Option<&SharedBytes>,
        device: Device,
    ) -> Result<NamedTensors> {
        let tensors = self
            .meta
            .offset_keys()
            .into_iter()
            .map(|n| {
                let t = self.tensor(image, shared, &n, device)?;
                Ok((n, t))
            })
            .collect::<Result<_>>()?;
        Ok((tensors, self.meta.metadata().clone().unwrap_or_default()))
    }
}

/// An open safetensors file: memory-mapped, header validated, tensors read on demand. CPU
/// tensors borrow their elements from the map without a copy (when aligned, as files written
/// by this crate and by PyTorch are) and keep it alive after this value is dropped.
pub struct SafetensorsFile {
    path: PathBuf,
    map: Arc<Mmap>,
    header: Header,
}

impl SafetensorsFile {
    /// Maps `path` and validates its header (sizes, offsets, dtypes); reads no tensor data.
    ///
    /// The file must not be truncated by another process while it is open (a mapped file that
    /// shrinks under its reader is a bus error, not an error value).
    pub fn open(path: impl AsRef<Path>) -> Result<SafetensorsFile> {
        let path = path.as_ref().to_path_buf();
        let (file, _) = crate::bounded::open_regular(&path)?;
        // SAFETY: the map is read-only and private to this value; see the note above on
        // concurrent truncation, the one hazard a map cannot turn into an error.
        let map = Arc::new(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?);
        let header = Header::parse(path.display().to_string(), &map)?;
        Ok(SafetensorsFile { path, map, header })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn shared(&self) -> SharedBytes {
        self.map.clone()
    }

    /// The header as it lies in the file (length prefix included): what a checkpoint's sidecar
    /// checksums, since tensor checksums cannot cover the header that holds them.
    pub fn header_bytes(&self) -> &[u8] {
        &self.map[..8 + self.header.len]
    }

    /// Tensor names in the order their data lies in the file.
    pub fn names(&self) -> Vec<String> {
        self.header.meta.offset_keys()
    }

    /// The file's `__metadata__` (empty when it has none).
    pub fn metadata(&self) -> HashMap<String, String> {
        self.header.meta.metadata().clone().unwrap_or_default()
    }

    /// Dtype and shape of `name`, without reading its data.
    pub fn info(&self, name: &str) -> Result<(DType, Vec<usize>)> {
        let (dtype, info) = self.header.entry(name)?;
        Ok((dtype, info.shape.clone()))
    }

    /// Reads one tensor onto `device`.
    pub fn tensor(&self, name: &str, device: Device) -> Result<Tensor> {
        self.header
            .tensor(&self.map, Some(&self.shared()), name, device)
    }

    /// Reads the named subset, in the order given.
    pub fn tensors(&self, names: &[&str], device: Device) -> Result<Vec<(String, Tensor)>> {
        names
            .iter()
            .map(|n| Ok((n.to_string(), self.tensor(n, device)?)))
            .collect()
    }

    /// Reads every tensor, in file order, with the metadata.
    pub fn load_all(&self, device: Device) -> Result<NamedTensors> {
        self.header
            .load_all(&self.map, Some(&self.shared()), device)
    }
}

/// A tensor from little-endian bytes whose length was validated against `shape`.
fn tensor_from_bytes(dtype: DType, shape: Vec<usize>, b: &[u8], device: Device) -> Result<Tensor> {
    // The data of a tensor need not be aligned in the file: copy out element-aligned.
    fn read<T: WithDType + bytemuck::Pod>(b: &[u8]) -> Vec<T> {
        bytemuck::pod_collect_to_vec(b)
    }
    match dtype {
        DType::F32 => Tensor::from_vec(read::<f32>(b), shape, device),
        DType::F64 => Tensor::from_vec(read::<f64>(b), shape, device),
        DType::F16 => Tensor::from_vec(read::<f16>(b), shape, device),
        DType::BF16 => Tensor::from_vec(read::<bf16>(b), shape, device),
        DType::I64 => Tensor::from_vec(read::<i64>(b), shape, device),
        DType::U32 => Tensor::from_vec(read::<u32>(b), shape, device),
        DType::U8 => Tensor::from_vec(b.to_vec(), shape, device),
    }
}

/// Every tensor of a safetensors image held in memory (what the fuzz target drives); `what`
/// names it in errors.
pub fn load_safetensors_bytes(what: &str, bytes: &[u8], device: Device) -> Result<NamedTensors> {
    Header::parse(what.to_string(), bytes)?.load_all(bytes, None, device)
}

/// Reads every tensor of a safetensors file onto `device`, in file order, with the metadata.
pub fn load_safetensors(path: impl AsRef<Path>, device: Device) -> Result<NamedTensors> {
    SafetensorsFile::open(path)?.load_all(device)
}

/// Writes `tensors` as HuggingFace-style shards of at most `max_shard_bytes` each (a tensor
/// larger than that gets a shard of its own): `{stem}-00001-of-0000N.safetensors` in `dir`, and
/// `{stem}.safetensors.index.json` mapping every tensor to its shard. Returns the index path.
pub fn save_sharded(
    dir: impl AsRef<Path>,
    stem: &str,
    tensors: &[(String, Tensor)],
    max_shard_bytes: usize,
    metadata: Option<HashMap<String, String>>,
) -> Result<PathBuf> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let size = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
    let mut shards: Vec<Vec<(String, Tensor)>> = vec![Vec::new()];
    let mut current = 0usize;
    for (name, t) in tensors {
        let bytes = size(t);
        if current > 0 && current + bytes > max_shard_bytes {
            shards.push(Vec::new());
            current = 0;
        }
        shards
            .last_mut()
            .expect("at least one shard")
            .push((name.clone(), t.clone()));
        current += bytes;
    }
    let n = shards.len();
    let mut weight_map = serde_json::Map::new();
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("{stem}-{:05}-of-{n:05}.safetensors", i + 1);
        save_safetensors(dir.join(&file), shard, metadata.clone())?;
        for (name, _) in shard {
            weight_map.insert(name.clone(), serde_json::Value::String(file.clone()));
        }
    }
    let total: usize = tensors.iter().map(|(_, t)| size(t)).sum();
    let index = serde_json::json!({
        "metadata": { "total_size": total },
        "weight_map": weight_map,
    });
    let path = dir.join(format!("{stem}.safetensors.index.json"));
    let text = serde_json::to_string_pretty(&index)
        .map_err(|e| Error::format(path.display().to_string(), e.to_string()))?;
    crate::write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

/// Reads a sharded checkpoint through its `*.safetensors.index.json` (HuggingFace's layout):
/// every tensor the index names, from the shard it names, in index order.
pub fn load_sharded(index: impl AsRef<Path>, device: Device) -> Result<Vec<(String, Tensor)>> {
    let index = index.as_ref();
    let what = index.display().to_string();
    let text = crate::bounded::read_to_string_limited(index, crate::bounded::limits::CONFIG)?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::format(&what, e.to_string()))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::format(&what, "no \"weight_map\" object"))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: HashMap<String, SafetensorsFile> = HashMap::new();
    let mut out = Vec::with_capacity(map.len());
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| {
            Error::format(
                &what,
                format!("weight_map entry {name:?} is not a file name"),
            )
        })?;
        if file.contains('/') || file.contains('\\') || file == ".." {
            return Err(Error::format(
                &what,
                format!("shard {file:?} is not a file name in the index's directory"),
            ));
        }
        if !files.contains_key(file) {
            files.insert(file.to_string(), SafetensorsFile::open(dir.join(file))?);
        }
        out.push((name.clone(), files[file].tensor(name, device)?));
    }
    Ok(out)
}
