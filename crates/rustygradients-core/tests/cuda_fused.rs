//! The GPU's fused kernels at training sizes against the CPU's composed ops: LayerNorm and
//! RMSNorm with their weight and bias in one kernel (many rows, so the weight and bias
//! gradients are summed across blocks), in f32, bf16 and f16, and under bf16 autocast (f32
//! input, bf16 output, f32 gradients). Skips without a CUDA device.

mod common;

use common::{gpu, max_rel_err, serial};
use rustygradients_core::{autocast, manual_seed, AdamHyper, DType, Device, Result, Tensor};

/// `y = f()` (under autocast to `half` when given), after backpropagating
/// `loss = sum(y * r)` in f32 through it.
fn forward_backward(f: impl Fn() -> Result<Tensor>, r: &Tensor, half: Option<DType>) -> Tensor {
    let y = match half {
        Some(h) => autocast(h, f).unwrap().unwrap(),
        None => f().unwrap(),
    };
    y.to_dtype(DType::F32)
        .unwrap()
        .mul(&r.to_dtype(DType::F32).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    y
}

/// Asserts that `got[i]` has dtype `dtype(i)` and `want[i]`'s shape and is within `tol`
/// (relative) of it, naming `what` and `i` (0 is the output, then the gradients) otherwise.
fn assert_close(
    got: &[Tensor],
    want: &[Tensor],
    dtype: impl Fn(usize) -> DType,
    tol: f64,
    what: &str,
) {
    assert_eq!(got.len(), want.len(), "{what}: outputs");
    for (i, (a, e)) in got.iter().zip(want).enumerate() {
        assert_eq!(a.dtype(), dtype(i), "{what}: output/grad {i}");
        assert_eq!(a.dims(), e.dims(), "{what}: output/grad {i}");
        let err = max_rel_err(a, e);
        assert!(err <= tol, "{what}: output/grad {i} off by {err:.2e}");
    }
}

/// Under bf16 autocast: a bf16 output (index 0), f32 gradients.
fn autocast_dtype(i: usize) -> DType {
    if i == 0 {
        DType::BF16
    } else {
        DType::F32
    }
}

/// Output and gradients of x, w, b for `loss = sum(norm(x) * r)` with a random `r`.
fn run(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    r: &Tensor,
    rms: bool,
    half: Option<DType>,
) -> Vec<Tensor> {
    let (x, w, b) = (
        x.detach().requires_grad_(true).unwrap(),
        w.detach().requires_grad_(true).unwrap(),
        b.detach().requires_grad_(true).unwrap(),
    );
    let f = || -> Result<Tensor> {
        if rms {
            x.rms_norm(Some(&w), 1e-6)
        } else {
            x.layer_norm(Some(&w), Some(&b), 1e-5)
        }
    };
    let y = forward_backward(f, r, half);
    let mut out = vec![y.detach(), x.grad().unwrap(), w.grad().unwrap()];
    if !rms {
        out.push(b.grad().unwrap());
    }
    out
}

#[test]
fn cuda_fused_norms_match_the_cpu_at_training_sizes() {
    let Some(dev) = gpu() else { return };
    let _g = serial();
    manual_seed(21);
    // Rows of whole 8-element packs take the packed kernels, one to four packs per lane (8,
    // 264, 512, 768, 1000 and 1024, partly filled at 8, 264 and 1000); the rest (1, 33, 2048,
    // 4099) the element-wise ones, whose backward keeps column sums in registers up to 1024.
    for (rows, c) in [
        (1, 1),
        (5, 33),
        (50, 8),
        (100, 264),
        (33, 512),
        (3000, 768),
        (300, 1024),
        (40, 2048),
        (700, 1000),
        (64, 4099),
    ] {
        let cpu = |shape: &[usize]| Tensor::randn(shape, DType::F64, Device::Cpu).unwrap();
        // Rows far from zero mean, as residual streams are.
        let x = cpu(&[rows, c]).add_scalar(3.0).unwrap();
        let (w, b, r) = (cpu(&[c]), cpu(&[c]), cpu(&[rows, c]));
        for rms in [false, true] {
            let want = run(&x, &w, &b, &r, rms, None);
            for (dtype, tol) in [(DType::F32, 2e-5), (DType::BF16, 3e-2), (DType::F16, 4e-3)] {
                let g = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(dev).unwrap();
                let got = run(&g(&x), &g(&w), &g(&b), &g(&r), rms, None);
                for (i, (a, e)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(a.dtype(), dtype);
                    let err = max_rel_err(a, e);
                    assert!(
                        err <= tol * (1.0 + (rows as f64).sqrt() * (i > 1) as u8 as f64),
                        "rms {rms} {dtype:?} ({rows}, {c}): output/grad {i} off by {err:.2e}"
                    );
                }
            }
            // bf16 autocast: f32 input and parameters, bf16 output, f32 gradients.
            let g = |t: &Tensor| t.to_dtype(DType::F32).unwrap().to_device(dev).unwrap();
            let got = run(&g(&x), &g(&w), &g(&b), &g(&r), rms, Some(DType::BF16));
            assert_eq!(got[0].dtype(), DType::BF16);
            for (i, (a, e)) in got.iter().zip(&want).enumerate() {
                if i > 0 {
                    assert_eq!(a.dtype(), DType::F32, "grad {i}");
                }
                let err = max_rel_err(a, e);
                assert!(
                    err <= 3e-2 * (1.0 + (rows as f64).sqrt() * (i > 1) as u8 as f64),
                    "autocast rms {rms} ({rows}, {c}): output/grad {i} off by {err:.2e}"
                );
            }
        }
    }
}

#[test]
fn cuda_norm_gradient_joins_the_residual_streams() {
    // A pre-LN residual block, `t = s + LN(s) * r1` on `s = 1.5 x`: the norm's input gradient
    // joins the residual's in `s`. Against the CPU at widths 768 and 1000, in f32 and bf16.
    let Some(dev) = gpu() else { return };
    let _g = serial();
    manual_seed(25);
    // 4000 rows: more than the grid has warps, so warps also carry a prefetched row.
    for (rows, c) in [(300, 768), (100, 1000), (4000, 768)] {
        let cpu = |shape: &[usize]| Tensor::randn(shape, DType::F64, Device::Cpu).unwrap();
        let (x, w, b, r1, r2) = (
            cpu(&[rows, c]),
            cpu(&[c]),
            cpu(&[c]),
            cpu(&[rows, c]),
            cpu(&[rows, c]),
        );
        let grads = |x: &Tensor, w: &Tensor, b: &Tensor, r1: &Tensor, r2: &Tensor| {
            let (x, w, b) = (
                x.detach().requires_grad_(true).unwrap(),
                w.detach().requires_grad_(true).unwrap(),
                b.detach().requires_grad_(true).unwrap(),
            );
            let s = x.mul_scalar(1.5).unwrap();
            let t = s
                .add(
                    &s.layer_norm(Some(&w), Some(&b), 1e-5)
                        .unwrap()
                        .mul(r1)
                        .unwrap(),
                )
                .unwrap();
            drop(s);
            t.mul(r2)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            vec![x.grad().unwrap(), w.grad().unwrap(), b.grad().unwrap()]
        };
        for (dtype, tol) in [(DType::F32, 2e-5), (DType::BF16, 3e-2)] {
            let round = |t: &Tensor| t.to_dtype(dtype).unwrap().to_dtype(DType::F64).unwrap();
            let want = grads(&round(&x), &round(&w), &round(&b), &round(&r1), &round(&r2));
            let g = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(dev).unwrap();
            let got = grads(&g(&x), &g(&w), &g(&b), &g(&r1), &g(&r2));
            for (i, (a, e)) in got.iter().zip(&want).enumerate() {
                let err = max_rel_err(a, e);
                let tol = tol * (1.0 + (rows as f64).sqrt() * (i > 0) as u8 as f64);
                assert!(
                    err <= tol,
                    "{dtype:?} ({rows}, {c}): grad {i} off by {err:.2e}"
                );
            }
        }
    }
}

/// The multi-tensor sum of squares (gradient clipping's norm): 70 tensors (three launches of
/// up to 32), odd sizes, two tensors that span several blocks of 32768 elements with a partial
/// pack at the end, and a non-contiguous view, in f32, bf16 and f16, against the CPU in f64.
#[test]
fn cuda_sum_sq_many_matches_the_cpu() {
    let Some(dev) = gpu() else { return };
    let _g = serial();
    manual_seed(22);
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let cpu: Vec<Tensor> = (0..70)
            .map(|i| {
                let rows = match i {
                    7 => 21_847,  // 65,541 elements: two full blocks and 5 more
                    40 => 33_331, // 99,993
                    _ => (i * 37) % 301 + 1,
                };
                Tensor::randn([rows, 3], DType::F32, Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap()
            })
            .collect();
        let mut gpu_ts: Vec<Tensor> = cpu.iter().map(|t| t.to_device(dev).unwrap()).collect();
        gpu_ts[5] = gpu_ts[5].t().unwrap();
        let want: f64 = cpu
            .iter()
            .flat_map(|t| t.to_f64_vec().unwrap())
            .map(|v| v * v)
            .sum();
        let got = Tensor::sum_sq_many(&gpu_ts).unwrap();
        assert_eq!(got.dtype(), DType::F64);
        assert_eq!(got.device(), dev);
        let got = got.item().unwrap();
        assert!(
            ((got - want) / want).abs() < 1e-9,
            "{dtype:?}: {got} vs {want}"
        );
    }
}

/// The multi-tensor in-place scale (gradient clipping): 40 tensors (two launches), each
/// dtype, by a factor that lives on the GPU; equal to the CPU's multiply.
#[test]
fn cuda_mul_many_scales_in_place() {
    let Some(dev) = gpu() else { return };
    let _g = serial();
    manual_seed(23);
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let cpu: Vec<Tensor> = (0..40)
            .map(|i| {
                Tensor::randn([i * 13 + 1], DType::F32, Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap()
            })
            .collect();
        let on_gpu: Vec<Tensor> = cpu.iter().map(|t| t.to_device(dev).unwrap()).collect();
        let coef = Tensor::full(0.37, (), DType::F64, dev).unwrap();
        Tensor::mul_many_(&on_gpu, &coef).unwrap();
        for (g, c) in on_gpu.iter().zip(&cpu) {
            let want = c
                .to_dtype(DType::F64)
                .unwrap()
                .mul_scalar(0.37)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            // f32: the factor itself rounds to f32 on the GPU (relative 3e-8), then the product.
            let tol = if dtype == DType::F32 { 1e-6 } else { 1e-2 };
            let err = max_rel_err(g, &want);
            assert!(
                err <= tol,
                "{dtype:?}: off by {err:.2e} (tolerance {tol:.0e})"
            );
        }
    }
}

/// The fused Adam step with a gradient scale read on the device (clipping's coefficient)
/// equals scaling the gradients in place first and stepping without it: to the bit in f32,
/// within bf16 rounding in bf16 (where the in-place scaling rounds the scaled gradient to bf16
/// and the fused step does not); 40 parameters (two launches, tails and whole packs), L2 and
/// decoupled decay; the gradients are left unscaled.
#[test]
fn cuda_adam_grad_scale_equals_scaled_gradients() {
    let Some(dev) = gpu() else { return };
    let _g = serial();
    manual_seed(29);
    for dtype in [DType::F32, DType::BF16] {
        for decoupled in [false, true] {
            let make = || -> Vec<Tensor> {
                (0..40)
                    .map(|i| {
                        Tensor::randn([i * 29 + 3], DType::F32, Device::Cpu)
                            .unwrap()
                            .to_dtype(dtype)
                            .unwrap()
                            .to_device(dev)
                            .unwrap()
                    })
                    .collect()
            };
            let (p, g) = (make(), make());
            let (p2, g2): (Vec<_>, Vec<_>) = (
                p.iter().map(|t| t.copy().unwrap()).collect(),
                g.iter().map(|t| t.copy().unwrap()).collect(),
            );
            let zeros = |v: &[Tensor]| -> Vec<Tensor> {
                v.iter().map(|t| t.zeros_like().unwrap()).collect()
            };
            let (m, v, m2, v2) = (zeros(&p), zeros(&p), zeros(&p), zeros(&p));
            let coef = Tensor::full(0.37, (), DType::F64, dev).unwrap();
            let h = AdamHyper {
                lr: 0.01,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.1,
                decoupled,
                step: 2,
            };
            let items = |p: &[Tensor],
                         g: &[Tensor],
                         m: &[Tensor],
                         v: &[Tensor]|
             -> Vec<(Tensor, Tensor, Tensor, Tensor)> {
                (0..p.len())
                    .map(|i| (p[i].clone(), g[i].clone(), m[i].clone(), v[i].clone()))
                    .collect()
            };
            let a = items(&p, &g, &m, &v);
            let refs: Vec<_> = a.iter().map(|(p, g, m, v)| (p, g, m, v)).collect();
            Tensor::adam_step_many(&refs, h, Some(&coef)).unwrap();
            Tensor::mul_many_(&g2, &coef).unwrap();
            let b = items(&p2, &g2, &m2, &v2);
            let refs: Vec<_> = b.iter().map(|(p, g, m, v)| (p, g, m, v)).collect();
            Tensor::adam_step_many(&refs, h, None).unwrap();
            let bits = |t: &Tensor| t.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap();
            for i in 0..p.len() {
                let what = format!("{dtype:?} decoupled {decoupled}, tensor {i}");
                assert_ne!(bits(&g[i]), bits(&g2[i]), "{what}: the gradient was scaled");
                for (name, x, y) in [
                    ("parameter", &p[i], &p2[i]),
                    ("m", &m[i], &m2[i]),
                    ("v", &v[i], &v2[i]),
                ] {
                    if dtype == DType::F32 {
                        assert_eq!(bits(x), bits(y), "{what}: {name}");
                    } else {
                        let err = max_rel_err(x, y);
                        assert!(err <= 2e-2, "{what}: {name} off by {err:.2e}");
                    }
                }
            }
        }
    }
}

/// `y = x Wᵀ + b` and the gradients of x, W, b for `loss = sum(y * r)`.
fn linear_run(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    r: &Tensor,
    half: Option<DType>,
) -> Vec<Tensor> {
    let (x, w) = (
        x.detach().requires_grad_(true).unwrap(),
        w.detach().requires_grad_(true).unwrap(),
    );
    let b = b.map(|b| b.detach().requires_grad_(true).unwrap());
    let f = || x.linear(&w, b.as_ref());
    let y = forward_backward(f, r, half);
    let mut out = vec![y.detach(), x.grad().unwrap(), w.grad().unwrap()];
    out.extend(b.map(|b| b.grad().unwrap()));
    out
}

#[test]
fn cuda_linear_matches_the_cpu() {
    // The GPU adds the bias in the GEMM and sums its gradient in the weight-gradient GEMM
    // (cuBLASLt epilogues): checked against the CPU's matmul + add on the same rounded inputs,
    // at GPT-2's shapes and at odd ones, with and without bias, and under bf16 autocast.
    let Some(dev) = gpu() else { return };
    let _g = serial();
    manual_seed(22);
    let shapes: [(&[usize], usize); 5] = [
        (&[1, 1], 1),
        (&[7, 5], 3),
        (&[3, 37, 70], 129),
        (&[4, 1024, 768], 2304),
        (&[2, 1024, 3072], 768),
    ];
    for (xs, n) in shapes {
        let k = xs[xs.len() - 1];
        let mut ys = xs[..xs.len() - 1].to_vec();
        ys.push(n);
        let cpu = |shape: &[usize]| Tensor::randn(shape, DType::F64, Device::Cpu).unwrap();
        let (x, w, b, r) = (
            cpu(xs),
            cpu(&[n, k]).mul_scalar(0.05).unwrap(),
            cpu(&[n]),
            cpu(&ys),
        );
        for bias in [true, false] {
            for (dtype, tol) in [
                (DType::F32, 1e-4),
                (DType::BF16, 1.5e-2),
                (DType::F16, 3e-3),
            ] {
                // The reference reads the inputs as rounded to `dtype`.
                let round = |t: &Tensor| t.to_dtype(dtype).unwrap().to_dtype(DType::F64).unwrap();
                let (xr, wr, br, rr) = (round(&x), round(&w), round(&b), round(&r));
                let want = linear_run(&xr, &wr, bias.then_some(&br), &rr, None);
                let g = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(dev).unwrap();
                let got = linear_run(&g(&x), &g(&w), bias.then_some(&g(&b)), &g(&r), None);
                let what = format!("{dtype:?} x {xs:?} n {n} bias {bias}");
                assert_close(&got, &want, |_| dtype, tol, &what);
            }
            // bf16 autocast: f32 input and parameters, bf16 output, f32 gradients.
            let g = |t: &Tensor| t.to_dtype(DType::F32).unwrap().to_device(dev).unwrap();
            let got = linear_run(
                &g(&x),
                &g(&w),
                bias.then_some(&g(&b)),
                &g(&r),
                Some(DType::BF16),
            );
            let want = linear_run(&x, &w, bias.then_some(&b), &r, None);
            let what = format!("autocast x {xs:?} n {n} bias {bias}");
            assert_close(&got, &want, autocast_dtype, 2.5e-2, &what);
        }
    }
}

/// `y = gelu_tanh(x W1ᵀ + b1) W2ᵀ + b2` and the gradients of the inputs that require them
/// (`frozen`: the weights and biases do not) for `loss = sum(y * r)`.
#[allow(clippy::too_many_arguments)]
fn feed_forward_run(
    x: &Tensor,
    w1: &Tensor,
    b1: Option<&Tensor>,
    w2: &Tensor,
    b2: Option<&Tensor>,
    r: &Tensor,
    half: Option<DType>,
    frozen: bool,
) -> Vec<Tensor> {
    let x = x.detach().requires_grad_(true).unwrap();
    let p = |t: &Tensor| t.detach().requires_grad_(!frozen).unwrap();
    let (w1, w2, b1, b2) = (p(w1), p(w2), b1.map(p), b2.map(p));
    let f = || {
        let y = x.feed_forward_gelu_tanh(&w1, b1.as_ref(), &w2, b2.as_ref())?;
        // Where the fused GEMMs apply (2-D input, hidden width a multiple of 8), they ran.
        if x.device().is_cuda() && x.rank() == 2 && w1.dims()[0] % 8 == 0 {
            assert_eq!(
                y.grad_fn(),
                Some("feed_forward"),
                "the fused op was not recorded"
            );
        }
        Ok(y)
    };
    let y = forward_backward(f, r, half);
    let mut out = vec![y.detach(), x.grad().unwrap()];
    if !frozen {
        out.push(w1.grad().unwrap());
        out.extend(b1.map(|b| b.grad().unwrap()));
        out.push(w2.grad().unwrap());
        out.extend(b2.map(|b| b.grad().unwrap()));
    }
    out
}

#[test]
fn cuda_feed_forward_matches_the_cpu() {
    // The GPU applies GPT-2's GELU in the first GEMM's epilogue and its derivative in the
    // backward GEMM through the second weight (cuBLASLt); the CPU composes linear, gelu_tanh,
    // linear. Checked on the same rounded inputs at GPT-2's shape and odd ones (a hidden width
    // that is not a multiple of 8 takes the composed path on the GPU too), with and without
    // biases, with frozen parameters, and under bf16 autocast.
    let Some(dev) = gpu() else { return };
    let _g = serial();
    manual_seed(23);
    let shapes: [(&[usize], usize, usize); 5] = [
        (&[7, 5], 16, 3),
        (&[37, 70], 136, 70),
        (&[3, 37, 70], 136, 70),
        (&[37, 70], 130, 9),
        (&[2048, 768], 3072, 768),
    ];
    for (xs, h, n) in shapes {
        let k = xs[xs.len() - 1];
        let mut ys = xs[..xs.len() - 1].to_vec();
        ys.push(n);
        let cpu = |shape: &[usize]| Tensor::randn(shape, DType::F64, Device::Cpu).unwrap();
        let (x, w1, b1, w2, b2, r) = (
            cpu(xs),
            cpu(&[h, k]).mul_scalar(1.0 / (k as f64).sqrt()).unwrap(),
            cpu(&[h]),
            cpu(&[n, h]).mul_scalar(1.0 / (h as f64).sqrt()).unwrap(),
            cpu(&[n]),
            cpu(&ys),
        );
        for (bias, frozen) in [(true, false), (false, false), (true, true)] {
            let pick = |b: &Tensor| bias.then(|| b.clone());
            for (dtype, tol) in [(DType::F32, 1e-4), (DType::BF16, 2e-2), (DType::F16, 4e-3)] {
                let round = |t: &Tensor| t.to_dtype(dtype).unwrap().to_dtype(DType::F64).unwrap();
                let (b1r, b2r) = (pick(&round(&b1)), pick(&round(&b2)));
                let want = feed_forward_run(
                    &round(&x),
                    &round(&w1),
                    b1r.as_ref(),
                    &round(&w2),
                    b2r.as_ref(),
                    &round(&r),
                    None,
                    frozen,
                );
                let g = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(dev).unwrap();
                let (b1g, b2g) = (pick(&g(&b1)), pick(&g(&b2)));
                let got = feed_forward_run(
                    &g(&x),
                    &g(&w1),
                    b1g.as_ref(),
                    &g(&w2),
                    b2g.as_ref(),
                    &g(&r),
                    None,
                    frozen,
                );
                let what = format!("{dtype:?} x {xs:?} h {h} n {n} bias {bias} frozen {frozen}");
                assert_close(&got, &want, |_| dtype, tol, &what);
            }
            // bf16 autocast: f32 input and parameters, bf16 output, f32 gradients.
            let g = |t: &Tensor| t.to_dtype(DType::F32).unwrap().to_device(dev).unwrap();
            let (b1g, b2g) = (pick(&g(&b1)), pick(&g(&b2)));
            let got = feed_forward_run(
                &g(&x),
                &g(&w1),
                b1g.as_ref(),
                &g(&w2),
                b2g.as_ref(),
                &g(&r),
                Some(DType::BF16),
                frozen,
            );
            let (b1c, b2c) = (pick(&b1), pick(&b2));
            let want = feed_forward_run(&x, &w1, b1c.as_ref(), &w2, b2c.as_ref(), &r, None, frozen);
            let what = format!("autocast x {xs:?} h {h} bias {bias} frozen {frozen}");
            assert_close(&got, &want, autocast_dtype, 3e-2, &what);
        }
    }
}

/// Two residual branches as a pre-LayerNorm block adds them: `t = s + x Wᵀ + b`, then
/// `u = t + feed_forward(t)`, so `t`'s gradient gathers the residual's share and the MLP's.
/// Returns `u` and the gradients of s, x, W, b, W1, b1, W2, b2 for `loss = sum(u * r)`.
fn residual_run(inputs: &[Tensor], r: &Tensor, half: Option<DType>) -> Vec<Tensor> {
    let v: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.detach().requires_grad_(true).unwrap())
        .collect();
    let f = || {
        let t = v[1].linear_add(&v[2], Some(&v[3]), &v[0])?;
        let u = t.feed_forward_gelu_tanh_add(&v[4], Some(&v[5]), &v[6], Some(&v[7]), &t)?;
        // On the GPU, the GEMMs made both sums where the shapes let them.
        // (A 3-D input's output is a reshape of the fused op's.)
        let (c, h) = (v[2].dims()[0], v[4].dims()[0]);
        if v[0].device().is_cuda() && v[0].rank() == 2 && c % 8 == 0 && h % 8 == 0 {
            assert_eq!(t.grad_fn(), Some("linear"), "linear_add was not fused");
            assert_eq!(
                u.grad_fn(),
                Some("feed_forward"),
                "feed_forward_add was not fused"
            );
        }
        Ok(u)
    };
    let u = forward_backward(f, r, half);
    let mut out = vec![u.detach()];
    out.extend(v.iter().map(|t| t.grad().unwrap()));
    out
}

#[test]
fn cuda_residual_adds_match_the_cpu() {
    // `linear_add` and `feed_forward_gelu_tanh_add`: on the GPU the last GEMM adds the
    // residual (cuBLASLt's D = A·B + C). Against the CPU's composed ops on the same rounded
    // inputs, at GPT-2's width and at odd ones (which cuBLASLt may decline), in f32, bf16 and
    // f16, and under bf16 autocast with a bf16 residual stream (as the GPT keeps it).
    let Some(dev) = gpu() else { return };
    let _g = serial();
    manual_seed(26);
    let shapes: [(&[usize], usize); 3] = [(&[64, 32], 128), (&[2, 256, 768], 3072), (&[5, 9], 20)];
    for (xs, h) in shapes {
        let c = xs[xs.len() - 1];
        let cpu = |shape: &[usize]| Tensor::randn(shape, DType::F64, Device::Cpu).unwrap();
        let scaled = |shape: &[usize], fan_in: usize| {
            cpu(shape).mul_scalar(1.0 / (fan_in as f64).sqrt()).unwrap()
        };
        let inputs = [
            cpu(xs),
            cpu(xs),
            scaled(&[c, c], c),
            cpu(&[c]),
            scaled(&[h, c], c),
            cpu(&[h]),
            scaled(&[c, h], h),
            cpu(&[c]),
        ];
        let r = cpu(xs);
        for (dtype, tol) in [(DType::F32, 1e-4), (DType::BF16, 3e-2), (DType::F16, 5e-3)] {
            let round = |t: &Tensor| t.to_dtype(dtype).unwrap().to_dtype(DType::F64).unwrap();
            let want = residual_run(&inputs.each_ref().map(round), &round(&r), None);
            let g = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(dev).unwrap();
            let got = residual_run(&inputs.each_ref().map(g), &g(&r), None);
            assert_close(
                &got,
                &want,
                |_| dtype,
                tol,
                &format!("{dtype:?} x {xs:?} h {h}"),
            );
        }
        // bf16 autocast: f32 parameters and input, a bf16 residual stream (output and its
        // gradients bf16), f32 gradients for the rest.
        let stream = |i: usize| i <= 1;
        let g = |(i, t): (usize, &Tensor)| {
            let d = if i == 0 { DType::BF16 } else { DType::F32 };
            t.to_dtype(d).unwrap().to_device(dev).unwrap()
        };
        let got = residual_run(
            &inputs.iter().enumerate().map(g).collect::<Vec<_>>(),
            &g((1, &r)),
            Some(DType::BF16),
        );
        let mut want_in = inputs.clone();
        want_in[0] = want_in[0]
            .to_dtype(DType::BF16)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let want = residual_run(&want_in, &r, None);
        let dtype = |i: usize| {
            if stream(i) {
                DType::BF16
            } else {
                DType::F32
            }
        };
        assert_close(
            &got,
            &want,
            dtype,
            4e-2,
            &format!("autocast x {xs:?} h {h}"),
        );
    }
}

/// Autocast keeps a GPU parameter's bf16 copy between uses and the fused Adam step rewrites it
/// in place: every cast then equals a fresh cast of the parameter as it is now, after Adam, after
/// an in-place write elsewhere, and a gradient through the kept copy reaches the f32 parameter.
#[test]
fn cuda_autocast_parameter_copies_follow_the_parameter() {
    let Some(dev) = gpu() else { return };
    let _g = serial();
    manual_seed(27);
    let gpu_randn = |shape: &[usize]| {
        Tensor::randn(shape, DType::F32, Device::Cpu)
            .unwrap()
            .to_device(dev)
            .unwrap()
    };
    // 1003 elements: whole 16-byte packs and a tail in the Adam kernel.
    let p = gpu_randn(&[17, 59]).requires_grad_(true).unwrap();
    let (m, v) = (p.zeros_like().unwrap(), p.zeros_like().unwrap());
    let cast = || {
        autocast(DType::BF16, || p.autocast_half())
            .unwrap()
            .unwrap()
    };
    let bits = |t: &Tensor| t.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap();
    let fresh = || bits(&p.detach().to_dtype(DType::BF16).unwrap());
    let first = cast();
    assert_eq!(first.dtype(), DType::BF16);
    assert_eq!(bits(&first), fresh());
    assert_eq!(bits(&cast()), fresh());
    let h = AdamHyper {
        lr: 0.05,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
        decoupled: true,
        step: 1,
    };
    for step in 1..=3 {
        let g = gpu_randn(&[17, 59]);
        let before = first.version();
        // Step 2 reads its gradient through a device-side scale.
        let scale = (step == 2).then(|| Tensor::full(0.5, (), DType::F64, dev).unwrap());
        Tensor::adam_step_many(&[(&p, &g, &m, &v)], AdamHyper { step, ..h }, scale.as_ref())
            .unwrap();
        // The kept copy was rewritten in place (so a graph that saved it would refuse to run).
        assert!(
            first.version() > before,
            "step {step}: the copy was not rewritten"
        );
        assert_eq!(bits(&cast()), fresh(), "step {step}");
    }
    // An in-place write that is not Adam's: the next cast sees it.
    p.copy_(&gpu_randn(&[17, 59])).unwrap();
    assert_eq!(bits(&cast()), fresh(), "after copy_");
    // The gradient through the kept copy reaches the f32 parameter (as bf16 values: the
    // gradient of a cast to f32 is cast back to bf16).
    let w = gpu_randn(&[17, 59]);
    autocast(DType::BF16, || -> Result<()> {
        let y = p
            .autocast_half()?
            .to_dtype(DType::F32)?
            .mul(&w)?
            .sum_all()?;
        y.backward()
    })
    .unwrap()
    .unwrap();
    let grad = p.grad().unwrap();
    assert_eq!(grad.dtype(), DType::F32);
    assert_eq!(bits(&grad), bits(&w.to_dtype(DType::BF16).unwrap()));
}

#[test]
fn cuda_vectorised_elementwise_matches_the_cpu() {
    // Contiguous operands take the 16-byte-per-thread kernels when their addresses are
    // aligned, and the strided kernels otherwise: lengths around the pack width (tails), and
    // views starting one element in (misaligned) or one pack in (aligned, offset).
    let Some(dev) = gpu() else { return };
    let _g = serial();
    manual_seed(23);
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        for n in [1usize, 7, 8, 9, 4099, 65541] {
            for start in [0usize, 1, 8] {
                let len = n.saturating_sub(start).max(1);
                let total = len + start;
                let cpu = |seed: f64| {
                    Tensor::randn(total, DType::F64, Device::Cpu)
                        .unwrap()
                        .add_scalar(seed)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap()
                };
                let (a, b, r) = (cpu(0.0), cpu(0.5), cpu(0.0));
                let on = |t: &Tensor, d: Device| {
                    t.to_device(d)
                        .unwrap()
                        .narrow(0, start, len)
                        .unwrap()
                        .requires_grad_(false)
                        .unwrap()
                };
                let ops = |d: Device| -> Vec<Tensor> {
                    let (a, b, r) = (on(&a, d), on(&b, d), on(&r, d));
                    let x = a.detach().requires_grad_(true).unwrap();
                    // GELU forward and backward, and x's gradient accumulated from two uses.
                    let y = x.gelu().unwrap();
                    let loss = y
                        .mul(&r)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .add(&x.mul(&b).unwrap().sum_all().unwrap())
                        .unwrap();
                    loss.backward().unwrap();
                    vec![
                        a.add(&b).unwrap(),
                        a.mul(&b).unwrap(),
                        a.sub(&b).unwrap(),
                        y.detach(),
                        x.grad().unwrap(),
                        a.to_dtype(DType::F32).unwrap().to_dtype(dtype).unwrap(),
                        a.to_dtype(DType::F32).unwrap(),
                    ]
                };
                let (got, want) = (ops(dev), ops(Device::Cpu));
                let tol = match dtype {
                    DType::F32 => 1e-5,
                    DType::BF16 => 1e-2,
                    _ => 2e-3,
                };
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let err = max_rel_err(g, w);
                    assert!(
                        err <= tol,
                        "{dtype:?} n {n} start {start}: result {i} off by {err:.2e}"
                    );
                }
            }
        }
    }
}

#[test]
fn cuda_cross_entropy_matches_the_cpu_at_vocabulary_width() {
    // GPT-2's padded vocabulary and a width of whole 16-byte packs (rows read 16 bytes at a
    // time; rows the fused forward keeps in shared memory), and an odd width (one element
    // at a time), in each float dtype, with ignored targets and a row holding -inf logits:
    // the per-row losses and the logits' gradient against the CPU on the same rounded logits.
    let Some(dev) = gpu() else { return };
    let _g = serial();
    manual_seed(24);
    use rustygradients_core::Reduction;
    for c in [50304usize, 1000, 1003] {
        let rows = 40;
        let mut logits = Tensor::randn([rows, c], DType::F64, Device::Cpu)
            .unwrap()
            .mul_scalar(3.0)
            .unwrap()
            .to_vec::<f64>()
            .unwrap();
        // Row 1: most classes masked out with -inf.
        for v in logits[c..2 * c].iter_mut().skip(5) {
            *v = f64::NEG_INFINITY;
        }
        let logits = Tensor::from_vec(logits, [rows, c], Device::Cpu).unwrap();
        let targets: Vec<i64> = (0..rows as i64)
            .map(|i| if i % 7 == 3 { -100 } else { (i * 7919) % 5 })
            .collect();
        let targets = Tensor::from_vec(targets, rows, Device::Cpu).unwrap();
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 1e-2), (DType::F16, 2e-3)] {
            let run = |x: &Tensor, t: &Tensor| {
                let x = x.detach().requires_grad_(true).unwrap();
                let l = x.cross_entropy(t, Some(-100), Reduction::None).unwrap();
                l.to_dtype(DType::F64)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                (l.detach(), x.grad().unwrap())
            };
            let rounded = logits.to_dtype(dtype).unwrap();
            let (want_l, want_g) = run(&rounded.to_dtype(DType::F64).unwrap(), &targets);
            let (got_l, got_g) = run(
                &rounded.to_device(dev).unwrap(),
                &targets.to_device(dev).unwrap(),
            );
            let (el, eg) = (max_rel_err(&got_l, &want_l), max_rel_err(&got_g, &want_g));
            assert!(
                el <= tol && eg <= tol,
                "{dtype:?} c {c}: loss off by {el:.2e}, grad by {eg:.2e}"
            );
            // Logits that only the loss sees (computed from x and not kept) get their
            // gradient written over them; logits the caller still holds must keep their
            // values.
            let (xg, tg) = (
                rounded
                    .to_device(dev)
                    .unwrap()
                    .requires_grad_(true)
                    .unwrap(),
                targets.to_device(dev).unwrap(),
            );
            let ce = |x: Tensor| x.cross_entropy(&tg, Some(-100), Reduction::Mean).unwrap();
            // Doubling keeps the -inf logits -inf.
            let held = xg.mul_scalar(2.0).unwrap();
            ce(held.clone()).backward().unwrap();
            let held_grad = xg.grad().unwrap();
            let values = |t: &Tensor| t.to_dtype(DType::F64).unwrap().to_vec::<f64>().unwrap();
            assert!(
                values(&held) == values(&xg.mul_scalar(2.0).unwrap()),
                "{dtype:?} c {c}: logits the caller holds were changed by backward"
            );
            xg.zero_grad();
            // The doubled logits live only in the loss's graph when backward runs.
            let l = ce(xg.mul_scalar(2.0).unwrap());
            l.backward().unwrap();
            let e = max_rel_err(&xg.grad().unwrap(), &held_grad);
            assert!(
                e <= tol,
                "{dtype:?} c {c}: in-place gradient off by {e:.2e}"
            );
            // Logits handed over whole get their gradient in the forward pass: a sum with
            // ignored rows and a mean, each backpropagated from 1 (rows left as written) and
            // scaled by 0.5 (rows rescaled), against the two-pass path.
            let all = targets.maximum_scalar(0.0).unwrap().to_device(dev).unwrap();
            for (t, ignore, r) in [
                (&tg, Some(-100), Reduction::Sum),
                (&all, None, Reduction::Mean),
            ] {
                for scale in [1.0, 0.5] {
                    let run = |fused: bool| {
                        xg.zero_grad();
                        let x = xg.mul_scalar(2.0).unwrap();
                        let l = if fused {
                            x.into_cross_entropy(t, ignore, r)
                        } else {
                            x.cross_entropy(t, ignore, r)
                        };
                        let l = l.unwrap().mul_scalar(scale).unwrap();
                        l.backward().unwrap();
                        (l.to_dtype(DType::F64).unwrap(), xg.grad().unwrap())
                    };
                    let ((wl, wg), (gl, gg)) = (run(false), run(true));
                    let (el, eg) = (max_rel_err(&gl, &wl), max_rel_err(&gg, &wg));
                    assert!(
                        el <= 1e-6 && eg <= tol,
                        "{dtype:?} c {c} {r:?} x{scale}: fused loss off by {el:.2e}, \
                         gradient by {eg:.2e}"
                    );
                }
            }
        }
    }
}

#[test]
fn cuda_slice_gradients_assemble_like_the_cpu() {
    // A fused projection's gradient is assembled from the gradients of its slices of the last
    // dim (q, k, v): copied into the first, added into the others. Rows are moved 16 bytes at
    // a time when the slice width and row strides allow (64 columns), one element at a time
    // otherwise (13).
    let Some(dev) = gpu() else { return };
    let _g = serial();
    manual_seed(25);
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        for (rows, c) in [(5usize, 64usize), (300, 768), (7, 13)] {
            let cpu = |s: &[usize]| {
                Tensor::randn(s, DType::F64, Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap()
            };
            let (parent, r) = (cpu(&[rows, 3 * c]), cpu(&[3, rows, c]));
            let run = |d: Device| -> Vec<Tensor> {
                let p = parent.to_device(d).unwrap().requires_grad_(true).unwrap();
                let r = r.to_device(d).unwrap();
                let mut loss: Option<Tensor> = None;
                // k first, then q, then v: the first slice is copied, the rest added.
                for i in [1usize, 0, 2] {
                    let part = p
                        .narrow(1, i * c, c)
                        .unwrap()
                        .mul(&r.narrow(0, i, 1).unwrap().squeeze(0).unwrap())
                        .unwrap()
                        .to_dtype(DType::F32)
                        .unwrap()
                        .sum_all()
                        .unwrap();
                    loss = Some(match loss {
                        Some(l) => l.add(&part).unwrap(),
                        None => part,
                    });
                }
                loss.unwrap().backward().unwrap();
                // And a slice made contiguous (rows copied out of the wider matrix).
                let mid = p.detach().narrow(1, c, c).unwrap().contiguous().unwrap();
                vec![p.grad().unwrap(), mid]
            };
            let (got, want) = (run(dev), run(Device::Cpu));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let err = max_rel_err(g, w);
                assert!(
                    err == 0.0,
                    "{dtype:?} ({rows}, 3·{c}): result {i} off by {err:.2e}"
                );
            }
        }
    }
}
