//! The ways a training run could lose work or mislead a user, each tried through the binary: a
//! reused output folder, two runs at once, divergence, hangs, corrupt checkpoints, SIGTERM,
//! inputs that never end, models too big for memory, and every bad setting. Each test checks
//! that the error names the problem and that no good data was lost.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rustygradients_core::Device;
use rustygradients_io::{metrics_log, CheckpointManager};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rustygradients"));
    c.env("RUST_BACKTRACE", "0").env("RUST_LIB_BACKTRACE", "0");
    c
}

const TINY: &[&str] = &[
    "--n-layer",
    "1",
    "--n-head",
    "2",
    "--n-embd",
    "16",
    "--block-size",
    "16",
    "--batch-size",
    "4",
    "--eval-iters",
    "1",
    "--sample-chars",
    "0",
    "--warmup",
    "2",
];

/// Runs the binary, killing it (and failing the test) after `secs` seconds.
fn run_for(args: &[&str], secs: u64) -> Output {
    let mut child = bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{args:?} still running after {secs}s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `train` with the tiny settings, `extra` flags replacing any of the same name.
fn train(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train"];
    for pair in TINY.chunks(2) {
        if !extra.contains(&pair[0]) {
            args.extend_from_slice(pair);
        }
    }
    args.extend_from_slice(extra);
    args.extend(["--out", out.to_str().unwrap()]);
    run_for(&args, 120)
}

fn ok(o: Output) -> String {
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}

/// The error text of a run that must fail without panicking.
fn err(o: Output) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        !o.status.success(),
        "should fail: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn steps(dir: &Path) -> Vec<u64> {
    CheckpointManager::new(dir.join("checkpoints"), 1)
        .unwrap()
        .list()
        .unwrap()
        .iter()
        .map(|i| i.step)
        .collect()
}

fn flip(path: &Path, at_end: bool, offset: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = if at_end { b.len() - offset } else { offset };
    b[i] ^= 0x10;
    std::fs::write(path, b).unwrap();
}

#[test]
fn a_reused_output_folder_is_refused_and_overwrite_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    ok(train(&out, &["--steps", "20", "--eval-interval", "10"]));
    let model = std::fs::read(out.join("model.safetensors")).unwrap();
    let e = err(train(&out, &["--steps", "5"]));
    assert!(
        e.contains("already holds a training run")
            && e.contains("step 20")
            && e.contains("--resume")
            && e.contains("--overwrite"),
        "{e}"
    );
    // Nothing of the earlier run was touched.
    assert_eq!(std::fs::read(out.join("model.safetensors")).unwrap(), model);
    assert_eq!(steps(&out), [0, 10, 20]);

    ok(train(&out, &["--steps", "5", "--overwrite"]));
    assert_eq!(steps(&out), [0, 5]);
    let records = metrics_log::read_until(&out.join("metrics.jsonl"), usize::MAX).unwrap();
    assert!(records.iter().all(|r| r.step <= 5), "old records survived");
    // And the new run is the one that resumes.
    let resumed = ok(run_for(&["train", "--resume", out.to_str().unwrap()], 60));
    assert!(resumed.contains("resumed from step 5"), "{resumed}");
}

#[test]
fn a_locked_folder_refuses_a_second_run_and_sigterm_saves() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut args = vec!["train"];
    args.extend_from_slice(TINY);
    args.extend([
        "--steps",
        "10000000",
        "--eval-interval",
        "1000000",
        "--out",
        out.to_str().unwrap(),
    ]);
    let first: Child = bin()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = first.id().to_string();
    // Wait until it trains: its step-0 checkpoint exists.
    let deadline = Instant::now() + Duration::from_secs(300);
    while steps_if_any(&out).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first run never saved step 0"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for extra in [&[][..], &["--overwrite"][..]] {
        let e = err(train(&out, extra));
        assert!(
            e.contains("in use by another training run") && e.contains(&pid),
            "{e}"
        );
    }
    let metrics_before = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(!metrics_before.is_empty());

    // SIGTERM stops it like Ctrl-C: the step it reached is saved and resumable.
    std::thread::sleep(Duration::from_millis(300));
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let o = first.wait_with_output().unwrap();
    let stdout = ok(o);
    assert!(stdout.contains("interrupted at step"), "{stdout}");
    let saved = steps(&out);
    assert!(saved.len() == 2 && saved[1] > 0, "{saved:?}");
    // Every metrics line is whole (no second writer interleaved).
    let records = metrics_log::read_until(&out.join("metrics.jsonl"), usize::MAX).unwrap();
    assert_eq!(records.last().unwrap().step as u64, saved[1]);
}

fn steps_if_any(out: &Path) -> Vec<u64> {
    if out.join("checkpoints").is_dir() {
        steps(out)
    } else {
        Vec::new()
    }
}

/// Trains at learning rate `lr` without clipping until the run stops; returns the error text.
/// The corpus is a fixed file (the built-in one changes with the README).
fn diverge(dir: &Path, lr: &str) -> String {
    let data = dir.join("data.txt");
    std::fs::write(
        &data,
        "to be or not to be, that is the question\n".repeat(40),
    )
    .unwrap();
    err(train(
        &dir.join("out"),
        &[
            "--lr",
            lr,
            "--grad-clip",
            "0",
            "--warmup",
            "0",
            "--steps",
            "300",
            "--eval-interval",
            "5",
            "--keep-checkpoints",
            "2",
            "--data",
            data.to_str().unwrap(),
        ],
    ))
}

/// Whatever way a run diverges, what it saved is finite and within the retention limit, its log
/// reads back, and `--resume` starts from the newest good checkpoint.
#[test]
fn divergence_saves_nothing_non_finite_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let e = diverge(dir.path(), "100");
    assert!(
        e.contains("training diverged") && e.contains("--resume"),
        "{e}"
    );
    // The retention limit held (2 newest + best), and everything saved is finite.
    let manager = CheckpointManager::new(out.join("checkpoints"), 2).unwrap();
    let infos = manager.list().unwrap();
    assert!(!infos.is_empty() && infos.len() <= 3, "{infos:?}");
    for info in &infos {
        manager.load(info, Device::Cpu).unwrap();
    }
    let (model, _) =
        rustygradients_io::load_safetensors(out.join("model.safetensors"), Device::Cpu).unwrap();
    assert!(model.iter().all(|(_, t)| t.all_finite().unwrap()));
    // The log reads back whatever it holds; skipped steps carry their non-finite values.
    let records = metrics_log::read_until(&out.join("metrics.jsonl"), usize::MAX).unwrap();
    assert!(records
        .iter()
        .filter(|r| r.skipped)
        .all(|r| !(r.train_loss.is_finite() && r.grad_norm.unwrap().is_finite())));
    // Resuming loads the newest good checkpoint (it then diverges again, as it must).
    let again = err(run_for(&["train", "--resume", out.to_str().unwrap()], 60));
    assert!(
        again.contains("training diverged") && !again.contains("metrics.jsonl"),
        "{again}"
    );
}

/// A loss that turns NaN right away: each such step skips its update and is logged, and the
/// third in a row stops the run, naming the step.
#[test]
fn non_finite_steps_are_skipped_then_stop_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let e = diverge(dir.path(), "1e30");
    assert!(
        e.contains("3 steps in a row") && e.contains("at step"),
        "{e}"
    );
    let records =
        metrics_log::read_until(&dir.path().join("out/metrics.jsonl"), usize::MAX).unwrap();
    let skipped: Vec<_> = records.iter().filter(|r| r.skipped).collect();
    assert_eq!(skipped.len(), 3, "{records:?}");
    assert!(skipped.iter().all(|r| r.train_loss.is_nan()));
    assert!(
        skipped.windows(2).all(|w| w[1].step == w[0].step + 1),
        "not in a row: {skipped:?}"
    );
}

#[test]
fn bad_settings_are_refused_by_name_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never");
    let cases: &[(&str, &str, &str)] = &[
        ("--batch-size", "0", "--batch-size 0"),
        ("--n-embd", "0", "--n-embd 0"),
        ("--n-head", "3", "multiple of --n-head 3"),
        ("--n-layer", "0", "--n-layer 0"),
        ("--block-size", "0", "--block-size 0"),
        ("--steps", "0", "--steps 0"),
        ("--eval-iters", "0", "--eval-iters 0"),
        ("--eval-interval", "0", "--eval-interval 0"),
        ("--keep-checkpoints", "0", "--keep-checkpoints 0"),
        ("--max-bad-steps", "0", "--max-bad-steps 0"),
        ("--lr", "0", "--lr 0"),
        ("--lr", "-1", "--lr -1"),
        ("--lr", "NaN", "--lr NaN"),
        ("--lr", "inf", "--lr inf"),
        ("--min-lr", "1", "--min-lr 1"),
        ("--weight-decay", "NaN", "--weight-decay NaN"),
        ("--beta1", "1", "--beta1 1"),
        ("--beta2", "-0.5", "--beta2 -0.5"),
        ("--grad-clip", "inf", "--grad-clip inf"),
        ("--dropout", "1", "--dropout 1"),
    ];
    for (flag, value, expect) in cases {
        let e = err(run_for(
            &["train", flag, value, "--out", out.to_str().unwrap()],
            20,
        ));
        assert!(e.contains(expect), "{flag} {value}: {e}");
    }
    assert!(!out.exists(), "a refused run created its folder");

    // Sampling settings name the setting, before the model is even read.
    for (flag, value, expect) in [
        ("--temperature", "inf", "temperature inf"),
        ("--temperature", "-1", "temperature -1"),
        ("--temperature", "NaN", "temperature NaN"),
        ("--top-p", "0", "top_p 0"),
        ("--top-p", "1.5", "top_p 1.5"),
    ] {
        let e = err(run_for(
            &["generate", "--model", "nowhere", flag, value],
            20,
        ));
        assert!(e.contains(expect) && !e.contains("SamplingConfig {"), "{e}");
    }
}

#[test]
fn a_corrupt_newest_checkpoint_is_reported_and_the_previous_one_used() {
    let dir = tempfile::tempdir().unwrap();
    for (case, at_end, offset, expect) in [
        ("tensor", true, 40, "fails its checksum"),
        ("header", false, 40, "checksum"),
    ] {
        let out = dir.path().join(case);
        ok(train(
            &out,
            &["--steps", "30", "--eval-interval", "10", "--stop-at", "20"],
        ));
        let newest = out.join("checkpoints/checkpoint_step_000020.safetensors");
        flip(&newest, at_end, offset);
        let stdout = ok(run_for(&["train", "--resume", out.to_str().unwrap()], 60));
        assert!(
            stdout.contains("checkpoint of step 20 is not usable")
                && stdout.contains(expect)
                && stdout.contains("resumed from step 10"),
            "{case}: {stdout}"
        );
        assert_eq!(steps(&out), [10, 20, 30], "the newest 3 are kept");
        assert!(out
            .join("checkpoints/checkpoint_step_000020.safetensors.corrupt")
            .exists());
    }
    // A flipped byte in the saved model is found by generate too.
    let model = dir.path().join("tensor/model.safetensors");
    flip(&model, true, 8);
    let e = err(run_for(
        &[
            "generate",
            "--model",
            dir.path().join("tensor").to_str().unwrap(),
        ],
        20,
    ));
    assert!(e.contains("fails its checksum"), "{e}");
}

#[test]
fn endless_and_oversized_inputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = err(train(&dir.path().join("a"), &["--data", "/dev/zero"]));
    assert!(
        e.contains("/dev/zero") && e.contains("not a regular file"),
        "{e}"
    );
    let link = dir.path().join("corpus.txt");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let e = err(train(
        &dir.path().join("b"),
        &["--data", link.to_str().unwrap()],
    ));
    assert!(
        e.contains("corpus.txt") && e.contains("not a regular file"),
        "{e}"
    );
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let e = err(train(
        &dir.path().join("c"),
        &["--data", empty.to_str().unwrap()],
    ));
    assert!(e.contains("is empty"), "{e}");

    // A model folder whose config.json or tokenizer.json is a link to /dev/zero.
    let model = dir.path().join("model");
    ok(train(&model, &["--steps", "2"]));
    for name in ["config.json", "tokenizer.json"] {
        let copy = dir.path().join(format!("linked-{name}"));
        copy_dir(&model, &copy);
        std::fs::remove_file(copy.join(name)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", copy.join(name)).unwrap();
        let e = err(run_for(
            &["generate", "--model", copy.to_str().unwrap()],
            20,
        ));
        assert!(e.contains(name) && e.contains("not a regular file"), "{e}");
    }

    // Models far beyond memory are refused up front, with the numbers.
    let e = err(run_for(
        &["train", "--n-embd", "65536", "--out", "unused"],
        20,
    ));
    assert!(
        e.contains("GiB") && e.contains("available") && e.contains("--n-embd"),
        "{e}"
    );
    assert!(!Path::new("unused").exists());
    let huge = dir.path().join("huge");
    copy_dir(&model, &huge);
    edit_config(&huge, |m| {
        m["n_embd"] = 20000.into();
        m["n_layer"] = 8.into();
        m["n_head"] = 4.into();
    });
    let e = err(run_for(
        &["generate", "--model", huge.to_str().unwrap()],
        20,
    ));
    assert!(e.contains("GiB") && e.contains("available"), "{e}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v["model"]);
    std::fs::write(&p, v.to_string()).unwrap();
}

#[test]
fn config_json_must_match_the_weights_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    ok(train(&model, &["--steps", "2", "--n-layer", "2"]));
    edit_config(&model, |m| m["n_layer"] = 1.into());
    let e = err(run_for(
        &["generate", "--model", model.to_str().unwrap()],
        20,
    ));
    assert!(e.contains("unexpected tensor transformer.h.1."), "{e}");
    edit_config(&model, |m| m["n_layer"] = 3.into());
    let e = err(run_for(
        &["generate", "--model", model.to_str().unwrap()],
        20,
    ));
    assert!(e.contains("missing tensor transformer.h.2."), "{e}");
}

#[test]
fn small_things_users_hit() {
    let dir = tempfile::tempdir().unwrap();
    // `--resume` on a mistyped folder is an error and creates nothing.
    let typo = dir.path().join("ot");
    let e = err(run_for(&["train", "--resume", typo.to_str().unwrap()], 20));
    assert!(e.contains("does not exist"), "{e}");
    assert!(!typo.exists());

    // Temporary files of killed writes are cleared when a run takes the folder.
    let out = dir.path().join("out");
    ok(train(&out, &["--steps", "4", "--stop-at", "2"]));
    let stale = [
        out.join(".model.safetensors.tmp.999999"),
        out.join("checkpoints/.checkpoint_step_000004.safetensors.tmp.999999"),
    ];
    for p in &stale {
        std::fs::write(p, b"partial").unwrap();
    }
    ok(run_for(&["train", "--resume", out.to_str().unwrap()], 60));
    assert!(stale.iter().all(|p| !p.exists()), "stale temp files kept");

    // A reader that stops early ends generate quietly, with status 0.
    let mut child = bin()
        .args(["generate", "--max-tokens", "1000000", "--model"])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Read;
        let mut first = [0u8; 16];
        child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    } // the pipe closes here
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "{:?} {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );

    // A corpus without a newline trains, saves and samples from a character it has.
    let text = dir.path().join("no-newline.txt");
    std::fs::write(&text, "abcab cabca bcabc ".repeat(30)).unwrap();
    let stdout = ok(train(
        &dir.path().join("nl"),
        &[
            "--steps",
            "2",
            "--data",
            text.to_str().unwrap(),
            "--sample-chars",
            "10",
        ],
    ));
    assert!(stdout.contains("--- sample ---"), "{stdout}");
    // Too little text for the block size is named with the sizes.
    std::fs::write(&text, "abcabc").unwrap();
    let e = err(train(
        &dir.path().join("tiny"),
        &["--steps", "2", "--data", text.to_str().unwrap()],
    ));
    assert!(e.contains("block size 16"), "{e}");
}

/// Extreme values for every numeric flag of `train` and `generate`: each run ends (within the
/// timeout) with success or an error, never a panic.
#[test]
fn no_flag_value_panics() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    ok(train(&model, &["--steps", "2"]));
    let values = [
        "0",
        "1",
        "-1",
        "NaN",
        "inf",
        "-inf",
        "1e308",
        "18446744073709551615",
    ];
    // Flags whose huge values ask for endless work (that is what was asked) get small ones only.
    let work = ["--steps", "--eval-iters", "--sample-chars", "--max-tokens"];
    let train_flags = [
        "--n-layer",
        "--n-head",
        "--n-embd",
        "--block-size",
        "--batch-size",
        "--steps",
        "--lr",
        "--min-lr",
        "--warmup",
        "--weight-decay",
        "--beta1",
        "--beta2",
        "--grad-clip",
        "--dropout",
        "--eval-interval",
        "--eval-iters",
        "--seed",
        "--sample-chars",
        "--keep-checkpoints",
        "--stop-at",
        "--max-bad-steps",
    ];
    let mut runs = 0;
    for (i, flag) in train_flags.iter().enumerate() {
        for (j, v) in values.iter().enumerate() {
            if work.contains(flag) && j >= 4 {
                continue;
            }
            let out = dir.path().join(format!("t{i}-{j}"));
            let mut args = vec![*flag, *v];
            if *flag != "--steps" {
                args.extend(["--steps", "2"]);
            }
            let o = train(&out, &args);
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert!(!stderr.contains("panicked"), "{flag} {v}: {stderr}");
            runs += 1;
        }
    }
    for flag in [
        "--max-tokens",
        "--temperature",
        "--top-k",
        "--top-p",
        "--seed",
    ] {
        for (j, v) in values.iter().enumerate() {
            if work.contains(&flag) && j >= 4 {
                continue;
            }
            let mut args = vec!["generate", flag, v, "--model", model.to_str().unwrap()];
            if flag != "--max-tokens" {
                args.extend(["--max-tokens", "5"]);
            }
            let o = run_for(&args, 30);
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert!(!stderr.contains("panicked"), "{flag} {v}: {stderr}");
            runs += 1;
        }
    }
    assert!(runs > 150);
}
