//! Dynamic loss scaling for f16 training: the scale's schedule (growth after
//! `growth_interval` good steps, backoff on overflow), `unscale` dividing the gradients, the
//! state surviving serde, and what it is for: f16 gradients that underflow without it.

use rustygradients_core::{autocast, DType, Device, Tensor};
use rustygradients_nn::optim::{grad_norm, GradScaler};

const CPU: Device = Device::Cpu;

fn grads(p: &Tensor) -> Vec<f32> {
    p.grad().unwrap().to_vec::<f32>().unwrap()
}

#[test]
fn defaults_follow_pytorch() {
    let s = GradScaler::new(65536.0);
    assert_eq!(s.scale(), 65536.0);
    assert_eq!(s.growth_factor, 2.0);
    assert_eq!(s.backoff_factor, 0.5);
    assert_eq!(s.growth_interval, 2000);
}

#[test]
fn scale_grows_after_growth_interval_good_steps() {
    let mut s = GradScaler::new(1024.0);
    s.growth_interval = 3;
    assert!(s.update(true));
    assert!(s.update(true));
    assert_eq!(s.scale(), 1024.0, "two good steps: not yet");
    assert!(s.update(true));
    assert_eq!(s.scale(), 2048.0, "the third good step doubles it");
    // The count starts again after growing.
    assert!(s.update(true));
    assert!(s.update(true));
    assert_eq!(s.scale(), 2048.0);
    assert!(s.update(true));
    assert_eq!(s.scale(), 4096.0);

    // A custom growth factor.
    let mut s = GradScaler::new(10.0);
    s.growth_interval = 1;
    s.growth_factor = 3.0;
    s.update(true);
    s.update(true);
    assert_eq!(s.scale(), 90.0);
}

#[test]
fn overflow_backs_off_and_resets_the_good_step_count() {
    let mut s = GradScaler::new(1024.0);
    s.growth_interval = 3;
    s.update(true);
    s.update(true);
    assert!(!s.update(false), "an overflowed step is skipped");
    assert_eq!(s.scale(), 512.0);
    assert!(!s.update(false));
    assert_eq!(s.scale(), 256.0, "each overflow halves it again");
    // The two good steps before the overflows no longer count: three more are needed.
    s.update(true);
    s.update(true);
    assert_eq!(s.scale(), 256.0);
    s.update(true);
    assert_eq!(s.scale(), 512.0);
    // A custom backoff.
    let mut s = GradScaler::new(1000.0);
    s.backoff_factor = 0.1;
    s.update(false);
    assert!((s.scale() - 100.0).abs() < 1e-9);
}

#[test]
fn scale_loss_and_unscale_round_trip_the_gradients() {
    let w = Tensor::from_slice(&[1.0f32, -2.0, 3.0], [3], CPU)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let b = Tensor::from_slice(&[0.5f32], [1], CPU)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let unused = Tensor::ones([2], DType::F32, CPU)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let s = GradScaler::new(256.0);
    // loss = sum(w²) + 3·b
    let loss = w
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .add(&b.mul_scalar(3.0).unwrap().sum_all().unwrap())
        .unwrap();
    let scaled = s.scale_loss(&loss).unwrap();
    assert_eq!(
        scaled.to_scalar::<f32>().unwrap(),
        loss.to_scalar::<f32>().unwrap() * 256.0
    );
    scaled.backward().unwrap();
    assert_eq!(grads(&w), [512.0, -1024.0, 1536.0]);
    assert_eq!(grads(&b), [768.0]);
    s.unscale(&[w.clone(), b.clone(), unused.clone()]).unwrap();
    assert_eq!(grads(&w), [2.0, -4.0, 6.0]);
    assert_eq!(grads(&b), [3.0]);
    assert!(unused.grad().is_none(), "no gradient: none made up");
    // Unscaling records nothing.
    assert!(!w.grad().unwrap().is_tracked());
}

#[test]
fn unscale_keeps_an_overflow_visible() {
    let w = Tensor::from_slice(&[1.0f32, 2.0], [2], CPU)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    w.set_grad(Some(
        Tensor::from_slice(&[f32::INFINITY, 4.0], [2], CPU).unwrap(),
    ))
    .unwrap();
    let mut s = GradScaler::new(4.0);
    s.unscale(std::slice::from_ref(&w)).unwrap();
    let g = grads(&w);
    assert!(g[0].is_infinite());
    assert_eq!(g[1], 1.0);
    let norm = grad_norm(std::slice::from_ref(&w)).unwrap();
    assert!(!norm.is_finite());
    assert!(!s.update(norm.is_finite()));
    assert_eq!(s.scale(), 2.0);
}

/// `x @ w` under f16 autocast with a tiny loss weight: the gradient reaching the f16 product is
/// below f16's smallest subnormal (6e-8) and flushes to zero unless the loss is scaled.
fn f16_grad(scaler: Option<&GradScaler>) -> Vec<f32> {
    let x = Tensor::from_slice(&[1.0f32, 2.0, -1.5, 0.5], [1, 4], CPU).unwrap();
    let w = Tensor::from_slice(&[0.1f32, 0.2, 0.3, 0.4], [4, 1], CPU)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let loss = autocast(DType::F16, || {
        let y = x.matmul(&w).unwrap();
        assert_eq!(y.dtype(), DType::F16);
        y.to_dtype(DType::F32)
            .unwrap()
            .sum_all()
            .unwrap()
            .mul_scalar(1e-9)
            .unwrap()
    })
    .unwrap();
    match scaler {
        Some(s) => {
            s.scale_loss(&loss).unwrap().backward().unwrap();
            s.unscale(std::slice::from_ref(&w)).unwrap();
        }
        None => loss.backward().unwrap(),
    }
    assert_eq!(w.grad().unwrap().dtype(), DType::F32);
    grads(&w)
}

#[test]
fn loss_scaling_keeps_small_f16_gradients_from_flushing_to_zero() {
    assert_eq!(f16_grad(None), [0.0; 4], "unscaled: underflow in f16");
    let got = f16_grad(Some(&GradScaler::new(65536.0)));
    for (g, x) in got.iter().zip([1.0f32, 2.0, -1.5, 0.5]) {
        let want = x * 1e-9;
        assert!(
            (g - want).abs() <= 2e-3 * want.abs(),
            "got {got:?}, want x·1e-9"
        );
    }
}

#[test]
fn serde_round_trip_keeps_the_scale_and_the_count() {
    let mut s = GradScaler::new(8192.0);
    s.growth_interval = 4;
    s.growth_factor = 4.0;
    s.backoff_factor = 0.25;
    s.update(false);
    s.update(true);
    s.update(true);
    let json = serde_json::to_string(&s).unwrap();
    let mut back: GradScaler = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.scale(), 2048.0);
    // The good-step count came along: two more good steps grow it (not four).
    back.update(true);
    assert_eq!(back.scale(), 2048.0);
    back.update(true);
    assert_eq!(back.scale(), 8192.0);
    // Not equal to a fresh scaler at the same scale.
    let mut fresh: GradScaler = serde_json::from_str(&json).unwrap();
    fresh.update(false);
    assert_ne!(fresh, s);
}
