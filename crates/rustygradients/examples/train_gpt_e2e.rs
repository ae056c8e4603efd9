//! A character-level GPT trained end to end through the library API: tokenize, batch, train
//! with AdamW + warmup/cosine + clipping, evaluate, save, and sample.
//!
//! `cargo run --release --example train_gpt_e2e [-- TEXT_FILE [STEPS]]` (default: this
//! project's README, 300 steps).
use rand::SeedableRng;
use rustygradients::models::{sampling, Gpt, GptConfig, SamplingConfig, Split, TextDataset};
use rustygradients::nn::Module;
use rustygradients::optim::{
    clip_grad_norm, decay_groups, Adam, AdamConfig, LrSchedule, Optimizer,
};
use rustygradients::tokenizers::CharTokenizer;
use rustygradients::{io, manual_seed, no_grad, DType, Device, Result, Tensor};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let text = match args.get(1) {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| rustygradients::Error::io(path, e))?
        }
        None => include_str!("../../../README.md").to_string(),
    };
    let steps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(300);
    let dev = Device::Cpu;

    println!("=== RustyGradients end-to-end GPT training ===");
    let tok = CharTokenizer::from_text(&text);
    println!(
        "text: {} characters, vocabulary {}",
        text.chars().count(),
        tok.vocab_size()
    );
    let mut data = TextDataset::new(tok.encode(&text)?, 1337);

    manual_seed(1337);
    let cfg = GptConfig {
        vocab_size: tok.vocab_size(),
        block_size: 64,
        n_layer: 4,
        n_head: 4,
        n_embd: 128,
        dropout: 0.0,
        activation: Default::default(),
    };
    let model = Gpt::new(cfg, DType::F32, dev)?;
    println!(
        "model: 4 layers, 128 dim, {} parameters",
        model.num_parameters()
    );

    let mut opt = Adam::new(
        decay_groups(&model, 0.1),
        AdamConfig {
            beta2: 0.99,
            ..AdamConfig::adamw(1e-3)
        },
    );
    let schedule = LrSchedule::WarmupCosine {
        max_lr: 1e-3,
        min_lr: 1e-4,
        warmup: steps / 20,
        decay_iters: steps,
    };
    let start = std::time::Instant::now();
    for step in 1..=steps {
        opt.set_learning_rate(schedule.lr_at(step - 1));
        let (x, y) = data.batch(Split::Train, 12, 64, dev)?;
        opt.zero_grad();
        let loss = model.loss(&x, &y)?;
        loss.backward()?;
        clip_grad_norm(&opt.params(), 1.0)?;
        opt.step()?;
        if step % (steps / 10).max(1) == 0 {
            let rate = step as f64 / start.elapsed().as_secs_f64();
            println!(
                "[{step:>5}/{steps}] loss {:.4} | {rate:.2} steps/s",
                loss.item()?
            );
        }
    }

    model.eval();
    let (x, y) = data.batch(Split::Val, 12, 64, dev)?;
    println!(
        "validation loss: {:.4}",
        no_grad(|| model.loss(&x, &y))?.item()?
    );

    let dir = std::path::Path::new("checkpoints/gpt_training");
    std::fs::create_dir_all(dir).map_err(|e| rustygradients::Error::io(dir, e))?;
    let path = dir.join(format!("model_step_{steps:06}.safetensors"));
    io::save_safetensors(&path, &model.named_parameters(), None)?;
    println!("saved {}", path.display());

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut ids = tok.encode("\n")?;
    for _ in 0..200 {
        let ctx: Vec<i64> = ids[ids.len().saturating_sub(64)..]
            .iter()
            .map(|&i| i as i64)
            .collect();
        let n = ctx.len();
        let logits = no_grad(|| model.logits(&Tensor::from_vec(ctx, [1, n], dev)?))?;
        let last = logits.narrow(1, n - 1, 1)?.flatten_all()?.to_vec::<f32>()?;
        ids.push(sampling::sample(&last, &SamplingConfig::default(), &mut rng)? as u32);
    }
    println!("--- sample ---\n{}", tok.decode(&ids)?);
    Ok(())
}
