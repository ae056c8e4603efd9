//! Where one baby-GPT training step spends its time: forward, backward, clipping, optimizer.
//! `cargo run --release --example step_phases`
use rustygradients::models::{Gpt, GptConfig, Split, TextDataset};
use rustygradients::optim::{clip_grad_norm, decay_groups, Adam, AdamConfig, Optimizer};
use rustygradients::{manual_seed, DType, Device, Result};
use std::time::Instant;

fn main() -> Result<()> {
    manual_seed(0);
    let tokens: Vec<u32> = (0..200_000u32).map(|i| (i * 7919 + i / 13) % 84).collect();
    let mut data = TextDataset::new(tokens, 0);
    let cfg = GptConfig {
        vocab_size: 84,
        block_size: 64,
        n_layer: 4,
        n_head: 4,
        n_embd: 128,
        dropout: 0.0,
    };
    let model = Gpt::new(cfg, DType::F32, Device::Cpu)?;
    let mut opt = Adam::new(decay_groups(&model, 0.1), AdamConfig::adamw(1e-3));
    let mut t = [0f64; 4];
    let steps = 40;
    for step in 0..steps {
        let (x, y) = data.batch(Split::Train, 12, 64, Device::Cpu)?;
        opt.zero_grad();
        let t0 = Instant::now();
        let loss = model.loss(&x, &y)?;
        let t1 = Instant::now();
        loss.backward()?;
        let t2 = Instant::now();
        clip_grad_norm(&opt.params(), 1.0)?;
        let t3 = Instant::now();
        opt.step()?;
        let t4 = Instant::now();
        if step >= 5 {
            for (acc, d) in t.iter_mut().zip([t1 - t0, t2 - t1, t3 - t2, t4 - t3]) {
                *acc += d.as_secs_f64() * 1e3 / (steps - 5) as f64;
            }
        }
    }
    println!(
        "ms per step: forward {:.1}, backward {:.1}, clip {:.1}, optimizer {:.1}; total {:.1}",
        t[0],
        t[1],
        t[2],
        t[3],
        t.iter().sum::<f64>()
    );
    Ok(())
}
