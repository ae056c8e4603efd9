//! Where one baby-GPT training step spends its time: forward, backward, clipping, optimizer.
//! Reports the median of each phase over the timed steps (robust to a noisy machine).
//! `cargo run --release --example step_phases [steps]`
use rustygradients::models::{Gpt, GptConfig, Split, TextDataset};
use rustygradients::optim::{clip_grad_norm, decay_groups, Adam, AdamConfig, Optimizer};
use rustygradients::{manual_seed, DType, Device, Result};
use std::time::Instant;

#[path = "support/training_env.rs"]
mod training_env;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    training_env::run_like_training(run)
}

fn run() -> Result<()> {
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
        activation: Default::default(),
    };
    let model = Gpt::new(cfg, DType::F32, Device::Cpu)?;
    let mut opt = Adam::new(decay_groups(&model, 0.1), AdamConfig::adamw(1e-3));
    let steps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let mut phases: [Vec<f64>; 5] = Default::default();
    for step in 0..steps + 5 {
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
            for (acc, d) in phases
                .iter_mut()
                .zip([t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0])
            {
                acc.push(d.as_secs_f64() * 1e3);
            }
        }
    }
    let [f, b, c, o, t] = phases.map(median);
    println!(
        "median ms per step: forward {f:.1}, backward {b:.1}, clip {c:.1}, optimizer {o:.1}; total {t:.1} ({:.0} tokens/s)",
        12.0 * 64.0 / t * 1e3
    );
    Ok(())
}
