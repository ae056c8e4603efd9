//! `rustygradients train`: a character-level GPT trained with AdamW, warmup + cosine decay and
//! gradient clipping, with a progress bar, periodic evaluation, a metrics log, a loss plot, and
//! the model saved at every evaluation and on Ctrl-C.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rustygradients_core::{manual_seed, no_grad, DType};
use rustygradients_io::CheckpointManager;
use rustygradients_models::{Gpt, GptConfig, Split, TextDataset};
use rustygradients_nn::optim::{
    clip_grad_norm, decay_groups, Adam, AdamConfig, LrSchedule, Optimizer,
};
use rustygradients_nn::Module;
use rustygradients_tokenizers::CharTokenizer;
use serde::{Deserialize, Serialize};

use crate::metrics::{MetricsLog, Record};
use crate::{corpus, model_dir, plot, run_state};

#[derive(clap::Args, Serialize, Deserialize, Clone, Debug)]
pub struct TrainArgs {
    /// Text file to train on; without it, the corpus built into the binary.
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long, default_value_t = 4)]
    pub n_layer: usize,
    #[arg(long, default_value_t = 4)]
    pub n_head: usize,
    #[arg(long, default_value_t = 128)]
    pub n_embd: usize,
    #[arg(long, default_value_t = 64)]
    pub block_size: usize,
    #[arg(long, default_value_t = 12)]
    pub batch_size: usize,
    /// Optimizer steps.
    #[arg(long, default_value_t = 2000)]
    pub steps: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Learning rate at the end of the cosine decay.
    #[arg(long, default_value_t = 1e-4)]
    pub min_lr: f64,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 0.9)]
    pub beta1: f64,
    #[arg(long, default_value_t = 0.99)]
    pub beta2: f64,
    /// Clip gradients to this global norm (0 disables).
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f64,
    #[arg(long, default_value_t = 250)]
    pub eval_interval: usize,
    /// Batches per split at each evaluation.
    #[arg(long, default_value_t = 20)]
    pub eval_iters: usize,
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    /// Output directory (model, tokenizer, metrics.jsonl, loss.png).
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Characters to sample at the end (0 for none).
    #[arg(long, default_value_t = 300)]
    pub sample_chars: usize,
    /// Checkpoints kept in `<out>/checkpoints` (the newest N, plus the best by val loss).
    #[arg(long, default_value_t = 3)]
    pub keep_checkpoints: usize,
    /// Continue the run whose output directory this is, from its latest checkpoint, with its
    /// settings (the other flags are ignored); the result is bit-identical to an
    /// uninterrupted run on the same machine.
    #[arg(long, value_name = "DIR")]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
    /// Stop after this step as if interrupted (a checkpoint is saved); `--resume` continues.
    #[arg(long)]
    #[serde(skip)]
    pub stop_at: Option<usize>,
}

/// Mean loss over `iters` batches of each split, in eval mode without recording the graph.
fn evaluate(
    model: &Gpt,
    data: &mut TextDataset,
    a: &TrainArgs,
    step: usize,
    device: rustygradients_core::Device,
) -> anyhow::Result<(f64, f64)> {
    // Evaluation batches come from a generator of their own (seeded by the step), so evaluating
    // or not — an extra evaluation when a run is stopped, say — never shifts training batches.
    let train_rng = data.rng_state();
    data.set_rng_state(ChaCha8Rng::seed_from_u64(
        a.seed ^ (step as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    ));
    let r = evaluate_batches(model, data, a, device);
    data.set_rng_state(train_rng);
    r
}

fn evaluate_batches(
    model: &Gpt,
    data: &mut TextDataset,
    a: &TrainArgs,
    device: rustygradients_core::Device,
) -> anyhow::Result<(f64, f64)> {
    model.eval();
    let mut mean = |split| -> anyhow::Result<f64> {
        let mut total = 0.0;
        for _ in 0..a.eval_iters {
            let (x, y) = data.batch(split, a.batch_size, a.block_size, device)?;
            total += no_grad(|| model.loss(&x, &y))?.item()?;
        }
        Ok(total / a.eval_iters.max(1) as f64)
    };
    let r = (mean(Split::Train)?, mean(Split::Val)?);
    model.train();
    Ok(r)
}

/// Peak resident memory of this process in MiB (Linux), for the benchmark record.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    // Resuming: the run's own settings, read from its latest checkpoint.
    let resumed = match &args.resume {
        Some(dir) => {
            let manager = CheckpointManager::new(dir.join("checkpoints"), args.keep_checkpoints)?;
            let ck = manager
                .load_latest(rustygradients_core::Device::Cpu)
                .with_context(|| format!("resuming from {}", dir.display()))?;
            let state: run_state::RunState = serde_json::from_value(ck.info.state.clone())
                .with_context(|| format!("reading the run state of {}", dir.display()))?;
            Some((ck, state))
        }
        None => None,
    };
    let a = match &resumed {
        Some((_, state)) => TrainArgs {
            out: args.resume.clone().expect("resumed from this directory"),
            resume: args.resume.clone(),
            stop_at: args.stop_at,
            ..state.args.clone()
        },
        None => args,
    };
    let device = crate::parse_device(&a.device)?;
    let text = match &a.data {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading training data {}", p.display()))?,
        None => corpus::builtin(),
    };
    let tok = CharTokenizer::from_text(&text);
    let mut data = TextDataset::new(tok.encode(&text)?, a.seed);
    println!(
        "data: {} ({} chars, vocab {}), train {} / val {} tokens",
        a.data
            .as_ref()
            .map_or("built-in corpus".into(), |p| p.display().to_string()),
        text.chars().count(),
        tok.vocab_size(),
        data.len(Split::Train),
        data.len(Split::Val)
    );
    manual_seed(a.seed);
    let cfg = GptConfig {
        vocab_size: tok.vocab_size(),
        block_size: a.block_size,
        n_layer: a.n_layer,
        n_head: a.n_head,
        n_embd: a.n_embd,
        dropout: a.dropout,
    };
    let model = Gpt::new(cfg, DType::F32, device)?;
    println!(
        "model: {} layers, {} heads, {} embd, block {} — {} parameters; device {device}",
        a.n_layer,
        a.n_head,
        a.n_embd,
        a.block_size,
        model.num_parameters()
    );
    let mut opt = Adam::new(
        decay_groups(&model, a.weight_decay),
        AdamConfig {
            lr: a.lr,
            beta1: a.beta1,
            beta2: a.beta2,
            eps: 1e-8,
            decoupled_weight_decay: true,
        },
    );
    let schedule = LrSchedule::WarmupCosine {
        max_lr: a.lr,
        min_lr: a.min_lr,
        warmup: a.warmup,
        decay_iters: a.steps,
    };
    let settings = serde_json::to_value(&a)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let manager = CheckpointManager::new(a.out.join("checkpoints"), a.keep_checkpoints)?;
    let mut records: Vec<Record> = Vec::new();
    let mut train_secs = 0f64;
    let mut step = 0;
    if let Some((ck, state)) = &resumed {
        if state.tokenizer != tok {
            anyhow::bail!(
                "the training data no longer gives the checkpoint's vocabulary; cannot resume"
            );
        }
        train_secs = run_state::restore(ck, state, &model, &mut opt, &mut data)?;
        step = ck.info.step as usize;
        records = crate::metrics::read_until(&a.out.join("metrics.jsonl"), step)?;
        println!("resumed from step {step} ({})", manager.dir().display());
    }
    let mut log = MetricsLog::create(&a.out.join("metrics.jsonl"), false)?;
    for r in &records {
        log.write(r)?;
    }
    let resumed_at = resumed.as_ref().map(|_| step);

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }

    let pb = ProgressBar::new(a.steps as u64);
    pb.set_style(
        ProgressStyle::with_template(
            "{bar:30.cyan/blue} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
        )?
        .progress_chars("=> "),
    );
    let tokens_per_step = (a.batch_size * a.block_size) as f64;
    let started = Instant::now();
    let mut last_eval = records
        .iter()
        .rev()
        .find_map(|r| Some((r.eval_train_loss?, r.val_loss?)))
        .unwrap_or((f64::NAN, f64::NAN));
    pb.set_position(step as u64);
    loop {
        let done =
            step >= a.steps || stop.load(Ordering::SeqCst) || a.stop_at.is_some_and(|s| step >= s);
        // The checkpoint a run resumes from was saved right after this step's evaluation.
        let evaluated = resumed_at == Some(step);
        if (step % a.eval_interval.max(1) == 0 || done) && !evaluated {
            let (tr, va) = evaluate(&model, &mut data, &a, step, device)?;
            last_eval = (tr, va);
            let line = format!("step {step}: train loss {tr:.4}, val loss {va:.4}");
            // A hidden bar (output not a terminal) drops its printlns; print plainly then.
            if pb.is_hidden() {
                println!("{line}");
            } else {
                pb.println(line);
            }
            let rec = Record {
                step,
                train_loss: records.last().map_or(tr, |r| r.train_loss),
                val_loss: Some(va),
                eval_train_loss: Some(tr),
                lr: schedule.lr_at(step),
                tokens_per_s: step as f64 * tokens_per_step / train_secs.max(1e-9),
                time_s: started.elapsed().as_secs_f64(),
            };
            log.write(&rec)?;
            records.push(rec);
            model_dir::save(&a.out, &model, &tok, settings.clone(), step)?;
            plot::loss_curve(&a.out.join("loss.png"), &records)?;
            let metrics = [("train_loss".to_string(), tr), ("val_loss".to_string(), va)];
            run_state::save(
                &manager,
                &a,
                &model,
                &opt,
                &tok,
                &data,
                step,
                metrics.into_iter().collect(),
                train_secs,
            )?;
        }
        if done {
            break;
        }
        let t0 = Instant::now();
        let lr = schedule.lr_at(step);
        opt.set_learning_rate(lr);
        let (x, y) = data.batch(Split::Train, a.batch_size, a.block_size, device)?;
        opt.zero_grad();
        let loss = model.loss(&x, &y)?;
        loss.backward()?;
        if a.grad_clip > 0.0 {
            clip_grad_norm(&opt.params(), a.grad_clip)?;
        }
        opt.step()?;
        let loss = loss.item()?;
        train_secs += t0.elapsed().as_secs_f64();
        step += 1;
        let tps = step as f64 * tokens_per_step / train_secs;
        pb.set_position(step as u64);
        pb.set_message(format!("loss {loss:.4} | lr {lr:.2e} | {tps:.0} tok/s"));
        let rec = Record {
            step,
            train_loss: loss,
            val_loss: None,
            eval_train_loss: None,
            lr,
            tokens_per_s: tps,
            time_s: started.elapsed().as_secs_f64(),
        };
        log.write(&rec)?;
        records.push(rec);
    }
    pb.finish_and_clear();
    if stop.load(Ordering::SeqCst) {
        println!(
            "interrupted at step {step}: model saved to {}",
            a.out.display()
        );
    }
    let tps = step as f64 * tokens_per_step / train_secs.max(1e-9);
    println!("done: {step} steps in {train_secs:.1}s of training, {tps:.0} tokens/s; final train loss {:.4}, val loss {:.4}", last_eval.0, last_eval.1);
    println!(
        "saved model, tokenizer, metrics.jsonl and loss.png to {}",
        a.out.display()
    );
    let result = serde_json::json!({
        "impl": "rustygradients", "final_train_loss": last_eval.0, "final_val_loss": last_eval.1,
        "tokens_per_s": tps, "train_seconds": train_secs, "peak_rss_mb": peak_rss_mib(),
        "steps": step, "params": model.num_parameters(), "threads": rayon_threads(),
    });
    println!("RESULT {result}");
    if a.sample_chars > 0 && !stop.load(Ordering::SeqCst) {
        println!("--- sample ---");
        crate::generate::stream(
            &model,
            &tok,
            "\n",
            a.sample_chars,
            &Default::default(),
            a.seed,
            device,
        )?;
        println!();
    }
    Ok(())
}

fn rayon_threads() -> usize {
    rayon::current_num_threads()
}
