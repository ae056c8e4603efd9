//! The `rustygradients` binary end to end on a tiny model: train writes every artifact, the
//! metrics log is complete, generate loads the model and samples, and bad input is an error.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rustygradients"))
}

#[test]
fn train_then_generate() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let data = dir.path().join("data.txt");
    std::fs::write(
        &data,
        "to be or not to be, that is the question\n".repeat(40),
    )
    .unwrap();
    let status = bin()
        .args([
            "train",
            "--n-layer",
            "1",
            "--n-head",
            "2",
            "--n-embd",
            "16",
            "--block-size",
            "16",
            "--batch-size",
            "4",
        ])
        .args([
            "--steps",
            "6",
            "--eval-interval",
            "3",
            "--eval-iters",
            "1",
            "--warmup",
            "2",
            "--sample-chars",
            "20",
        ])
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "train failed: {stdout}\n{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        stdout.contains("step 0: train loss") && stdout.contains("step 6: train loss"),
        "{stdout}"
    );
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "metrics.jsonl",
        "loss.png",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.iter().filter(|r| r.get("val_loss").is_some()).count(),
        3,
        "evals at 0, 3, 6"
    );
    assert_eq!(
        lines.iter().filter(|r| r.get("val_loss").is_none()).count(),
        6,
        "one record per step"
    );
    assert!(lines
        .iter()
        .all(|r| r["lr"].as_f64().unwrap() > 0.0 && r["train_loss"].as_f64().unwrap().is_finite()));

    let sample = |command: &str| {
        bin()
            .args([
                command,
                "--prompt",
                "to be",
                "--max-tokens",
                "30",
                "--seed",
                "3",
            ])
            .arg("--model")
            .arg(&out)
            .output()
            .unwrap()
    };
    let gen = sample("sample");
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let text = String::from_utf8_lossy(&gen.stdout);
    assert!(
        text.starts_with("to be") && text.trim_end().chars().count() >= 5 + 20,
        "{text:?}"
    );
    let again = sample("generate");
    assert_eq!(
        again.stdout, gen.stdout,
        "the same seed must give the same text"
    );

    // Characters the model never saw, a missing model dir, an unknown device: errors, no panic.
    let bad = bin()
        .args(["generate", "--prompt", "ZZZ{"])
        .arg("--model")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        !bad.status.success()
            && String::from_utf8_lossy(&bad.stderr).contains("not in the vocabulary")
    );
    let missing = bin()
        .args(["generate", "--model"])
        .arg(dir.path().join("nope"))
        .output()
        .unwrap();
    assert!(
        !missing.status.success()
            && String::from_utf8_lossy(&missing.stderr).contains("config.json")
    );
    let dev = bin()
        .args(["train", "--device", "tpu", "--steps", "1"])
        .output()
        .unwrap();
    assert!(
        !dev.status.success() && String::from_utf8_lossy(&dev.stderr).contains("unknown device")
    );
}

fn train(args: &[&str]) -> String {
    let out = bin().arg("train").args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Per-step training losses of a run's metrics.jsonl (evaluation records excluded).
fn step_losses(dir: &std::path::Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r.get("val_loss").is_none())
        .map(|r| {
            (
                r["step"].as_u64().unwrap(),
                r["train_loss"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn resume_is_bit_identical_to_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("straight"), dir.path().join("resumed"));
    // A fixed corpus: the built-in one changes with the README.
    let data = dir.path().join("data.txt");
    std::fs::write(
        &data,
        "to be or not to be, that is the question\n".repeat(40),
    )
    .unwrap();
    let data = data.to_str().unwrap();
    let flags = [
        "--data",
        data,
        "--n-layer",
        "2",
        "--n-head",
        "2",
        "--n-embd",
        "32",
        "--block-size",
        "16",
        "--batch-size",
        "4",
        "--eval-interval",
        "4",
        "--eval-iters",
        "2",
        "--sample-chars",
        "0",
        "--steps",
        "20",
        "--warmup",
        "3",
    ];
    train(&[&flags[..], &["--out", a.to_str().unwrap()]].concat());
    train(
        &[
            &flags[..],
            &["--out", b.to_str().unwrap(), "--stop-at", "10"],
        ]
        .concat(),
    );
    let out = train(&["--resume", b.to_str().unwrap()]);
    assert!(out.contains("resumed from step 10"), "{out}");
    let bytes = |d: &std::path::Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert_eq!(bytes(&a), bytes(&b), "final weights differ");
    let (la, lb) = (step_losses(&a), step_losses(&b));
    assert_eq!(la.len(), 20);
    // It learns: the evaluated val loss falls clearly below its start (2.73 -> 2.43).
    let vals: Vec<f64> = std::fs::read_to_string(a.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["val_loss"].as_f64())
        .collect();
    assert!(
        vals.len() == 6 && vals[5] < vals[0] - 0.15,
        "val loss did not fall: {vals:?}"
    );
    assert_eq!(la, lb, "per-step losses differ");
    // The final checkpoints agree too, optimizer moments included.
    let ck = |d: &std::path::Path| {
        std::fs::read(d.join("checkpoints/checkpoint_step_000020.safetensors")).unwrap()
    };
    assert_eq!(ck(&a), ck(&b));
}

#[test]
fn resume_from_an_empty_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["train", "--resume", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no complete checkpoint"), "{err}");
}
