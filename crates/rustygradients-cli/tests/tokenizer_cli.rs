//! `rustygradients tokenizer`: GPT-2 encode/decode from stdin (per line and `--whole`, byte-exact),
//! GPT-2's files converted to a tokenizer.json, training a vocabulary, and errors for bad ids.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rustygradients"))
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Runs the binary with `args`, feeding `stdin`; returns (success, stdout, stderr).
fn run(args: &[&str], stdin: &[u8]) -> (bool, Vec<u8>, String) {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn gpt2() -> Option<[String; 4]> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/gpt2-bpe");
    if !dir.join("encoder.json").is_file() {
        eprintln!("skipping: GPT-2's files not found in {}", dir.display());
        return None;
    }
    Some([
        "--vocab".into(),
        dir.join("encoder.json").display().to_string(),
        "--merges".into(),
        dir.join("vocab.bpe").display().to_string(),
    ])
}

#[test]
fn gpt2_encode_and_decode_from_stdin() {
    let Some(files) = gpt2() else { return };
    let with = |cmd: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        v.extend(files.iter().cloned());
        v
    };

    // One line of ids per line of text.
    let enc = with(&["tokenizer", "encode"]);
    let (ok, out, err) = run(&args(&enc), b"Hello world!\nIt's 2026.\n");
    assert!(ok, "{err}");
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "15496 995 0\n1026 338 1160 2075 13\n"
    );

    // --whole: all of stdin, newlines and a missing final newline included, byte for byte.
    let text = "Hello\n\n  spaced   text\twith émoji 😀\nno final newline";
    let mut whole = enc.clone();
    whole.push("--whole".into());
    let (ok, ids, err) = run(&args(&whole), text.as_bytes());
    assert!(ok, "{err}");
    let mut dec = with(&["tokenizer", "decode"]);
    dec.push("--whole".into());
    let (ok, back, err) = run(&args(&dec), &ids);
    assert!(ok, "{err}");
    assert_eq!(back, text.as_bytes());

    // A bad id is an error that names it, not a panic.
    let (ok, _, err) = run(&args(&with(&["tokenizer", "decode"])), b"15496 x\n");
    assert!(!ok && err.contains("\"x\""), "{err}");
    let (ok, _, err) = run(&args(&with(&["tokenizer", "decode"])), b"99999999\n");
    assert!(!ok && err.contains("99999999"), "{err}");
}

/// `tokenizer convert` writes GPT-2's files as one tokenizer.json that encodes the same.
#[test]
fn gpt2_converted_to_a_tokenizer_json() {
    let Some(files) = gpt2() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gpt2.json");
    let mut convert: Vec<String> = vec!["tokenizer".into(), "convert".into()];
    convert.extend(files.iter().cloned());
    convert.extend(["--out".into(), out.display().to_string()]);
    let (ok, _, err) = run(&args(&convert), b"");
    assert!(ok, "{err}");
    let text = "Hello world! It's 2026.<|endoftext|> émoji 😀\n";
    let mut enc: Vec<String> = vec!["tokenizer".into(), "encode".into(), "--whole".into()];
    enc.extend(files.iter().cloned());
    let (ok, want, err) = run(&args(&enc), text.as_bytes());
    assert!(ok, "{err}");
    let path = out.display().to_string();
    let (ok, got, err) = run(
        &["tokenizer", "encode", "--whole", "--tokenizer", &path],
        text.as_bytes(),
    );
    assert!(ok, "{err}");
    assert_eq!(got, want);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(json["model"]["vocab"].as_object().unwrap().len(), 50257);
}

#[test]
fn train_a_vocabulary_then_use_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus.txt");
    std::fs::write(
        &data,
        "to be or not to be, that is the question\n".repeat(200),
    )
    .unwrap();
    let tok = dir.path().join("tokenizer.json");
    let (ok, _, err) = run(
        &[
            "tokenizer",
            "train",
            "--data",
            data.to_str().unwrap(),
            "--vocab-size",
            "300",
            "--out",
            tok.to_str().unwrap(),
        ],
        b"",
    );
    assert!(ok, "{err}");
    // A directory holding tokenizer.json works as --tokenizer too.
    for path in [tok.to_str().unwrap(), dir.path().to_str().unwrap()] {
        let (ok, ids, err) = run(
            &["tokenizer", "encode", "--tokenizer", path],
            b"to be or not\n",
        );
        assert!(ok, "{err}");
        let n = String::from_utf8(ids.clone())
            .unwrap()
            .split_whitespace()
            .count();
        assert!(
            n > 0 && n < 13,
            "merges should shorten 13 bytes: {n} tokens"
        );
        let (ok, text, err) = run(&["tokenizer", "decode", "--tokenizer", path], &ids);
        assert!(ok, "{err}");
        assert_eq!(text, b"to be or not\n");
    }
    let (ok, _, err) = run(
        &[
            "tokenizer",
            "train",
            "--data",
            "/nonexistent/x.txt",
            "--vocab-size",
            "300",
        ],
        b"",
    );
    assert!(!ok && err.contains("/nonexistent/x.txt"), "{err}");
}
