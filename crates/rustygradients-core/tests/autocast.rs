//! Automatic mixed precision: which ops autocast runs in half precision (matmul, attention),
//! which it keeps in f32 (norms, softmax, the loss), how it promotes mixed elementwise operands,
//! that f32 leaves get f32 gradients through it, and the `Precision` switch.

mod common;

use common::assert_close;
use rustygradients_core::{
    autocast, autocast_dtype, matmul_allow_tf32, random::fork_rng, AutocastGuard, DType, Device,
    Error, Precision, Reduction, Tensor,
};

const CPU: Device = Device::Cpu;

/// Seeded normal values from a generator of this thread's own (tests run in parallel threads,
/// and `manual_seed` reseeds the one global generator they would share).
fn randn(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
    fork_rng(seed, || Tensor::randn(shape, dtype, CPU)).unwrap()
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

#[test]
fn matmul_of_f32_operands_runs_in_bf16_under_autocast() {
    let a = randn(&[5, 7], DType::F32, 1);
    let b = randn(&[7, 3], DType::F32, 2);
    let want = a.matmul(&b).unwrap();
    assert_eq!(want.dtype(), DType::F32);

    let got = autocast(DType::BF16, || a.matmul(&b)).unwrap().unwrap();
    assert_eq!(got.dtype(), DType::BF16);
    assert_eq!(got.dims(), [5, 3]);
    // Inputs rounded to 8 mantissa bits, the output too: relative errors near 1e-2 at most,
    // with an absolute floor for sums that nearly cancel.
    assert_close(&f64s(&got), &f64s(&want), 1e-2, 3e-2, "bf16 matmul");
    // It is not simply the f32 product: the values went through bf16.
    assert_ne!(f64s(&got), f64s(&want));

    // A batched matmul too, with f16.
    let a3 = randn(&[2, 4, 6], DType::F32, 3);
    let b3 = randn(&[2, 6, 5], DType::F32, 4);
    let got = autocast(DType::F16, || a3.matmul(&b3)).unwrap().unwrap();
    assert_eq!(got.dtype(), DType::F16);
    assert_close(
        &f64s(&got),
        &f64s(&a3.matmul(&b3).unwrap()),
        1e-2,
        1e-2,
        "f16 batched matmul",
    );

    // The scope ended: f32 again.
    assert_eq!(autocast_dtype(), None);
    assert_eq!(a.matmul(&b).unwrap().dtype(), DType::F32);
}

#[test]
fn f64_operands_are_never_cast() {
    let a = randn(&[3, 4], DType::F64, 5);
    let b = randn(&[4, 2], DType::F64, 6);
    let want = a.matmul(&b).unwrap().to_vec::<f64>().unwrap();
    let got = autocast(DType::BF16, || a.matmul(&b)).unwrap().unwrap();
    assert_eq!(got.dtype(), DType::F64);
    assert_eq!(got.to_vec::<f64>().unwrap(), want, "f64 must be untouched");
    let q = randn(&[1, 2, 3, 4], DType::F64, 7);
    let att = autocast(DType::F16, || {
        q.scaled_dot_product_attention(&q, &q, true, 0.0)
    })
    .unwrap()
    .unwrap();
    assert_eq!(att.dtype(), DType::F64);
    // f64 against f64 under autocast: no promotion either.
    assert_eq!(
        autocast(DType::BF16, || a.add(&a))
            .unwrap()
            .unwrap()
            .dtype(),
        DType::F64
    );
}

#[test]
fn mixed_dtype_matmul_outside_autocast_is_an_error() {
    let a = randn(&[3, 4], DType::F32, 8);
    let b = randn(&[4, 2], DType::F32, 9).to_dtype(DType::BF16).unwrap();
    assert!(
        matches!(
            a.matmul(&b),
            Err(Error::DTypeMismatch {
                lhs: DType::F32,
                rhs: DType::BF16,
                ..
            })
        ),
        "{:?}",
        a.matmul(&b)
    );
    // Under autocast the f32 side is cast to the half dtype and the product is bf16.
    let y = autocast(DType::BF16, || a.matmul(&b)).unwrap().unwrap();
    assert_eq!(y.dtype(), DType::BF16);
}

#[test]
fn autocast_rejects_non_half_dtypes() {
    for d in [DType::F32, DType::F64, DType::I64] {
        assert!(
            matches!(
                autocast(d, || ()),
                Err(Error::UnsupportedDType { got, .. }) if got == d
            ),
            "{d:?}"
        );
        assert_eq!(autocast_dtype(), None);
    }
}

#[test]
fn guards_nest_and_restore() {
    assert_eq!(autocast_dtype(), None);
    {
        let _a = AutocastGuard::new(Some(DType::BF16)).unwrap();
        assert_eq!(autocast_dtype(), Some(DType::BF16));
        {
            let _b = AutocastGuard::new(Some(DType::F16)).unwrap();
            assert_eq!(autocast_dtype(), Some(DType::F16));
            {
                // A region leaves autocast.
                let _off = AutocastGuard::new(None).unwrap();
                assert_eq!(autocast_dtype(), None);
                let a = randn(&[2, 2], DType::F32, 10);
                assert_eq!(a.matmul(&a).unwrap().dtype(), DType::F32);
            }
            assert_eq!(autocast_dtype(), Some(DType::F16));
        }
        assert_eq!(autocast_dtype(), Some(DType::BF16));
    }
    assert_eq!(autocast_dtype(), None);
    // The scope is per thread: another thread does not see this one's.
    let _g = AutocastGuard::new(Some(DType::BF16)).unwrap();
    let other = std::thread::spawn(autocast_dtype).join().unwrap();
    assert_eq!(other, None);
}

#[test]
fn norms_softmax_and_loss_compute_in_f32_under_autocast() {
    for half in [DType::BF16, DType::F16] {
        let x32 = randn(&[4, 6], DType::F32, 11);
        let x = x32.to_dtype(half).unwrap();
        let w = randn(&[6], DType::F32, 12);
        let b = randn(&[6], DType::F32, 13);
        let targets = Tensor::from_slice(&[0i64, 5, 2, 3], [4], CPU).unwrap();
        let ops = |x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>| -> Vec<Tensor> {
            vec![
                x.layer_norm(w, b, 1e-5).unwrap(),
                x.rms_norm(w, 1e-5).unwrap(),
                x.softmax(-1).unwrap(),
                x.log_softmax(-1).unwrap(),
                x.cross_entropy(&targets, None, Reduction::Mean).unwrap(),
            ]
        };
        let names = [
            "layer_norm",
            "rms_norm",
            "softmax",
            "log_softmax",
            "cross_entropy",
        ];
        // Under autocast: computed in f32, equal to the op on the half values widened to f32
        // first. The norms hand their result on in the half dtype (their consumers are
        // matmuls); softmax and the loss stay f32.
        let out_dtype = |name: &str| {
            if name.ends_with("_norm") {
                half
            } else {
                DType::F32
            }
        };
        let inside = autocast(half, || ops(&x, Some(&w), Some(&b))).unwrap();
        let x_wide = x.to_dtype(DType::F32).unwrap();
        let reference = ops(&x_wide, Some(&w), Some(&b));
        for ((got, want), name) in inside.iter().zip(&reference).zip(names) {
            assert_eq!(
                got.dtype(),
                out_dtype(name),
                "{name} under {half:?} autocast"
            );
            let want = want.to_dtype(out_dtype(name)).unwrap();
            assert_close(&f64s(got), &f64s(&want), 1e-6, 1e-6, name);
        }
        // Outside: the half dtype stays (weights of the same dtype, as nothing promotes).
        let (wh, bh) = (w.to_dtype(half).unwrap(), b.to_dtype(half).unwrap());
        for (got, name) in ops(&x, Some(&wh), Some(&bh)).iter().zip(names) {
            assert_eq!(got.dtype(), half, "{name} outside autocast");
        }
        // Without weights too.
        let inside = autocast(half, || ops(&x, None, None)).unwrap();
        for (got, name) in inside.iter().zip(names) {
            assert_eq!(got.dtype(), out_dtype(name), "{name} (no weights)");
        }
        for (got, name) in ops(&x, None, None).iter().zip(names) {
            assert_eq!(got.dtype(), half, "{name} (no weights) outside autocast");
        }
    }
}

#[test]
fn f32_ops_keep_f32_inputs_in_f32_under_autocast() {
    let x = randn(&[3, 5], DType::F32, 14);
    let want = f64s(&x.softmax(-1).unwrap());
    let got = autocast(DType::BF16, || x.softmax(-1)).unwrap().unwrap();
    assert_eq!(got.dtype(), DType::F32);
    assert_eq!(f64s(&got), want);
    // Ops autocast has no rule for run in the dtype they are given.
    let h = x.to_dtype(DType::BF16).unwrap();
    let y = autocast(DType::BF16, || h.exp()?.sum_all())
        .unwrap()
        .unwrap();
    assert_eq!(y.dtype(), DType::BF16);
    let y = autocast(DType::BF16, || x.tanh()).unwrap().unwrap();
    assert_eq!(y.dtype(), DType::F32);
}

#[test]
fn mixed_elementwise_operands_promote_under_autocast() {
    let a32 = randn(&[2, 3], DType::F32, 15);
    let b32 = randn(&[3], DType::F32, 16);
    let a = a32.to_dtype(DType::BF16).unwrap();
    let want = f64s(&a.to_dtype(DType::F32).unwrap().add(&b32).unwrap());

    // bf16 + f32 (broadcast) and f32 + bf16: f32, in both orders.
    let (ab, ba) = autocast(DType::BF16, || (a.add(&b32).unwrap(), b32.add(&a).unwrap())).unwrap();
    assert_eq!(ab.dtype(), DType::F32);
    assert_eq!(ba.dtype(), DType::F32);
    assert_eq!(f64s(&ab), want, "computed in f32, not rounded to bf16");
    assert_eq!(f64s(&ba), want);
    // Other binary ops follow the same rule, whichever autocast dtype is active.
    let m = autocast(DType::F16, || a.mul(&b32)).unwrap().unwrap();
    assert_eq!(m.dtype(), DType::F32);
    let s = autocast(DType::BF16, || b32.sub(&a)).unwrap().unwrap();
    assert_eq!(s.dtype(), DType::F32);

    // f16 + bf16: neither holds the other, so they meet in f32.
    let h = a32.to_dtype(DType::F16).unwrap();
    let hb = autocast(DType::BF16, || h.add(&a)).unwrap().unwrap();
    assert_eq!(hb.dtype(), DType::F32);
    let want = f64s(
        &h.to_dtype(DType::F32)
            .unwrap()
            .add(&a.to_dtype(DType::F32).unwrap())
            .unwrap(),
    );
    assert_eq!(f64s(&hb), want);
    // f32 + f64: the wider one.
    let d = randn(&[3], DType::F64, 17);
    let fd = autocast(DType::BF16, || a32.add(&d)).unwrap().unwrap();
    assert_eq!(fd.dtype(), DType::F64);

    // Outside a scope nothing converts.
    for (l, r) in [(&a, &b32), (&b32, &a), (&h, &a), (&a32, &d)] {
        match l.add(r) {
            Err(Error::DTypeMismatch { lhs, rhs, .. }) => {
                assert_eq!((lhs, rhs), (l.dtype(), r.dtype()))
            }
            other => panic!("{:?} + {:?}: {other:?}", l.dtype(), r.dtype()),
        }
    }
    // Integers never promote.
    let i = Tensor::from_slice(&[1i64, 2, 3], [3], CPU).unwrap();
    assert!(autocast(DType::BF16, || b32.add(&i)).unwrap().is_err());
}

/// `sum((x @ w) * c)`'s gradient for `w` (f32), with the matmul under `half` autocast (or not).
fn grads_through_matmul(half: Option<DType>) -> (Tensor, Tensor) {
    let x = randn(&[6, 5], DType::F32, 20).requires_grad_(true).unwrap();
    let w = randn(&[5, 4], DType::F32, 21).requires_grad_(true).unwrap();
    let c = randn(&[6, 4], DType::F32, 22);
    let _guard = AutocastGuard::new(half).unwrap();
    let y = x.matmul(&w).unwrap();
    assert_eq!(y.dtype(), half.unwrap_or(DType::F32));
    // The loss in f32 (promotion of y against the f32 cotangent).
    let loss = y.mul(&c).unwrap().sum_all().unwrap();
    assert_eq!(loss.dtype(), DType::F32);
    loss.backward().unwrap();
    (x.grad().unwrap(), w.grad().unwrap())
}

#[test]
fn f32_leaves_get_f32_gradients_through_autocast_matmuls() {
    let (gx32, gw32) = grads_through_matmul(None);
    for half in [DType::BF16, DType::F16] {
        let (gx, gw) = grads_through_matmul(Some(half));
        assert_eq!(gx.dtype(), DType::F32, "{half:?}: x's gradient");
        assert_eq!(gw.dtype(), DType::F32, "{half:?}: w's gradient");
        assert_eq!(gw.dims(), [5, 4]);
        let tol = if half == DType::BF16 { 2e-2 } else { 5e-3 };
        assert_close(&f64s(&gx), &f64s(&gx32), tol, tol, "x grad");
        assert_close(&f64s(&gw), &f64s(&gw32), tol, tol, "w grad");
    }
}

#[test]
fn attention_of_f32_inputs_runs_in_half_under_autocast() {
    // (batch, heads, time, head_dim)
    let q = randn(&[2, 2, 5, 4], DType::F32, 30)
        .requires_grad_(true)
        .unwrap();
    let k = randn(&[2, 2, 5, 4], DType::F32, 31);
    let v = randn(&[2, 2, 5, 4], DType::F32, 32);
    let want = q.scaled_dot_product_attention(&k, &v, true, 0.0).unwrap();
    assert_eq!(want.dtype(), DType::F32);
    for half in [DType::BF16, DType::F16] {
        q.zero_grad();
        let got = autocast(half, || q.scaled_dot_product_attention(&k, &v, true, 0.0))
            .unwrap()
            .unwrap();
        assert_eq!(got.dtype(), half);
        assert_close(&f64s(&got), &f64s(&want), 2e-2, 2e-2, "attention");
        got.to_dtype(DType::F32)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert_eq!(q.grad().unwrap().dtype(), DType::F32);
    }
    // Outside a scope, f32 stays f32 and mixed dtypes are refused.
    let kh = k.to_dtype(DType::BF16).unwrap();
    assert!(q.scaled_dot_product_attention(&kh, &v, false, 0.0).is_err());
    let mixed = autocast(DType::BF16, || {
        q.scaled_dot_product_attention(&kh, &v, false, 0.0)
    })
    .unwrap()
    .unwrap();
    assert_eq!(mixed.dtype(), DType::BF16);
}

#[test]
fn precision_parses_case_insensitively_and_names_a_bad_value() {
    assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
    assert_eq!("FP16".parse::<Precision>().unwrap(), Precision::Fp16);
    assert_eq!("Tf32".parse::<Precision>().unwrap(), Precision::Tf32);
    assert_eq!("fp32".parse::<Precision>().unwrap(), Precision::Fp32);
    let err = "fp8".parse::<Precision>().unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("fp8") && msg.contains("bf16"), "{msg}");
    assert!("".parse::<Precision>().is_err());
    for p in Precision::ALL {
        assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        // serde uses the same lowercase names.
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, format!("\"{}\"", p.name()));
        assert_eq!(serde_json::from_str::<Precision>(&json).unwrap(), p);
    }
    assert!(serde_json::from_str::<Precision>("\"fp8\"").is_err());
    assert_eq!(Precision::default(), Precision::Fp32);
    assert_eq!(Precision::Bf16.autocast_dtype(), Some(DType::BF16));
    assert_eq!(Precision::Fp16.autocast_dtype(), Some(DType::F16));
    assert_eq!(Precision::Tf32.autocast_dtype(), None);
    assert!(Precision::Fp16.needs_loss_scaling() && !Precision::Bf16.needs_loss_scaling());
}

/// The one test that touches the process-wide TF32 switch (tests run in parallel threads).
#[test]
fn precision_guards_set_and_restore_tf32_and_autocast() {
    assert!(!matmul_allow_tf32(), "TF32 is off by default");
    {
        let _tf32 = Precision::Tf32.enter();
        assert!(matmul_allow_tf32());
        assert_eq!(autocast_dtype(), None);
        {
            let _bf16 = Precision::Bf16.enter();
            assert!(!matmul_allow_tf32(), "bf16 does not use TF32");
            assert_eq!(autocast_dtype(), Some(DType::BF16));
            {
                let _fp16 = Precision::Fp16.enter();
                assert_eq!(autocast_dtype(), Some(DType::F16));
                {
                    let _tf32 = Precision::Tf32.enter();
                    assert!(matmul_allow_tf32());
                    assert_eq!(autocast_dtype(), None);
                }
                assert!(!matmul_allow_tf32());
                assert_eq!(autocast_dtype(), Some(DType::F16));
            }
            assert_eq!(autocast_dtype(), Some(DType::BF16));
        }
        assert!(matmul_allow_tf32(), "restored by the inner guard's drop");
        assert_eq!(autocast_dtype(), None);
        {
            let _fp32 = Precision::Fp32.enter();
            assert!(!matmul_allow_tf32());
        }
        assert!(matmul_allow_tf32());
    }
    assert!(!matmul_allow_tf32(), "restored on drop");
    assert_eq!(autocast_dtype(), None);

    // `run` is a scoped `enter`.
    let a = randn(&[2, 3], DType::F32, 40);
    let b = randn(&[3, 2], DType::F32, 41);
    let y = Precision::Bf16.run(|| a.matmul(&b)).unwrap().unwrap();
    assert_eq!(y.dtype(), DType::BF16);
    let y = Precision::Fp16.run(|| a.matmul(&b)).unwrap().unwrap();
    assert_eq!(y.dtype(), DType::F16);
    assert!(Precision::Tf32.run(matmul_allow_tf32).unwrap());
    // TF32 is a GPU matter: on the CPU an f32 matmul under it stays exact f32.
    let y = Precision::Tf32.run(|| a.matmul(&b)).unwrap().unwrap();
    assert_eq!(
        y.to_vec::<f32>().unwrap(),
        a.matmul(&b).unwrap().to_vec::<f32>().unwrap()
    );
    assert!(!matmul_allow_tf32());
    assert_eq!(autocast_dtype(), None);
}
