//! GPT training on a GPU against the CPU: the same model, data and optimizer on both devices
//! must give the same losses, and a long run must not grow GPU memory. Skipped (with one line)
//! without a CUDA device; run on the GPU machine with the `cuda` feature.

use rustygradients_core::{manual_seed, DType, Device, Result};
use rustygradients_models::{Gpt, GptConfig, Split, TextDataset};
use rustygradients_nn::optim::{clip_grad_norm, AdamW, AdamWConfig, Optimizer};
use rustygradients_nn::Module;

/// Both tests seed and draw from the one process-wide generator: they must not interleave.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn gpu() -> Option<Device> {
    let d = Device::Cuda(0);
    if d.is_available() {
        Some(d)
    } else {
        eprintln!("skipping: no CUDA device (build with --features cuda and run on a GPU machine)");
        None
    }
}

/// A fixed text as token ids over its own byte alphabet.
fn tokens() -> (Vec<u32>, usize) {
    let text = include_str!("../src/gpt.rs").repeat(4);
    let mut alphabet: Vec<u8> = text.bytes().collect();
    alphabet.sort_unstable();
    alphabet.dedup();
    let ids = text
        .bytes()
        .map(|b| alphabet.binary_search(&b).expect("in the alphabet") as u32)
        .collect();
    (ids, alphabet.len())
}

/// The baby GPT of nanoGPT's CPU example (4 layers, 4 heads, 128 wide, block 64), no dropout
/// (the two devices draw different random numbers).
fn baby(vocab_size: usize) -> GptConfig {
    GptConfig {
        vocab_size,
        block_size: 64,
        n_layer: 4,
        n_head: 4,
        n_embd: 128,
        dropout: 0.0,
        activation: Default::default(),
    }
}

/// Losses of `steps` AdamW steps (lr 1e-3, weight decay 0.1, clipping at 1) from seed 1337.
fn train(device: Device, steps: usize) -> Result<Vec<f64>> {
    let (ids, vocab) = tokens();
    manual_seed(1337);
    let model = Gpt::new(baby(vocab), DType::F32, device)?;
    let mut data = TextDataset::new(ids, 1337);
    let mut opt = AdamW::new(&model, AdamWConfig::default().with_weight_decay(0.1));
    let params = model.parameters();
    let mut losses = Vec::with_capacity(steps);
    for _ in 0..steps {
        let (x, y) = data.batch(Split::Train, 12, 64, device)?;
        opt.zero_grad();
        let loss = model.loss(&x, &y)?;
        loss.backward()?;
        clip_grad_norm(&params, 1.0)?;
        opt.step()?;
        losses.push(loss.item()?);
    }
    Ok(losses)
}

#[test]
fn baby_gpt_first_50_steps_on_the_gpu_match_the_cpu() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    let _serial = serial();
    let cpu = train(Device::Cpu, 50)?;
    let gpu = train(dev, 50)?;
    let mut worst = 0.0f64;
    for (i, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
        let rel = (c - g).abs() / c.abs().max(1.0);
        worst = worst.max(rel);
        assert!(
            rel <= 1e-4,
            "step {i}: CPU loss {c}, GPU loss {g} (relative difference {rel:.2e})"
        );
    }
    eprintln!(
        "50 steps: CPU {:.6} -> {:.6}, GPU {:.6} -> {:.6}, largest relative difference {worst:.2e}",
        cpu[0], cpu[49], gpu[0], gpu[49]
    );
    assert!(cpu[49] < cpu[0] - 0.5, "the loss should fall: {cpu:?}");
    Ok(())
}

#[test]
fn a_thousand_gpu_training_steps_do_not_grow_memory() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    let _serial = serial();
    let (ids, vocab) = tokens();
    manual_seed(7);
    let model = Gpt::new(baby(vocab), DType::F32, dev)?;
    let mut data = TextDataset::new(ids, 7);
    let mut opt = AdamW::new(&model, AdamWConfig::default());
    let mut after_warmup = None;
    for step in 0..1000 {
        let (x, y) = data.batch(Split::Train, 12, 64, dev)?;
        opt.zero_grad();
        let loss = model.loss(&x, &y)?;
        loss.backward()?;
        opt.step()?;
        let l = loss.item()?;
        assert!(l.is_finite(), "step {step}: loss {l}");
        if step == 10 {
            after_warmup = dev.memory_stats()?;
        }
    }
    dev.synchronize()?;
    let (start, end) = (
        after_warmup.expect("a GPU has stats"),
        dev.memory_stats()?.expect("a GPU has stats"),
    );
    eprintln!(
        "GPU memory in use after step 10: {} bytes, after step 1000: {} bytes; peak {} bytes",
        start.in_use, end.in_use, end.peak
    );
    assert!(
        end.in_use <= start.in_use,
        "memory grew between step 10 and step 1000: {} -> {} bytes",
        start.in_use,
        end.in_use
    );
    Ok(())
}
