//! `generate` and `embed` on HuggingFace model directories (the random-initialised fixtures of
//! rustygradients-models, made by `scripts/gen_hf_fixtures.py`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../rustygradients-models/tests/fixtures/hf")
        .join(name)
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rustygradients"))
}

fn run(cmd: &mut Command, stdin: &str) -> (bool, String, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Greedy generation prints the prompt and exactly the continuation transformers chose (decoded
/// with the directory's tokenizer).
#[test]
fn generate_greedy_matches_transformers() {
    for name in [
        "gpt2_f32",
        "llama_gqa_f32",
        "llama_tied_llama3",
        "mistral_f32",
    ] {
        let dir = fixture(name);
        let exp: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        let prompt = exp["prompt_texts"][1].as_str().unwrap();
        let greedy: Vec<u32> = exp["greedy"][1]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let tok = rustygradients_tokenizers::BpeTokenizer::from_file(&dir).unwrap();
        let want = format!("{prompt}{}\n", tok.decode(&greedy).unwrap());
        let (ok, out, err) = run(
            bin().arg("generate").arg("--model").arg(&dir).args([
                "--prompt",
                prompt,
                "--max-tokens",
                "20",
                "--temperature",
                "0",
            ]),
            "",
        );
        assert!(ok, "{name}: {err}");
        assert_eq!(out, want, "{name}");
        // Sampling is seeded: the same seed gives the same text.
        let sampled = || {
            run(
                bin().arg("generate").arg("--model").arg(&dir).args([
                    "--prompt",
                    prompt,
                    "--max-tokens",
                    "12",
                    "--temperature",
                    "0.9",
                    "--top-p",
                    "0.9",
                    "--repetition-penalty",
                    "1.2",
                    "--seed",
                    "5",
                ]),
                "",
            )
        };
        let (a, b) = (sampled(), sampled());
        assert!(a.0, "{name}: {}", a.2);
        assert_eq!(a.1, b.1);
    }
}

#[test]
fn generate_refuses_bad_requests_by_name() {
    let dir = fixture("gpt2_f32");
    let (ok, _, err) = run(
        bin().arg("generate").arg("--model").arg(&dir).args([
            "--prompt",
            "hi",
            "--max-tokens",
            "500",
        ]),
        "",
    );
    assert!(!ok && err.contains("128"), "{err}");
    let (ok, _, err) = run(
        bin()
            .arg("generate")
            .arg("--model")
            .arg(fixture("bert_f32"))
            .args(["--prompt", "hi"]),
        "",
    );
    assert!(!ok && err.contains("embed"), "{err}");
    let (ok, _, err) = run(
        bin()
            .arg("generate")
            .arg("--model")
            .arg(&dir)
            .args(["--prompt", "hi", "--dtype", "f8"]),
        "",
    );
    assert!(!ok && err.contains("f8"), "{err}");
}

#[test]
fn embed_prints_one_json_array_per_line() {
    let dir = fixture("bert_f32");
    let input = "To be, or not to be\nthat is the question\n \nNow is the winter\n";
    let (ok, out, err) = run(
        bin()
            .arg("embed")
            .arg("--model")
            .arg(&dir)
            .arg("--normalize"),
        input,
    );
    assert!(ok, "{err}");
    let rows: Vec<Vec<f64>> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    for r in &rows {
        assert_eq!(r.len(), 64);
        let n: f64 = r.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((n - 1.0).abs() < 1e-5, "{n}");
    }
    // Batched (the default 32) and one at a time agree; without --normalize, the same direction.
    let (_, one, _) = run(
        bin()
            .arg("embed")
            .arg("--model")
            .arg(&dir)
            .args(["--normalize", "--batch-size", "1"]),
        input,
    );
    let single: Vec<Vec<f64>> = one
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (_, raw, _) = run(bin().arg("embed").arg("--model").arg(&dir), input);
    let raw: Vec<Vec<f64>> = raw
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for ((a, b), c) in rows.iter().zip(&single).zip(&raw) {
        assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5));
        let n: f64 = c.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(a.iter().zip(c).all(|(x, y)| (x - y / n).abs() < 1e-5));
    }
    let (ok, _, err) = run(
        bin().arg("embed").arg("--model").arg(fixture("gpt2_f32")),
        "hi\n",
    );
    assert!(!ok && err.contains("BERT"), "{err}");
}
