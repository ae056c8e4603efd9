//! `train --precision`, `--loss-scale` and `--activation-checkpointing` through the binary on a
//! tiny model: bf16 trains with f32 weights on disk, an unknown precision is refused by name,
//! fp16 overflows skip their step and lower the loss scale (which a resumed run continues
//! from), a run may resume in another precision, and recomputing activations changes nothing.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rustygradients_core::{DType, Device};
use rustygradients_io::metrics_log::{self, Record};
use rustygradients_io::CheckpointManager;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rustygradients"));
    c.env("RUST_BACKTRACE", "0").env("RUST_LIB_BACKTRACE", "0");
    c
}

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

/// A fixed corpus (the built-in one changes with the README) in `dir`.
fn corpus(dir: &Path) -> String {
    let data = dir.join("data.txt");
    std::fs::write(
        &data,
        "to be or not to be, that is the question\n".repeat(40),
    )
    .unwrap();
    data.to_str().unwrap().to_string()
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

/// `train` on the tiny model with `extra` flags (replacing any of [`TINY`]'s of the same
/// name), writing to `out`; its stdout.
fn train(data: &str, out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["train", "--data", data, "--out", out.to_str().unwrap()];
    for pair in TINY.chunks(2) {
        if !extra.contains(&pair[0]) {
            args.extend_from_slice(pair);
        }
    }
    args.extend_from_slice(extra);
    ok(run_for(&args, 60))
}

fn records(out: &Path) -> Vec<Record> {
    metrics_log::read_until(&out.join("metrics.jsonl"), usize::MAX).unwrap()
}

/// The training-step records (evaluations excluded).
fn step_records(out: &Path) -> Vec<Record> {
    records(out)
        .into_iter()
        .filter(|r| r.val_loss.is_none())
        .collect()
}

fn val_losses(out: &Path) -> Vec<f64> {
    records(out).iter().filter_map(|r| r.val_loss).collect()
}

/// The newest checkpoint's run state (the sidecar's `state`) and its tensors' dtypes by name.
fn latest_checkpoint(out: &Path) -> (u64, serde_json::Value, Vec<(String, DType)>) {
    let ck = CheckpointManager::new(out.join("checkpoints"), 1)
        .unwrap()
        .load_latest(Device::Cpu)
        .unwrap();
    let dtypes = ck
        .tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.dtype()))
        .collect();
    (ck.info.step, ck.info.state, dtypes)
}

/// The dtypes of a safetensors file's tensors, from its header.
fn safetensors_dtypes(path: &Path) -> Vec<(String, String)> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header
        .into_iter()
        .filter(|(k, _)| k != "__metadata__")
        .map(|(k, v)| (k, v["dtype"].as_str().unwrap().to_string()))
        .collect()
}

/// The loss scales the "overflowed" lines report, in order.
fn lowered_scales(stdout: &str) -> Vec<f64> {
    stdout
        .lines()
        .filter(|l| l.contains("overflowed"))
        .map(|l| {
            l.rsplit("loss scale lowered to ")
                .next()
                .unwrap()
                .trim()
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("{l:?}: {e}"))
        })
        .collect()
}

#[test]
fn bf16_training_finishes_with_finite_losses_and_f32_weights() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let out = dir.path().join("bf16");
    let stdout = train(
        &data,
        &out,
        &[
            "--precision",
            "bf16",
            "--steps",
            "8",
            "--eval-interval",
            "4",
        ],
    );
    assert!(stdout.contains("precision bf16"), "{stdout}");
    assert!(stdout.contains("step 8: train loss"), "{stdout}");
    assert!(!stdout.contains("skipped"), "{stdout}");
    let steps = step_records(&out);
    assert_eq!(steps.len(), 8);
    assert!(
        steps
            .iter()
            .all(|r| r.train_loss.is_finite() && !r.skipped && r.grad_norm.unwrap().is_finite()),
        "{steps:?}"
    );
    // It learns.
    let vals = val_losses(&out);
    assert_eq!(vals.len(), 3, "evals at 0, 4, 8");
    assert!(vals.iter().all(|v| v.is_finite()));
    assert!(vals[2] < vals[0], "val loss did not fall: {vals:?}");

    // The master weights and the optimizer state stay f32 on disk.
    let model = safetensors_dtypes(&out.join("model.safetensors"));
    assert!(!model.is_empty());
    assert!(model.iter().all(|(_, d)| d == "F32"), "{model:?}");
    let (step, state, dtypes) = latest_checkpoint(&out);
    assert_eq!(step, 8);
    assert_eq!(state["args"]["precision"], "bf16", "{state}");
    assert!(
        state.get("loss_scaler").is_none(),
        "no loss scaler in bf16: {state}"
    );
    for (name, d) in &dtypes {
        if name.starts_with("transformer.") || name.contains("exp_avg") {
            assert_eq!(*d, DType::F32, "{name}");
        }
    }
}

#[test]
fn an_unknown_precision_or_a_bad_loss_scale_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never");
    let e = err(run_for(
        &[
            "train",
            "--precision",
            "fp8",
            "--steps",
            "1",
            "--out",
            out.to_str().unwrap(),
        ],
        20,
    ));
    assert!(e.contains("fp8") && e.contains("--precision"), "{e}");
    assert!(e.contains("bf16"), "the valid values are listed: {e}");
    for (value, expect) in [
        ("0", "--loss-scale 0"),
        ("-1", "--loss-scale -1"),
        ("inf", "--loss-scale inf"),
        ("NaN", "--loss-scale NaN"),
    ] {
        let e = err(run_for(
            &[
                "train",
                "--precision",
                "fp16",
                "--loss-scale",
                value,
                "--steps",
                "1",
                "--out",
                out.to_str().unwrap(),
            ],
            20,
        ));
        assert!(e.contains(expect), "--loss-scale {value}: {e}");
    }
    assert!(!out.exists(), "a refused run created its folder");
}

#[test]
fn fp16_overflow_skips_the_step_and_lowers_the_loss_scale() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let out = dir.path().join("fp16");
    // A first scale far past f16's range: every step's gradients overflow.
    let stdout = train(
        &data,
        &out,
        &[
            "--precision",
            "fp16",
            "--loss-scale",
            "1e30",
            "--steps",
            "6",
            "--eval-interval",
            "3",
        ],
    );
    assert!(stdout.contains("precision fp16"), "{stdout}");
    assert!(stdout.contains("overflowed"), "{stdout}");
    assert!(
        !stdout.contains("in a row"),
        "an overflow is not a diverging step: {stdout}"
    );
    let scales = lowered_scales(&stdout);
    assert_eq!(scales.len(), 6, "{stdout}");
    assert_eq!(scales[0], 5e29, "halved from 1e30: {stdout}");
    assert!(
        scales.windows(2).all(|w| w[1] == w[0] / 2.0),
        "each overflow halves the scale: {scales:?}"
    );
    // The run finished; its losses are finite, only the updates were skipped.
    assert!(stdout.contains("step 6: train loss"), "{stdout}");
    let steps = step_records(&out);
    assert_eq!(steps.len(), 6);
    assert!(
        steps.iter().all(|r| r.train_loss.is_finite() && r.skipped),
        "{steps:?}"
    );
    assert!(val_losses(&out).iter().all(|v| v.is_finite()));
    // The lowered scale is saved with the run.
    let (_, state, _) = latest_checkpoint(&out);
    let saved = state["loss_scaler"]["scale"].as_f64().unwrap();
    assert_eq!(saved, *scales.last().unwrap(), "{state}");
    assert!(saved < 1e30);
}

#[test]
fn fp16_with_the_default_loss_scale_trains_without_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let out = dir.path().join("fp16");
    let stdout = train(
        &data,
        &out,
        &[
            "--precision",
            "fp16",
            "--steps",
            "8",
            "--eval-interval",
            "4",
        ],
    );
    assert!(!stdout.contains("overflowed"), "{stdout}");
    let steps = step_records(&out);
    assert!(steps.iter().all(|r| r.train_loss.is_finite() && !r.skipped));
    let vals = val_losses(&out);
    assert!(vals[2] < vals[0], "val loss did not fall: {vals:?}");
    let (_, state, _) = latest_checkpoint(&out);
    assert_eq!(
        state["loss_scaler"]["scale"].as_f64(),
        Some(65536.0),
        "{state}"
    );
}

/// A first loss scale far too small flushes every f16 gradient to zero. Each such step is
/// skipped and doubles the scale at once, so the run climbs out in a few dozen steps and then
/// trains like any other.
#[test]
fn fp16_recovers_from_a_tiny_first_loss_scale() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let out = dir.path().join("fp16-tiny");
    let stdout = train(
        &data,
        &out,
        &[
            "--precision",
            "fp16",
            "--loss-scale",
            "1e-12",
            "--steps",
            "60",
            "--eval-interval",
            "20",
        ],
    );
    assert!(stdout.contains("underflowed to zero"), "{stdout}");
    let steps = step_records(&out);
    assert!(steps.iter().all(|r| r.train_loss.is_finite()));
    let skipped = steps.iter().take_while(|r| r.skipped).count();
    assert!(
        (10..40).contains(&skipped),
        "{skipped} leading skipped steps: {steps:?}"
    );
    // Once the gradients come through, no step is skipped for underflow again (the scale
    // only doubles further every growth interval).
    assert!(steps[skipped..].iter().all(|r| !r.skipped), "{steps:?}");
    let (_, state, _) = latest_checkpoint(&out);
    let scale = state["loss_scaler"]["scale"].as_f64().unwrap();
    assert_eq!(scale, 1e-12 * 2f64.powi(skipped as i32), "{state}");
    let vals = val_losses(&out);
    assert!(
        vals[3] < vals[1] && vals[3] < vals[0] - 0.02,
        "val loss did not fall: {vals:?}"
    );
}

/// An fp16 run stopped while its loss scale is still coming down resumes with that scale (not
/// the first one), so it ends bit-identical to the run that was never interrupted.
#[test]
fn an_fp16_run_resumes_with_its_loss_scale() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let (a, b) = (dir.path().join("straight"), dir.path().join("resumed"));
    // 1e7 overflows for six steps (down to 156250), then the steps go through.
    let flags = [
        "--precision",
        "fp16",
        "--loss-scale",
        "1e7",
        "--steps",
        "10",
        "--eval-interval",
        "2",
    ];
    let straight = train(&data, &a, &flags);
    assert_eq!(lowered_scales(&straight).len(), 6, "{straight}");
    let first = train(&data, &b, &[&flags[..], &["--stop-at", "4"]].concat());
    assert_eq!(
        lowered_scales(&first),
        [5e6, 2.5e6, 1.25e6, 625000.0],
        "{first}"
    );
    let resumed = ok(run_for(&["train", "--resume", b.to_str().unwrap()], 60));
    assert!(resumed.contains("resumed from step 4"), "{resumed}");
    assert_eq!(
        lowered_scales(&resumed),
        [312500.0, 156250.0],
        "the resumed run must continue from the saved scale: {resumed}"
    );
    let losses = |d: &Path| -> Vec<(usize, f64, bool)> {
        step_records(d)
            .iter()
            .map(|r| (r.step, r.train_loss, r.skipped))
            .collect()
    };
    assert_eq!(losses(&a), losses(&b));
    let bytes = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert_eq!(bytes(&a), bytes(&b), "final weights differ");
}

#[test]
fn an_fp32_run_resumes_in_bf16() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let (a, b) = (dir.path().join("fp32"), dir.path().join("switched"));
    let flags = ["--steps", "8", "--eval-interval", "2"];
    train(&data, &a, &[&flags[..], &["--precision", "fp32"]].concat());
    let first = train(
        &data,
        &b,
        &[&flags[..], &["--precision", "fp32", "--stop-at", "4"]].concat(),
    );
    assert!(first.contains("precision fp32"), "{first}");
    let resumed = ok(run_for(
        &[
            "train",
            "--resume",
            b.to_str().unwrap(),
            "--precision",
            "bf16",
        ],
        60,
    ));
    assert!(
        resumed.contains("resumed from step 4") && resumed.contains("precision bf16"),
        "{resumed}"
    );
    assert!(resumed.contains("step 8: train loss"), "{resumed}");
    let (sa, sb) = (step_records(&a), step_records(&b));
    assert_eq!(sb.len(), 8);
    assert!(
        sb.iter().all(|r| r.train_loss.is_finite() && !r.skipped),
        "{sb:?}"
    );
    // The fp32 half is the fp32 run's; after the switch the steps computed in bf16.
    for (x, y) in sa.iter().zip(&sb).take(4) {
        assert_eq!((x.step, x.train_loss), (y.step, y.train_loss));
    }
    for (x, y) in sa.iter().zip(&sb).skip(4) {
        assert_eq!(x.step, y.step);
        assert_ne!(x.train_loss, y.train_loss, "step {}: still fp32?", x.step);
        assert!((x.train_loss - y.train_loss).abs() < 0.05, "{x:?} vs {y:?}");
    }
    // The switch is recorded: a later resume continues in bf16.
    let (step, state, _) = latest_checkpoint(&b);
    assert_eq!(step, 8);
    assert_eq!(state["args"]["precision"], "bf16", "{state}");
}

/// Recomputing the blocks' activations in the backward pass (with their dropout masks
/// replayed) gives the very same run.
#[test]
fn activation_checkpointing_changes_nothing_but_memory() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let (a, b) = (dir.path().join("plain"), dir.path().join("recompute"));
    let flags = [
        "--precision",
        "bf16",
        "--dropout",
        "0.1",
        "--n-layer",
        "2",
        "--steps",
        "6",
        "--eval-interval",
        "3",
    ];
    let plain = train(&data, &a, &flags);
    assert!(!plain.contains("activation checkpointing"), "{plain}");
    let recompute = train(
        &data,
        &b,
        &[&flags[..], &["--activation-checkpointing"]].concat(),
    );
    assert!(
        recompute.contains("activation checkpointing"),
        "{recompute}"
    );
    let losses = |d: &Path| -> Vec<f64> { step_records(d).iter().map(|r| r.train_loss).collect() };
    assert_eq!(losses(&a).len(), 6);
    assert_eq!(losses(&a), losses(&b));
    let bytes = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert_eq!(bytes(&a), bytes(&b), "final weights differ");
}
