//! Activation recomputation (`Tensor::checkpoint`): f64 finite differences through a
//! checkpointed region for its input and the parameters it captures, the same gradients as
//! without it when the region draws random numbers (dropout) or runs under autocast, and plain
//! values under `no_grad`.

mod common;

use common::{gradcheck, randn_away, uniform};
use rustygradients_core::{
    autocast, manual_seed, no_grad, random, AutocastGuard, DType, Device, Result, Tensor,
};

const CPU: Device = Device::Cpu;

/// Tests here seed and draw from the one process-wide generator (`gradcheck`'s cotangent,
/// dropout masks): run concurrently, they would interleave their draws. Each test holds this.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The region: `tanh(x @ w + b) @ wᵀ`, then an elementwise square (several uses of `w`, a
/// broadcast add, a transposed read of a captured parameter).
fn region(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.matmul(w)?.add(b)?.tanh()?.matmul(&w.t()?)?.sqr()
}

#[test]
fn gradcheck_checkpoint() {
    let _serial = serial();
    // x is stored (4, 3) and read transposed: the region's input is a non-contiguous view.
    let x = randn_away(&[4, 3], 1, 0.0);
    let w = randn_away(&[4, 5], 2, 0.0).mul_scalar(0.5).unwrap();
    let b = uniform(&[5], 3, -0.5, 0.5);
    let checkpointed = |v: &[Tensor]| {
        let (w, b) = (v[1].clone(), v[2].clone());
        let xt = v[0].t()?;
        assert!(!xt.is_contiguous());
        let y = xt.checkpoint(move |x| region(x, &w, &b))?;
        // Something after the region, so its incoming gradient is not all ones.
        y.mul(&v[0].t()?)
    };
    gradcheck(&[x.clone(), w.clone(), b.clone()], checkpointed);

    // The same gradients as the region without checkpointing.
    let grads = |check: bool| {
        let leaves: Vec<Tensor> = [&x, &w, &b]
            .iter()
            .map(|t| t.detach().requires_grad_(true).unwrap())
            .collect();
        let y = if check {
            checkpointed(&leaves).unwrap()
        } else {
            region(&leaves[0].t().unwrap(), &leaves[1], &leaves[2])
                .unwrap()
                .mul(&leaves[0].t().unwrap())
                .unwrap()
        };
        y.sum_all().unwrap().backward().unwrap();
        leaves
            .iter()
            .map(|l| l.grad().unwrap().to_vec::<f64>().unwrap())
            .collect::<Vec<_>>()
    };
    let (with, without) = (grads(true), grads(false));
    for (k, (a, b)) in with.iter().zip(&without).enumerate() {
        common::assert_close(a, b, 1e-12, 1e-12, &format!("input {k}"));
    }
}

#[test]
fn gradcheck_checkpoint_of_nested_regions() {
    let _serial = serial();
    let x = randn_away(&[3, 4], 4, 0.0);
    let w = randn_away(&[4, 4], 5, 0.0).mul_scalar(0.5).unwrap();
    let b = uniform(&[4], 6, -0.5, 0.5);
    gradcheck(&[x, w, b], |v| {
        let (w, b) = (v[1].clone(), v[2].clone());
        v[0].checkpoint(move |x| {
            let (w2, b2) = (w.clone(), b.clone());
            let inner = x.checkpoint(move |x| x.matmul(&w2)?.add(&b2)?.tanh())?;
            inner.matmul(&w)?.sin()
        })
    });
}

#[test]
fn an_untracked_input_still_gives_its_parameters_gradients() {
    let _serial = serial();
    let x = randn_away(&[3, 4], 7, 0.0);
    let w = randn_away(&[4, 5], 8, 0.0).requires_grad_(true).unwrap();
    let b = uniform(&[5], 9, -0.5, 0.5).requires_grad_(true).unwrap();
    let (wc, bc) = (w.clone(), b.clone());
    let y = x.checkpoint(move |x| region(x, &wc, &bc)).unwrap();
    assert!(y.is_tracked());
    y.sum_all().unwrap().backward().unwrap();
    let (gw, gb) = (w.grad().unwrap(), b.grad().unwrap());
    assert!(x.grad().is_none(), "x asked for no gradient");
    w.zero_grad();
    b.zero_grad();
    region(&x, &w, &b)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(
        gw.to_vec::<f64>().unwrap(),
        w.grad().unwrap().to_vec::<f64>().unwrap()
    );
    assert_eq!(
        gb.to_vec::<f64>().unwrap(),
        b.grad().unwrap().to_vec::<f64>().unwrap()
    );
}

/// Loss, input gradient and parameter gradient of a dropout region, checkpointed or not, from
/// `manual_seed(seed)`; then the next draws of the global generator.
fn dropout_run(check: bool, seed: u64) -> (f64, Vec<f64>, Vec<f64>, Vec<f64>) {
    let x = randn_away(&[6, 8], 10, 0.0).requires_grad_(true).unwrap();
    let w = randn_away(&[8, 8], 11, 0.0)
        .mul_scalar(0.3)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let f = {
        let w = w.clone();
        move |x: &Tensor| -> Result<Tensor> {
            let h = x.matmul(&w)?.dropout(0.5, true)?.tanh()?;
            h.matmul(&w)?.dropout(0.3, true)?.add(x)
        }
    };
    manual_seed(seed);
    let y = if check {
        x.checkpoint(f).unwrap()
    } else {
        f(&x).unwrap()
    };
    // A draw between the forward and the backward pass (as the next batch would be).
    let _ = Tensor::rand([3], DType::F64, CPU).unwrap();
    let loss = y.sqr().unwrap().sum_all().unwrap();
    loss.backward().unwrap();
    let after = Tensor::rand([4], DType::F64, CPU).unwrap();
    (
        loss.to_scalar::<f64>().unwrap(),
        x.grad().unwrap().to_vec::<f64>().unwrap(),
        w.grad().unwrap().to_vec::<f64>().unwrap(),
        after.to_vec::<f64>().unwrap(),
    )
}

#[test]
fn checkpoint_replays_the_dropout_masks() {
    let _serial = serial();
    let plain = dropout_run(false, 42);
    let checked = dropout_run(true, 42);
    assert_eq!(checked.0, plain.0, "forward loss");
    assert_eq!(checked.1, plain.1, "x's gradient");
    assert_eq!(checked.2, plain.2, "w's gradient");
    // The recomputation put the generator back: what is drawn after backward is unchanged.
    assert_eq!(checked.3, plain.3, "the random stream after backward");
    // And the masks matter: another seed gives another loss.
    let other = dropout_run(true, 43);
    assert_ne!(other.0, plain.0);
    assert_ne!(other.2, plain.2);
}

#[test]
fn checkpoint_under_no_grad_is_the_plain_function() {
    let _serial = serial();
    let x = randn_away(&[3, 4], 12, 0.0).requires_grad_(true).unwrap();
    let w = randn_away(&[4, 5], 13, 0.0).requires_grad_(true).unwrap();
    let b = uniform(&[5], 14, -0.5, 0.5);
    let (wc, bc) = (w.clone(), b.clone());
    let y = no_grad(|| x.checkpoint(move |x| region(x, &wc, &bc))).unwrap();
    assert!(!y.is_tracked(), "nothing recorded under no_grad");
    let want = no_grad(|| region(&x, &w, &b)).unwrap();
    assert_eq!(y.to_vec::<f64>().unwrap(), want.to_vec::<f64>().unwrap());
    // With grad on, the forward values are the same too.
    let (wc, bc) = (w.clone(), b.clone());
    let y = x.checkpoint(move |x| region(x, &wc, &bc)).unwrap();
    assert!(y.is_tracked());
    assert_eq!(y.to_vec::<f64>().unwrap(), want.to_vec::<f64>().unwrap());
}

/// Output values, dtype and f32 gradients of an autocast region, checkpointed or not; the
/// backward pass runs after the autocast scope (or under another one), so only the replay of
/// the recorded autocast state can give the same numbers.
fn autocast_run(check: bool, half: DType) -> (DType, Vec<f64>, Vec<f64>, Vec<f64>, DType) {
    let x = randn_away(&[4, 6], 15, 0.0)
        .to_dtype(DType::F32)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let w = randn_away(&[6, 6], 16, 0.0)
        .mul_scalar(0.4)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    let f = {
        let w = w.clone();
        move |x: &Tensor| -> Result<Tensor> {
            // bf16 matmuls, an f32 softmax, a promoted add back to the f32 stream.
            let h = x.matmul(&w)?.tanh()?;
            h.matmul(&w)?.softmax(-1)?.add(x)
        }
    };
    let y = autocast(half, || if check { x.checkpoint(f) } else { f(&x) })
        .unwrap()
        .unwrap();
    let out_dtype = y.dtype();
    {
        // A different autocast state at backward time.
        let _other = AutocastGuard::new(Some(if half == DType::BF16 {
            DType::F16
        } else {
            DType::BF16
        }))
        .unwrap();
        y.mul(&y).unwrap().sum_all().unwrap().backward().unwrap();
    }
    let gw = w.grad().unwrap();
    (
        out_dtype,
        y.to_f64_vec().unwrap(),
        x.grad().unwrap().to_f64_vec().unwrap(),
        gw.to_f64_vec().unwrap(),
        gw.dtype(),
    )
}

#[test]
fn checkpoint_recomputes_under_the_forward_autocast_state() {
    let _serial = serial();
    for half in [DType::BF16, DType::F16] {
        let plain = autocast_run(false, half);
        let checked = autocast_run(true, half);
        assert_eq!(checked.0, DType::F32, "the promoted residual add is f32");
        assert_eq!(checked.0, plain.0);
        assert_eq!(checked.1, plain.1, "{half:?}: forward values");
        assert_eq!(
            checked.4,
            DType::F32,
            "the f32 parameter's gradient stays f32"
        );
        assert_eq!(checked.2, plain.2, "{half:?}: x's gradient");
        assert_eq!(checked.3, plain.3, "{half:?}: w's gradient");
    }
    // And the half rounding is visible: the f32 run differs from the bf16 one.
    let f32_grads = {
        let x = randn_away(&[4, 6], 15, 0.0)
            .to_dtype(DType::F32)
            .unwrap()
            .requires_grad_(true)
            .unwrap();
        let w = randn_away(&[6, 6], 16, 0.0)
            .mul_scalar(0.4)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .requires_grad_(true)
            .unwrap();
        let wc = w.clone();
        let y = x
            .checkpoint(move |x| {
                let h = x.matmul(&wc)?.tanh()?;
                h.matmul(&wc)?.softmax(-1)?.add(x)
            })
            .unwrap();
        y.mul(&y).unwrap().sum_all().unwrap().backward().unwrap();
        w.grad().unwrap().to_f64_vec().unwrap()
    };
    let bf16 = autocast_run(true, DType::BF16);
    assert_ne!(f32_grads, bf16.3);
    common::assert_close(&bf16.3, &f32_grads, 5e-2, 5e-2, "bf16 vs f32 gradient");
}

/// The checkpoint replays the random stream of the generator the forward pass drew from. With
/// the forward and the backward pass both inside `random::fork_rng` (a thread's own generator,
/// as the gradcheck of dropout uses), the recomputation must draw the forward's masks again and
/// leave the process-wide generator alone.
#[test]
fn checkpoint_replays_dropout_inside_fork_rng() {
    let _serial = serial();
    let run = |check: bool| {
        manual_seed(99);
        let grads = random::fork_rng(5, || dropout_run_unseeded(check));
        let global_after = Tensor::rand([4], DType::F64, CPU)
            .unwrap()
            .to_vec::<f64>()
            .unwrap();
        (grads, global_after)
    };
    let (plain, plain_global) = run(false);
    let (checked, checked_global) = run(true);
    assert_eq!(checked.0, plain.0, "forward loss");
    assert_eq!(
        checked.2, plain.2,
        "w's gradient: the dropout masks were not replayed"
    );
    assert_eq!(checked.1, plain.1, "x's gradient");
    assert_eq!(
        checked_global, plain_global,
        "the process-wide generator was changed by the recomputation"
    );
}

/// [`dropout_run`] without its `manual_seed` (the caller provides the generator).
fn dropout_run_unseeded(check: bool) -> (f64, Vec<f64>, Vec<f64>) {
    let x = Tensor::from_vec(
        (0..48).map(|i| ((i * 7 % 11) as f64 - 5.0) / 4.0).collect(),
        [6, 8],
        CPU,
    )
    .unwrap()
    .requires_grad_(true)
    .unwrap();
    let w = Tensor::from_vec(
        (0..64)
            .map(|i| ((i * 5 % 13) as f64 - 6.0) / 20.0)
            .collect(),
        [8, 8],
        CPU,
    )
    .unwrap()
    .requires_grad_(true)
    .unwrap();
    let f = {
        let w = w.clone();
        move |x: &Tensor| -> Result<Tensor> { x.matmul(&w)?.dropout(0.5, true)?.tanh()?.matmul(&w) }
    };
    let y = if check {
        x.checkpoint(f).unwrap()
    } else {
        f(&x).unwrap()
    };
    let loss = y.sqr().unwrap().sum_all().unwrap();
    loss.backward().unwrap();
    (
        loss.to_scalar::<f64>().unwrap(),
        x.grad().unwrap().to_vec::<f64>().unwrap(),
        w.grad().unwrap().to_vec::<f64>().unwrap(),
    )
}
