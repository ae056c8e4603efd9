//! FlashAttention on the GPU (f16/bf16, head dims 64 and 128) against the unfused f32 path:
//! outputs and the gradients of q, k and v, causal and not, lengths from 1 to 4096 including
//! non-multiples of the 64-row tiles and queries ≠ keys. The reference is the same rounded
//! inputs in f32 on the same GPU, through the GEMM + softmax path (itself tested against the
//! CPU in `cuda_ops.rs`). Every case runs twice: through cuDNN's fused attention (where cuDNN
//! is installed; with `RUSTYGRADIENTS_EXPECT_CUDNN=1` the tests fail unless it ran for every
//! self-attention case) and through our own kernels (`flash.cu`). Skips without a CUDA device.
//!
//! Tolerances (max error over the largest reference magnitude, at least 1): bf16 2e-2, f16 4e-3 — the
//! probabilities are rounded to the operands' dtype before the second product, as in every
//! FlashAttention.

mod common;

use common::{gpu, max_rel_err, serial};
use rustygradients_core::{
    cudnn_attention_calls, manual_seed, set_cudnn_enabled, DType, Device, Result, Tensor,
};

fn tol(dtype: DType) -> f64 {
    if dtype == DType::BF16 {
        2e-2
    } else {
        4e-3
    }
}

fn expect_cudnn() -> bool {
    std::env::var("RUSTYGRADIENTS_EXPECT_CUDNN").is_ok_and(|v| v == "1")
}

/// `run` with cuDNN allowed or not; checks which implementation ran (cuDNN takes
/// self-attention, `t == s`, when allowed and installed).
fn run_on(
    cudnn: bool,
    self_attn: bool,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    go: &Tensor,
    causal: bool,
) -> Vec<Tensor> {
    set_cudnn_enabled(cudnn);
    let before = cudnn_attention_calls();
    let got = run(q, k, v, go, causal);
    set_cudnn_enabled(true);
    let ran = cudnn_attention_calls() - before;
    if !cudnn || !self_attn {
        assert_eq!(ran, 0, "cuDNN ran where it must not");
    } else if expect_cudnn() {
        assert_eq!(ran, 2, "cuDNN did not run forward and backward");
    }
    got.unwrap()
}

/// Output and q/k/v gradients of attention on `(b, h, t, d)` / `(b, h, s, d)` operands.
fn run(q: &Tensor, k: &Tensor, v: &Tensor, go: &Tensor, causal: bool) -> Result<Vec<Tensor>> {
    let (q, k, v) = (
        q.detach().requires_grad_(true)?,
        k.detach().requires_grad_(true)?,
        v.detach().requires_grad_(true)?,
    );
    let out = q.scaled_dot_product_attention(&k, &v, causal, 0.0)?;
    out.backward_with(&go.to_dtype(out.dtype())?)?;
    Ok(vec![
        out.detach(),
        q.grad().unwrap(),
        k.grad().unwrap(),
        v.grad().unwrap(),
    ])
}

#[allow(clippy::too_many_arguments)]
fn case(dev: Device, dtype: DType, b: usize, h: usize, t: usize, s: usize, d: usize, causal: bool) {
    let mk = |rows: usize| {
        Tensor::randn([b, h, rows, d], DType::F32, Device::Cpu)
            .unwrap()
            .to_device(dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    };
    let (q, k, v, go) = (mk(t), mk(s), mk(s), mk(t));
    let f32s = |x: &Tensor| x.to_dtype(DType::F32).unwrap();
    let want = run(&f32s(&q), &f32s(&k), &f32s(&v), &f32s(&go), causal).unwrap();
    for cudnn in [true, false] {
        let got = run_on(cudnn, t == s, &q, &k, &v, &go, causal);
        for (name, (g, w)) in ["out", "dq", "dk", "dv"].iter().zip(got.iter().zip(&want)) {
            assert_eq!(g.dtype(), dtype, "{name} dtype");
            assert_eq!(g.dims(), w.dims(), "{name} shape");
            let e = max_rel_err(g, w);
            assert!(
                e <= tol(dtype),
                "{dtype:?} b {b} h {h} t {t} s {s} d {d} causal {causal} cudnn {cudnn}: {name} \
                 off by {e:.2e} (tolerance {:.0e})",
                tol(dtype)
            );
        }
    }
}

/// Every dtype, head dim and mask at lengths up to 257 (tails of every tile; small enough for
/// compute-sanitizer).
#[test]
fn cuda_flash_attention_small() {
    let Some(dev) = gpu() else { return };
    let _g = serial();
    manual_seed(7);
    for dtype in [DType::BF16, DType::F16] {
        for d in [64, 128] {
            for causal in [true, false] {
                for (t, s) in [(1, 1), (17, 17), (64, 64), (100, 100), (257, 257)] {
                    case(dev, dtype, 2, 3, t, s, d, causal);
                }
                // Queries and keys of different lengths (causal masks are top-left aligned).
                case(dev, dtype, 1, 2, 37, 100, d, causal);
                case(dev, dtype, 1, 2, 100, 37, d, causal);
            }
        }
    }
}

#[test]
fn cuda_flash_attention_training_sizes() {
    let Some(dev) = gpu() else { return };
    let _g = serial();
    manual_seed(11);
    for dtype in [DType::BF16, DType::F16] {
        for d in [64, 128] {
            for causal in [true, false] {
                case(dev, dtype, 2, 3, 1024, 1024, d, causal);
            }
        }
    }
}

#[test]
fn cuda_flash_attention_long_sequences() {
    let Some(dev) = gpu() else { return };
    let _g = serial();
    manual_seed(8);
    for d in [64, 128] {
        case(dev, DType::BF16, 1, 2, 4096, 4096, d, true);
        case(dev, DType::F16, 1, 1, 4096, 4096, d, false);
        case(dev, DType::BF16, 1, 1, 4000, 4000, d, true);
    }
}

/// Heads taken as views of a fused qkv projection (non-contiguous), as `SelfAttention` does.
#[test]
fn cuda_flash_attention_on_strided_heads() {
    let Some(dev) = gpu() else { return };
    let _g = serial();
    manual_seed(9);
    let (b, t, h, hd) = (2, 130, 4, 64);
    let qkv = Tensor::randn([b, t, 3 * h * hd], DType::F32, Device::Cpu)
        .unwrap()
        .to_device(dev)
        .unwrap();
    let go = Tensor::randn([b, h, t, hd], DType::F32, Device::Cpu)
        .unwrap()
        .to_device(dev)
        .unwrap();
    let heads = |x: &Tensor, i: usize| {
        x.narrow(2, i * h * hd, h * hd)
            .unwrap()
            .reshape([b, t, h, hd])
            .unwrap()
            .transpose(1, 2)
            .unwrap()
    };
    let half = qkv.to_dtype(DType::BF16).unwrap();
    let (hq, hk, hv) = (heads(&half, 0), heads(&half, 1), heads(&half, 2));
    let via_cudnn = run_on(true, true, &hq, &hk, &hv, &go, true);
    let got = run_on(false, true, &hq, &hk, &hv, &go, true);
    let back = half.to_dtype(DType::F32).unwrap();
    let want = run(
        &heads(&back, 0),
        &heads(&back, 1),
        &heads(&back, 2),
        &go,
        true,
    )
    .unwrap();
    for (g, w) in got.iter().chain(&via_cudnn).zip(want.iter().cycle()) {
        assert!(max_rel_err(g, w) <= tol(DType::BF16));
    }
    // The same heads copied to contiguous (n, t, d) slices take flash.cu's unstrided kernels:
    // the same numbers, bit for bit, except dq, whose f32 atomic sums may add in another order.
    let flat = |x: &Tensor| x.contiguous().unwrap().reshape([b * h, t, hd]).unwrap();
    let got3 = run_on(
        false,
        true,
        &flat(&hq),
        &flat(&hk),
        &flat(&hv),
        &flat(&go),
        true,
    );
    for (i, (g4, g3)) in got.iter().zip(&got3).enumerate() {
        if i == 1 {
            assert!(max_rel_err(&flat(g4), g3) <= 1e-2);
        } else {
            assert_eq!(flat(g4).to_f64_vec().unwrap(), g3.to_f64_vec().unwrap());
        }
    }
}

/// Heads split from one fused projection (GPT-2's `c_attn`): the gradient reaches the
/// projection whole. cuDNN writes dq, dk and dv side by side into one buffer of its layout;
/// flash.cu's three gradients are joined. Both against the unfused f32 path.
#[test]
fn cuda_flash_attention_gradient_of_a_fused_projection() {
    let Some(dev) = gpu() else { return };
    let _g = serial();
    manual_seed(10);
    let (b, t, h, hd) = (2, 200, 3, 64);
    let c = h * hd;
    let cpu = |shape: &[usize]| Tensor::randn(shape, DType::F32, Device::Cpu).unwrap();
    let (qkv, go) = (cpu(&[b, t, 3 * c]), cpu(&[b, t, c]));
    // `loss = sum(attention(qkv) · go)`; the gradient of qkv.
    let grad = |qkv: &Tensor, cudnn: bool| -> Tensor {
        let x = qkv.to_device(dev).unwrap().requires_grad_(true).unwrap();
        // As a linear layer returns it: a (b, t, 3c) view of its (b·t, 3c) result.
        let proj = x
            .reshape([b * t, 3 * c])
            .unwrap()
            .mul_scalar(1.0)
            .unwrap()
            .reshape([b, t, 3 * c])
            .unwrap();
        let heads = |i: usize| {
            proj.narrow(2, i * c, c)
                .unwrap()
                .reshape([b, t, h, hd])
                .unwrap()
                .transpose(1, 2)
                .unwrap()
        };
        set_cudnn_enabled(cudnn);
        let y = heads(0)
            .scaled_dot_product_attention(&heads(1), &heads(2), true, 0.0)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape([b, t, c])
            .unwrap();
        set_cudnn_enabled(true);
        let go = go.to_device(dev).unwrap().to_dtype(y.dtype()).unwrap();
        y.mul(&go)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g = x.grad().unwrap();
        assert_eq!(g.dims(), [b, t, 3 * c]);
        g
    };
    let half = qkv.to_dtype(DType::BF16).unwrap();
    let want = grad(&half.to_dtype(DType::F32).unwrap(), false);
    for cudnn in [true, false] {
        let got = grad(&half, cudnn);
        assert_eq!(got.dtype(), DType::BF16);
        let err = max_rel_err(&got, &want);
        assert!(err <= tol(DType::BF16), "cudnn {cudnn}: off by {err:.2e}");
    }
}

/// O(T) memory: the forward and backward at T = 4096 allocate far less than one (T, T) score
/// matrix per slice would take.
#[test]
fn cuda_flash_attention_never_allocates_the_score_matrix() {
    let Some(dev) = gpu() else { return };
    let _g = serial();
    manual_seed(10);
    let (n, t, d) = (8, 4096, 64);
    let mk = || {
        Tensor::randn([n, t, d], DType::F32, Device::Cpu)
            .unwrap()
            .to_device(dev)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap()
            .requires_grad_(true)
            .unwrap()
    };
    let (q, k, v) = (mk(), mk(), mk());
    dev.synchronize().unwrap();
    let before = dev.memory_stats().unwrap().unwrap().in_use;
    dev.reset_peak_memory().unwrap();
    let out = q.scaled_dot_product_attention(&k, &v, true, 0.0).unwrap();
    out.sum_all().unwrap().backward().unwrap();
    dev.synchronize().unwrap();
    let peak = dev.memory_stats().unwrap().unwrap().peak;
    let scores = (n * t * t * 2) as u64; // one bf16 score matrix for all slices
    assert!(
        peak - before < scores / 4,
        "attention at T {t} used {} MiB over its inputs; one score matrix is {} MiB",
        (peak - before) >> 20,
        scores >> 20
    );
}
