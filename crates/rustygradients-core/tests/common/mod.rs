//! Helpers shared by the integration tests: f64 tensors, closeness checks, the
//! finite-difference gradient check, and the GPU tests' device and lock.
#![allow(dead_code)]

use rustygradients_core::{manual_seed, DType, Device, Result, Tensor};

pub const CPU: Device = Device::Cpu;

/// An f64 tensor from a flat row-major vector.
pub fn t64(data: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(data, shape, CPU).unwrap()
}

/// Seeded normal f64 values pushed at least `gap` away from zero (so kinks such as `abs` and
/// `relu` at 0 are never straddled by a finite difference).
pub fn randn_away(shape: &[usize], seed: u64, gap: f64) -> Tensor {
    manual_seed(seed);
    let x = Tensor::randn(shape, DType::F64, CPU).unwrap();
    let v: Vec<f64> = x
        .to_vec::<f64>()
        .unwrap()
        .into_iter()
        .map(|v| v + gap * v.signum())
        .collect();
    t64(&v, shape)
}

/// Seeded values in `[lo, hi)`.
pub fn uniform(shape: &[usize], seed: u64, lo: f64, hi: f64) -> Tensor {
    manual_seed(seed);
    Tensor::rand(shape, DType::F64, CPU)
        .unwrap()
        .affine(hi - lo, lo)
        .unwrap()
}

pub fn assert_close(got: &[f64], want: &[f64], rtol: f64, atol: f64, what: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g - w).abs() <= atol + rtol * w.abs() || (g.is_nan() && w.is_nan());
        assert!(
            ok,
            "{what}: element {i}: got {g}, want {w}\n got  {got:?}\n want {want:?}"
        );
    }
}

/// Compares autograd's gradient of `sum(f(inputs) * c)` (with `c` a fixed random cotangent) to
/// central finite differences, for every element of every input.
pub fn gradcheck(inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let leaves: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.detach().requires_grad_(true).unwrap())
        .collect();
    let out = f(&leaves).unwrap();
    assert_eq!(out.dtype(), DType::F64, "gradcheck needs an f64 output");
    manual_seed(12345);
    let cot = Tensor::randn(out.shape().clone(), DType::F64, CPU).unwrap();
    let loss = |out: &Tensor| -> f64 {
        out.mul(&cot)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    out.mul(&cot)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let eps = 1e-6;
    for (k, leaf) in leaves.iter().enumerate() {
        let analytic = match leaf.grad() {
            Some(g) => {
                assert_eq!(g.shape(), leaf.shape(), "input {k}: gradient shape");
                g.to_vec::<f64>().unwrap()
            }
            None => vec![0.0; leaf.elem_count()],
        };
        let base = leaf.to_vec::<f64>().unwrap();
        let mut numeric = Vec::with_capacity(base.len());
        for i in 0..base.len() {
            let eval = |delta: f64| {
                let mut v = base.clone();
                v[i] += delta;
                let mut xs: Vec<Tensor> = inputs.to_vec();
                xs[k] = t64(&v, leaf.dims());
                loss(&f(&xs).unwrap())
            };
            numeric.push((eval(eps) - eval(-eps)) / (2.0 * eps));
        }
        assert_close(
            &analytic,
            &numeric,
            1e-5,
            1e-6,
            &format!("gradient of input {k}"),
        );
    }
}

/// The first CUDA device, or `None` (with a line saying why the test skips) without one.
pub fn gpu() -> Option<Device> {
    let dev = Device::Cuda(0);
    if dev.is_available() {
        return Some(dev);
    }
    eprintln!("skipping: no CUDA device (build with --features cuda and run on a GPU machine)");
    None
}

/// Held by each GPU test for its whole run: tests of one binary share the device's memory
/// statistics and seeded generator.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// max |a - b| / max(1, max |b|) over all elements (f64 on the host), panicking on a
/// non-finite `a`. The floor of 1 (random inputs' scale) keeps values that are exactly 0 in
/// the reference from dividing rounding noise by nothing.
pub fn max_rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1f64, |m, x| m.max(x.abs()));
    a.iter().zip(&b).fold(0f64, |m, (x, y)| {
        assert!(x.is_finite(), "non-finite value {x}");
        m.max((x - y).abs())
    }) / scale
}
