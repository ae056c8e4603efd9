//! `rustygradients train`: a GPT trained on characters (or on a BPE tokenizer's tokens, with
//! `--tokenizer`) with AdamW, warmup + cosine decay and gradient clipping, with a progress bar,
//! periodic evaluation, a metrics log, a loss plot, and the model saved at every evaluation and
//! on Ctrl-C or SIGTERM.
//!
//! Nothing a run writes can mislead: a step whose loss or gradient norm is not finite skips its
//! update (and enough of them in a row stop the run), a model or checkpoint is written only
//! when every value is finite, and the output folder belongs to one run at a time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rustygradients_core::{manual_seed, no_grad, DType, Device, Precision, Tensor};
use rustygradients_io::metrics_log::{self, MetricsLog, Record};
use rustygradients_io::CheckpointManager;
use rustygradients_models::{Gpt, GptConfig, Split, TextDataset};
use rustygradients_nn::optim::{
    clip_grad_coef, grad_norm_tensor, AdamW, AdamWConfig, GradScaler, LrSchedule, Optimizer,
};
use rustygradients_nn::{Activation, Module};
use rustygradients_tokenizers::{CharTokenizer, Tokenizer};

use crate::run_dir::{RunDir, CHECKPOINTS};
pub use crate::train_args::TrainArgs;
use crate::{corpus, memory, model_dir, plot, run_state};

/// Mean loss over `iters` batches of each split, in eval mode without recording the graph.
fn evaluate(
    model: &Gpt,
    data: &mut TextDataset,
    a: &TrainArgs,
    step: usize,
    device: Device,
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
    device: Device,
) -> anyhow::Result<(f64, f64)> {
    model.eval();
    let _precision = a.precision.unwrap_or_default().enter_on(device);
    let mut mean = |split| -> anyhow::Result<f64> {
        let mut total = 0.0;
        for _ in 0..a.eval_iters {
            let (x, y) = data.batch(split, a.batch_size, a.block_size, device)?;
            total += no_grad(|| model.loss(&x, &y))?.item()?;
        }
        Ok(total / a.eval_iters as f64)
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

/// The checkpoint and run state a `--resume` continues from, after the folder is locked.
fn resume_point(
    dir: &std::path::Path,
    stop_at: Option<usize>,
) -> anyhow::Result<(
    RunDir,
    TrainArgs,
    rustygradients_io::Checkpoint,
    run_state::RunState,
)> {
    let run_dir = RunDir::resume(dir)?;
    let manager = CheckpointManager::new(dir.join(CHECKPOINTS), 1)?;
    let ck = manager
        .load_latest(Device::Cpu)
        .with_context(|| format!("resuming from {}", dir.display()))?;
    for (step, why) in &ck.skipped {
        say!("checkpoint of step {step} is not usable, set aside as *.corrupt: {why}");
        manager.set_aside(*step)?;
    }
    let state: run_state::RunState = serde_json::from_value(ck.info.state.clone())
        .with_context(|| format!("reading the run state of {}", dir.display()))?;
    let a = TrainArgs {
        out: dir.to_path_buf(),
        resume: Some(dir.to_path_buf()),
        stop_at,
        overwrite: false,
        ..state.args.clone()
    };
    Ok((run_dir, a, ck, state))
}

fn model_config(a: &TrainArgs, vocab_size: usize) -> GptConfig {
    GptConfig {
        vocab_size,
        block_size: a.block_size,
        n_layer: a.n_layer,
        n_head: a.n_head,
        n_embd: a.n_embd,
        dropout: a.dropout,
        activation: match a.activation.as_str() {
            "gelu_tanh" => Activation::GeluTanh,
            _ => Activation::Gelu,
        },
    }
}

/// The run's tokenizer: a resumed run's own (a `--tokenizer` given with `--resume` must be that
/// one, and a character vocabulary must still be the data's), else the `--tokenizer` file, else
/// the characters of `text`.
fn run_tokenizer(
    a: &TrainArgs,
    text: &str,
    saved: Option<&Tokenizer>,
    given: Option<&std::path::Path>,
) -> anyhow::Result<Tokenizer> {
    let Some(saved) = saved else {
        return Ok(match &a.tokenizer {
            Some(path) => Tokenizer::from_file(path).context("loading --tokenizer")?,
            None => Tokenizer::Char(CharTokenizer::from_text(text)),
        });
    };
    if let Some(path) = given {
        let tok = Tokenizer::from_file(path).context("loading --tokenizer")?;
        if tok != *saved {
            anyhow::bail!(
                "cannot resume {}: --tokenizer {} ({}, {} tokens) does not match the tokenizer \
                 the run was trained with ({}, {} tokens, kept in its checkpoint); resume \
                 without --tokenizer to use the run's own",
                a.out.display(),
                path.display(),
                tok.kind(),
                tok.vocab_size(),
                saved.kind(),
                saved.vocab_size()
            );
        }
    }
    if let Tokenizer::Char(chars) = saved {
        if *chars != CharTokenizer::from_text(text) {
            anyhow::bail!(
                "the training data no longer gives the checkpoint's vocabulary; cannot resume"
            );
        }
    }
    Ok(saved.clone())
}

const SHRINK: &str = "; use a smaller --n-embd, --n-layer, --block-size or --batch-size";

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    // Every setting is checked before a file is read or a folder made.
    args.validate()?;
    // With --resume the other flags are ignored, but a --tokenizer must be the run's own;
    // the precision and activation checkpointing may change (the checkpoint is f32 anyway).
    let given_tokenizer = args.resume.as_ref().and(args.tokenizer.clone());
    let (given_precision, given_scale, given_recompute) = (
        args.precision,
        args.loss_scale,
        args.activation_checkpointing,
    );
    let (run_dir, a, mut resumed) = match &args.resume {
        Some(dir) => {
            let (run_dir, mut a, ck, state) = resume_point(dir, args.stop_at)?;
            a.precision = given_precision.or(a.precision);
            a.loss_scale = given_scale.or(a.loss_scale);
            a.activation_checkpointing |= given_recompute;
            a.validate()
                .with_context(|| format!("the settings saved in {}", dir.display()))?;
            (Some(run_dir), a, Some((ck, state)))
        }
        None => (None, args, None),
    };
    let device = crate::parse_device(&a.device)?;
    let text = corpus::Text::load(a.data.as_deref())?;
    let text = text.as_str();
    // The model without its vocabulary-sized parts, and the tokens (4 bytes a character at
    // most): refused before the corpus is tokenized.
    memory::check(
        &model_config(&a, 1).memory_estimate(a.batch_size, true),
        4.0 * text.len() as f64,
        device,
        "this training run",
        SHRINK,
    )?;
    let saved_tokenizer = resumed.as_ref().map(|(_, state)| &state.tokenizer);
    let tok = run_tokenizer(&a, text, saved_tokenizer, given_tokenizer.as_deref())?;
    let ids = tok.encode(text)?;
    // A tokenizer.json whose ids have gaps could give ids past its vocabulary size.
    let vocab = tok.vocab_size();
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
        anyhow::bail!(
            "the tokenizer gives id {bad} for the training data, past its vocabulary of {vocab} \
             tokens"
        );
    }
    let mut data = TextDataset::new(ids, a.seed);
    let data_name = a
        .data
        .as_ref()
        .map_or("built-in corpus".into(), |p| p.display().to_string());
    data.check_block(a.block_size)
        .with_context(|| format!("training data {data_name}"))?;
    let cfg = model_config(&a, tok.vocab_size());
    cfg.validate()?;
    memory::check(
        &cfg.memory_estimate(a.batch_size, true),
        0.0,
        device,
        "this training run",
        SHRINK,
    )?;
    // Only now, with everything checked, is the output folder made (or taken over).
    let run_dir = match run_dir {
        Some(d) => d,
        None => RunDir::create(&a.out, a.overwrite)?,
    };
    let chars = text.chars().count();
    say!(
        "data: {data_name} ({chars} chars, {}vocab {}), train {} / val {} tokens",
        if matches!(tok, Tokenizer::Bpe(_)) {
            "BPE "
        } else {
            ""
        },
        tok.vocab_size(),
        data.len(Split::Train),
        data.len(Split::Val)
    );
    manual_seed(a.seed);
    let mut model = Gpt::new(cfg, DType::F32, device)?;
    model.activation_checkpointing = a.activation_checkpointing;
    let precision = a.precision.unwrap_or_default();
    let cpu_bf16 = match (device, precision) {
        _ if precision.bf16_products_on(device) => " (f32, matmuls in bf16 on AMX)",
        (Device::Cpu, Precision::Bf16) => " (autocast: this CPU has no AMX)",
        _ => "",
    };
    say!(
        "model: {} layers, {} heads, {} embd, block {} — {} parameters; device {device}, \
         precision {precision}{cpu_bf16}{}",
        a.n_layer,
        a.n_head,
        a.n_embd,
        a.block_size,
        model.num_parameters(),
        if a.activation_checkpointing {
            ", activation checkpointing"
        } else {
            ""
        }
    );
    let mut scaler = precision.needs_loss_scaling().then(|| {
        let mut s = GradScaler::new(a.loss_scale());
        s.growth_interval = a.loss_scale_growth_interval;
        s
    });
    let mut opt = AdamW::new(
        &model,
        AdamWConfig {
            lr: a.lr,
            beta1: a.beta1,
            beta2: a.beta2,
            eps: 1e-8,
            weight_decay: a.weight_decay,
        },
    );
    let schedule = LrSchedule::warmup_cosine(a.lr, a.min_lr, a.warmup, a.steps);
    let settings = serde_json::to_value(&a)?;
    let out = run_dir.path.clone();
    let manager = CheckpointManager::new(out.join(CHECKPOINTS), a.keep_checkpoints)?;
    let mut records: Vec<Record> = Vec::new();
    let mut train_secs = 0f64;
    let mut step = 0;
    if let Some((ck, state)) = &mut resumed {
        train_secs = run_state::restore(ck, state, &model, &mut opt, &mut data)?;
        // An fp16 run continues with its loss scale (unless --loss-scale sets a new one); one
        // switching to fp16 starts afresh.
        if let (Some(s), Some(saved), None) = (scaler.as_mut(), state.loss_scaler, given_scale) {
            *s = saved;
        }
        step = ck.info.step as usize;
        records = metrics_log::read_until(&out.join("metrics.jsonl"), step)?;
        say!("resumed from step {step} ({})", manager.dir().display());
    }
    let mut log = MetricsLog::start(&out.join("metrics.jsonl"), &records)?;
    let resumed_at = resumed.as_ref().map(|_| step);
    let mut last_saved = resumed_at;

    // Ctrl-C and SIGTERM both stop the run after the current step, saving it.
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C/SIGTERM handler")?;
    }

    let pb = ProgressBar::new(a.steps as u64);
    pb.set_style(
        ProgressStyle::with_template(
            "{bar:30.cyan/blue} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
        )?
        .progress_chars("=> "),
    );
    // A hidden bar (output not a terminal) drops its printlns; print plainly then.
    let report = |line: String| {
        if pb.is_hidden() {
            say!("{line}");
        } else {
            pb.println(line);
        }
    };
    let tokens_per_step = (a.batch_size * a.block_size) as f64;
    let started = Instant::now();
    let mut last_eval = records
        .iter()
        .rev()
        .find_map(|r| Some((r.eval_train_loss?, r.val_loss?)))
        .unwrap_or((f64::NAN, f64::NAN));
    // Steps in a row whose update was skipped for a non-finite loss or gradient norm.
    let mut bad_in_a_row = 0usize;
    let params = opt.params();
    pb.set_position(step as u64);
    let mut train = || -> anyhow::Result<()> {
        loop {
            let done = step >= a.steps
                || stop.load(Ordering::SeqCst)
                || a.stop_at.is_some_and(|s| step >= s);
            // The checkpoint a run resumes from was saved right after this step's evaluation.
            let evaluated = resumed_at == Some(step);
            if (step.is_multiple_of(a.eval_interval) || done) && !evaluated {
                let (tr, va) = evaluate(&model, &mut data, &a, step, device)?;
                last_eval = (tr, va);
                report(format!("step {step}: train loss {tr:.4}, val loss {va:.4}"));
                let rec = Record {
                    step,
                    train_loss: records.last().map_or(tr, |r| r.train_loss),
                    val_loss: Some(va),
                    eval_train_loss: Some(tr),
                    grad_norm: None,
                    skipped: false,
                    lr: schedule.lr_at(step),
                    tokens_per_s: step as f64 * tokens_per_step / train_secs.max(1e-9),
                    time_s: started.elapsed().as_secs_f64(),
                };
                log.write(&rec)?;
                records.push(rec);
                plot::loss_curve(&out.join("loss.png"), &records)?;
                let finite_model = model
                    .parameters()
                    .iter()
                    .map(|p| p.all_finite())
                    .collect::<rustygradients_core::Result<Vec<_>>>()?
                    .into_iter()
                    .all(|f| f);
                if !(tr.is_finite() && va.is_finite() && finite_model) {
                    pb.finish_and_clear();
                    anyhow::bail!(
                        "training diverged: at step {step} the evaluation gave train loss {tr}, val \
                         loss {va}{}; the model was not saved. {}",
                        if finite_model {
                            ""
                        } else {
                            " (the weights hold NaN or infinite values)"
                        },
                        ways_on(&out, last_saved)
                    );
                }
                model_dir::save(&out, &model, &tok, settings.clone(), step)?;
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
                    scaler.as_ref(),
                )?;
                last_saved = Some(step);
            }
            if done {
                break;
            }
            let t0 = Instant::now();
            let lr = schedule.lr_at(step);
            opt.set_learning_rate(lr);
            let (x, y) = data.batch(Split::Train, a.batch_size, a.block_size, device)?;
            opt.zero_grad();
            let loss = {
                let _precision = precision.enter_on(device);
                let loss = model.loss(&x, &y)?;
                match &scaler {
                    Some(s) => s.scale_loss(&loss)?.backward()?,
                    None => loss.backward()?,
                }
                loss
            };
            if let Some(s) = &scaler {
                s.unscale(&params)?;
            }
            // Clipping's coefficient goes into the update itself (no pass over the gradients).
            let (norm, coef) = if a.grad_clip > 0.0 {
                clip_grad_coef(&params, a.grad_clip)?.unzip()
            } else {
                (grad_norm_tensor(&params)?, None)
            };
            // The step's one read-back (a sync on a GPU): the loss and the gradient norm together.
            let loss = loss.detach().to_dtype(DType::F64)?;
            let (loss, norm) = match norm {
                Some(n) => {
                    let v = Tensor::stack(&[loss, n], 0)?.to_vec::<f64>()?;
                    (v[0], v[1])
                }
                None => (loss.item()?, 0.0),
            };
            let finite = loss.is_finite() && norm.is_finite();
            // fp16: gradients that overflowed at a finite loss lower the loss scale and skip the
            // update, gradients that all flushed to zero raise it and skip the update; that is the
            // scaler at work, not a diverging run.
            let overflow = scaler.is_some() && loss.is_finite() && !norm.is_finite();
            let underflow = scaler.is_some() && loss.is_finite() && norm == 0.0;
            let take = match scaler.as_mut() {
                Some(s) if loss.is_finite() => s.update_with_norm(norm),
                Some(s) => s.update(false),
                None => finite,
            };
            let scale = || scaler.as_ref().map_or(0.0, |s| s.scale());
            if take {
                match &coef {
                    Some(c) => opt.step_scaled(c)?,
                    None => opt.step()?,
                }
                bad_in_a_row = 0;
            } else if overflow {
                report(format!(
                    "step {}: gradients overflowed in fp16: update skipped, loss scale lowered to {}",
                    step + 1,
                    scale()
                ));
            } else if underflow {
                report(format!(
                    "step {}: gradients underflowed to zero in fp16: update skipped, loss scale \
                     raised to {}",
                    step + 1,
                    scale()
                ));
            } else {
                bad_in_a_row += 1;
                report(format!(
                    "step {}: loss {loss}, gradient norm {norm}: update skipped ({bad_in_a_row} in a \
                     row; the run stops at {})",
                    step + 1,
                    a.max_bad_steps
                ));
            }
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
                grad_norm: Some(norm),
                skipped: !take,
                lr,
                tokens_per_s: tps,
                time_s: started.elapsed().as_secs_f64(),
            };
            log.write(&rec)?;
            records.push(rec);
            if bad_in_a_row >= a.max_bad_steps {
                pb.finish_and_clear();
                plot::loss_curve(&out.join("loss.png"), &records)?;
                anyhow::bail!(
                    "training diverged: the loss or gradient norm was NaN or infinite for {} steps \
                     in a row (the last at step {step}: loss {loss}, gradient norm {norm}); their \
                     updates were skipped and nothing non-finite was saved. {}",
                    bad_in_a_row,
                    ways_on(&out, last_saved)
                );
            }
        }
        Ok(())
    };
    // On the CPU the pool's other workers stay awake between the step's kernels.
    if device == Device::Cpu {
        rustygradients_core::with_active_workers(train)?;
    } else {
        train()?;
    }
    pb.finish_and_clear();
    if stop.load(Ordering::SeqCst) {
        say!(
            "interrupted at step {step}: model saved to {}",
            out.display()
        );
    }
    let tps = step as f64 * tokens_per_step / train_secs.max(1e-9);
    say!("done: {step} steps in {train_secs:.1}s of training, {tps:.0} tokens/s; final train loss {:.4}, val loss {:.4}", last_eval.0, last_eval.1);
    say!(
        "saved model, tokenizer, metrics.jsonl and loss.png to {}",
        out.display()
    );
    let result = serde_json::json!({
        "impl": "rustygradients", "final_train_loss": last_eval.0, "final_val_loss": last_eval.1,
        "tokens_per_s": tps, "train_seconds": train_secs, "peak_rss_mb": peak_rss_mib(),
        "steps": step, "params": model.num_parameters(), "threads": rayon_threads(),
        "tokenizer": tok.kind(), "vocab_size": tok.vocab_size(), "chars": chars,
        "tokens": data.len(Split::Train) + data.len(Split::Val),
    });
    say!("RESULT {result}");
    if a.sample_chars > 0 && !stop.load(Ordering::SeqCst) {
        // A newline when the corpus has one, else its first character: always in the vocabulary.
        let prompt = if tok.encode("\n").is_ok() {
            "\n".to_string()
        } else {
            text.chars().take(1).collect()
        };
        say!("--- sample ---");
        crate::generate::quiet_on_closed_stdout(
            crate::generate::stream(
                &model,
                &tok,
                &prompt,
                a.sample_chars,
                &Default::default(),
                a.seed,
                device,
            )
            .map(|()| say!()),
        )?;
    }
    drop(run_dir);
    Ok(())
}

/// What a user can do after a diverged run, naming the newest checkpoint.
fn ways_on(out: &std::path::Path, last_saved: Option<usize>) -> String {
    let fix = "lower --lr or set --grad-clip and train again (--overwrite replaces this run)";
    match last_saved {
        Some(step) => format!(
            "The newest checkpoint is of step {step} in {}: {fix}, or continue from it with \
             `--resume {}`",
            out.join(CHECKPOINTS).display(),
            out.display()
        ),
        None => format!("No checkpoint was saved: {fix}"),
    }
}

fn rayon_threads() -> usize {
    rayon::current_num_threads()
}
