//! PyTorch semantics that differ from a naive implementation: integer sums promote to `i64`,
//! integer division is true division, in-place changes to tensors saved for backward are caught
//! by storage version counters, and `cross_entropy` takes `i64` or `u32` class indices.

mod common;

use common::{assert_close, t64, CPU};
use rustygradients_core::{no_grad, AdamHyper, DType, Reduction, Tensor};

// ---- integer sums promote to i64 -----------------------------------------------------------

#[test]
fn u8_sum_promotes_to_i64_instead_of_wrapping() {
    let ones = Tensor::ones(300, DType::U8, CPU).unwrap();
    let s = ones.sum_all().unwrap();
    assert_eq!(s.dtype(), DType::I64);
    assert_eq!(s.to_scalar::<i64>().unwrap(), 300);
    let s = ones.sum(0, false).unwrap();
    assert_eq!(
        (s.dtype(), s.to_scalar::<i64>().unwrap()),
        (DType::I64, 300)
    );
    // A boolean mask counted (the common case: how many predictions were right).
    let a = Tensor::from_vec(vec![1i64; 1000], 1000, CPU).unwrap();
    let hits = a.eq(&a).unwrap().sum_all().unwrap();
    assert_eq!((hits.dtype(), hits.item().unwrap()), (DType::I64, 1000.0));
}

#[test]
fn u32_and_i64_sums_are_i64_and_exact() {
    let big = Tensor::from_vec(vec![u32::MAX, u32::MAX, 2], 3, CPU).unwrap();
    let s = big.sum_all().unwrap();
    assert_eq!(s.dtype(), DType::I64);
    assert_eq!(
        s.to_scalar::<i64>().unwrap(),
        2 * u32::MAX as i64 + 2,
        "u32 sums must not wrap at 2^32"
    );
    // Beyond 2^53 an f64 accumulator would lose the +1.
    let huge = Tensor::from_vec(vec![1i64 << 60, 1, -3], 3, CPU).unwrap();
    assert_eq!(
        huge.sum_all().unwrap().to_scalar::<i64>().unwrap(),
        (1i64 << 60) - 2
    );
}

#[test]
fn integer_sums_over_dims_views_and_empty_tensors() {
    let v: Vec<u8> = (0..24).map(|i| (i * 11 % 256) as u8).collect();
    let x = Tensor::from_vec(v.clone(), [2, 3, 4], CPU).unwrap();
    let s = x.sum([0, 2], true).unwrap();
    assert_eq!(s.dims(), &[1, 3, 1]);
    assert_eq!(s.dtype(), DType::I64);
    let want: Vec<i64> = (0..3)
        .map(|j| {
            (0..2)
                .flat_map(|i| (0..4).map(move |k| (i, k)))
                .map(|(i, k)| v[i * 12 + j * 4 + k] as i64)
                .sum()
        })
        .collect();
    assert_eq!(s.to_vec::<i64>().unwrap(), want);
    // A non-contiguous view.
    let t = x.permute(&[2, 1, 0]).unwrap();
    let s = t.sum(-1, false).unwrap();
    assert_eq!(s.dims(), &[4, 3]);
    let want: Vec<i64> = (0..4)
        .flat_map(|k| (0..3).map(move |j| (k, j)))
        .map(|(k, j)| v[j * 4 + k] as i64 + v[12 + j * 4 + k] as i64)
        .collect();
    assert_eq!(s.to_vec::<i64>().unwrap(), want);
    // Empty reductions give an i64 zero.
    let e = Tensor::zeros([0, 3], DType::U32, CPU).unwrap();
    let s = e.sum(0, false).unwrap();
    assert_eq!(
        (s.dtype(), s.to_vec::<i64>().unwrap()),
        (DType::I64, vec![0; 3])
    );
}

#[test]
fn long_integer_sums_split_across_threads_are_exact() {
    let n = 200_003;
    let v: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    let want: i64 = v.iter().map(|&x| x as i64).sum();
    let x = Tensor::from_vec(v, n, CPU).unwrap();
    assert_eq!(x.sum_all().unwrap().to_scalar::<i64>().unwrap(), want);
    // The same through a view at an offset (element 0 is 0, so the sum is unchanged).
    let y = x.narrow(0, 1, n - 1).unwrap();
    assert_eq!(y.sum_all().unwrap().to_scalar::<i64>().unwrap(), want);
    let z = Tensor::ones([2, 70_000], DType::U8, CPU)
        .unwrap()
        .t()
        .unwrap();
    let s = z.sum_all().unwrap();
    assert_eq!(s.to_scalar::<i64>().unwrap(), 140_000);
}

#[test]
fn float_sums_keep_their_dtype() {
    for dt in [DType::F32, DType::F64, DType::F16, DType::BF16] {
        let x = Tensor::ones([3, 4], dt, CPU).unwrap();
        assert_eq!(x.sum_all().unwrap().dtype(), dt);
        assert_eq!(x.sum(1, false).unwrap().dtype(), dt);
        assert_eq!(x.sum_all().unwrap().item().unwrap(), 12.0);
    }
}

#[test]
fn mean_of_integers_is_an_error_as_in_pytorch() {
    for dt in [DType::U8, DType::U32, DType::I64] {
        let x = Tensor::ones([2, 3], dt, CPU).unwrap();
        let err = x.mean(1, false).unwrap_err().to_string();
        assert!(
            err.contains("mean") && err.contains(&format!("{dt:?}")),
            "{err}"
        );
        assert!(x.mean_all().is_err());
    }
}

// ---- integer division is true division -----------------------------------------------------

#[test]
fn integer_div_is_true_division_giving_f32() {
    let a = Tensor::from_vec(vec![7i64, -7, 1, 0], 4, CPU).unwrap();
    let b = Tensor::from_vec(vec![2i64, 2, 3, 5], 4, CPU).unwrap();
    let q = a.div(&b).unwrap();
    assert_eq!(q.dtype(), DType::F32);
    assert_eq!(
        q.to_vec::<f32>().unwrap(),
        vec![3.5, -3.5, 1.0f32 / 3.0, 0.0]
    );
    // u8 and u32, with broadcasting.
    let a = Tensor::from_vec(vec![1u8, 2, 3, 4, 5, 6], [2, 3], CPU).unwrap();
    let b = Tensor::from_vec(vec![2u8, 4, 8], 3, CPU).unwrap();
    let q = a.div(&b).unwrap();
    assert_eq!((q.dtype(), q.dims()), (DType::F32, &[2usize, 3][..]));
    assert_eq!(
        q.to_vec::<f32>().unwrap(),
        vec![0.5, 0.5, 0.375, 2.0, 1.25, 0.75]
    );
    let a = Tensor::from_vec(vec![9u32, 10], 2, CPU).unwrap();
    assert_eq!(
        a.div(&a.ones_like().unwrap().mul_scalar(4.0).unwrap())
            .unwrap()
            .to_vec::<f32>()
            .unwrap(),
        vec![2.25, 2.5]
    );
}

#[test]
fn integer_division_by_zero_gives_inf_and_nan() {
    let a = Tensor::from_vec(vec![1i64, -1, 0], 3, CPU).unwrap();
    let q = a
        .div(&a.zeros_like().unwrap())
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(q[..2], [f32::INFINITY, f32::NEG_INFINITY]);
    assert!(q[2].is_nan());
}

#[test]
fn integer_div_scalar_is_true_division_giving_f32() {
    let a = Tensor::from_vec(vec![7i64, 8, -3], 3, CPU).unwrap();
    let q = a.div_scalar(2.0).unwrap();
    assert_eq!(q.dtype(), DType::F32);
    assert_eq!(q.to_vec::<f32>().unwrap(), vec![3.5, 4.0, -1.5]);
    let q = Tensor::from_vec(vec![1u8, 2], 2, CPU)
        .unwrap()
        .div_scalar(3.0)
        .unwrap();
    assert_eq!(q.to_vec::<f32>().unwrap(), vec![1.0f32 / 3.0, 2.0f32 / 3.0]);
}

#[test]
fn float_division_and_other_integer_arithmetic_keep_their_dtypes() {
    let x = t64(&[1.0, 3.0], &[2]);
    assert_eq!(x.div(&x).unwrap().dtype(), DType::F64);
    assert_eq!(
        x.div_scalar(2.0).unwrap().to_vec::<f64>().unwrap(),
        vec![0.5, 1.5]
    );
    let a = Tensor::from_vec(vec![7i64, -7], 2, CPU).unwrap();
    let b = Tensor::from_vec(vec![2i64, 2], 2, CPU).unwrap();
    for (name, r) in [
        ("add", a.add(&b)),
        ("sub", a.sub(&b)),
        ("mul", a.mul(&b)),
        ("maximum", a.maximum(&b)),
        ("mul_scalar", a.mul_scalar(3.0)),
        ("add_scalar", a.add_scalar(1.0)),
    ] {
        assert_eq!(r.unwrap().dtype(), DType::I64, "{name}");
    }
    // Mixed dtypes are still refused (there is no implicit promotion).
    let f = Tensor::ones(2, DType::F32, CPU).unwrap();
    assert!(a.div(&f).is_err());
}

// ---- version counters and the saved-tensor check -------------------------------------------

#[test]
fn in_place_writes_bump_the_version_shared_by_views() {
    let w = t64(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let wt = w.t().unwrap();
    assert_eq!((w.version(), wt.version()), (0, 0));
    w.copy_(&t64(&[0.0; 4], &[2, 2])).unwrap();
    assert_eq!((w.version(), wt.version()), (1, 1));
    // Writing through a view bumps its source too.
    let row = w.narrow(0, 1, 1).unwrap();
    row.copy_(&t64(&[5.0, 6.0], &[1, 2])).unwrap();
    assert_eq!((w.version(), wt.version(), row.version()), (2, 2, 2));
    assert_eq!(w.to_vec::<f64>().unwrap(), vec![0.0, 0.0, 5.0, 6.0]);
    // A copy has a counter of its own; out-of-place ops do not bump anything.
    let c = w.copy().unwrap();
    assert_eq!(c.version(), 0);
    let _ = w.mul_scalar(2.0).unwrap();
    assert_eq!(w.version(), 2);
    // adam_step_ bumps the parameter and both moments.
    let p = Tensor::ones(3, DType::F32, CPU).unwrap();
    let (m, v) = (p.zeros_like().unwrap(), p.zeros_like().unwrap());
    p.adam_step_(&p.ones_like().unwrap(), &m, &v, adam(1))
        .unwrap();
    assert_eq!((p.version(), m.version(), v.version()), (1, 1, 1));
}

fn adam(step: u64) -> AdamHyper {
    AdamHyper {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        decoupled: true,
        step,
    }
}

#[test]
fn backward_fails_when_a_saved_tensor_was_modified_in_place() {
    let x = t64(&[1.0, 2.0, 3.0, 4.0], &[2, 2])
        .requires_grad_(true)
        .unwrap();
    let w = t64(&[10.0, 20.0, 30.0, 40.0], &[2, 2]);
    let y = x.mul(&w).unwrap();
    w.copy_(&t64(&[0.0; 4], &[2, 2])).unwrap();
    let err = y.sum(rustygradients_core::All, false).unwrap().backward();
    let msg = err.unwrap_err().to_string();
    assert!(msg.contains("modified in place"), "{msg}");
    assert!(
        msg.starts_with(
            "backward: a tensor of shape [2, 2] saved by mul was modified in place after it was \
             used (version 1, saved at version 0)"
        ),
        "{msg}"
    );
    // The failed backward changed nothing.
    assert!(x.grad().is_none());
}

#[test]
fn the_check_reaches_views_outputs_and_every_in_place_op() {
    // A weight used through a transposed view in a matmul.
    let x = t64(&[1.0; 6], &[2, 3]).requires_grad_(true).unwrap();
    let w = t64(&[1.0; 12], &[4, 3]);
    let loss = x.matmul(&w.t().unwrap()).unwrap().sum_all().unwrap();
    w.copy_(&t64(&[2.0; 12], &[4, 3])).unwrap();
    let msg = loss.backward().unwrap_err().to_string();
    assert!(msg.contains("matmul") && msg.contains("[3, 4]"), "{msg}");

    // An op whose rule reads its own output (exp), changed through a detached alias.
    let x = t64(&[0.0, 1.0], &[2]).requires_grad_(true).unwrap();
    let y = x.exp().unwrap();
    let loss = y.sum_all().unwrap();
    y.detach().copy_(&t64(&[0.0, 0.0], &[2])).unwrap();
    let msg = loss.backward().unwrap_err().to_string();
    assert!(
        msg.contains("saved by exp") && msg.contains("modified in place"),
        "{msg}"
    );

    // A weight updated by adam_step_ between the forward pass and backward.
    let p = Tensor::ones([2, 2], DType::F32, CPU)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let x = Tensor::ones([3, 2], DType::F32, CPU)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let loss = x.matmul(&p).unwrap().sum_all().unwrap();
    let (m, v) = (p.zeros_like().unwrap(), p.zeros_like().unwrap());
    p.adam_step_(&p.ones_like().unwrap(), &m, &v, adam(1))
        .unwrap();
    let msg = loss.backward().unwrap_err().to_string();
    assert!(msg.contains("matmul") && msg.contains("[2, 2]"), "{msg}");

    // Indices read by gather's rule.
    let x = t64(&[1.0, 2.0, 3.0], &[1, 3]).requires_grad_(true).unwrap();
    let ids = Tensor::from_vec(vec![2i64, 0], [1, 2], CPU).unwrap();
    let loss = x.gather(1, &ids).unwrap().sum_all().unwrap();
    ids.copy_(&Tensor::from_vec(vec![1i64, 1], [1, 2], CPU).unwrap())
        .unwrap();
    let msg = loss.backward().unwrap_err().to_string();
    assert!(msg.contains("saved by gather"), "{msg}");
}

#[test]
fn changes_to_tensors_no_rule_reads_are_allowed() {
    // y = x * w with w constant: x's gradient is w, so x itself may change (as in PyTorch).
    let x = t64(&[1.0, 2.0], &[2]).requires_grad_(true).unwrap();
    let w = t64(&[3.0, 4.0], &[2]);
    let loss = x.mul(&w).unwrap().sum_all().unwrap();
    x.copy_(&t64(&[9.0, 9.0], &[2])).unwrap();
    loss.backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), vec![3.0, 4.0]);
    // Addition reads neither operand.
    let b = t64(&[1.0, 1.0], &[2]);
    let loss = x.add(&b).unwrap().sum_all().unwrap();
    b.copy_(&t64(&[5.0, 5.0], &[2])).unwrap();
    x.zero_grad();
    loss.backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), vec![1.0, 1.0]);
}

#[test]
fn backward_without_in_place_changes_still_works() {
    let x = t64(&[1.0, 2.0, 3.0, 4.0], &[2, 2])
        .requires_grad_(true)
        .unwrap();
    let w = t64(&[10.0, 20.0, 30.0, 40.0], &[2, 2]);
    let y = x.mul(&w).unwrap();
    y.sum_all().unwrap().backward().unwrap();
    assert_eq!(
        x.grad().unwrap().to_vec::<f64>().unwrap(),
        vec![10.0, 20.0, 30.0, 40.0]
    );
    // A change made before the op was recorded is not a change "after it was used".
    w.copy_(&t64(&[1.0; 4], &[2, 2])).unwrap();
    x.zero_grad();
    x.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), vec![1.0; 4]);
}

#[test]
fn parameters_updated_between_iterations_train_normally() {
    // Fit y = 2x with one weight, updated in place by SGD (copy_) and by Adam (adam_step_)
    // after each backward, on a new graph each iteration.
    let xs = t64(&[1.0, 2.0, 3.0, 4.0], &[4, 1]);
    let ys = t64(&[2.0, 4.0, 6.0, 8.0], &[4, 1]);
    let w = t64(&[0.0], &[1, 1]).requires_grad_(true).unwrap();
    for _ in 0..50 {
        w.zero_grad();
        let loss = xs
            .matmul(&w)
            .unwrap()
            .mse_loss(&ys, Reduction::Mean)
            .unwrap();
        loss.backward().unwrap();
        let g = w.grad().unwrap();
        no_grad(|| w.copy_(&w.sub(&g.mul_scalar(0.02)?)?)).unwrap();
    }
    assert_eq!(w.version(), 50);
    assert_close(&w.to_f64_vec().unwrap(), &[2.0], 1e-3, 1e-3, "sgd");

    let w = Tensor::zeros([1, 1], DType::F64, CPU)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let (m, v) = (w.zeros_like().unwrap(), w.zeros_like().unwrap());
    for step in 1..=300 {
        w.zero_grad();
        let loss = xs
            .matmul(&w)
            .unwrap()
            .mse_loss(&ys, Reduction::Mean)
            .unwrap();
        loss.backward().unwrap();
        w.adam_step_(&w.grad().unwrap(), &m, &v, adam(step))
            .unwrap();
    }
    assert_close(&w.to_f64_vec().unwrap(), &[2.0], 1e-2, 1e-2, "adam");
}

// ---- cross_entropy targets ------------------------------------------------------------------

#[test]
fn cross_entropy_takes_u32_targets_like_i64() {
    let logits = t64(
        &[
            0.1, 2.0, -1.0, 0.5, 0.3, 0.0, 1.5, -0.2, 0.7, 0.9, -0.4, 0.2,
        ],
        &[3, 4],
    );
    let run = |t: Tensor, ignore: Option<i64>, r: Reduction| {
        let x = logits.detach().requires_grad_(true).unwrap();
        let l = x.cross_entropy(&t, ignore, r).unwrap();
        l.sum_all().unwrap().backward().unwrap();
        (
            l.to_f64_vec().unwrap(),
            x.grad().unwrap().to_f64_vec().unwrap(),
        )
    };
    let t64s = Tensor::from_vec(vec![1i64, 3, 0], 3, CPU).unwrap();
    let t32s = Tensor::from_vec(vec![1u32, 3, 0], 3, CPU).unwrap();
    for r in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        for ignore in [None, Some(3)] {
            let (a, b) = (run(t64s.clone(), ignore, r), run(t32s.clone(), ignore, r));
            assert_eq!(a, b, "{r:?}, ignore {ignore:?}");
        }
    }
    let bad = Tensor::from_vec(vec![1u32, 4, 0], 3, CPU).unwrap();
    let msg = logits
        .cross_entropy(&bad, None, Reduction::Mean)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("cross_entropy") && msg.contains("index 4"),
        "{msg}"
    );
}

#[test]
fn cross_entropy_shape_errors_say_what_it_accepts() {
    let logits = Tensor::zeros([2, 5, 7], DType::F32, CPU).unwrap();
    let targets = Tensor::zeros([2, 5], DType::U32, CPU).unwrap();
    let msg = logits
        .cross_entropy(&targets, None, Reduction::Mean)
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        "cross_entropy: expects logits (N, C) and targets (N,) of class indices (i64 or u32); \
         got logits [2, 5, 7] and targets [2, 5]"
    );
    // Flattened as the message says, the same tensors work.
    let l = logits
        .reshape([10, 7])
        .unwrap()
        .cross_entropy(&targets.flatten_all().unwrap(), None, Reduction::Mean)
        .unwrap();
    assert_close(
        &l.to_f64_vec().unwrap(),
        &[7f64.ln()],
        1e-6,
        1e-6,
        "uniform",
    );
    // Mismatched N.
    let msg = Tensor::zeros([3, 4], DType::F32, CPU)
        .unwrap()
        .cross_entropy(
            &Tensor::zeros(2, DType::I64, CPU).unwrap(),
            None,
            Reduction::Mean,
        )
        .unwrap_err()
        .to_string();
    assert!(msg.ends_with("got logits [3, 4] and targets [2]"), "{msg}");
}
