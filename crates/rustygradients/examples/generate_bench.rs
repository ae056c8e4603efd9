//! Generation benchmark, RustyGradients side: greedy KV-cache generation from a HuggingFace
//! model directory (make random GPT-2-124M / Llama-1B ones with `scripts/make_bench_models.py`;
//! transformers' twin is `scripts/bench_generate_torch.py`, llama.cpp's
//! `scripts/bench_llamacpp.sh`). Prints one JSON object per run: new tokens per second (median
//! of 3 timed runs after a warm-up), the bytes of weights one token reads, and on the CPU the
//! memory read bandwidth measured in the same process, so the fraction of it the weights use.
//!
//! `cargo run --release --example generate_bench -- --model DIR [--dtype f32|f16|bf16]
//! [--tokens 128] [--batch 1] [--prompt 8] [--device cpu|cuda]`; on a GPU,
//! `RUSTYGRADIENTS_CUDA_PROFILE=1` adds the time per kernel and cuBLAS shape on stderr.

use std::time::Instant;

use rayon::prelude::*;
use rustygradients::models::hf::{generate, GenerationConfig, HfModel};
use rustygradients::{DType, Device, Result};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num(name: &str, default: usize) -> usize {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// GB/s of reading a 1 GiB buffer with every rayon thread (best of 5; integer sums in eight
/// independent lanes, so the loop waits on memory, not on additions): the rate at which this
/// machine can stream weights.
fn read_bandwidth() -> f64 {
    let n = 1usize << 27;
    let buf: Vec<u64> = (0..n as u64).collect();
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let s: u64 = buf
            .par_chunks(1 << 16)
            .map(|c| {
                let mut acc = [0u64; 8];
                for v in c.chunks_exact(8) {
                    for (a, x) in acc.iter_mut().zip(v) {
                        *a = a.wrapping_add(*x);
                    }
                }
                acc.iter().fold(0u64, |s, &x| s.wrapping_add(x))
            })
            .reduce(|| 0, u64::wrapping_add);
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(s);
        best = best.max((n * 8) as f64 / secs / 1e9);
    }
    best
}

fn main() -> Result<()> {
    let dir = arg("--model").expect("--model DIR");
    let dtype = match arg("--dtype").as_deref().unwrap_or("f32") {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        other => panic!("--dtype {other}: f32, f16 or bf16"),
    };
    let device = match arg("--device").as_deref().unwrap_or("cpu") {
        "cpu" => Device::Cpu,
        d => Device::Cuda(
            d.strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        ),
    };
    let (tokens, batch, prompt_len) = (num("--tokens", 128), num("--batch", 1), num("--prompt", 8));
    let model = HfModel::load(&dir, dtype, device)?;
    let lm = model.causal_lm().expect("a decoder-only model");
    let weight_bytes = model.num_parameters() as f64 * dtype.size_in_bytes() as f64;
    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|b| {
            (0..prompt_len)
                .map(|i| ((b * 31 + i * 7 + 1) % lm.vocab_size()) as u32)
                .collect()
        })
        .collect();
    let run = |n: usize| -> Result<f64> {
        let t = Instant::now();
        let out = generate(lm, &prompts, &GenerationConfig::greedy(n), |_, _| Ok(()))?;
        device.synchronize()?;
        assert!(out.iter().all(|o| o.len() == n));
        Ok(t.elapsed().as_secs_f64())
    };
    run(8.min(tokens))?;
    let secs = median((0..3).map(|_| run(tokens)).collect::<Result<_>>()?);
    let tps = (tokens * batch) as f64 / secs;
    let mut line = format!(
        "{{\"impl\":\"rustygradients\",\"model\":{:?},\"dtype\":\"{dtype:?}\",\"device\":\"{device}\",\"batch\":{batch},\"tokens\":{tokens},\"tokens_per_s\":{tps:.2},\"weight_bytes\":{weight_bytes:.0}",
        std::path::Path::new(&dir).file_name().map_or(dir.clone(), |f| f.to_string_lossy().into_owned())
    );
    if device == Device::Cpu {
        let bw = read_bandwidth();
        let used = weight_bytes * (tps / batch as f64) / 1e9;
        line += &format!(",\"read_bandwidth_gb_s\":{bw:.1},\"weights_gb_s\":{used:.1},\"fraction_of_bandwidth\":{:.3}", used / bw);
    }
    println!("{line}}}");
    // With RUSTYGRADIENTS_CUDA_PROFILE=1: time per kernel and per cuBLAS shape, on stderr.
    if let Some(report) = device.profile_report()? {
        eprintln!("{report}");
    }
    Ok(())
}
