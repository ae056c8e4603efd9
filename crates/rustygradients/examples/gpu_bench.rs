//! GPU benchmark, RustyGradients side (its PyTorch twin is `scripts/bench_gpu_torch.py`; run both
//! with `scripts/bench_gpu.sh` on the GPU machine). Prints one JSON object per result:
//!
//! - matmul TFLOP/s in f32, TF32 and bf16 at 4096³ and at GPT-2's shapes (8 × 1024 tokens);
//! - attention forward + backward (bf16, causal, B 8, H 12, T 1024/4096, D 64/128): TFLOP/s,
//!   counting the causal half only (forward 2 products, backward 5, of 2·T²·D/2 each), through
//!   cuDNN (where installed) and through our own kernels (`"backend"` says which ran);
//! - a GPT-2 training step (default 124M: 12 layers, 12 heads, 768 wide, T 1024, vocab 50304,
//!   AdamW, gradient clipping, no dropout) in each of `--modes` (fp32, tf32, bf16, fp16):
//!   tokens/s (median of the timed steps) and peak GPU memory; `--recompute` turns on per-block
//!   activation checkpointing, `--no-cudnn` keeps attention on our own kernels, `--gelu erf`
//!   uses the exact GELU instead of GPT-2's tanh form (which runs inside the MLP's GEMMs),
//!   `--clip-pass` clips the gradients in a pass of their own instead of inside AdamW;
//! - the optimizer step alone (`--only adamw`): the fused AdamW over the same model's
//!   parameters after a bf16 step (f32 masters, moments and gradients, bf16 copies, clipping's
//!   coefficient read on the device), its milliseconds and the bytes it moves per second, and
//!   clipping's coefficient (the gradients' norm), next to a device-to-device copy of 1 GiB (read + write) as the card's reachable bandwidth.
//!
//! Build with `cargo build --release --features cuda --example gpu_bench`; run as
//! `gpu_bench [--steps N] [--batch B] [--layers L --heads H --embd C] [--modes fp32,tf32,bf16]
//! [--recompute] [--no-cudnn] [--gelu tanh|erf] [--clip-pass] [--only matmul|attention|gpt|adamw]`.

use std::time::Instant;

use rustygradients::models::{Gpt, GptConfig};
use rustygradients::nn::{Activation, Module};
use rustygradients::optim::{clip_grad_coef, clip_grad_norm_tensor, AdamW, AdamWConfig, Optimizer};
use rustygradients::{
    cudnn_attention_calls, manual_seed, set_cudnn_enabled, set_matmul_allow_tf32, DType, Device,
    Precision, Result, Tensor,
};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn arg_str(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// Which attention ran since `cudnn_attention_calls()` was `calls`: cuDNN's or ours.
fn attention_backend(calls: usize) -> &'static str {
    if cudnn_attention_calls() > calls {
        "cudnn"
    } else {
        "flash"
    }
}

fn attention(dev: Device) -> Result<()> {
    let (b, h) = (8, 12);
    for t in [1024, 4096] {
        for d in [64, 128] {
            manual_seed(0);
            let mk = || -> Result<Tensor> {
                Tensor::randn([b, h, t, d], DType::BF16, dev)?.requires_grad_(true)
            };
            let (q, k, v) = (mk()?, mk()?, mk()?);
            // The output's gradient in the output's own memory layout ((B, T, H, D)-major, as
            // a model's next reshape hands it back), so no layout copy is timed.
            let go = Tensor::randn([b, t, h, d], DType::BF16, dev)?.transpose(1, 2)?;
            // cuDNN's fused attention (where installed), then our own kernels.
            for cudnn in [true, false] {
                set_cudnn_enabled(cudnn);
                let calls = cudnn_attention_calls();
                let secs = time(dev, 3, 20, || {
                    let out = q.scaled_dot_product_attention(&k, &v, true, 0.0)?;
                    out.backward_with(&go)
                })?;
                // The forward alone (inputs that need gradients, so it saves what the backward
                // reads).
                let fwd_secs = time(dev, 3, 20, || {
                    q.scaled_dot_product_attention(&k, &v, true, 0.0)?;
                    Ok(())
                })?;
                let backend = attention_backend(calls);
                // Causal: half of the 2·T²·D multiply-adds of each of the 7 products.
                let flops = 7.0 * 2.0 * (b * h) as f64 * (t * t * d) as f64 / 2.0;
                println!(
                    "{{\"bench\":\"attention\",\"mode\":\"bf16\",\"backend\":\"{backend}\",\"shape\":\"T{t} D{d}\",\"ms\":{:.4},\"fwd_ms\":{:.4},\"tflops\":{:.2}}}",
                    secs * 1e3,
                    fwd_secs * 1e3,
                    flops / secs / 1e12
                );
                if backend == "flash" && cudnn {
                    // No cuDNN here: the second pass would time the same kernels again.
                    break;
                }
            }
            set_cudnn_enabled(true);
        }
    }
    Ok(())
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

fn gpt_config() -> GptConfig {
    GptConfig {
        vocab_size: 50304,
        block_size: 1024,
        n_layer: arg("--layers", 12),
        n_head: arg("--heads", 12),
        n_embd: arg("--embd", 768),
        dropout: 0.0,
        activation: match arg_str("--gelu").as_deref() {
            Some("erf") => Activation::Gelu,
            _ => Activation::GeluTanh,
        },
    }
}

/// The fused AdamW step over `gpt_config()`'s parameters after one bf16 training step (so the
/// gradients and the bf16 weight copies exist), against a 1 GiB device copy.
fn adamw(dev: Device) -> Result<()> {
    manual_seed(1337);
    let model = Gpt::new(gpt_config(), DType::F32, dev)?;
    let mut opt = AdamW::new(&model, AdamWConfig::default().with_weight_decay(0.1));
    let params = model.parameters();
    let x = Tensor::randint(0, 50257, [4, 1024], dev)?;
    {
        let _p = Precision::Bf16.enter();
        model.loss(&x, &x)?.backward()?;
    }
    let (_, coef) = clip_grad_coef(&params, 1.0)?.expect("the model has gradients");
    let secs = time(dev, 3, 20, || opt.step_scaled(&coef))?;
    // Clipping's coefficient: the gradients' sum of squares and a few scalar kernels.
    let clip = time(dev, 3, 20, || clip_grad_coef(&params, 1.0).map(|_| ()))?;
    let n: usize = params.iter().map(|p| p.elem_count()).sum();
    // Read: parameter, gradient, two moments (f32); written: parameter, moments, bf16 copy.
    let bytes = (n * (4 * 4 + 3 * 4 + 2)) as f64;
    let src = Tensor::zeros([1 << 28], DType::F32, dev)?;
    let dst = Tensor::zeros([1 << 28], DType::F32, dev)?;
    let copy = time(dev, 3, 20, || dst.copy_(&src))?;
    println!(
        "{{\"bench\":\"adamw\",\"params\":{n},\"ms\":{:.4},\"gb_per_s\":{:.1},\"clip_coef_ms\":{:.4},\"copy_1gib_ms\":{:.4},\"copy_gb_per_s\":{:.1}}}",
        secs * 1e3,
        bytes / secs / 1e9,
        clip * 1e3,
        copy * 1e3,
        2.0 * (4usize << 28) as f64 / copy / 1e9
    );
    Ok(())
}

fn gpt2(dev: Device, batch: usize, steps: usize) -> Result<()> {
    let cfg = gpt_config();
    let recompute = flag("--recompute");
    let clip_pass = flag("--clip-pass");
    // `--no-cudnn`: attention on our own kernels even where cuDNN is installed.
    set_cudnn_enabled(!flag("--no-cudnn"));
    let modes = arg_str("--modes").unwrap_or_else(|| "fp32,tf32,bf16".into());
    for mode in modes.split(',') {
        let precision: Precision = mode.parse()?;
        manual_seed(1337);
        let mut model = Gpt::new(cfg.clone(), DType::F32, dev)?;
        model.activation_checkpointing = recompute;
        let mut opt = AdamW::new(&model, AdamWConfig::default().with_weight_decay(0.1));
        let params = model.parameters();
        let x = Tensor::randint(0, 50257, [batch, 1024], dev)?;
        let y = Tensor::randint(0, 50257, [batch, 1024], dev)?;
        // Returns the loss and the seconds the host took to queue the step (everything before
        // the loss is read back, the step's only synchronisation).
        let mut step = || -> Result<(f64, f64)> {
            let t = Instant::now();
            opt.zero_grad();
            let loss = {
                let _p = precision.enter();
                let loss = model.loss(&x, &y)?;
                loss.backward()?;
                loss
            };
            // Clipping's coefficient applied inside the fused AdamW, or (`--clip-pass`) by a
            // pass over the gradients first.
            if clip_pass {
                clip_grad_norm_tensor(&params, 1.0)?;
                opt.step()?;
            } else if let Some((_, coef)) = clip_grad_coef(&params, 1.0)? {
                opt.step_scaled(&coef)?;
            }
            let queued = t.elapsed().as_secs_f64();
            Ok((loss.item()?, queued))
        };
        for _ in 0..3 {
            step()?;
        }
        dev.reset_peak_memory()?;
        let calls = cudnn_attention_calls();
        let (mut times, mut host) = (Vec::with_capacity(steps), Vec::with_capacity(steps));
        let mut last = 0.0;
        for _ in 0..steps {
            let t = Instant::now();
            let (loss, queued) = step()?;
            last = loss;
            times.push(t.elapsed().as_secs_f64());
            host.push(queued);
        }
        let secs = median(times);
        let attention = attention_backend(calls);
        // Launches are off the critical path when the host queues a step in less time than
        // the GPU runs it.
        let host_ms = median(host) * 1e3;
        let stats = dev.memory_stats()?.expect("a GPU reports memory");
        if let Some(report) = dev.profile_report()? {
            eprintln!("GPU time per kernel over {steps} {mode} steps:\n{report}");
        }
        let tokens = (batch * 1024) as f64 / secs;
        // Model FLOPs per token as the MFU figures count them: 6·N for the weights
        // plus 12·L·C·T for attention's two products; the dense bf16 peak of an H100/H200 SXM
        // is 989 TFLOP/s.
        let flops_per_token =
            6.0 * cfg.num_parameters() + 12.0 * (cfg.n_layer * cfg.n_embd * 1024) as f64;
        println!(
            "{{\"bench\":\"gpt2_step\",\"mode\":\"{mode}\",\"attention\":\"{attention}\",\"gelu\":\"{}\",\"shape\":\"L{} C{} B{batch}{}\",\"batch\":{batch},\"ms\":{:.2},\"host_ms\":{host_ms:.2},\"tokens_per_s\":{tokens:.0},\"mfu\":{:.4},\"peak_bytes\":{},\"loss\":{last:.4}}}",
            if cfg.activation == Activation::Gelu { "erf" } else { "tanh" },
            cfg.n_layer,
            cfg.n_embd,
            if recompute { " recompute" } else { "" },
            secs * 1e3,
            tokens * flops_per_token / 989e12,
            stats.peak
        );
        drop(opt);
        drop(model);
    }
    Ok(())
}

fn main() -> Result<()> {
    let dev = Device::Cuda(0);
    dev.synchronize()?;
    let which = arg_str("--only");
    let run = |what: &str| which.as_deref().is_none_or(|w| w == what);
    if run("matmul") {
        matmuls(dev)?;
    }
    if run("attention") {
        attention(dev)?;
    }
    if run("gpt") {
        gpt2(dev, arg("--batch", 8), arg("--steps", 10))?;
    }
    if which.as_deref() == Some("adamw") {
        adamw(dev)?;
    }
    Ok(())
}
