//! HuggingFace model directories against transformers: small random-initialised GPT-2, Llama
//! (grouped-query attention, untied head, non-default θ, llama3 scaling in the 4.x config form,
//! shards) and Mistral models saved by `save_pretrained` in f32, f16 and bf16, with the logits
//! and greedy continuations transformers computed for them (`scripts/gen_hf_fixtures.py`).

use std::path::{Path, PathBuf};

use rustygradients_core::{DType, Device};
use rustygradients_models::hf::{generate, CausalLm, GenerationConfig, HfModel, Step};
use rustygradients_models::SamplingConfig;
use rustygradients_tokenizers::BpeTokenizer;
use serde::Deserialize;

const MODELS: &[&str] = &[
    "gpt2_f32",
    "gpt2_f16",
    "llama_gqa_f32",
    "llama_gqa_bf16",
    "llama_tied_llama3",
    "mistral_f32",
];

#[derive(Deserialize)]
struct Expected {
    prompts: Vec<Vec<u32>>,
    prompt_texts: Vec<Option<String>>,
    last_logits: Vec<Vec<f32>>,
    greedy: Vec<Vec<u32>>,
}

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

fn expected(name: &str) -> Expected {
    let text = std::fs::read_to_string(dir(name).join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load(name: &str, dtype: DType, device: Device) -> HfModel {
    HfModel::load(dir(name), dtype, device).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Last-position logits of `prompt` alone, through a fresh cache.
fn last_logits(lm: &dyn CausalLm, prompt: &[u32]) -> Vec<f32> {
    let t = prompt.len();
    let step = Step {
        ids: prompt.iter().map(|&i| i as i64).collect(),
        positions: (0..t as i64).collect(),
        batch: 1,
        len: t,
        pad: vec![0],
        last_only: true,
    };
    let mut cache = lm.new_cache(1, t).unwrap();
    let l = lm.forward(&step, &mut cache).unwrap();
    assert_eq!(l.dims(), [1, lm.vocab_size()]);
    l.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap()
}

/// `max |a - b| / max |b|`.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f64, |m, &x| m.max((x as f64).abs()));
    let diff = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    diff / scale
}

fn no_stop_sampled(seed: u64) -> GenerationConfig {
    GenerationConfig {
        max_new_tokens: 20,
        sampling: SamplingConfig {
            temperature: 0.9,
            top_k: Some(40),
            top_p: Some(0.95),
        },
        repetition_penalty: 1.3,
        seed,
        ..GenerationConfig::default()
    }
}

#[test]
fn logits_match_transformers() {
    for name in MODELS {
        let model = load(name, DType::F32, Device::Cpu);
        let lm = model.causal_lm().unwrap();
        let exp = expected(name);
        for (p, want) in exp.prompts.iter().zip(&exp.last_logits) {
            let err = rel_err(&last_logits(lm, p), want);
            assert!(
                err <= 1e-4,
                "{name}, prompt of {} tokens: max relative error {err:e}",
                p.len()
            );
        }
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    for name in MODELS {
        let model = load(name, DType::F32, Device::Cpu);
        let lm = model.causal_lm().unwrap();
        let exp = expected(name);
        for (p, want) in exp.prompts.iter().zip(&exp.greedy) {
            let got = generate(
                lm,
                std::slice::from_ref(p),
                &GenerationConfig::greedy(20),
                |_, _| Ok(()),
            )
            .unwrap();
            assert_eq!(&got[0], want, "{name}, prompt of {} tokens", p.len());
        }
    }
}

#[test]
fn kv_cache_generation_equals_full_recomputation() {
    for name in MODELS {
        let model = load(name, DType::F32, Device::Cpu);
        let lm = model.causal_lm().unwrap();
        let exp = expected(name);
        for cfg in [GenerationConfig::greedy(20), no_stop_sampled(7)] {
            for p in &exp.prompts {
                let cached = generate(lm, std::slice::from_ref(p), &cfg, |_, _| Ok(())).unwrap();
                let full = GenerationConfig {
                    use_cache: false,
                    ..cfg.clone()
                };
                let recomputed =
                    generate(lm, std::slice::from_ref(p), &full, |_, _| Ok(())).unwrap();
                assert_eq!(
                    cached,
                    recomputed,
                    "{name}, prompt of {} tokens, {cfg:?}",
                    p.len()
                );
            }
        }
    }
}

#[test]
fn batch_generation_equals_one_by_one() {
    for name in MODELS {
        let model = load(name, DType::F32, Device::Cpu);
        let lm = model.causal_lm().unwrap();
        let exp = expected(name);
        for cfg in [GenerationConfig::greedy(20), no_stop_sampled(11)] {
            let mut streamed = vec![Vec::new(); exp.prompts.len()];
            let batch = generate(lm, &exp.prompts, &cfg, |i, t| {
                streamed[i].push(t);
                Ok(())
            })
            .unwrap();
            assert_eq!(
                batch, streamed,
                "{name}: streamed tokens differ from the returned ones"
            );
            for (i, p) in exp.prompts.iter().enumerate() {
                let alone = GenerationConfig {
                    seed: cfg.seed + i as u64,
                    ..cfg.clone()
                };
                let one = generate(lm, std::slice::from_ref(p), &alone, |_, _| Ok(())).unwrap();
                assert_eq!(
                    one[0],
                    batch[i],
                    "{name}, sequence {i} ({} tokens), {cfg:?}",
                    p.len()
                );
            }
        }
    }
}

#[test]
fn stop_tokens_end_a_sequence_but_not_the_batch() {
    let model = load("gpt2_f32", DType::F32, Device::Cpu);
    let lm = model.causal_lm().unwrap();
    let exp = expected("gpt2_f32");
    // Stop sequence 1 at the 5th token of its own greedy continuation.
    let stop = exp.greedy[1][4];
    let cfg = GenerationConfig {
        stop_tokens: vec![stop],
        ..GenerationConfig::greedy(20)
    };
    let out = generate(lm, &exp.prompts, &cfg, |_, _| Ok(())).unwrap();
    let first = exp.greedy[1].iter().position(|&t| t == stop).unwrap();
    assert_eq!(out[1], exp.greedy[1][..=first]);
    for (i, o) in out.iter().enumerate() {
        let end = exp.greedy[i]
            .iter()
            .position(|&t| t == stop)
            .map_or(20, |p| p + 1);
        assert_eq!(o[..], exp.greedy[i][..end], "sequence {i}");
    }
}

#[test]
fn tokenizer_json_in_the_directory_encodes_the_prompts() {
    for name in MODELS {
        let tok = BpeTokenizer::from_file(dir(name)).unwrap();
        let exp = expected(name);
        for (text, ids) in exp.prompt_texts.iter().zip(&exp.prompts) {
            if let Some(text) = text {
                assert_eq!(&tok.encode(text).unwrap(), ids, "{name}: {text:?}");
                assert_eq!(&tok.decode(ids).unwrap(), text);
            }
        }
    }
}

#[test]
fn half_precision_compute_stays_close() {
    for (name, dtype) in [("gpt2_f32", DType::BF16), ("llama_gqa_f32", DType::F16)] {
        let model = load(name, dtype, Device::Cpu);
        let lm = model.causal_lm().unwrap();
        assert_eq!(lm.dtype(), dtype);
        let exp = expected(name);
        let err = rel_err(&last_logits(lm, &exp.prompts[2]), &exp.last_logits[2]);
        assert!(err < 0.05, "{name} in {dtype:?}: max relative error {err}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn bad_directories_are_errors_that_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("m");
    copy_dir(&dir("llama_gqa_f32"), &d);
    let cfg_path = d.join("config.json");
    let original = std::fs::read_to_string(&cfg_path).unwrap();
    let set = |from: &str, to: &str| {
        assert!(original.contains(from), "{from}");
        std::fs::write(&cfg_path, original.replace(from, to)).unwrap();
    };
    let err = |d: &Path| {
        HfModel::load(d, DType::F32, Device::Cpu)
            .unwrap_err()
            .to_string()
    };
    // A config that disagrees with the weights: the tensor and both shapes are named.
    set("\"intermediate_size\": 172", "\"intermediate_size\": 170");
    let e = err(&d);
    assert!(
        e.contains("gate_proj") && e.contains("172") && e.contains("170"),
        "{e}"
    );
    set("\"model_type\": \"llama\"", "\"model_type\": \"t5\"");
    let e = err(&d);
    assert!(e.contains("t5") && e.contains("not supported"), "{e}");
    // Untied config without lm_head in the file.
    std::fs::write(&cfg_path, &original).unwrap();
    let tied = tmp.path().join("tied");
    copy_dir(&dir("llama_tied_llama3"), &tied);
    let tied_cfg = std::fs::read_to_string(tied.join("config.json")).unwrap();
    std::fs::write(
        tied.join("config.json"),
        tied_cfg.replace(
            "\"tie_word_embeddings\": true",
            "\"tie_word_embeddings\": false",
        ),
    )
    .unwrap();
    let e = err(&tied);
    assert!(e.contains("lm_head.weight"), "{e}");
    // A shard the index names is missing.
    let shard = tied.join("model-00002-of-00006.safetensors");
    std::fs::remove_file(&shard).unwrap();
    let e = err(&tied);
    assert!(e.contains("model-00002-of-00006.safetensors"), "{e}");
    // No weights at all.
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    let e = err(&d);
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn prompts_past_learned_positions_are_refused() {
    let model = load("gpt2_f32", DType::F32, Device::Cpu);
    let lm = model.causal_lm().unwrap();
    let e = generate(
        lm,
        &[vec![1; 100]],
        &GenerationConfig::greedy(40),
        |_, _| Ok(()),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("128"), "{e}");
    let e = generate(lm, &[vec![9999]], &GenerationConfig::greedy(4), |_, _| {
        Ok(())
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("9999"), "{e}");
}

/// The GPU gives the CPU's numbers (skipped without one).
#[test]
fn cuda_matches_cpu() {
    let gpu = Device::Cuda(0);
    if !gpu.is_available() {
        eprintln!("skipping: no CUDA device");
        return;
    }
    for name in MODELS {
        let cpu = load(name, DType::F32, Device::Cpu);
        let cuda = load(name, DType::F32, gpu);
        let exp = expected(name);
        for p in &exp.prompts {
            let a = last_logits(cuda.causal_lm().unwrap(), p);
            let b = last_logits(cpu.causal_lm().unwrap(), p);
            let err = rel_err(&a, &b);
            assert!(
                err <= 1e-4,
                "{name} on CUDA, prompt of {} tokens: {err:e}",
                p.len()
            );
        }
        let cfg = GenerationConfig::greedy(20);
        let a = generate(cuda.causal_lm().unwrap(), &exp.prompts, &cfg, |_, _| Ok(())).unwrap();
        assert_eq!(a, exp.greedy, "{name} greedy batch on CUDA");
        let bf = load(name, DType::BF16, gpu);
        let err = rel_err(
            &last_logits(bf.causal_lm().unwrap(), &exp.prompts[2]),
            &exp.last_logits[2],
        );
        assert!(err < 0.05, "{name} in bf16 on CUDA: {err}");
    }
}

#[derive(Deserialize)]
struct BertExpected {
    sequences: Vec<Vec<u32>>,
    mean_pooled: Vec<Vec<f32>>,
}

/// A random BERT encoder: mean-pooled last hidden states of a padded batch, against
/// transformers' `BertModel` with its attention mask.
fn check_bert(device: Device) {
    let model = load("bert_f32", DType::F32, device);
    let bert = model.bert().expect("an encoder");
    assert!(model.causal_lm().is_none());
    let text = std::fs::read_to_string(dir("bert_f32").join("expected.json")).unwrap();
    let exp: BertExpected = serde_json::from_str(&text).unwrap();
    let got = bert.embed(&exp.sequences, false).unwrap();
    for (i, (g, w)) in got.iter().zip(&exp.mean_pooled).enumerate() {
        let err = rel_err(g, w);
        assert!(
            err <= 1e-4,
            "{device}: sequence {i} ({} tokens): {err:e}",
            exp.sequences[i].len()
        );
    }
    let unit = bert.embed(&exp.sequences[..1], true).unwrap();
    let norm: f32 = unit[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
    let e = bert.embed(&[vec![1; 65]], false).unwrap_err().to_string();
    assert!(e.contains("65") && e.contains("64"), "{e}");
}

#[test]
fn bert_mean_pooling_matches_transformers() {
    check_bert(Device::Cpu);
}

#[test]
fn bert_on_cuda_matches_transformers() {
    if !Device::Cuda(0).is_available() {
        eprintln!("skipping: no CUDA device");
        return;
    }
    check_bert(Device::Cuda(0));
}
