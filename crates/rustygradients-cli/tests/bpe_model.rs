//! A GPT trained on BPE tokens end to end through the binary: `tokenizer train` makes a
//! vocabulary, `train --tokenizer` trains on it and saves it as the model's `tokenizer.json`
//! (HuggingFace's format), `generate` reads that model, and `--resume` continues the run with the
//! same tokenizer (bit-identical to an uninterrupted run) and refuses another one.

use std::path::Path;
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rustygradients"));
    c.env("RUST_BACKTRACE", "0");
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}

fn err(args: &[&str]) -> String {
    let o = run(args);
    assert!(!o.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

const TEXT: &str = "To be, or not to be, that is the question:\n\
    Whether 'tis nobler in the mind to suffer\n\
    The slings and arrows of outrageous fortune — naïve café, 日本.\n";

#[test]
fn train_on_bpe_tokens_generate_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    std::fs::write(p("corpus.txt"), TEXT.repeat(30)).unwrap();
    std::fs::create_dir(p("tok")).unwrap();
    let tok_file = p("tok/tokenizer.json");
    ok(&[
        "tokenizer",
        "train",
        "--data",
        &p("corpus.txt"),
        "--vocab-size",
        "300",
        "--out",
        &tok_file,
    ]);
    let tok_json = json(Path::new(&tok_file));
    let vocab = tok_json["model"]["vocab"].as_object().unwrap().len()
        + tok_json["added_tokens"].as_array().map_or(0, Vec::len);

    let corpus = p("corpus.txt");
    let flags = [
        "train",
        "--data",
        &corpus,
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
        "--steps",
        "6",
        "--eval-interval",
        "3",
        "--eval-iters",
        "1",
        "--warmup",
        "2",
        "--sample-chars",
        "10",
    ];
    let (straight, resumed) = (p("straight"), p("resumed"));
    // The tokenizer as a file, and as the directory holding it.
    let out = ok(&[&flags[..], &["--tokenizer", &tok_file, "--out", &straight]].concat());
    assert!(
        out.contains(&format!("BPE vocab {vocab}")) && out.contains("step 6: train loss"),
        "{out}"
    );
    ok(&[
        &flags[..],
        &[
            "--tokenizer",
            &p("tok"),
            "--out",
            &resumed,
            "--stop-at",
            "3",
        ],
    ]
    .concat());

    // The model directory carries the BPE tokenizer in HuggingFace's format: the very file
    // `tokenizer train` wrote.
    let model = Path::new(&straight);
    let tok_bytes = std::fs::read(&tok_file).unwrap();
    assert_eq!(
        std::fs::read(model.join("tokenizer.json")).unwrap(),
        tok_bytes
    );
    assert_eq!(json(&model.join("tokenizer.json"))["model"]["type"], "BPE");
    let config = json(&model.join("config.json"));
    assert_eq!(config["model"]["vocab_size"], vocab);

    // Resuming keeps the tokenizer: the result is the uninterrupted run's, bit for bit.
    let out = ok(&["train", "--resume", &resumed]);
    assert!(out.contains("resumed from step 3"), "{out}");
    let bytes = |d: &str| std::fs::read(Path::new(d).join("model.safetensors")).unwrap();
    assert_eq!(bytes(&straight), bytes(&resumed), "final weights differ");
    assert_eq!(
        std::fs::read(Path::new(&resumed).join("tokenizer.json")).unwrap(),
        tok_bytes
    );

    // Greedy generation from the BPE model, through `model_dir::load`'s kind detection.
    let generate = || {
        ok(&[
            "generate",
            "--model",
            &straight,
            "--prompt",
            "To be",
            "--max-tokens",
            "10",
            "--temperature",
            "0",
        ])
    };
    let text = generate();
    assert!(
        text.starts_with("To be") && text.len() > "To be".len(),
        "{text:?}"
    );
    assert_eq!(generate(), text, "greedy decoding is deterministic");

    // A --tokenizer given with --resume must be the run's own: the same one is accepted...
    let out = ok(&["train", "--resume", &resumed, "--tokenizer", &tok_file]);
    assert!(out.contains("resumed from step 6"), "{out}");
    // ... another BPE vocabulary is refused, naming both.
    let other = p("other.json");
    ok(&[
        "tokenizer",
        "train",
        "--data",
        &corpus,
        "--vocab-size",
        "280",
        "--out",
        &other,
    ]);
    let e = err(&["train", "--resume", &resumed, "--tokenizer", &other]);
    assert!(
        e.contains("does not match the tokenizer the run was trained with") && e.contains(&other),
        "{e}"
    );
    // ... and so is one given to a character-level run.
    let chars = p("chars");
    ok(&[&flags[..], &["--out", &chars]].concat());
    assert_eq!(
        json(&Path::new(&chars).join("tokenizer.json"))["type"],
        "char"
    );
    let e = err(&["train", "--resume", &chars, "--tokenizer", &tok_file]);
    assert!(
        e.contains("does not match the tokenizer the run was trained with"),
        "{e}"
    );
}

#[test]
fn a_bad_tokenizer_is_refused_by_path_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let not_a_tokenizer = dir.path().join("weird.json");
    std::fs::write(&not_a_tokenizer, r#"{"vocab": "ab"}"#).unwrap();
    for (path, want) in [
        (not_a_tokenizer.as_path(), "neither"),
        (Path::new("/nonexistent/tokenizer.json"), "No such file"),
    ] {
        let e = err(&[
            "train",
            "--steps",
            "1",
            "--tokenizer",
            path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(
            e.contains(path.to_str().unwrap()) && e.contains(want),
            "{e}"
        );
        assert!(!out.exists());
    }
    // A model directory whose tokenizer.json is neither kind.
    let model = dir.path().join("model");
    let model = model.to_str().unwrap();
    ok(&[
        "train",
        "--n-layer",
        "1",
        "--n-head",
        "2",
        "--n-embd",
        "16",
        "--block-size",
        "16",
        "--steps",
        "1",
        "--sample-chars",
        "0",
        "--out",
        model,
    ]);
    std::fs::copy(&not_a_tokenizer, Path::new(model).join("tokenizer.json")).unwrap();
    let e = err(&["generate", "--model", model]);
    assert!(
        e.contains(&format!("{model}/tokenizer.json")) && e.contains("neither"),
        "{e}"
    );
}
