//! GPT-2's byte-level BPE against an independent implementation (tiktoken-rs's `r50k_base`),
//! round trips, `tokenizer.json` save/load, and training a vocabulary.

use std::path::PathBuf;

use rustygradients_tokenizers::BpeTokenizer;

/// GPT-2's files, from `../shared/data/gpt2-bpe` beside the checkout.
fn gpt2_files() -> Option<(PathBuf, PathBuf)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/gpt2-bpe");
    let (v, m) = (dir.join("encoder.json"), dir.join("vocab.bpe"));
    if v.is_file() && m.is_file() {
        Some((v, m))
    } else {
        eprintln!(
            "skipping: GPT-2's encoder.json and vocab.bpe not found in {}",
            dir.display()
        );
        None
    }
}

const TEXTS: &[&str] = &[
    "Hello world! It's 2026.",
    "  leading, inner   and trailing spaces   ",
    "tabs\tand\nnewlines\n\n\r\n and a lone \r",
    "emoji 😀🎉👩‍👩‍👧 and flags 🇫🇷🇯🇵",
    "unicode: é ü ß Ø æ ñ — “quotes” ‘single’ … naïve café",
    "日本語のテキスト、中文文本，한국어 텍스트, Ελληνικά, русский, עברית, العربية",
    "I'm you're they'll we've she'd it's can't won't Y'ALL'RE",
    "numbers 0 7 42 123 1234 12345 3.14159 1e-10 -0.5 1,000,000 2026-11-27",
    "fn main() {\n    let x: Vec<u32> = (0..10).map(|i| i * i).collect();\n}\n",
    "def f(x):\n\treturn x**2  # square\n",
    "<html><body class=\"a\">&amp; &lt;tag&gt;</body></html>",
    "",
    " ",
    "a",
    "!!!???...,,,;;;",
    "https://example.com/path?query=1&x=y#frag user@example.org",
];

#[test]
fn gpt2_encoding_matches_tiktoken_r50k() {
    let Some((v, m)) = gpt2_files() else { return };
    let ours = BpeTokenizer::gpt2(&v, &m).unwrap();
    let r50k = tiktoken_rs::r50k_base().unwrap();
    assert_eq!(ours.vocab_size(), 50257);
    assert_eq!(ours.token_id("<|endoftext|>"), Some(50256));
    for text in TEXTS {
        let got = ours.encode(text).unwrap();
        let want: Vec<u32> = r50k.encode_ordinary(text);
        assert_eq!(got, want, "{text:?}");
        assert_eq!(ours.decode(&got).unwrap(), *text, "round trip of {text:?}");
    }
    // The special token is one id, as in GPT-2.
    let ids = ours.encode("end<|endoftext|>start").unwrap();
    assert!(ids.contains(&50256), "{ids:?}");
    assert!(ours.decode(&[50257]).is_err());
}

#[test]
fn tokenizer_json_round_trips() {
    let Some((v, m)) = gpt2_files() else { return };
    let tok = BpeTokenizer::gpt2(&v, &m).unwrap();
    let dir = std::env::temp_dir().join(format!("rg-bpe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tokenizer.json");
    tok.save(&file).unwrap();
    // A file or the directory holding it.
    for path in [file.clone(), dir.clone()] {
        let back = BpeTokenizer::from_file(&path).unwrap();
        for text in TEXTS {
            assert_eq!(
                back.encode(text).unwrap(),
                tok.encode(text).unwrap(),
                "{text:?}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let err = BpeTokenizer::from_file(dir.join("missing.json")).unwrap_err();
    assert!(err.to_string().contains("missing.json"), "{err}");
}

#[test]
fn trained_vocabulary_round_trips_and_compresses() {
    let dir = std::env::temp_dir().join(format!("rg-bpe-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let corpus = dir.join("corpus.txt");
    let text = include_str!("../../../README.md").repeat(3);
    std::fs::write(&corpus, &text).unwrap();
    let tok = BpeTokenizer::train(std::slice::from_ref(&corpus), 600).unwrap();
    assert!(
        tok.vocab_size() <= 600 && tok.vocab_size() > 300,
        "{}",
        tok.vocab_size()
    );
    let ids = tok.encode(&text).unwrap();
    assert_eq!(tok.decode(&ids).unwrap(), text);
    // Merges learned on the corpus make it shorter than one token per byte.
    assert!(
        ids.len() * 2 < text.len(),
        "{} tokens for {} bytes",
        ids.len(),
        text.len()
    );
    // Bytes never seen in training still encode (byte-level alphabet).
    let unseen = "ʘ‿ʘ ∮ 𝄞";
    assert_eq!(tok.decode(&tok.encode(unseen).unwrap()).unwrap(), unseen);
    assert!(BpeTokenizer::train(&[corpus], 100).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
