//! safetensors: round trips of every dtype, lazy/subset reads, shards, PyTorch-written fixtures,
//! and malformed files that must fail with an error naming the file.

use std::collections::HashMap;
use std::io::Write;

use half::{bf16, f16};
use rustygradients_core::{DType, Device, Tensor};
use rustygradients_io::{
    load_safetensors, load_safetensors_bytes, load_sharded, save_safetensors, save_sharded,
    SafetensorsFile, CHECKSUM_KEY,
};

fn all_dtypes() -> Vec<(String, Tensor)> {
    let c = Device::Cpu;
    vec![
        (
            "f32".into(),
            Tensor::from_vec(vec![1.5f32, -2.25, 3.0e-8, f32::MAX, -0.0, 7.0], [2, 3], c).unwrap(),
        ),
        (
            "f64".into(),
            Tensor::from_vec(vec![std::f64::consts::PI, -1e300], [2], c).unwrap(),
        ),
        (
            "f16".into(),
            Tensor::from_vec(
                vec![
                    f16::from_f32(0.5),
                    f16::from_f32(-65504.0),
                    f16::from_f32(1e-5),
                ],
                [3],
                c,
            )
            .unwrap(),
        ),
        (
            "bf16".into(),
            Tensor::from_vec(
                vec![bf16::from_f32(1.0), bf16::from_f32(-3.0e38)],
                [1, 2],
                c,
            )
            .unwrap(),
        ),
        (
            "i64".into(),
            Tensor::from_vec(vec![i64::MIN, 0, i64::MAX], [3], c).unwrap(),
        ),
        (
            "u32".into(),
            Tensor::from_vec(vec![0u32, u32::MAX], [2], c).unwrap(),
        ),
        (
            "u8".into(),
            Tensor::from_vec(vec![0u8, 1, 255], [3, 1], c).unwrap(),
        ),
        (
            "scalar".into(),
            Tensor::from_vec(vec![42.0f32], Vec::<usize>::new(), c).unwrap(),
        ),
    ]
}

fn bits(t: &Tensor) -> Vec<u64> {
    let f = t.to_dtype(DType::F64).unwrap().to_vec::<f64>().unwrap();
    match t.dtype() {
        DType::I64 => t
            .to_vec::<i64>()
            .unwrap()
            .into_iter()
            .map(|x| x as u64)
            .collect(),
        _ => f.into_iter().map(f64::to_bits).collect(),
    }
}

fn assert_same(a: &[(String, Tensor)], b: &[(String, Tensor)]) {
    let b: HashMap<_, _> = b.iter().map(|(n, t)| (n.clone(), t)).collect();
    assert_eq!(a.len(), b.len());
    for (n, t) in a {
        let u = b[n];
        assert_eq!(t.dtype(), u.dtype(), "{n}");
        assert_eq!(t.dims(), u.dims(), "{n}");
        assert_eq!(bits(t), bits(u), "{n}");
    }
}

#[test]
fn every_dtype_round_trips_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("all.safetensors");
    let meta: HashMap<String, String> = [("format".into(), "pt".into())].into();
    save_safetensors(&p, &all_dtypes(), Some(meta.clone())).unwrap();
    let (back, mut m) = load_safetensors(&p, Device::Cpu).unwrap();
    assert_same(&all_dtypes(), &back);
    assert!(m.remove(CHECKSUM_KEY).is_some(), "no checksums written");
    assert_eq!(m, meta);
}

/// Several metadata entries (which the `safetensors` crate writes in `HashMap` order) still give
/// the same bytes every time.
#[test]
fn saves_are_byte_for_byte_repeatable() {
    let dir = tempfile::tempdir().unwrap();
    let meta: HashMap<String, String> = (0..12)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .collect();
    let mut images = Vec::new();
    for i in 0..4 {
        let p = dir.path().join(format!("{i}.safetensors"));
        // A fresh map each time: a new hasher seed, a new iteration order.
        let meta: HashMap<String, String> = meta.clone().into_iter().collect();
        save_safetensors(&p, &all_dtypes(), Some(meta)).unwrap();
        images.push(std::fs::read(&p).unwrap());
    }
    assert!(images.windows(2).all(|w| w[0] == w[1]));
    let (_, m) = load_safetensors(dir.path().join("0.safetensors"), Device::Cpu).unwrap();
    assert_eq!(m.len(), 13);
}

/// A flipped bit in any tensor's data is an error naming that tensor; a damaged checksum
/// entry is an error too; files without checksums (PyTorch's) load as before.
#[test]
fn checksums_catch_flipped_bits() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.safetensors");
    let tensors = all_dtypes();
    save_safetensors(&p, &tensors, None).unwrap();
    let clean = std::fs::read(&p).unwrap();
    let file = SafetensorsFile::open(&p).unwrap();
    let data_start = file.header_bytes().len();
    drop(file);
    // Every byte of the data section, one flip at a time, in a sample of positions.
    for pos in (data_start..clean.len()).step_by(7) {
        let mut bad = clean.clone();
        bad[pos] ^= 0x01;
        let e = load_safetensors_bytes("flipped", &bad, Device::Cpu)
            .err()
            .unwrap_or_else(|| panic!("flip at {pos} not caught"))
            .to_string();
        assert!(e.contains("fails its checksum"), "{e}");
    }
    // A checksum entry that no longer matches a tensor name (same length, so the header's size
    // prefix stays right): `\"f32\"` inside the escaped JSON becomes `\"Q32\"`.
    let name = &tensors[0].0;
    let needle = format!("\\\"{name}\\\"");
    let mut bad = clean.clone();
    let at = bad[..data_start]
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .expect("checksum entry in the header");
    bad[at + 2] = b'Q';
    let e = load_safetensors_bytes("renamed", &bad, Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains(CHECKSUM_KEY), "{e}");
    // A lazy single-tensor read checks that tensor.
    let mut bad = clean.clone();
    *bad.last_mut().unwrap() ^= 0x80;
    std::fs::write(&p, &bad).unwrap();
    let file = SafetensorsFile::open(&p).unwrap();
    let last = file.names().pop().unwrap();
    assert!(file.tensor(&last, Device::Cpu).is_err());
}

#[test]
fn strided_views_are_saved_by_value() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.safetensors");
    let x = Tensor::from_vec((0..12).map(|i| i as f32).collect(), [3, 4], Device::Cpu).unwrap();
    let t = x.t().unwrap().narrow(0, 1, 2).unwrap();
    save_safetensors(&p, &[("t".into(), t.clone())], None).unwrap();
    let (back, _) = load_safetensors(&p, Device::Cpu).unwrap();
    assert_eq!(
        back[0].1.to_vec::<f32>().unwrap(),
        t.to_vec::<f32>().unwrap()
    );
}

#[test]
fn open_reads_nothing_until_asked_and_loads_subsets() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("all.safetensors");
    save_safetensors(&p, &all_dtypes(), None).unwrap();
    let f = SafetensorsFile::open(&p).unwrap();
    let mut names = f.names();
    names.sort();
    let mut expected: Vec<String> = all_dtypes().into_iter().map(|(n, _)| n).collect();
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(f.info("bf16").unwrap(), (DType::BF16, vec![1, 2]));
    let sub = f.tensors(&["u8", "f16"], Device::Cpu).unwrap();
    assert_eq!(sub[0].0, "u8");
    assert_eq!(sub[0].1.to_vec::<u8>().unwrap(), vec![0, 1, 255]);
    let err = f.tensor("missing", Device::Cpu).unwrap_err().to_string();
    assert!(
        err.contains("missing") && err.contains("all.safetensors"),
        "{err}"
    );
}

#[test]
fn shards_round_trip_through_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let tensors: Vec<(String, Tensor)> = (0..5)
        .map(|i| {
            let t = Tensor::full(i as f64, [64, 16], DType::F32, Device::Cpu).unwrap();
            (format!("layer.{i}.weight"), t)
        })
        .collect();
    // 4 KiB each, at most 2 per 9 KiB shard: three shards.
    let index = save_sharded(dir.path(), "model", &tensors, 9 * 1024, None).unwrap();
    assert!(dir.path().join("model-00003-of-00003.safetensors").exists());
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    assert_eq!(v["metadata"]["total_size"], 5 * 64 * 16 * 4);
    assert_eq!(
        v["weight_map"]["layer.4.weight"],
        "model-00003-of-00003.safetensors"
    );
    let back = load_sharded(&index, Device::Cpu).unwrap();
    assert_same(&tensors, &back);
}

#[test]
fn shard_index_may_not_point_outside_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("model.safetensors.index.json");
    std::fs::write(&index, r#"{"weight_map": {"w": "../secret.safetensors"}}"#).unwrap();
    let err = load_sharded(&index, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("secret"), "{err}");
}

/// Files written by PyTorch's `safetensors.torch.save_file` (scripts/gen_safetensors_fixtures.py),
/// checked against the values the script recorded next to them.
#[test]
fn pytorch_written_files_load() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{dir}/torch_tensors.json")).unwrap(),
    )
    .unwrap();
    let (tensors, meta) =
        load_safetensors(format!("{dir}/torch_tensors.safetensors"), Device::Cpu).unwrap();
    assert_eq!(meta.get("written_by").map(String::as_str), Some("torch"));
    let exp = expected.as_object().unwrap();
    assert_eq!(tensors.len(), exp.len());
    for (name, t) in &tensors {
        let e = &exp[name];
        let shape: Vec<usize> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.dims(), shape.as_slice(), "{name}");
        assert_eq!(
            format!("{:?}", t.dtype()).to_lowercase(),
            e["dtype"].as_str().unwrap(),
            "{name}"
        );
        let want: Vec<f64> = e["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let got = t.to_dtype(DType::F64).unwrap().to_vec::<f64>().unwrap();
        assert_eq!(got, want, "{name}");
    }
}

/// A file written here, kept in the fixtures so `scripts/gen_safetensors_fixtures.py --check`
/// can open it with `safetensors.torch.load_file`: the test fails if our bytes for it change.
#[test]
fn our_file_for_pytorch_is_stable() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ours.safetensors"
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ours.safetensors");
    save_safetensors(
        &p,
        &all_dtypes(),
        Some([("written_by".into(), "rustygradients".into())].into()),
    )
    .unwrap();
    if std::env::var_os("RG_WRITE_FIXTURES").is_some() {
        std::fs::copy(&p, path).unwrap();
    }
    assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(path).unwrap());
}

fn valid_image() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.safetensors");
    let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2], Device::Cpu).unwrap();
    save_safetensors(&p, &[("w".into(), t)], None).unwrap();
    std::fs::read(p).unwrap()
}

fn with_header(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

#[test]
fn malformed_files_are_errors_that_name_the_file() {
    let good = valid_image();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("truncated", good[..good.len() - 3].to_vec()),
        ("header length beyond the file", {
            let mut v = good.clone();
            v[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
            v
        }),
        (
            "malformed header json",
            with_header("{\"w\": {\"dtype\": ", &[0; 16]),
        ),
        (
            "offsets out of range",
            with_header(
                r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,32]}}"#,
                &[0; 16],
            ),
        ),
        (
            "overlapping offsets",
            with_header(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                &[0; 12],
            ),
        ),
        (
            "unknown dtype",
            with_header(
                r#"{"w":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
        ),
        (
            "unsupported dtype",
            with_header(
                r#"{"w":{"dtype":"I16","shape":[4],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
        ),
        (
            "length not shape × dtype",
            with_header(
                r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
        ),
        (
            "shape overflow",
            with_header(
                r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (what, bytes) in cases {
        let p = dir
            .path()
            .join(format!("{}.safetensors", what.replace(' ', "_")));
        std::fs::File::create(&p)
            .unwrap()
            .write_all(&bytes)
            .unwrap();
        let err = load_safetensors(&p, Device::Cpu)
            .err()
            .unwrap_or_else(|| panic!("{what}: loaded"))
            .to_string();
        assert!(err.contains(&*p.display().to_string()), "{what}: {err}");
        assert!(
            load_safetensors_bytes(what, &bytes, Device::Cpu).is_err(),
            "{what}"
        );
    }
    let missing = dir.path().join("nope.safetensors");
    let err = load_safetensors(&missing, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.safetensors"), "{err}");
}

/// Every input the fuzzers kept (`fuzz/corpus`, and crash reproducers in `fuzz/regressions`)
/// still loads or fails cleanly, through every fuzzed reader.
#[test]
fn fuzz_corpus_never_panics() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz");
    let mut seen = 0;
    for kind in ["corpus", "regressions"] {
        for target in [
            "safetensors_loader",
            "checkpoint_sidecar",
            "metrics_log",
            "char_tokenizer",
            "model_config",
        ] {
            let Ok(entries) = std::fs::read_dir(format!("{root}/{kind}/{target}")) else {
                continue;
            };
            for e in entries {
                let bytes = std::fs::read(e.unwrap().path()).unwrap();
                seen += 1;
                let text = std::str::from_utf8(&bytes).unwrap_or("");
                match target {
                    "safetensors_loader" => {
                        let _ = load_safetensors_bytes("corpus", &bytes, Device::Cpu);
                    }
                    "checkpoint_sidecar" => {
                        let _ = rustygradients_io::CheckpointInfo::from_json("corpus", text);
                    }
                    "metrics_log" => {
                        let _ =
                            rustygradients_io::metrics_log::parse_until("corpus", &bytes[..], 9);
                    }
                    "char_tokenizer" => {
                        let _ = rustygradients_tokenizers::CharTokenizer::from_json(text);
                    }
                    _ => {
                        let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
                        let inner = v.get("model").cloned().unwrap_or(v);
                        if let Ok(c) =
                            serde_json::from_value::<rustygradients_models::GptConfig>(inner)
                        {
                            if c.validate().is_ok() {
                                assert!(c.memory_estimate(1, true).total() > 0.0);
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(seen > 100, "the fuzz corpus is missing ({seen} inputs)");
}

#[test]
fn cpu_tensors_borrow_the_mapped_file_and_copy_on_write() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.safetensors");
    let w = Tensor::from_vec((0..64).map(|i| i as f32).collect(), [8, 8], Device::Cpu).unwrap();
    let b = Tensor::from_vec(vec![1.0f64, 2.0], [2], Device::Cpu).unwrap();
    save_safetensors(&p, &[("w".into(), w.clone()), ("b".into(), b)], None).unwrap();
    let before = std::fs::read(&p).unwrap();
    let t = {
        let f = SafetensorsFile::open(&p).unwrap();
        f.tensor("w", Device::Cpu).unwrap()
        // The file value is dropped here; the tensor keeps the map alive.
    };
    assert!(
        t.is_borrowed(),
        "an aligned f32 tensor must be read in place"
    );
    assert_eq!(t.to_vec::<f32>().unwrap(), w.to_vec::<f32>().unwrap());
    let (all, _) = load_safetensors(&p, Device::Cpu).unwrap();
    assert!(all.iter().all(|(_, t)| t.is_borrowed()));
    // Writing gives the tensor memory of its own; the file is untouched.
    t.copy_(&Tensor::zeros([8, 8], DType::F32, Device::Cpu).unwrap())
        .unwrap();
    assert!(!t.is_borrowed());
    assert_eq!(t.to_vec::<f32>().unwrap(), vec![0.0; 64]);
    assert_eq!(std::fs::read(&p).unwrap(), before);
    let again = SafetensorsFile::open(&p)
        .unwrap()
        .tensor("w", Device::Cpu)
        .unwrap();
    assert_eq!(again.to_vec::<f32>().unwrap(), w.to_vec::<f32>().unwrap());
}
