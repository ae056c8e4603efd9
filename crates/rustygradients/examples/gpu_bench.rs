//! GPU benchmark, RustyGradients side (its PyTorch twin is `scripts/bench_gpu_torch.py`; run both
//! with `scripts/bench_gpu.sh` on the GPU machine). Prints one JSON object per result:
//!
//! - matmul TFLOP/s in f32, TF32 and bf16 at 4096³ and at GPT-2's shapes (8 × 1024 tokens);
//! - a GPT-2-124M training step (12 layers, 12 heads, 768 wide, T 1024, vocab 50304, AdamW,
//!   no dropout) in f32 and in TF32: tokens/s (median of the timed steps) and peak GPU memory.
//!
//! Build with `cargo build --release --features cuda --example gpu_bench`; run as
//! `gpu_bench [--steps N] [--batch B] [--only matmul|gpt]`.

use std::time::Instant;

use rustygradients::models::{Gpt, GptConfig};
use rustygradients::nn::Module;
use rustygradients::optim::{clip_grad_norm_tensor, AdamW, AdamWConfig, Optimizer};
use rustygradients::{manual_seed, set_matmul_allow_tf32, DType, Device, Result, Tensor};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn only() -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median seconds of `f` over `reps` runs after `warmup`, each ended by a synchronize.
fn time(dev: Device, warmup: usize, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    dev.synchronize()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        dev.synchronize()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

fn matmuls(dev: Device) -> Result<()> {
    let tokens = 8 * 1024;
    let shapes = [
        ("4096^3", 4096, 4096, 4096),
        ("gpt2 qkv", tokens, 768, 2304),
        ("gpt2 fc", tokens, 768, 3072),
        ("gpt2 proj", tokens, 3072, 768),
        ("gpt2 lm_head", tokens, 768, 50304),
    ];
    for (mode, dtype, tf32) in [
        ("f32", DType::F32, false),
        ("tf32", DType::F32, true),
        ("bf16", DType::BF16, false),
    ] {
        set_matmul_allow_tf32(tf32);
        for (name, m, k, n) in shapes {
            manual_seed(0);
            let a = Tensor::randn([m, k], dtype, dev)?;
            let b = Tensor::randn([k, n], dtype, dev)?;
            let secs = time(dev, 3, 20, || a.matmul(&b).map(|_| ()))?;
            let tflops = 2.0 * (m * k * n) as f64 / secs / 1e12;
            println!(
                "{{\"bench\":\"matmul\",\"mode\":\"{mode}\",\"shape\":\"{name}\",\"m\":{m},\"k\":{k},\"n\":{n},\"ms\":{:.4},\"tflops\":{tflops:.2}}}",
                secs * 1e3
            );
        }
    }
    set_matmul_allow_tf32(false);
    Ok(())
}

fn gpt2(dev: Device, batch: usize, steps: usize) -> Result<()> {
    let cfg = GptConfig {
        vocab_size: 50304,
        block_size: 1024,
        n_layer: 12,
        n_head: 12,
        n_embd: 768,
        dropout: 0.0,
    };
    for (mode, tf32) in [("f32", false), ("tf32", true)] {
        set_matmul_allow_tf32(tf32);
        manual_seed(1337);
        let model = Gpt::new(cfg.clone(), DType::F32, dev)?;
        let mut opt = AdamW::new(&model, AdamWConfig::default().with_weight_decay(0.1));
        let params = model.parameters();
        let x = Tensor::randint(0, 50257, [batch, 1024], dev)?;
        let y = Tensor::randint(0, 50257, [batch, 1024], dev)?;
        let mut step = || -> Result<f64> {
            opt.zero_grad();
            let loss = model.loss(&x, &y)?;
            loss.backward()?;
            clip_grad_norm_tensor(&params, 1.0)?;
            opt.step()?;
            loss.item()
        };
        for _ in 0..3 {
            step()?;
        }
        dev.reset_peak_memory()?;
        let mut times = Vec::with_capacity(steps);
        let mut last = 0.0;
        for _ in 0..steps {
            let t = Instant::now();
            last = step()?;
            times.push(t.elapsed().as_secs_f64());
        }
        let secs = median(times);
        let stats = dev.memory_stats()?.expect("a GPU reports memory");
        if let Some(report) = dev.profile_report()? {
            eprintln!("GPU time per kernel over {steps} {mode} steps:\n{report}");
        }
        println!(
            "{{\"bench\":\"gpt2_step\",\"mode\":\"{mode}\",\"batch\":{batch},\"ms\":{:.2},\"tokens_per_s\":{:.0},\"peak_bytes\":{},\"loss\":{last:.4}}}",
            secs * 1e3,
            (batch * 1024) as f64 / secs,
            stats.peak
        );
        drop(opt);
        drop(model);
    }
    set_matmul_allow_tf32(false);
    Ok(())
}

fn main() -> Result<()> {
    let dev = Device::Cuda(0);
    dev.synchronize()?;
    let which = only();
    if which.as_deref() != Some("gpt") {
        matmuls(dev)?;
    }
    if which.as_deref() != Some("matmul") {
        gpt2(dev, arg("--batch", 8), arg("--steps", 10))?;
    }
    Ok(())
}
