//! Helpers shared by the integration tests: f64 tensors, closeness checks and the
//! finite-difference gradient check.
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
