//! The CUDA backend against the CPU backend: every public op of the core, forward and backward,
//! on seeded random inputs, plus what only the GPU has to get right on its own (random numbers,
//! index errors recorded by kernels, mixing devices, training-size shapes).
//!
//! Every test starts with `let Some(dev) = gpu() else { return };`: in a build without the `cuda`
//! feature, or on a machine without a GPU, it prints one line and passes. On a GPU machine:
//! `cargo test -p rustygradients-core --features cuda --test cuda_ops`.
//!
//! How one comparison works ([`check`]): the inputs are made on the CPU; each device gets leaves
//! of its own (the GPU's are copies, `x.detach().to_device(dev)`), the float ones collecting
//! gradients. The same closure runs on both devices; the outputs must agree in dtype, shape and
//! values. Then `(out * w).sum_all()`, with the same random `w` on both devices, is
//! backpropagated on each, and every input's gradient must agree too (and lie on its device).
//!
//! Tolerances, per element: `|gpu - cpu| <= tol * max(1, |cpu|)`. A NaN never passes, on either
//! side; infinities pass only when equal.
//! - f32 elementwise: [`F32_ELEM`] = 1e-5. Both devices evaluate the same formula on the same
//!   values; their `exp`, `tanh`, `erf`, ... may differ by a few ulp (an f32 ulp is 1.2e-7
//!   relative).
//! - f32 results that add up many terms: [`F32_SUM`] = 1e-4. Reductions, matmul, softmax,
//!   norms, losses, attention, and gradients that sum over broadcast dims or repeated indices:
//!   the GPU adds in another order (tree reductions, GEMM tiles, atomics), so roundings differ
//!   by up to about √n ulps of the partial sums. 1e-4 still fails a GEMM that rounds its inputs
//!   to TF32 (10 mantissa bits) at the training sizes.
//! - f64: [`F64_TOL`] = 1e-10: the same up to summation order.
//! - f16: [`F16_TOL`] = 1e-2, about 10 ulps of f16 (2^-10 relative): the devices may round
//!   intermediate results differently (GPU half kernels compute in f32 and matmuls accumulate in
//!   f32; the CPU may round between steps).
//! - bf16: [`BF16_TOL`] = 2e-2. bf16 keeps 8 significant bits, so one ulp is up to 2^-7 = 0.8%
//!   relative: 1e-2 admits a single rounding difference but not the two that a fused op on one
//!   side and a chain of rounded ops on the other (layer_norm with weight and bias) can give.
//!   Gradients: [`BF16_GRAD_TOL`] = 4e-2, since gradient rules that raise the output to a power
//!   multiply a one-ulp difference of the forward value (`rsqrt`'s uses `out³`: 3 ulps, 2.3%,
//!   seen on an H200).
//! - Copies, casts to integers, comparisons, indices: exact.
//!
//! The tests take one lock for their whole run ([`serial`]): they reseed the one global random
//! generator, and the error tests leave a kernel error for the next `synchronize` to report;
//! neither may leak into another test running on another thread.

use std::sync::{Mutex, MutexGuard, Once};

use rustygradients_core::{
    manual_seed, AdamHyper, All, DType, Device, Error, Reduction, Result, Tensor, WithDType,
};

const CPU: Device = Device::Cpu;

/// f32 elementwise results (see the module docs).
const F32_ELEM: f64 = 1e-5;
/// f32 results that sum many terms: summation order differs between the devices.
const F32_SUM: f64 = 1e-4;
/// f64 results.
const F64_TOL: f64 = 1e-10;
/// f16 results, compared as f64 (exact conversions): about 10 f16 ulps.
const F16_TOL: f64 = 1e-2;
/// bf16 results: two bf16 ulps (see the module docs).
const BF16_TOL: f64 = 2e-2;
/// bf16 gradients: a one-ulp forward difference cubed by `rsqrt`'s rule (see the module docs).
const BF16_GRAD_TOL: f64 = 4e-2;

const DTYPES: [DType; 7] = [
    DType::F32,
    DType::F64,
    DType::F16,
    DType::BF16,
    DType::I64,
    DType::U32,
    DType::U8,
];

// ---------------------------------------------------------------------------------------------
// The device, and one test at a time

/// The GPU, or `None` (after one line on stderr) when this build or this machine has none.
fn gpu() -> Option<Device> {
    let dev = Device::Cuda(0);
    if dev.is_available() {
        return Some(dev);
    }
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        let why = dev
            .synchronize()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        eprintln!(
            "skipping: no CUDA device (build with --features cuda and run on a GPU machine): {why}"
        );
    });
    None
}

/// Held by every test for its whole run (see the module docs).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Inputs (all on the CPU, from the global generator seeded at the start of each test)

fn randn(shape: &[usize]) -> Tensor {
    Tensor::randn(shape, DType::F32, CPU).unwrap()
}

fn randn_std(shape: &[usize], std: f64) -> Tensor {
    randn(shape).mul_scalar(std).unwrap()
}

fn uniform(shape: &[usize], lo: f64, hi: f64) -> Tensor {
    Tensor::rand(shape, DType::F32, CPU)
        .unwrap()
        .affine(hi - lo, lo)
        .unwrap()
}

/// Normal values moved `gap` away from 0, so that no input sits near a kink or pole at 0
/// (`abs`, `relu`, `sign`, `recip`, a divisor).
fn away(shape: &[usize], gap: f32) -> Tensor {
    let v: Vec<f32> = randn(shape)
        .to_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(|x| x + gap * x.signum())
        .collect();
    host(v, shape)
}

fn host<T: WithDType>(v: Vec<T>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape, CPU).unwrap()
}

/// Uniform integers in `[lo, hi)` as `dtype`.
fn ints(shape: &[usize], lo: i64, hi: i64, dtype: DType) -> Tensor {
    Tensor::randint(lo, hi, shape, CPU)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// Class indices in `[0, hi)` as `i64`.
fn ids(shape: &[usize], hi: i64) -> Tensor {
    ints(shape, 0, hi, DType::I64)
}

/// Where an input for a unary or binary op is drawn from.
#[derive(Clone, Copy)]
enum Domain {
    /// Normal with std 2.
    Any,
    /// Uniform in [0.2, 4).
    Positive,
    /// Normal, at least 0.3 away from 0.
    AwayFromZero,
}

impl Domain {
    fn sample(self, shape: &[usize]) -> Tensor {
        match self {
            Domain::Any => randn_std(shape, 2.0),
            Domain::Positive => uniform(shape, 0.2, 4.0),
            Domain::AwayFromZero => away(shape, 0.3),
        }
    }
}

type Unary = fn(&Tensor) -> Result<Tensor>;
type Binary = fn(&Tensor, &Tensor) -> Result<Tensor>;
/// Turns an input into the (often non-contiguous) view an op is applied to.
type Prep = fn(&Tensor) -> Result<Tensor>;

fn same(t: &Tensor) -> Result<Tensor> {
    Ok(t.clone())
}
fn tr(t: &Tensor) -> Result<Tensor> {
    t.t()
}
fn tr_last(t: &Tensor) -> Result<Tensor> {
    t.transpose(-2, -1)
}

// ---------------------------------------------------------------------------------------------
// Comparisons

#[derive(Clone, Copy, Debug)]
struct Tol {
    fwd: f64,
    grad: f64,
}

const EXACT: Tol = Tol {
    fwd: 0.0,
    grad: 0.0,
};
/// Elementwise f32 ops.
const ELEM: Tol = Tol {
    fwd: F32_ELEM,
    grad: F32_ELEM,
};
/// Elementwise forward whose gradient sums over broadcast dims.
const BCAST: Tol = Tol {
    fwd: F32_ELEM,
    grad: F32_SUM,
};
/// Forward and backward sum many terms.
const SUM: Tol = Tol {
    fwd: F32_SUM,
    grad: F32_SUM,
};

fn both(t: f64) -> Tol {
    Tol { fwd: t, grad: t }
}

/// The tolerance of a float dtype's results and gradients; f32's is that of sums.
fn dtype_tol(dtype: DType) -> Tol {
    match dtype {
        DType::BF16 => Tol {
            fwd: BF16_TOL,
            grad: BF16_GRAD_TOL,
        },
        _ => both(float_tol(dtype)),
    }
}

/// The tolerance of a float dtype's results; f32's is that of sums.
fn float_tol(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => F64_TOL,
        DType::F16 => F16_TOL,
        DType::BF16 => BF16_TOL,
        _ => F32_SUM,
    }
}

fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16)
}

fn close(g: f64, c: f64, tol: f64) -> bool {
    if g == c {
        return true; // exact, equal infinities included
    }
    if g.is_nan() || c.is_nan() || g.is_infinite() || c.is_infinite() {
        return false;
    }
    (g - c).abs() <= tol * c.abs().max(1.0)
}

fn rel_err(g: f64, c: f64) -> f64 {
    if g == c {
        0.0
    } else if g.is_nan() || c.is_nan() || g.is_infinite() || c.is_infinite() {
        f64::INFINITY
    } else {
        (g - c).abs() / c.abs().max(1.0)
    }
}

fn unravel(mut i: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for (k, &d) in dims.iter().enumerate().rev() {
        if d > 0 {
            idx[k] = i % d;
            i /= d;
        }
    }
    idx
}

/// `got` (the GPU's) against `want` (the CPU's): dtype, shape, then every element.
fn assert_close(name: &str, what: &str, got: &Tensor, want: &Tensor, tol: f64) -> Result<()> {
    assert_eq!(
        got.dtype(),
        want.dtype(),
        "{name}: {what}: dtype, gpu vs cpu"
    );
    assert_eq!(got.dims(), want.dims(), "{name}: {what}: shape, gpu vs cpu");
    let (g, c) = (got.to_f64_vec()?, want.to_f64_vec()?);
    assert_eq!(
        g.len(),
        want.elem_count(),
        "{name}: {what}: gpu to_vec length"
    );
    assert_eq!(
        c.len(),
        want.elem_count(),
        "{name}: {what}: cpu to_vec length"
    );
    let bad: Vec<usize> = (0..c.len()).filter(|&i| !close(g[i], c[i], tol)).collect();
    if let Some(&first) = bad.first() {
        let worst = bad
            .iter()
            .copied()
            .max_by(|&a, &b| rel_err(g[a], c[a]).total_cmp(&rel_err(g[b], c[b])))
            .unwrap_or(first);
        panic!(
            "{name}: {what}: {} of {} elements differ by more than {tol} x max(1, |cpu|); \
             first at {:?}: gpu {} cpu {}; worst at {:?}: gpu {} cpu {}",
            bad.len(),
            c.len(),
            unravel(first, want.dims()),
            g[first],
            c[first],
            unravel(worst, want.dims()),
            g[worst],
            c[worst],
        );
    }
    Ok(())
}

/// Runs `f` on CPU inputs and on GPU copies and compares outputs and input gradients (see the
/// module docs). Panics, naming `name`, on a difference or an error.
fn check(
    dev: Device,
    name: &str,
    inputs: impl AsRef<[Tensor]>,
    tol: Tol,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) {
    if let Err(e) = compare_devices(dev, name, inputs.as_ref(), tol, true, &f) {
        panic!("{name}: {e}");
    }
}

/// [`check`] without gradients: for ops that record none, and for inputs whose values make the
/// gradient meaningless (infinities).
fn check_fwd(
    dev: Device,
    name: &str,
    inputs: impl AsRef<[Tensor]>,
    tol: f64,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) {
    if let Err(e) = compare_devices(dev, name, inputs.as_ref(), both(tol), false, &f) {
        panic!("{name}: {e}");
    }
}

fn compare_devices(
    dev: Device,
    name: &str,
    inputs: &[Tensor],
    tol: Tol,
    grads: bool,
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<()> {
    let leaf = |t: Tensor| {
        if grads && t.dtype().is_float() {
            t.requires_grad_(true)
        } else {
            Ok(t)
        }
    };
    let cpu_in = inputs
        .iter()
        .map(|x| leaf(x.detach()))
        .collect::<Result<Vec<_>>>()?;
    let gpu_in = inputs
        .iter()
        .map(|x| leaf(x.detach().to_device(dev)?))
        .collect::<Result<Vec<_>>>()?;
    let want = f(&cpu_in)?;
    let got = f(&gpu_in)?;
    assert_eq!(got.device(), dev, "{name}: the output is not on the GPU");
    assert_close(name, "forward", &got, &want, tol.fwd)?;
    if !grads || !want.dtype().is_float() || !want.is_tracked() {
        return Ok(());
    }
    assert!(
        got.is_tracked(),
        "{name}: the CPU output records a graph, the GPU output none"
    );
    let w = Tensor::randn(want.shape(), DType::F32, CPU)?.to_dtype(want.dtype())?;
    want.mul(&w)?.sum_all()?.backward()?;
    got.mul(&w.to_device(dev)?)?.sum_all()?.backward()?;
    for (i, (c, g)) in cpu_in.iter().zip(&gpu_in).enumerate() {
        let what = format!("gradient of input {i}");
        match (c.grad(), g.grad()) {
            (None, None) => {}
            (Some(cg), Some(gg)) => {
                assert_eq!(gg.device(), dev, "{name}: {what} is not on the GPU");
                assert_close(name, &what, &gg, &cg, tol.grad)?;
            }
            (cg, gg) => panic!(
                "{name}: {what}: present on the cpu: {}, on the gpu: {}",
                cg.is_some(),
                gg.is_some()
            ),
        }
    }
    Ok(())
}

/// Compares a tensor made on each device by `f` (creation ops, seeded host draws).
fn check_made(dev: Device, name: &str, tol: f64, f: impl Fn(Device) -> Result<Tensor>) {
    let run = || -> Result<()> {
        let want = f(CPU)?;
        let got = f(dev)?;
        assert_eq!(got.device(), dev, "{name}: the output is not on the GPU");
        assert_close(name, "values", &got, &want, tol)
    };
    if let Err(e) = run() {
        panic!("{name}: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Elementwise

fn unary_ops() -> Vec<(&'static str, Unary, Domain)> {
    use Domain::*;
    vec![
        ("neg", Tensor::neg, Any),
        ("abs", Tensor::abs, AwayFromZero),
        ("exp", Tensor::exp, Any),
        ("log", Tensor::log, Positive),
        ("sqrt", Tensor::sqrt, Positive),
        ("rsqrt", Tensor::rsqrt, Positive),
        ("sin", Tensor::sin, Any),
        ("cos", Tensor::cos, Any),
        ("tanh", Tensor::tanh, Any),
        ("sigmoid", Tensor::sigmoid, Any),
        ("relu", Tensor::relu, AwayFromZero),
        ("gelu", Tensor::gelu, Any),
        ("gelu_tanh", Tensor::gelu_tanh, Any),
        ("silu", Tensor::silu, Any),
        ("softplus", Tensor::softplus, Any),
        ("sqr", Tensor::sqr, Any),
        ("recip", Tensor::recip, AwayFromZero),
        ("erf", Tensor::erf, Any),
        ("sign", Tensor::sign, AwayFromZero),
        ("powf(3)", |t| t.powf(3.0), Any),
        ("powf(2.5)", |t| t.powf(2.5), Positive),
        ("powf(-0.5)", |t| t.powf(-0.5), Positive),
        ("clamp(-0.5, 1)", |t| t.clamp(-0.5, 1.0), Any),
        ("affine(-1.5, 0.25)", |t| t.affine(-1.5, 0.25), Any),
        ("add_scalar", |t| t.add_scalar(0.75), Any),
        ("sub_scalar", |t| t.sub_scalar(-2.0), Any),
        ("mul_scalar", |t| t.mul_scalar(-3.0), Any),
        ("div_scalar", |t| t.div_scalar(7.0), Any),
        ("maximum_scalar", |t| t.maximum_scalar(0.3), Any),
        ("minimum_scalar", |t| t.minimum_scalar(0.3), Any),
    ]
}

/// The views elementwise ops are applied to: contiguous, transposed, narrowed (an offset and a
/// row stride larger than the row).
const UNARY_LAYOUTS: [(&str, &[usize], Prep); 3] = [
    ("contiguous (6,35)", &[6, 35], same),
    ("transposed (35,6)", &[35, 6], tr),
    ("narrowed (6,40)[:, 3:38]", &[6, 40], narrow_cols_3_35),
];

fn narrow_cols_3_35(t: &Tensor) -> Result<Tensor> {
    t.narrow(1, 3, 35)
}

#[test]
fn cuda_unary_ops() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(1);
    for (op_name, op, domain) in unary_ops() {
        for (layout, shape, prep) in UNARY_LAYOUTS {
            let x = domain.sample(shape);
            check(dev, &format!("{op_name} on {layout}"), &[x], ELEM, |x| {
                op(&prep(&x[0])?)
            });
        }
    }
}

#[test]
fn cuda_unary_ops_at_extreme_values() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    // Where naive formulas overflow (softplus, tanh as a ratio of exponentials) or lose all
    // precision; exp(100) is inf in f32 on both devices.
    let x = host(
        vec![
            -100f32, -30., -10., -3., -0.5, -1e-3, 1e-3, 0.5, 3., 10., 30., 100.,
        ],
        &[12],
    );
    let ops: [(&str, Unary); 8] = [
        ("exp", Tensor::exp),
        ("sigmoid", Tensor::sigmoid),
        ("tanh", Tensor::tanh),
        ("softplus", Tensor::softplus),
        ("gelu", Tensor::gelu),
        ("gelu_tanh", Tensor::gelu_tanh),
        ("silu", Tensor::silu),
        ("erf", Tensor::erf),
    ];
    for (name, op) in ops {
        check(
            dev,
            &format!("{name} at extreme values"),
            [x.clone()],
            ELEM,
            |x| op(&x[0]),
        );
    }
}

#[test]
fn cuda_unary_ops_on_integers() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(2);
    let ops: [(&str, Unary); 8] = [
        ("neg", Tensor::neg),
        ("abs", Tensor::abs),
        ("relu", Tensor::relu),
        ("sqr", Tensor::sqr),
        ("sign", Tensor::sign),
        ("add_scalar(2.7)", |t| t.add_scalar(2.7)),
        ("mul_scalar(-1.5)", |t| t.mul_scalar(-1.5)),
        ("div_scalar(4) (true division)", |t| t.div_scalar(4.0)),
    ];
    // i64 with both signs; u8 where neg saturates at 0 and sqr at 255.
    let inputs = [
        ("i64", ints(&[4, 9], -50, 50, DType::I64)),
        ("u8", ints(&[4, 9], 0, 30, DType::U8)),
        ("u32", ints(&[4, 9], 0, 1000, DType::U32)),
    ];
    for (tag, x) in &inputs {
        for (name, op) in ops {
            check_fwd(dev, &format!("{name} on {tag}"), [x.clone()], 0.0, |x| {
                op(&x[0])
            });
        }
        check_fwd(
            dev,
            &format!("neg on transposed {tag}"),
            [x.clone()],
            0.0,
            |x| x[0].t()?.neg(),
        );
    }
}

fn binary_ops() -> Vec<(&'static str, Binary, Domain, Domain)> {
    use Domain::*;
    vec![
        ("add", Tensor::add, Any, Any),
        ("sub", Tensor::sub, Any, Any),
        ("mul", Tensor::mul, Any, Any),
        ("div", Tensor::div, Any, AwayFromZero),
        ("pow", Tensor::pow, Positive, Any),
        ("maximum", Tensor::maximum, Any, Any),
        ("minimum", Tensor::minimum, Any, Any),
    ]
}

fn permute_201(t: &Tensor) -> Result<Tensor> {
    t.permute(&[2, 0, 1])
}
fn narrow_cols_2_5(t: &Tensor) -> Result<Tensor> {
    t.narrow(1, 2, 5)
}
fn expand_4_5(t: &Tensor) -> Result<Tensor> {
    t.expand([4, 5])
}

/// Operand layouts of the binary tests: `(name, lhs shape, lhs view, rhs shape, rhs view)`.
type BinaryCase = (&'static str, &'static [usize], Prep, &'static [usize], Prep);

const BINARY_CASES: [BinaryCase; 8] = [
    ("(4,5) with (4,5)", &[4, 5], same, &[4, 5], same),
    ("(3,1,5) with (4,5)", &[3, 1, 5], same, &[4, 5], same),
    ("(4,5) with (3,1,5)", &[4, 5], same, &[3, 1, 5], same),
    ("(4,1) with (1,5)", &[4, 1], same, &[1, 5], same),
    ("(4,5) with a 0-d scalar", &[4, 5], same, &[], same),
    (
        "transposed (5,4) with narrowed (4,8)[:, 2:7]",
        &[5, 4],
        tr,
        &[4, 8],
        narrow_cols_2_5,
    ),
    (
        "permuted (2,3,4)->(4,2,3) with (4,1,3)",
        &[2, 3, 4],
        permute_201,
        &[4, 1, 3],
        same,
    ),
    (
        "expanded (4,1)->(4,5) with transposed (5,4)",
        &[4, 1],
        expand_4_5,
        &[5, 4],
        tr,
    ),
];

#[test]
fn cuda_binary_broadcast() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(3);
    for (op_name, op, da, db) in binary_ops() {
        for (case, sa, pa, sb, pb) in BINARY_CASES {
            let (a, b) = (da.sample(sa), db.sample(sb));
            check(dev, &format!("{op_name} {case}"), &[a, b], BCAST, |x| {
                op(&pa(&x[0])?, &pb(&x[1])?)
            });
        }
    }
    // One operand used twice, and an op on the output of another.
    let a = randn(&[4, 5]);
    check(
        dev,
        "mul of a tensor by its own transpose-view",
        &[a],
        BCAST,
        |x| x[0].mul(&x[0].t()?.t()?)?.add(&x[0].narrow(1, 0, 1)?),
    );
}

#[test]
fn cuda_binary_ops_on_integers() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(4);
    let a = ints(&[3, 1, 5], -20, 20, DType::I64);
    let b = ints(&[4, 5], 1, 20, DType::I64);
    let exact: [(&str, Binary); 5] = [
        ("add", Tensor::add),
        ("sub", Tensor::sub),
        ("mul", Tensor::mul),
        ("maximum", Tensor::maximum),
        ("minimum", Tensor::minimum),
    ];
    for (name, op) in exact {
        check_fwd(
            dev,
            &format!("{name} on i64 (3,1,5) with (4,5)"),
            &[a.clone(), b.clone()],
            0.0,
            |x| op(&x[0], &x[1]),
        );
    }
    // True division gives f32.
    check_fwd(
        dev,
        "div on i64 (true division to f32)",
        &[a.clone(), b.clone()],
        F32_ELEM,
        |x| x[0].div(&x[1]),
    );
    // Integers wrap on overflow.
    let (p, q) = (
        ints(&[4, 5], 100, 256, DType::U8),
        ints(&[4, 5], 100, 256, DType::U8),
    );
    check_fwd(
        dev,
        "add on u8 (wraps)",
        &[p.clone(), q.clone()],
        0.0,
        |x| x[0].add(&x[1]),
    );
    check_fwd(dev, "mul on u8 (wraps)", &[p, q], 0.0, |x| x[0].mul(&x[1]));
    let (s, t) = (
        ints(&[4, 5], 0, 10, DType::U32),
        ints(&[4, 5], 5, 1000, DType::U32),
    );
    check_fwd(dev, "sub on u32 (wraps)", &[s, t], 0.0, |x| x[0].sub(&x[1]));
}

/// Small integers as f32 (so that equal pairs occur), with a NaN at index 3.
fn small_ints_with_nan(shape: &[usize]) -> Tensor {
    let mut v: Vec<f32> = randn(shape)
        .to_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(|x| (x * 1.5).round())
        .collect();
    v[3] = f32::NAN;
    host(v, shape)
}

#[test]
fn cuda_comparisons() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(5);
    let ops: [(&str, Binary); 6] = [
        ("eq", Tensor::eq),
        ("ne", Tensor::ne),
        ("lt", Tensor::lt),
        ("le", Tensor::le),
        ("gt", Tensor::gt),
        ("ge", Tensor::ge),
    ];
    let cases = [
        (
            "f32 (3,1,5) with (4,5), with NaN",
            small_ints_with_nan(&[3, 1, 5]),
            small_ints_with_nan(&[4, 5]),
        ),
        (
            "f32 (4,5) with (4,5)",
            small_ints_with_nan(&[4, 5]),
            small_ints_with_nan(&[4, 5]),
        ),
        (
            "i64 (3,1,5) with (4,5)",
            ints(&[3, 1, 5], -3, 3, DType::I64),
            ints(&[4, 5], -3, 3, DType::I64),
        ),
        (
            "u8 (4,5) with (4,5)",
            ints(&[4, 5], 0, 4, DType::U8),
            ints(&[4, 5], 0, 4, DType::U8),
        ),
    ];
    for (op_name, op) in ops {
        for (case, a, b) in &cases {
            check_fwd(
                dev,
                &format!("{op_name} {case}"),
                &[a.clone(), b.clone()],
                0.0,
                |x| {
                    let m = op(&x[0], &x[1])?;
                    assert_eq!(m.dtype(), DType::U8, "{op_name}: comparisons give u8");
                    Ok(m)
                },
            );
        }
        let (a, b) = (small_ints_with_nan(&[5, 4]), small_ints_with_nan(&[4, 8]));
        check_fwd(
            dev,
            &format!("{op_name} transposed with narrowed"),
            &[a, b],
            0.0,
            |x| op(&x[0].t()?, &x[1].narrow(1, 2, 5)?),
        );
        let a = small_ints_with_nan(&[4, 5]);
        check_fwd(
            dev,
            &format!("{op_name} with a 0-d scalar"),
            &[a],
            0.0,
            |x| op(&x[0], &Tensor::full(0.0, (), DType::F32, x[0].device())?),
        );
    }
}

#[test]
fn cuda_where_cond_and_masked_fill() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(6);
    // Mask values 0, 1 and 2: every non-zero value selects.
    let mask = ints(&[4, 5], 0, 3, DType::U8);
    let (on_true, on_false) = (randn(&[3, 4, 5]), randn(&[5]));
    check(
        dev,
        "where_cond mask (4,5), on_true (3,4,5), on_false (5)",
        &[mask.clone(), on_true.clone(), on_false.clone()],
        BCAST,
        |x| x[0].where_cond(&x[1], &x[2]),
    );
    let mask_t = ints(&[5, 4], 0, 2, DType::U8);
    check(
        dev,
        "where_cond with a transposed mask and a transposed branch",
        &[mask_t, randn(&[5, 4]), randn(&[4, 5])],
        BCAST,
        |x| x[0].t()?.where_cond(&x[1].t()?, &x[2]),
    );
    check(
        dev,
        "masked_fill (3,4,5) with mask (4,5)",
        &[on_true.clone(), mask.clone()],
        ELEM,
        |x| x[0].masked_fill(&x[1], -1.5),
    );
    check(
        dev,
        "masked_fill of a permuted input",
        &[randn(&[5, 3, 4]), mask.clone()],
        ELEM,
        |x| x[0].permute(&[1, 2, 0])?.masked_fill(&x[1], 2.25),
    );
    check_fwd(
        dev,
        "where_cond on i64 branches",
        &[
            mask.clone(),
            ints(&[4, 5], -9, 9, DType::I64),
            ints(&[1, 5], -9, 9, DType::I64),
        ],
        0.0,
        |x| x[0].where_cond(&x[1], &x[2]),
    );
}

// ---------------------------------------------------------------------------------------------
// Reductions

fn permute_120(t: &Tensor) -> Result<Tensor> {
    t.permute(&[1, 2, 0])
}
fn narrow_mid_1_5(t: &Tensor) -> Result<Tensor> {
    t.narrow(1, 1, 5)
}

/// Inputs of the reduction tests, all seen as (4,5,6).
const REDUCE_LAYOUTS: [(&str, &[usize], Prep); 3] = [
    ("contiguous (4,5,6)", &[4, 5, 6], same),
    ("permuted (6,4,5)->(4,5,6)", &[6, 4, 5], permute_120),
    ("narrowed (4,7,6)[:, 1:6]", &[4, 7, 6], narrow_mid_1_5),
];

const DIM_SETS: [&[i64]; 7] = [&[0], &[1], &[-1], &[0, 2], &[2, 1], &[0, 1, 2], &[-3, -1]];

#[test]
fn cuda_reductions() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(7);
    for (layout, shape, prep) in REDUCE_LAYOUTS {
        let x = randn(shape);
        for dims in DIM_SETS {
            for keep in [false, true] {
                let at = format!("over {dims:?} keepdim={keep} of {layout}");
                let inp = || [x.clone()];
                check(dev, &format!("sum {at}"), inp(), SUM, |x| {
                    prep(&x[0])?.sum(dims, keep)
                });
                check(dev, &format!("mean {at}"), inp(), SUM, |x| {
                    prep(&x[0])?.mean(dims, keep)
                });
                check(dev, &format!("max {at}"), inp(), SUM, |x| {
                    prep(&x[0])?.max(dims, keep)
                });
                check(dev, &format!("min {at}"), inp(), SUM, |x| {
                    prep(&x[0])?.min(dims, keep)
                });
                for unbiased in [false, true] {
                    check(
                        dev,
                        &format!("var unbiased={unbiased} {at}"),
                        inp(),
                        SUM,
                        |x| prep(&x[0])?.var(dims, unbiased, keep),
                    );
                }
                check(dev, &format!("logsumexp {at}"), inp(), SUM, |x| {
                    prep(&x[0])?.logsumexp(dims, keep)
                });
            }
        }
        for keep in [false, true] {
            let at = format!("over All keepdim={keep} of {layout}");
            let inp = || [x.clone()];
            check(dev, &format!("sum {at}"), inp(), SUM, |x| {
                prep(&x[0])?.sum(All, keep)
            });
            check(dev, &format!("mean {at}"), inp(), SUM, |x| {
                prep(&x[0])?.mean(All, keep)
            });
            check(dev, &format!("max {at}"), inp(), SUM, |x| {
                prep(&x[0])?.max(All, keep)
            });
            check(dev, &format!("min {at}"), inp(), SUM, |x| {
                prep(&x[0])?.min(All, keep)
            });
            check(dev, &format!("var {at}"), inp(), SUM, |x| {
                prep(&x[0])?.var(All, true, keep)
            });
            check(dev, &format!("logsumexp {at}"), inp(), SUM, |x| {
                prep(&x[0])?.logsumexp(All, keep)
            });
            for d in [0i64, 1, 2, -1] {
                let at = format!("along {d} keepdim={keep} of {layout}");
                check_fwd(dev, &format!("argmax {at}"), inp(), 0.0, |x| {
                    prep(&x[0])?.argmax(d, keep)
                });
                check_fwd(dev, &format!("argmin {at}"), inp(), 0.0, |x| {
                    prep(&x[0])?.argmin(d, keep)
                });
            }
        }
        check(
            dev,
            &format!("sum_all of {layout}"),
            [x.clone()],
            SUM,
            |x| prep(&x[0])?.sum_all(),
        );
        check(
            dev,
            &format!("mean_all of {layout}"),
            [x.clone()],
            SUM,
            |x| prep(&x[0])?.mean_all(),
        );
    }
}

#[test]
fn cuda_reductions_on_integers_and_ties() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(8);
    let i = ints(&[4, 5, 6], -100, 100, DType::I64);
    let b = ints(&[4, 5, 6], 0, 256, DType::U8);
    for (tag, x) in [("i64", &i), ("u8 (sums to i64)", &b)] {
        for dims in DIM_SETS {
            check_fwd(
                dev,
                &format!("sum {dims:?} of {tag}"),
                [x.clone()],
                0.0,
                |x| x[0].sum(dims, false),
            );
            check_fwd(
                dev,
                &format!("max {dims:?} of {tag}"),
                [x.clone()],
                0.0,
                |x| x[0].max(dims, true),
            );
            check_fwd(
                dev,
                &format!("min {dims:?} of {tag}"),
                [x.clone()],
                0.0,
                |x| x[0].min(dims, false),
            );
        }
        for d in [0i64, 1, 2] {
            check_fwd(
                dev,
                &format!("argmax {d} of {tag}"),
                [x.clone()],
                0.0,
                |x| x[0].argmax(d, false),
            );
            check_fwd(
                dev,
                &format!("argmin {d} of {tag}"),
                [x.clone()],
                0.0,
                |x| x[0].argmin(d, true),
            );
        }
        check_fwd(dev, &format!("sum_all of {tag}"), [x.clone()], 0.0, |x| {
            x[0].sum_all()
        });
    }
    // Ties: argmax/argmin give the first index; max/min share the gradient equally among ties.
    let v: Vec<f32> = ints(&[6, 10], 0, 3, DType::I64)
        .to_f64_vec()
        .unwrap()
        .into_iter()
        .map(|x| x as f32)
        .collect();
    let t = host(v, &[6, 10]);
    for d in [0i64, 1] {
        check_fwd(
            dev,
            &format!("argmax with ties along {d}"),
            [t.clone()],
            0.0,
            |x| x[0].argmax(d, false),
        );
        check_fwd(
            dev,
            &format!("argmin with ties along {d}"),
            [t.clone()],
            0.0,
            |x| x[0].argmin(d, false),
        );
        check(
            dev,
            &format!("max with ties along {d}"),
            [t.clone()],
            SUM,
            |x| x[0].max(d, false),
        );
        check(
            dev,
            &format!("min with ties along {d}"),
            [t.clone()],
            SUM,
            |x| x[0].min(d, true),
        );
    }
    check(dev, "max of all with ties", [t.clone()], SUM, |x| {
        x[0].max(All, false)
    });
}

#[test]
fn cuda_reductions_large() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(9);
    // Sums of positive values: the result is as large as its terms, so the relative tolerance
    // is meaningful (a sum of 10^5 zero-mean terms may land near 0, where the two summation
    // orders differ by more than 1e-4 in absolute terms on a correct GPU).
    let big = uniform(&[300, 700], 0.5, 1.5);
    check(dev, "sum_all of (300,700)", [big.clone()], SUM, |x| {
        x[0].sum_all()
    });
    check(
        dev,
        "sum over dim 0 of (300,700)",
        [big.clone()],
        SUM,
        |x| x[0].sum(0, false),
    );
    check(
        dev,
        "sum over dim 1 of (300,700)",
        [big.clone()],
        SUM,
        |x| x[0].sum(1, true),
    );
    check(dev, "mean_all of (300,700)", [big.clone()], SUM, |x| {
        x[0].mean_all()
    });
    check(
        dev,
        "sum over dim 0 of transposed (700,300)",
        &[big],
        SUM,
        |x| x[0].t()?.sum(0, false),
    );
    let rows = randn(&[3, 20000]);
    check(dev, "max over 20000", [rows.clone()], SUM, |x| {
        x[0].max(-1, false)
    });
    check(dev, "min over 20000", [rows.clone()], SUM, |x| {
        x[0].min(-1, false)
    });
    check_fwd(dev, "argmax over 20000", [rows.clone()], 0.0, |x| {
        x[0].argmax(-1, false)
    });
    check_fwd(dev, "argmin over 20000", [rows.clone()], 0.0, |x| {
        x[0].argmin(-1, false)
    });
    check(dev, "logsumexp over 20000", [rows.clone()], SUM, |x| {
        x[0].logsumexp(-1, false)
    });
    check(dev, "var over 20000", &[rows], SUM, |x| {
        x[0].var(-1, true, false)
    });
}

// ---------------------------------------------------------------------------------------------
// Neural-network functions

#[test]
fn cuda_softmax() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(10);
    let x = randn_std(&[4, 5, 6], 2.0);
    for d in [-1i64, 1, 0] {
        check(dev, &format!("softmax over {d}"), [x.clone()], SUM, |x| {
            x[0].softmax(d)
        });
        check(
            dev,
            &format!("log_softmax over {d}"),
            [x.clone()],
            SUM,
            |x| x[0].log_softmax(d),
        );
        check(
            dev,
            &format!("softmax over {d} of a permuted input"),
            &[randn(&[6, 4, 5])],
            SUM,
            |x| x[0].permute(&[1, 2, 0])?.softmax(d),
        );
    }
    let long = randn_std(&[3, 3000], 2.0);
    check(dev, "softmax over rows of 3000", [long.clone()], SUM, |x| {
        x[0].softmax(-1)
    });
    check(dev, "log_softmax over rows of 3000", &[long], SUM, |x| {
        x[0].log_softmax(-1)
    });
    check(
        dev,
        "softmax over dim 0 of (2000,3)",
        &[randn(&[2000, 3])],
        SUM,
        |x| x[0].softmax(0),
    );
    check(
        dev,
        "softmax of large logits (x30)",
        [x.clone()],
        SUM,
        |x| x[0].mul_scalar(30.0)?.softmax(-1),
    );
    // -inf entries (an attention mask); column 0 is never masked.
    let mut m: Vec<u8> = ints(&[4, 6], 0, 2, DType::U8).to_vec::<u8>().unwrap();
    for r in 0..4 {
        m[r * 6] = 0;
    }
    let mask = host(m, &[4, 6]);
    check(
        dev,
        "softmax with -inf entries",
        &[randn(&[4, 6]), mask.clone()],
        SUM,
        |x| x[0].masked_fill(&x[1], f64::NEG_INFINITY)?.softmax(-1),
    );
    check(
        dev,
        "log_softmax with -inf entries",
        &[randn(&[4, 6]), mask],
        SUM,
        |x| x[0].masked_fill(&x[1], f64::NEG_INFINITY)?.log_softmax(-1),
    );
}

#[test]
fn cuda_layer_norm_and_rms_norm() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(11);
    let shapes: [&[usize]; 4] = [&[4, 7], &[2, 3, 33], &[8, 768], &[3, 1000]];
    for shape in shapes {
        let c = shape[shape.len() - 1];
        let (x, w, b) = (randn(shape), randn(&[c]), randn(&[c]));
        check(
            dev,
            &format!("layer_norm {shape:?} with weight and bias"),
            &[x.clone(), w.clone(), b],
            SUM,
            |x| x[0].layer_norm(Some(&x[1]), Some(&x[2]), 1e-5),
        );
        check(
            dev,
            &format!("layer_norm {shape:?} without affine"),
            [x.clone()],
            SUM,
            |x| x[0].layer_norm(None, None, 1e-5),
        );
        check(
            dev,
            &format!("rms_norm {shape:?} with weight"),
            &[x.clone(), w],
            SUM,
            |x| x[0].rms_norm(Some(&x[1]), 1e-6),
        );
        check(dev, &format!("rms_norm {shape:?}"), &[x], SUM, |x| {
            x[0].rms_norm(None, 1e-6)
        });
    }
    // A transposed input, and rows whose mean is far from 0 (a variance by E[x²] - E[x]²
    // would cancel).
    let (w, b) = (randn(&[33]), randn(&[33]));
    check(
        dev,
        "layer_norm of a transposed (33,6) input",
        &[randn(&[33, 6]), w.clone(), b.clone()],
        SUM,
        |x| x[0].t()?.layer_norm(Some(&x[1]), Some(&x[2]), 1e-5),
    );
    check(
        dev,
        "layer_norm of rows with mean 5",
        &[randn(&[6, 33]), w.clone(), b],
        SUM,
        |x| {
            x[0].add_scalar(5.0)?
                .layer_norm(Some(&x[1]), Some(&x[2]), 1e-5)
        },
    );
    check(
        dev,
        "rms_norm of a transposed (33,6) input",
        &[randn(&[33, 6]), w],
        SUM,
        |x| x[0].t()?.rms_norm(Some(&x[1]), 1e-6),
    );
}

#[test]
fn cuda_losses() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(12);
    let (n, c) = (37usize, 11usize);
    let logits = randn_std(&[n, c], 2.0);
    let targets = ids(&[n], c as i64);
    // About a quarter of the targets set to -100 (PyTorch's default ignore_index).
    let t_ign: Vec<i64> = targets
        .to_vec::<i64>()
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, t)| if i % 4 == 1 { -100 } else { t })
        .collect();
    let t_ign = host(t_ign, &[n]);
    let t_u32 = targets.to_dtype(DType::U32).unwrap();
    for red in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        check(
            dev,
            &format!("cross_entropy {red:?}"),
            &[logits.clone(), targets.clone()],
            SUM,
            |x| x[0].cross_entropy(&x[1], None, red),
        );
        check(
            dev,
            &format!("cross_entropy {red:?} ignore_index -100"),
            &[logits.clone(), t_ign.clone()],
            SUM,
            |x| x[0].cross_entropy(&x[1], Some(-100), red),
        );
        check(
            dev,
            &format!("cross_entropy {red:?} ignore_index 3 (a real class)"),
            &[logits.clone(), targets.clone()],
            SUM,
            |x| x[0].cross_entropy(&x[1], Some(3), red),
        );
        check(
            dev,
            &format!("cross_entropy {red:?} with u32 targets"),
            &[logits.clone(), t_u32.clone()],
            SUM,
            |x| x[0].cross_entropy(&x[1], None, red),
        );
        check(
            dev,
            &format!("cross_entropy {red:?} of transposed logits"),
            &[randn_std(&[c, n], 2.0), targets.clone()],
            SUM,
            |x| x[0].t()?.cross_entropy(&x[1], Some(3), red),
        );
        check(
            dev,
            &format!("mse_loss {red:?}"),
            &[randn(&[4, 5]), randn(&[4, 5])],
            SUM,
            |x| x[0].mse_loss(&x[1], red),
        );
    }
    // A vocabulary-sized row.
    let (n, c) = (6usize, 5000usize);
    check(
        dev,
        "cross_entropy over 5000 classes",
        &[randn_std(&[n, c], 3.0), ids(&[n], c as i64)],
        SUM,
        |x| x[0].cross_entropy(&x[1], None, Reduction::Mean),
    );
}

// ---------------------------------------------------------------------------------------------
// Matrix products and attention

fn narrow_cols_2_17(t: &Tensor) -> Result<Tensor> {
    t.narrow(1, 2, 17)
}

/// `(name, lhs shape, lhs view, rhs shape, rhs view)`.
const MATMUL_CASES: [BinaryCase; 19] = [
    ("(33,17)x(17,65)", &[33, 17], same, &[17, 65], same),
    ("(64,64)x(64,64)", &[64, 64], same, &[64, 64], same),
    ("(128,96)x(96,80)", &[128, 96], same, &[96, 80], same),
    (
        "batched (4,7,9)x(4,9,5)",
        &[4, 7, 9],
        same,
        &[4, 9, 5],
        same,
    ),
    (
        "broadcast batch (2,1,7,9)x(3,9,5)",
        &[2, 1, 7, 9],
        same,
        &[3, 9, 5],
        same,
    ),
    (
        "broadcast batch (7,9)x(3,9,5)",
        &[7, 9],
        same,
        &[3, 9, 5],
        same,
    ),
    (
        "rows folded (2,3,7,9)x(9,5)",
        &[2, 3, 7, 9],
        same,
        &[9, 5],
        same,
    ),
    (
        "transposed lhs (17,33)^T x (17,65)",
        &[17, 33],
        tr,
        &[17, 65],
        same,
    ),
    (
        "transposed rhs (33,17) x (65,17)^T",
        &[33, 17],
        same,
        &[65, 17],
        tr,
    ),
    ("both transposed", &[17, 33], tr, &[65, 17], tr),
    (
        "batched transposed (4,9,7)^T x (4,5,9)^T",
        &[4, 9, 7],
        tr_last,
        &[4, 5, 9],
        tr_last,
    ),
    (
        "narrowed lhs (33,20)[:, 2:19] x (17,65)",
        &[33, 20],
        narrow_cols_2_17,
        &[17, 65],
        same,
    ),
    ("vector . vector (9)x(9)", &[9], same, &[9], same),
    ("vector x matrix (9)x(9,5)", &[9], same, &[9, 5], same),
    ("matrix x vector (7,9)x(9)", &[7, 9], same, &[9], same),
    ("batched x vector (4,7,9)x(9)", &[4, 7, 9], same, &[9], same),
    ("vector x batched (9)x(4,9,5)", &[9], same, &[4, 9, 5], same),
    ("(1,1)x(1,1)", &[1, 1], same, &[1, 1], same),
    ("outer product (7,1)x(1,5)", &[7, 1], same, &[1, 5], same),
];

#[test]
fn cuda_matmul() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(13);
    for (case, sa, pa, sb, pb) in MATMUL_CASES {
        check(
            dev,
            &format!("matmul {case}"),
            &[randn(sa), randn(sb)],
            SUM,
            |x| pa(&x[0])?.matmul(&pb(&x[1])?),
        );
    }
}

/// `(name, q shape, k shape, v shape)`.
type AttentionCase = (&'static str, [usize; 4], [usize; 4], [usize; 4]);

const ATTENTION_CASES: [AttentionCase; 5] = [
    ("(2,3,7,16)", [2, 3, 7, 16], [2, 3, 7, 16], [2, 3, 7, 16]),
    (
        "7 queries, 9 keys, values of width 8",
        [2, 3, 7, 16],
        [2, 3, 9, 16],
        [2, 3, 9, 8],
    ),
    (
        "one query (1,2,1,16)",
        [1, 2, 1, 16],
        [1, 2, 1, 16],
        [1, 2, 1, 16],
    ),
    (
        "(1,2,64,32)",
        [1, 2, 64, 32],
        [1, 2, 64, 32],
        [1, 2, 64, 32],
    ),
    (
        "odd (2,1,13,24)",
        [2, 1, 13, 24],
        [2, 1, 13, 24],
        [2, 1, 13, 24],
    ),
];

#[test]
fn cuda_scaled_dot_product_attention() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(14);
    for (case, sq, sk, sv) in ATTENTION_CASES {
        let (q, k, v) = (randn(&sq), randn(&sk), randn(&sv));
        for causal in [false, true] {
            check(
                dev,
                &format!("scaled_dot_product_attention {case} causal={causal}"),
                &[q.clone(), k.clone(), v.clone()],
                SUM,
                |x| x[0].scaled_dot_product_attention(&x[1], &x[2], causal, 0.0),
            );
        }
    }
    // Heads split from (B, T, H, D) by a transpose, as a transformer block does.
    for causal in [false, true] {
        check(
            dev,
            &format!("attention on transposed (2,7,3,16) heads causal={causal}"),
            &[
                randn(&[2, 7, 3, 16]),
                randn(&[2, 7, 3, 16]),
                randn(&[2, 7, 3, 16]),
            ],
            SUM,
            |x| {
                let h = |t: &Tensor| t.transpose(1, 2);
                h(&x[0])?.scaled_dot_product_attention(&h(&x[1])?, &h(&x[2])?, causal, 0.0)
            },
        );
    }
    // Rank 3: (batch, T, d).
    check(
        dev,
        "attention on (4,5,8) causal",
        &[randn(&[4, 5, 8]), randn(&[4, 5, 8]), randn(&[4, 5, 8])],
        SUM,
        |x| x[0].scaled_dot_product_attention(&x[1], &x[2], true, 0.0),
    );
}

// ---------------------------------------------------------------------------------------------
// Indexing, joining, triangles

#[test]
fn cuda_indexing() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(15);
    // Forward values are copies (exact); gradients add up repeated indices, in any order.
    let tol = Tol {
        fwd: 0.0,
        grad: F32_SUM,
    };
    let table = randn(&[10, 6]);
    let e_ids = ids(&[3, 4], 10); // 12 draws from 10 rows: repeats
    check(
        dev,
        "embedding (10,6) with i64 ids (3,4)",
        &[table.clone(), e_ids.clone()],
        tol,
        |x| x[0].embedding(&x[1]),
    );
    check(
        dev,
        "embedding with u32 ids",
        &[table.clone(), e_ids.to_dtype(DType::U32).unwrap()],
        tol,
        |x| x[0].embedding(&x[1]),
    );
    let sel = host(vec![9i64, 0, 3, 3, 7, 0, 1], &[7]);
    check(
        dev,
        "index_select dim 0, i64",
        &[table.clone(), sel.clone()],
        tol,
        |x| x[0].index_select(&x[1], 0),
    );
    check(
        dev,
        "index_select dim 1, u8 ids",
        &[table.clone(), host(vec![5u8, 0, 0, 2], &[4])],
        tol,
        |x| x[0].index_select(&x[1], 1),
    );
    check(
        dev,
        "index_select dim 1 of a transposed (10,6) source, u32 ids",
        &[table.clone(), sel.to_dtype(DType::U32).unwrap()],
        tol,
        |x| x[0].t()?.index_select(&x[1], 1),
    );
    check(
        dev,
        "index_select dim 1 of (2,10,3)",
        &[randn(&[2, 10, 3]), sel.clone()],
        tol,
        |x| x[0].index_select(&x[1], 1),
    );
    // A table read twice, as a tied embedding is: the lookup's gradient is added into the
    // one the other use gathered first (in place on the GPU), in either order of use.
    check(
        dev,
        "tied embedding: a lookup, then a product with the same table",
        &[table.clone(), e_ids.clone()],
        SUM,
        |x| x[0].embedding(&x[1])?.matmul(&x[0].t()?),
    );
    check(
        dev,
        "tied embedding: the table scaled, then a lookup added",
        &[table.clone(), e_ids.clone()],
        SUM,
        |x| {
            let scaled = x[0].mul_scalar(3.0)?.sum_all()?;
            x[0].embedding(&x[1])?.sum_all()?.add(&scaled)
        },
    );
    let src = randn(&[4, 6]);
    check(
        dev,
        "gather dim 1",
        &[src.clone(), ids(&[4, 3], 6)],
        tol,
        |x| x[0].gather(1, &x[1]),
    );
    check(
        dev,
        "gather dim 0",
        &[src.clone(), ids(&[3, 6], 4)],
        tol,
        |x| x[0].gather(0, &x[1]),
    );
    check(
        dev,
        "gather dim 1 with u32 ids from a transposed source",
        &[
            randn(&[6, 4]),
            ids(&[4, 5], 6).to_dtype(DType::U32).unwrap(),
        ],
        tol,
        |x| x[0].t()?.gather(1, &x[1]),
    );
    check(
        dev,
        "gather dim 2 of (2,3,5)",
        &[randn(&[2, 3, 5]), ids(&[2, 3, 4], 5)],
        tol,
        |x| x[0].gather(2, &x[1]),
    );
    // scatter_add sums colliding indices: its forward is a sum too.
    check(
        dev,
        "scatter_add dim 0",
        &[randn(&[5, 6]), ids(&[3, 6], 5), randn(&[3, 6])],
        SUM,
        |x| x[0].scatter_add(0, &x[1], &x[2]),
    );
    check(
        dev,
        "scatter_add dim 1 with collisions",
        &[randn(&[4, 5]), ids(&[4, 7], 5), randn(&[4, 7])],
        SUM,
        |x| x[0].scatter_add(1, &x[1], &x[2]),
    );
    check(
        dev,
        "scatter_add into a transposed tensor",
        &[randn(&[6, 5]), ids(&[3, 6], 5), randn(&[3, 6])],
        SUM,
        |x| x[0].t()?.scatter_add(0, &x[1], &x[2]),
    );
}

#[test]
fn cuda_cat_split_chunk_stack() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(16);
    check(
        dev,
        "cat dim 0 of (2,5), (3,5), (1,5)",
        &[randn(&[2, 5]), randn(&[3, 5]), randn(&[1, 5])],
        EXACT,
        |x| Tensor::cat(x, 0),
    );
    check(
        dev,
        "cat dim 1 of (4,2), transposed (5,4), (4,1)",
        &[randn(&[4, 2]), randn(&[5, 4]), randn(&[4, 1])],
        EXACT,
        |x| Tensor::cat(&[x[0].clone(), x[1].t()?, x[2].clone()], 1),
    );
    check(
        dev,
        "cat dim -1 of 3-D",
        &[randn(&[2, 3, 4]), randn(&[2, 3, 1]), randn(&[2, 3, 7])],
        EXACT,
        |x| Tensor::cat(x, -1),
    );
    check(
        dev,
        "cat of a tensor with itself",
        &[randn(&[3, 4])],
        EXACT,
        |x| Tensor::cat(&[x[0].clone(), x[0].clone()], 0),
    );
    check_fwd(
        dev,
        "cat of i64",
        &[
            ints(&[2, 3], -9, 9, DType::I64),
            ints(&[1, 3], -9, 9, DType::I64),
        ],
        0.0,
        |x| Tensor::cat(x, 0),
    );
    check_fwd(
        dev,
        "cat of u8",
        &[
            ints(&[2, 3], 0, 256, DType::U8),
            ints(&[2, 2], 0, 256, DType::U8),
        ],
        0.0,
        |x| Tensor::cat(x, 1),
    );
    for d in [0i64, 1, -1] {
        check(
            dev,
            &format!("stack along {d}"),
            &[randn(&[3, 4]), randn(&[3, 4]), randn(&[3, 4])],
            EXACT,
            |x| Tensor::stack(x, d),
        );
    }
    let x = randn(&[4, 8]);
    for k in 0..3 {
        check(
            dev,
            &format!("split(3, 1) piece {k}"),
            [x.clone()],
            EXACT,
            |x| Ok(x[0].split(3, 1)?.swap_remove(k)),
        );
    }
    check(dev, "ops on split pieces", [x.clone()], SUM, |x| {
        let p = x[0].split(3, 1)?;
        p[0].mul(&p[1])?.add(&p[2].sum(1, true)?)
    });
    let y = randn(&[7, 4]);
    for k in 0..3 {
        check(
            dev,
            &format!("chunk(3, 0) piece {k}"),
            [y.clone()],
            EXACT,
            |x| Ok(x[0].chunk(3, 0)?.swap_remove(k)),
        );
    }
    check(dev, "ops on chunks", &[y], SUM, |x| {
        let c = x[0].chunk(3, 0)?;
        Tensor::cat(&[c[1].exp()?, c[0].mul_scalar(2.0)?, c[2].clone()], 0)
    });
}

#[test]
fn cuda_tril_triu() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(17);
    let cases: [(&str, &[usize], Prep); 4] = [
        ("(5,7)", &[5, 7], same),
        ("(7,5)", &[7, 5], same),
        ("(2,5,7)", &[2, 5, 7], same),
        ("transposed (7,5)", &[7, 5], tr),
    ];
    for (case, shape, prep) in cases {
        let x = randn(shape);
        for k in [-1i64, 0, 2] {
            check(
                dev,
                &format!("tril({k}) of {case}"),
                [x.clone()],
                EXACT,
                |x| prep(&x[0])?.tril(k),
            );
            check(
                dev,
                &format!("triu({k}) of {case}"),
                [x.clone()],
                EXACT,
                |x| prep(&x[0])?.triu(k),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dtypes, layouts, copies

/// Values every dtype holds without saturating: in [0, 200), with fractions for the floats.
fn cast_source(dtype: DType, shape: &[usize]) -> Tensor {
    if dtype.is_float() {
        uniform(shape, 0.0, 200.0).to_dtype(dtype).unwrap()
    } else {
        ints(shape, 0, 200, dtype)
    }
}

#[test]
fn cuda_dtype_casts() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(18);
    for src in DTYPES {
        let x = cast_source(src, &[5, 7]);
        for dst in DTYPES {
            // Exact unless a half type is involved (the devices may round f32 -> f16 through
            // different paths); floats to integers truncate toward zero.
            let tol = if is_half(src) || is_half(dst) {
                float_tol(src).max(float_tol(dst))
            } else {
                0.0
            };
            check(
                dev,
                &format!("to_dtype {src:?} -> {dst:?}"),
                [x.clone()],
                both(tol),
                |x| x[0].to_dtype(dst),
            );
            check(
                dev,
                &format!("to_dtype {src:?} -> {dst:?} of a transposed tensor"),
                [x.clone()],
                both(tol),
                |x| x[0].t()?.to_dtype(dst),
            );
        }
    }
}

#[test]
fn cuda_dtype_casts_saturate_and_keep_specials() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    // Floats to integers truncate toward zero and saturate at the range; NaN becomes 0 (Rust's
    // `as`, which the CPU backend documents).
    let f = host(
        vec![
            -1.5f32,
            -300.7,
            0.0,
            -0.0,
            0.99,
            255.5,
            256.0,
            1e10,
            -1e10,
            4294967296.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            70000.0,
        ],
        &[14],
    );
    for dst in [DType::I64, DType::U32, DType::U8] {
        check_fwd(
            dev,
            &format!("f32 specials -> {dst:?}"),
            [f.clone()],
            0.0,
            |x| x[0].to_dtype(dst),
        );
        check_fwd(
            dev,
            &format!("f64 specials -> {dst:?}"),
            &[f.to_dtype(DType::F64).unwrap()],
            0.0,
            |x| x[0].to_dtype(dst),
        );
    }
    // Overflow to inf, underflow to 0 or subnormals (no NaN here: a NaN never compares equal).
    let g = host(
        vec![
            -1.5f32,
            0.0,
            65504.0,
            65520.0,
            70000.0,
            -70000.0,
            1e-8,
            3e-5,
            6e-8,
            1e30,
            3.3e38,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ],
        &[13],
    );
    for dst in [DType::F16, DType::BF16, DType::F64] {
        let tol = if is_half(dst) { float_tol(dst) } else { 0.0 };
        check_fwd(
            dev,
            &format!("f32 specials -> {dst:?}"),
            [g.clone()],
            tol,
            |x| x[0].to_dtype(dst),
        );
    }
    let d = host(vec![1e39f64, -1e39, 1e-50, 123.456, 3.4028235e38], &[5]);
    check_fwd(dev, "f64 beyond f32's range -> F32", &[d], 0.0, |x| {
        x[0].to_dtype(DType::F32)
    });
    // Integers to narrower integers saturate (through f64, as the CPU converts).
    let i = host(
        vec![
            -5i64,
            -1,
            0,
            255,
            256,
            300,
            4294967295,
            4294967296,
            -4294967296,
            1 << 40,
        ],
        &[10],
    );
    for dst in DTYPES {
        let tol = if is_half(dst) { float_tol(dst) } else { 0.0 };
        check_fwd(
            dev,
            &format!("i64 extremes -> {dst:?}"),
            [i.clone()],
            tol,
            |x| x[0].to_dtype(dst),
        );
    }
    let u = host(vec![0u32, 1, 255, 256, 65535, 65536, 4294967295], &[7]);
    for dst in DTYPES {
        let tol = if is_half(dst) { float_tol(dst) } else { 0.0 };
        check_fwd(
            dev,
            &format!("u32 extremes -> {dst:?}"),
            [u.clone()],
            tol,
            |x| x[0].to_dtype(dst),
        );
    }
    let b = host(vec![0u8, 1, 127, 128, 255], &[5]);
    for dst in DTYPES {
        check_fwd(dev, &format!("u8 -> {dst:?}"), [b.clone()], 0.0, |x| {
            x[0].to_dtype(dst)
        });
    }
}

#[test]
fn cuda_contiguous_of_permuted() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(19);
    let views: [(&str, Prep); 5] = [
        ("permute [3,1,0,2]", |t| t.permute(&[3, 1, 0, 2])),
        ("transpose(0, 3)", |t| t.transpose(0, 3)),
        ("narrow then permute", |t| {
            t.narrow(2, 1, 2)?.permute(&[2, 0, 3, 1])
        }),
        ("expand of a size-1 dim", |t| {
            t.narrow(1, 0, 1)?.expand([2, 4, 4, 5])
        }),
        ("unsqueeze, permute", |t| {
            t.unsqueeze(2)?.permute(&[4, 2, 0, 3, 1])
        }),
    ];
    for dtype in DTYPES {
        let x = if dtype.is_float() {
            randn(&[2, 3, 4, 5]).to_dtype(dtype).unwrap()
        } else {
            ints(&[2, 3, 4, 5], 0, 200, dtype)
        };
        for (name, view) in views {
            // Copies are exact; the gradient of an expand sums over the repeats.
            let tol = Tol {
                fwd: 0.0,
                grad: float_tol(dtype),
            };
            check(
                dev,
                &format!("contiguous() of {name}, {dtype:?}"),
                [x.clone()],
                tol,
                |x| {
                    let y = view(&x[0])?.contiguous()?;
                    assert!(y.is_contiguous(), "{name}: contiguous() is not contiguous");
                    Ok(y)
                },
            );
        }
    }
}

#[test]
fn cuda_to_vec_of_views() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(20);
    let views: [(&str, Prep); 8] = [
        ("narrow(1, 2, 3)", |t| t.narrow(1, 2, 3)),
        ("t()", tr),
        ("narrow(0, 1, 4).t()", |t| t.narrow(0, 1, 4)?.t()),
        ("get(2)", |t| t.get(2)),
        ("get(5).get(7) (0-d, last element)", |t| t.get(5)?.get(7)),
        ("a column: narrow(1, 3, 1)", |t| t.narrow(1, 3, 1)),
        ("expand of a row", |t| t.narrow(0, 4, 1)?.expand([3, 8])),
        ("reshape(2,3,8).permute([2,0,1]).narrow(0,1,5)", |t| {
            t.reshape([2, 3, 8])?.permute(&[2, 0, 1])?.narrow(0, 1, 5)
        }),
    ];
    for dtype in [DType::F32, DType::F16, DType::I64, DType::U8] {
        let base = cast_source(dtype, &[6, 8]);
        let on_gpu = base.to_device(dev).unwrap();
        for (name, view) in views {
            let what = format!("to_vec of {name} of a {dtype:?} (6,8) GPU tensor");
            let (g, c) = (view(&on_gpu).unwrap(), view(&base).unwrap());
            assert_eq!(g.device(), dev);
            assert_close(&what, "values", &g, &c, 0.0).unwrap();
            if dtype == DType::F32 {
                assert_eq!(
                    g.to_vec::<f32>().unwrap(),
                    c.to_vec::<f32>().unwrap(),
                    "{what}"
                );
            }
        }
    }
    let x = randn(&[3, 4]);
    let g = x.to_device(dev).unwrap();
    assert_eq!(
        g.get(1)
            .unwrap()
            .get(2)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        x.get(1)
            .unwrap()
            .get(2)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        "to_scalar of a GPU element"
    );
    assert_eq!(
        g.narrow(1, 3, 1).unwrap().get(2).unwrap().item().unwrap(),
        x.narrow(1, 3, 1).unwrap().get(2).unwrap().item().unwrap(),
        "item of a GPU element"
    );
}

#[test]
fn cuda_empty_tensors() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(21);
    let e = randn(&[0, 5]);
    check(dev, "exp of (0,5)", [e.clone()], ELEM, |x| x[0].exp());
    check(dev, "gelu of transposed (0,5)", [e.clone()], ELEM, |x| {
        x[0].t()?.gelu()
    });
    check(
        dev,
        "add (0,5) + (5)",
        &[e.clone(), randn(&[5])],
        BCAST,
        |x| x[0].add(&x[1]),
    );
    check(
        dev,
        "mul (4,0) * (4,1)",
        &[randn(&[4, 0]), randn(&[4, 1])],
        BCAST,
        |x| x[0].mul(&x[1]),
    );
    check(
        dev,
        "sum over the empty dim of (0,5)",
        [e.clone()],
        SUM,
        |x| x[0].sum(0, false),
    );
    check(
        dev,
        "sum over the other dim of (0,5)",
        [e.clone()],
        SUM,
        |x| x[0].sum(1, true),
    );
    check(dev, "sum_all of (0,5)", [e.clone()], SUM, |x| {
        x[0].sum_all()
    });
    check(
        dev,
        "matmul (0,4)x(4,3)",
        &[randn(&[0, 4]), randn(&[4, 3])],
        SUM,
        |x| x[0].matmul(&x[1]),
    );
    check(
        dev,
        "matmul (3,0)x(0,4) (zeros)",
        &[randn(&[3, 0]), randn(&[0, 4])],
        SUM,
        |x| x[0].matmul(&x[1]),
    );
    check(
        dev,
        "matmul (3,4)x(4,0)",
        &[randn(&[3, 4]), randn(&[4, 0])],
        SUM,
        |x| x[0].matmul(&x[1]),
    );
    check(
        dev,
        "batched matmul (2,0,4)x(2,4,3)",
        &[randn(&[2, 0, 4]), randn(&[2, 4, 3])],
        SUM,
        |x| x[0].matmul(&x[1]),
    );
    check(
        dev,
        "cat dim 0 of (2,5), (0,5), (3,5)",
        &[randn(&[2, 5]), e.clone(), randn(&[3, 5])],
        EXACT,
        |x| Tensor::cat(x, 0),
    );
    check(
        dev,
        "cat dim 1 of (3,2), (3,0)",
        &[randn(&[3, 2]), randn(&[3, 0])],
        EXACT,
        |x| Tensor::cat(x, 1),
    );
    check(
        dev,
        "contiguous of transposed (0,5)",
        [e.clone()],
        EXACT,
        |x| x[0].t()?.contiguous(),
    );
    check_fwd(dev, "cast of (0,5) to i64", &[e], 0.0, |x| {
        x[0].to_dtype(DType::I64)
    });
}

// ---------------------------------------------------------------------------------------------
// Other float dtypes

/// Elementwise ops, reductions, softmax, norms, matmul and attention in `dtype`, at its
/// tolerance (see the module docs).
fn float_dtype_suite(dev: Device, dtype: DType) {
    let tol = dtype_tol(dtype);
    let tag = dtype.as_str();
    let cast = |t: Tensor| t.to_dtype(dtype).unwrap();
    let x = cast(randn(&[4, 33]));
    let y = cast(randn(&[33]));
    let p = cast(uniform(&[4, 33], 0.2, 3.0));
    let ops: [(&str, Unary); 9] = [
        ("exp", Tensor::exp),
        ("tanh", Tensor::tanh),
        ("sigmoid", Tensor::sigmoid),
        ("gelu", Tensor::gelu),
        ("gelu_tanh", Tensor::gelu_tanh),
        ("silu", Tensor::silu),
        ("erf", Tensor::erf),
        ("sqr", Tensor::sqr),
        ("affine", |t| t.affine(0.5, -1.0)),
    ];
    for (name, op) in ops {
        check(dev, &format!("{name} {tag}"), [x.clone()], tol, |x| {
            op(&x[0])
        });
    }
    let positive: [(&str, Unary); 4] = [
        ("sqrt", Tensor::sqrt),
        ("log", Tensor::log),
        ("rsqrt", Tensor::rsqrt),
        ("recip", Tensor::recip),
    ];
    for (name, op) in positive {
        check(dev, &format!("{name} {tag}"), [p.clone()], tol, |x| {
            op(&x[0])
        });
    }
    check(
        dev,
        &format!("{tag} transposed exp"),
        [x.clone()],
        tol,
        |x| x[0].t()?.exp(),
    );
    let binary: [(&str, Binary); 4] = [
        ("add", Tensor::add),
        ("sub", Tensor::sub),
        ("mul", Tensor::mul),
        ("maximum", Tensor::maximum),
    ];
    for (name, op) in binary {
        check(
            dev,
            &format!("{name} {tag} (4,33) with (33)"),
            &[x.clone(), y.clone()],
            tol,
            |x| op(&x[0], &x[1]),
        );
    }
    check(
        dev,
        &format!("div {tag}"),
        &[x.clone(), p.clone()],
        tol,
        |x| x[0].div(&x[1]),
    );
    check(dev, &format!("sum over -1 {tag}"), [x.clone()], tol, |x| {
        x[0].sum(-1, false)
    });
    check(dev, &format!("sum over 0 {tag}"), [x.clone()], tol, |x| {
        x[0].sum(0, true)
    });
    check(dev, &format!("mean_all {tag}"), [x.clone()], tol, |x| {
        x[0].mean_all()
    });
    check(dev, &format!("max over -1 {tag}"), [x.clone()], tol, |x| {
        x[0].max(-1, false)
    });
    check_fwd(
        dev,
        &format!("argmax over -1 {tag}"),
        [x.clone()],
        0.0,
        |x| x[0].argmax(-1, false),
    );
    for d in [-1i64, 0] {
        check(
            dev,
            &format!("softmax over {d} {tag}"),
            [x.clone()],
            tol,
            |x| x[0].softmax(d),
        );
        check(
            dev,
            &format!("log_softmax over {d} {tag}"),
            [x.clone()],
            tol,
            |x| x[0].log_softmax(d),
        );
    }
    let (w, b) = (cast(randn(&[33])), cast(randn(&[33])));
    check(
        dev,
        &format!("layer_norm {tag}"),
        &[x.clone(), w.clone(), b],
        tol,
        |x| x[0].layer_norm(Some(&x[1]), Some(&x[2]), 1e-5),
    );
    check(dev, &format!("rms_norm {tag}"), &[x.clone(), w], tol, |x| {
        x[0].rms_norm(Some(&x[1]), 1e-6)
    });
    // Half matmuls accumulate in f32 on both devices; the result is rounded once.
    check(
        dev,
        &format!("matmul (7,32)x(32,9) {tag}"),
        &[cast(randn(&[7, 32])), cast(randn(&[32, 9]))],
        tol,
        |x| x[0].matmul(&x[1]),
    );
    check(
        dev,
        &format!("batched matmul (2,7,32)x(2,32,9) {tag}"),
        &[cast(randn(&[2, 7, 32])), cast(randn(&[2, 32, 9]))],
        tol,
        |x| x[0].matmul(&x[1]),
    );
    check(
        dev,
        &format!("matmul of transposed operands {tag}"),
        &[cast(randn(&[32, 7])), cast(randn(&[9, 32]))],
        tol,
        |x| x[0].t()?.matmul(&x[1].t()?),
    );
    for causal in [false, true] {
        check(
            dev,
            &format!("attention (1,2,7,16) causal={causal} {tag}"),
            &[
                cast(randn(&[1, 2, 7, 16])),
                cast(randn(&[1, 2, 7, 16])),
                cast(randn(&[1, 2, 7, 16])),
            ],
            tol,
            |x| x[0].scaled_dot_product_attention(&x[1], &x[2], causal, 0.0),
        );
    }
    check(
        dev,
        &format!("cross_entropy {tag}"),
        &[cast(randn(&[9, 7])), ids(&[9], 7)],
        tol,
        |x| x[0].cross_entropy(&x[1], None, Reduction::Mean),
    );
}

#[test]
fn cuda_f64_ops() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(22);
    float_dtype_suite(dev, DType::F64);
}

#[test]
fn cuda_f16_ops() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(23);
    float_dtype_suite(dev, DType::F16);
}

#[test]
fn cuda_bf16_ops() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(24);
    float_dtype_suite(dev, DType::BF16);
}

// ---------------------------------------------------------------------------------------------
// Creation, device transfers, views, in-place writes

#[test]
fn cuda_creation_ops() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    for dtype in DTYPES {
        check_made(dev, &format!("zeros {dtype:?}"), 0.0, |d| {
            Tensor::zeros([3, 4], dtype, d)
        });
        check_made(dev, &format!("ones {dtype:?}"), 0.0, |d| {
            Tensor::ones([2, 3], dtype, d)
        });
        check_made(dev, &format!("full(3.7) {dtype:?}"), 0.0, |d| {
            Tensor::full(3.7, [5, 3], dtype, d)
        });
        check_made(
            dev,
            &format!("full(-2.5) {dtype:?} (saturates for unsigned)"),
            0.0,
            |d| Tensor::full(-2.5, [4], dtype, d),
        );
        check_made(dev, &format!("0-d full {dtype:?}"), 0.0, |d| {
            Tensor::full(7.0, (), dtype, d)
        });
        check_made(dev, &format!("empty zeros {dtype:?}"), 0.0, |d| {
            Tensor::zeros([0, 3], dtype, d)
        });
        check_made(dev, &format!("arange(0, 10) {dtype:?}"), 0.0, |d| {
            Tensor::arange(0.0, 10.0, 1.0, dtype, d)
        });
    }
    check_made(dev, "arange(-5, 5, 0.5) f32", 0.0, |d| {
        Tensor::arange(-5.0, 5.0, 0.5, DType::F32, d)
    });
    check_made(dev, "arange(10, 0, -3) i64", 0.0, |d| {
        Tensor::arange(10.0, 0.0, -3.0, DType::I64, d)
    });
    check_made(dev, "arange(0, 1, 0.1) f64", F64_TOL, |d| {
        Tensor::arange(0.0, 1.0, 0.1, DType::F64, d)
    });
    check_made(dev, "arange(0, 5000) f32", 0.0, |d| {
        Tensor::arange(0.0, 5000.0, 1.0, DType::F32, d)
    });
    for steps in [0usize, 1, 7] {
        check_made(dev, &format!("linspace(-1, 1, {steps})"), 0.0, |d| {
            Tensor::linspace(-1.0, 1.0, steps, DType::F32, d)
        });
    }
    check_made(dev, "from_vec i64", 0.0, |d| {
        Tensor::from_vec(vec![1i64, -2, 3, i64::MAX], [2, 2], d)
    });
    check_made(dev, "from_slice f64", 0.0, |d| {
        Tensor::from_slice(&[0.1f64, -1e300, 1e-300], 3, d)
    });
    check_made(dev, "scalar f32", 0.0, |d| Tensor::scalar(2.5f32, d));
    check_made(dev, "from_vec u8", 0.0, |d| {
        Tensor::from_vec(vec![0u8, 255, 7], 3, d)
    });
    manual_seed(25);
    let x = randn(&[3, 4]);
    check_made(dev, "full_like", 0.0, |d| x.to_device(d)?.full_like(1.5));
    check_made(dev, "zeros_like", 0.0, |d| x.to_device(d)?.zeros_like());
    check_made(dev, "ones_like", 0.0, |d| x.to_device(d)?.ones_like());
    // randint and randperm draw on the host: the same seed gives the same values everywhere.
    check_made(dev, "randint after manual_seed", 0.0, |d| {
        manual_seed(26);
        Tensor::randint(-3, 9, [4, 5], d)
    });
    check_made(dev, "randperm after manual_seed", 0.0, |d| {
        manual_seed(27);
        Tensor::randperm(50, d)
    });
}

#[test]
fn cuda_to_device_and_autograd_across_devices() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(28);
    let (x, w) = (randn(&[3, 4]), randn(&[3, 4]));
    // A CPU leaf used on the GPU: its gradient comes back to the CPU.
    let xc = x.detach().requires_grad_(true).unwrap();
    xc.to_device(dev)
        .unwrap()
        .exp()
        .unwrap()
        .mul(&w.to_device(dev).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g = xc.grad().expect("the CPU leaf has a gradient");
    assert_eq!(
        g.device(),
        CPU,
        "the gradient of a CPU leaf lives on the CPU"
    );
    let want = x.exp().unwrap().mul(&w).unwrap();
    assert_close("cpu leaf -> gpu exp", "gradient", &g, &want, F32_ELEM).unwrap();
    // A GPU leaf used on the CPU: its gradient goes back to the GPU.
    let xg = x.to_device(dev).unwrap().requires_grad_(true).unwrap();
    xg.to_device(CPU)
        .unwrap()
        .sin()
        .unwrap()
        .mul(&w)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g = xg.grad().expect("the GPU leaf has a gradient");
    assert_eq!(
        g.device(),
        dev,
        "the gradient of a GPU leaf lives on the GPU"
    );
    let want = x.cos().unwrap().mul(&w).unwrap();
    assert_close("gpu leaf -> cpu sin", "gradient", &g, &want, F32_ELEM).unwrap();
    // Through the checker: an op chain that crosses devices twice.
    check(
        dev,
        "cpu -> gpu -> cpu -> gpu chain",
        [x.clone()],
        ELEM,
        |x| {
            let d = x[0].device();
            x[0].to_device(CPU)?.tanh()?.to_device(d)?.mul_scalar(3.0)
        },
    );
    // Round trips are exact for every dtype, contiguous or not.
    for dtype in DTYPES {
        let src = cast_source(dtype, &[6, 7]);
        let views: [(&str, Prep); 3] = [
            ("contiguous", same),
            ("transposed", tr),
            ("narrowed", |t| t.narrow(1, 2, 4)),
        ];
        for (name, view) in views {
            let v = view(&src).unwrap();
            let up = v.to_device(dev).unwrap();
            assert_eq!(up.device(), dev);
            let back = up.to_device(CPU).unwrap();
            assert_close(
                &format!("round trip of a {name} {dtype:?} tensor"),
                "values",
                &back,
                &v,
                0.0,
            )
            .unwrap();
        }
    }
    let g = x.to_device(dev).unwrap();
    assert_eq!(
        g.to_device(dev).unwrap().id(),
        g.id(),
        "to_device onto its own device returns the same tensor"
    );
    assert!(dev.synchronize().is_ok());
}

#[test]
fn cuda_views_and_in_place_writes() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(29);
    let x = randn(&[2, 3, 4]);
    let chains: [(&str, Unary); 6] = [
        ("unsqueeze, expand, flatten, transpose, narrow", |t| {
            t.unsqueeze(1)?
                .expand([2, 5, 3, 4])?
                .flatten(1, 2)?
                .transpose(0, 2)?
                .narrow(0, 1, 2)?
                .mul_scalar(2.0)
        }),
        ("reshape of a transposed tensor", |t| {
            t.transpose(0, 2)?.reshape([4, 6])?.sqr()
        }),
        ("get, slice, unsqueeze, squeeze", |t| {
            t.get(1)?.slice(1, 1..3)?.unsqueeze(0)?.squeeze(0)?.exp()
        }),
        ("flatten_all of a permuted tensor", |t| {
            t.permute(&[1, 2, 0])?.flatten_all()?.sin()
        }),
        ("view, t", |t| t.view([6, 4])?.t()?.tanh()),
        ("broadcast_to, then sum", |t| {
            t.narrow(2, 0, 1)?.broadcast_to([2, 3, 5])?.sum(1, false)
        }),
    ];
    for (name, f) in chains {
        check(dev, name, [x.clone()], BCAST, |x| f(&x[0]));
    }
    // copy_: into a tensor, into a view of part of one, and from an overlapping view.
    let src = randn(&[5, 4]);
    let square = randn(&[4, 4]);
    let run = |d: Device| -> Result<Vec<Tensor>> {
        let s = src.to_device(d)?;
        let dst = Tensor::zeros([4, 5], DType::F32, d)?;
        dst.copy_(&s.t()?)?;
        let big = Tensor::zeros([4, 8], DType::F32, d)?;
        big.narrow(1, 2, 5)?.copy_(&s.t()?)?;
        let sq = square.to_device(d)?.copy()?;
        sq.copy_(&sq.t()?)?;
        let copied = s.t()?.copy()?;
        Ok(vec![dst, big, sq, copied])
    };
    let (want, got) = (run(CPU).unwrap(), run(dev).unwrap());
    let names = [
        "copy_ from a transposed tensor",
        "copy_ into a narrowed view",
        "copy_ from its own transpose",
        "copy() of a transposed tensor",
    ];
    for ((name, g), c) in names.iter().zip(&got).zip(&want) {
        assert_eq!(g.device(), dev, "{name}");
        assert_close(name, "values", g, c, 0.0).unwrap();
    }
    // all_finite reduces on the device.
    assert!(x.to_device(dev).unwrap().all_finite().unwrap());
    for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
        let t = Tensor::from_vec(vec![1.0f32, bad, 2.0], 3, dev).unwrap();
        assert!(
            !t.all_finite().unwrap(),
            "all_finite of [1, {bad}, 2] on the GPU"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Optimizer

#[test]
fn cuda_adamw_step() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(30);
    let shape = [37usize, 29];
    for (decoupled, weight_decay) in [(true, 0.1), (false, 0.01), (true, 0.0)] {
        let p0 = randn(&shape);
        let p_cpu = p0.copy().unwrap();
        let p_gpu = p0.to_device(dev).unwrap();
        let zeros = |d| Tensor::zeros(shape, DType::F32, d).unwrap();
        let (m_cpu, v_cpu, m_gpu, v_gpu) = (zeros(CPU), zeros(CPU), zeros(dev), zeros(dev));
        for step in 1..=3u64 {
            let g = randn(&shape);
            let h = AdamHyper {
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay,
                decoupled,
                step,
            };
            p_cpu.adam_step_(&g, &m_cpu, &v_cpu, h).unwrap();
            p_gpu
                .adam_step_(&g.to_device(dev).unwrap(), &m_gpu, &v_gpu, h)
                .unwrap();
        }
        let name = format!("adam_step_ x3 decoupled={decoupled} weight_decay={weight_decay}");
        for (what, g, c) in [
            ("parameter", &p_gpu, &p_cpu),
            ("first moment", &m_gpu, &m_cpu),
            ("second moment", &v_gpu, &v_cpu),
        ] {
            assert_eq!(g.device(), dev);
            assert_close(&name, what, g, c, F32_ELEM).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Random numbers on the GPU

fn draw(seed: Option<u64>, normal: bool, n: usize, dtype: DType, dev: Device) -> Vec<f64> {
    if let Some(s) = seed {
        manual_seed(s);
    }
    let t = if normal {
        Tensor::randn(n, dtype, dev)
    } else {
        Tensor::rand(n, dtype, dev)
    }
    .unwrap();
    assert_eq!((t.device(), t.dtype(), t.dims()), (dev, dtype, &[n][..]));
    t.to_f64_vec().unwrap()
}

fn equal_count(a: &[f64], b: &[f64]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x == y).count()
}

#[test]
fn cuda_random_numbers() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    for dtype in [DType::F32, DType::F64] {
        for normal in [false, true] {
            let what = format!("{} {dtype:?}", if normal { "randn" } else { "rand" });
            let a = draw(Some(7), normal, 1000, dtype, dev);
            let next = draw(None, normal, 1000, dtype, dev);
            let b = draw(Some(7), normal, 1000, dtype, dev);
            let c = draw(Some(8), normal, 1000, dtype, dev);
            assert_eq!(a, b, "{what}: the same seed gives the same values");
            assert!(
                equal_count(&a, &next) < 10,
                "{what}: a second draw repeats the first"
            );
            assert!(
                equal_count(&a, &c) < 10,
                "{what}: seeds 7 and 8 give the same values"
            );
        }
    }
    let n = 1_000_000;
    let u = draw(Some(1), false, n, DType::F32, dev);
    let (lo, hi) = u
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
            (l.min(x), h.max(x))
        });
    assert!(
        lo >= 0.0 && hi < 1.0,
        "rand lies in [0, 1): min {lo}, max {hi}"
    );
    let mean = u.iter().sum::<f64>() / n as f64;
    assert!((mean - 0.5).abs() < 0.01, "rand mean {mean}");
    let z = draw(Some(2), true, n, DType::F32, dev);
    assert!(
        z.iter().all(|x| x.is_finite()),
        "randn gave a non-finite value"
    );
    let mean = z.iter().sum::<f64>() / n as f64;
    let std = (z.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    assert!(mean.abs() < 0.01, "randn mean {mean}");
    assert!((std - 1.0).abs() < 0.01, "randn std {std}");
}

#[test]
fn cuda_dropout() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    let n = 200_000;
    let p = 0.3;
    let x = Tensor::ones(n, DType::F32, dev)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    manual_seed(31);
    let y = x.dropout(p, true).unwrap();
    assert_eq!(y.device(), dev);
    let v = y.to_vec::<f32>().unwrap();
    let zeros = v.iter().filter(|&&e| e == 0.0).count();
    let frac = zeros as f64 / n as f64;
    assert!(
        (frac - p).abs() < 0.02,
        "dropout(0.3) zeroed {frac} of the elements"
    );
    let scale = (1.0 / (1.0 - p)) as f32;
    for &e in &v {
        assert!(
            e == 0.0 || (e - scale).abs() <= 1e-6 * scale,
            "dropout kept an element as {e}, not 1/0.7 = {scale}"
        );
    }
    // The gradient is the same mask and scale.
    y.sum_all().unwrap().backward().unwrap();
    let g = x.grad().expect("a gradient").to_vec::<f32>().unwrap();
    assert_eq!(g, v, "the gradient of dropout is its mask times 1/(1-p)");
    // Reproducible from the seed; the identity in eval mode.
    manual_seed(31);
    let again = x
        .detach()
        .dropout(p, true)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(again, v, "dropout after the same seed gives the same mask");
    let eval = x
        .detach()
        .dropout(p, false)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert!(
        eval.iter().all(|&e| e == 1.0),
        "dropout in eval mode changed values"
    );
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Runs an op given an out-of-range index on the GPU: it must fail, at the latest at the next
/// `synchronize`. Then the same op with valid indices must work (compared with the CPU) and
/// `synchronize` must be Ok again: the error was reported once and cleared.
fn expect_index_error(
    dev: Device,
    what: &str,
    bad: impl FnOnce() -> Result<Tensor>,
    valid: impl Fn(Device) -> Result<Tensor>,
) {
    let r = bad();
    let r2 = dev.synchronize();
    assert!(
        r.is_err() || r2.is_err(),
        "{what}: an out-of-range index gave no error, neither from the op nor from synchronize"
    );
    drop(r);
    let name = format!("{what}: the valid op after the error");
    check_made(dev, &name, F32_SUM, &valid);
    let after = dev.synchronize();
    assert!(
        after.is_ok(),
        "{what}: synchronize still fails after the error was reported: {after:?}"
    );
}

#[test]
fn cuda_index_errors() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(32);
    let table = randn(&[10, 6]);
    let tg = table.to_device(dev).unwrap();
    let good = host(vec![0i64, 9, 3], &[3]);
    let bad_i64: [(&str, Vec<i64>); 3] = [
        ("index == size", vec![0, 3, 10]),
        ("negative index", vec![2, -1]),
        ("huge index", vec![1 << 40]),
    ];
    for (case, b) in &bad_i64 {
        let ids = Tensor::from_vec(b.clone(), b.len(), dev).unwrap();
        expect_index_error(
            dev,
            &format!("index_select, {case}"),
            || tg.index_select(&ids, 0),
            |d| table.to_device(d)?.index_select(&good.to_device(d)?, 0),
        );
        expect_index_error(
            dev,
            &format!("embedding, {case}"),
            || tg.embedding(&ids.unsqueeze(0)?),
            |d| {
                table
                    .to_device(d)?
                    .embedding(&good.to_device(d)?.unsqueeze(0)?)
            },
        );
    }
    let u = Tensor::from_vec(vec![0u32, 12], 2, dev).unwrap();
    expect_index_error(
        dev,
        "index_select with u32 ids",
        || tg.index_select(&u, 0),
        |d| table.to_device(d)?.index_select(&good.to_device(d)?, 0),
    );
    let b8 = Tensor::from_vec(vec![200u8], 1, dev).unwrap();
    let good_cols = host(vec![5u8, 0, 3], &[3]);
    expect_index_error(
        dev,
        "index_select dim 1 with u8 ids",
        || tg.index_select(&b8, 1),
        |d| {
            table
                .to_device(d)?
                .index_select(&good_cols.to_device(d)?, 1)
        },
    );
    let gidx = Tensor::from_vec(vec![0i64, 6, 1], [1, 3], dev).unwrap();
    let ok_idx = host(vec![0i64, 5, 1], &[1, 3]);
    expect_index_error(
        dev,
        "gather",
        || tg.gather(1, &gidx),
        |d| table.to_device(d)?.gather(1, &ok_idx.to_device(d)?),
    );
    let src = randn(&[1, 3]);
    let src_g = src.to_device(dev).unwrap();
    expect_index_error(
        dev,
        "scatter_add",
        || tg.scatter_add(1, &gidx, &src_g),
        |d| {
            table
                .to_device(d)?
                .scatter_add(1, &ok_idx.to_device(d)?, &src.to_device(d)?)
        },
    );
    // Cross-entropy targets outside [0, C) that are not the ignore_index.
    let logits = randn(&[4, 5]);
    let lg = logits.to_device(dev).unwrap();
    let ok_t = host(vec![0i64, 4, 1, 2], &[4]);
    let ce_cases: [(&str, Vec<i64>, Option<i64>); 3] = [
        ("target == C", vec![0, 5, 1, 2], None),
        ("negative target", vec![0, -3, 1, 2], None),
        (
            "negative target that is not ignore_index",
            vec![0, -3, -100, 2],
            Some(-100),
        ),
    ];
    for (case, t, ignore) in &ce_cases {
        let tt = Tensor::from_vec(t.clone(), 4, dev).unwrap();
        for red in [Reduction::None, Reduction::Mean] {
            expect_index_error(
                dev,
                &format!("cross_entropy {red:?}, {case}"),
                || lg.cross_entropy(&tt, *ignore, red),
                |d| {
                    logits
                        .to_device(d)?
                        .cross_entropy(&ok_t.to_device(d)?, *ignore, red)
                },
            );
        }
    }
    let tu = Tensor::from_vec(vec![0u32, 7, 1, 2], 4, dev).unwrap();
    expect_index_error(
        dev,
        "cross_entropy with u32 targets",
        || lg.cross_entropy(&tu, None, Reduction::Sum),
        |d| {
            logits.to_device(d)?.cross_entropy(
                &ok_t.to_dtype(DType::U32)?.to_device(d)?,
                None,
                Reduction::Sum,
            )
        },
    );
}

#[test]
fn cuda_device_mismatch_errors() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(33);
    let a = randn(&[2, 3]);
    let g = randn(&[2, 3]).to_device(dev).unwrap();
    let mask = ints(&[2, 3], 0, 2, DType::U8).to_device(dev).unwrap();
    let ids_cpu = host(vec![0i64, 1], &[2]);
    let targets_cpu = host(vec![0i64, 2], &[2]);
    let cases: Vec<(&str, Result<Tensor>)> = vec![
        ("add, cpu + gpu", a.add(&g)),
        ("add, gpu + cpu", g.add(&a)),
        ("mul, gpu * cpu", g.mul(&a)),
        ("eq, gpu == cpu", g.eq(&a)),
        ("matmul, gpu x cpu", g.matmul(&a.t().unwrap())),
        (
            "cat of gpu and cpu",
            Tensor::cat(&[g.clone(), a.clone()], 0),
        ),
        ("where_cond with a cpu branch", mask.where_cond(&a, &g)),
        ("index_select with cpu ids", g.index_select(&ids_cpu, 0)),
        (
            "cross_entropy with cpu targets",
            g.cross_entropy(&targets_cpu, None, Reduction::Mean),
        ),
    ];
    for (what, r) in cases {
        match r {
            Ok(t) => panic!("{what}: mixing devices gave a tensor on {}", t.device()),
            Err(e) => {
                let msg = e.to_string();
                let lower = msg.to_lowercase();
                assert!(
                    lower.contains("cpu") && lower.contains("cuda"),
                    "{what}: the error names both devices: {msg}"
                );
                assert!(
                    matches!(e, Error::DeviceMismatch { .. }),
                    "{what}: expected DeviceMismatch, got {e:?}"
                );
            }
        }
    }
    let p = randn(&[2, 3]).to_device(dev).unwrap();
    let (m, v) = (
        Tensor::zeros([2, 3], DType::F32, dev).unwrap(),
        Tensor::zeros([2, 3], DType::F32, dev).unwrap(),
    );
    let h = AdamHyper {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        decoupled: true,
        step: 1,
    };
    let e = p
        .adam_step_(&a, &m, &v, h)
        .expect_err("adam_step_ with a CPU gradient");
    assert!(
        matches!(e, Error::DeviceMismatch { .. }),
        "adam_step_: {e:?}"
    );
    assert!(dev.synchronize().is_ok());
}

// ---------------------------------------------------------------------------------------------
// Training sizes

#[test]
fn cuda_training_sizes() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    manual_seed(34);
    // A GPT-2-small MLP projection: (512, 768) x (768, 3072), then GELU. The weight is scaled
    // by 1/√768 so that the GELU sees values around 1, where it is not linear.
    let a = randn(&[512, 768]);
    let w = randn_std(&[768, 3072], 1.0 / (768f64).sqrt());
    check(
        dev,
        "matmul (512,768)x(768,3072)",
        &[a.clone(), w.clone()],
        SUM,
        |x| x[0].matmul(&x[1]),
    );
    check(
        dev,
        "gelu(matmul (512,768)x(768,3072))",
        &[a, w],
        SUM,
        |x| x[0].matmul(&x[1])?.gelu(),
    );
    let (x, g, b) = (randn(&[4096, 768]), randn(&[768]), randn(&[768]));
    check(dev, "layer_norm (4096,768)", &[x, g, b], SUM, |x| {
        x[0].layer_norm(Some(&x[1]), Some(&x[2]), 1e-5)
    });
}

#[test]
fn cuda_tensors_work_on_other_threads() {
    let Some(dev) = gpu() else { return };
    let _serial = serial();
    // Made on this thread, read, computed on and dropped on others (each thread must make the
    // device's context current before any driver call).
    let x = Tensor::arange(0.0, 1000.0, 1.0, DType::F32, dev).unwrap();
    let want: Vec<f32> = (0..1000).map(|i| i as f32).collect();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                assert_eq!(x.to_vec::<f32>().unwrap(), want);
                let y = x.add(&x).unwrap();
                let twice: Vec<f32> = want.iter().map(|v| 2.0 * v).collect();
                assert_eq!(y.to_vec::<f32>().unwrap(), twice);
                dev.synchronize().unwrap();
            });
        }
    });
    let moved = x.clone();
    std::thread::spawn(move || drop(moved)).join().unwrap();
    assert_eq!(x.to_vec::<f32>().unwrap(), want);
}
