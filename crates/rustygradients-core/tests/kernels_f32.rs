//! The f32 CPU kernels at training sizes, forward and backward, against plain f64 loops
//! written here (independent of the library's own f64 path, so a bug in code shared by the f32
//! and f64 kernels is caught too). The sizes reach what the f64 gradchecks never do: rows of
//! 768×128 and 768×512 are above the threading threshold (`PAR_MIN`, 2^15 elements) and run the
//! parallel paths, odd widths (130, 41, 67, …) run the scalar tails of the 8- and 32-lane loops.
//! Tolerances are near f32 precision: per element, a few ulps growing as √(reduction length)
//! (matmul: the rounding-error bound `k·eps·Σ|a||b|`; GELU: its approximation's documented
//! error), and for every result a normwise relative error of at most 6 ulps, which a systematic
//! error of 1e-6 exceeds.
//!
//! The kernels pick AVX2 + FMA or scalar code once per process (`RG_CPU_ISA`), so
//! [`every_cpu_isa_passes_in_a_child_process`] runs the other tests of this binary again in
//! child processes, with `RG_CPU_ISA=scalar` and (on a CPU that has them) `RG_CPU_ISA=avx2`
//! and `RG_CPU_ISA=avx512`: a plain `cargo test` checks every path the host can run.

use rustygradients_core::{AdamHyper, DType, Device, Reduction, Tensor};

const CPU: Device = Device::Cpu;
/// f32's machine epsilon (2^-23), in f64.
const EPS: f64 = f32::EPSILON as f64;

// ---------------------------------------------------------------------------------------------
// Inputs and comparisons

/// SplitMix64: seeded, reproducible inputs without the library's global generator.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform();
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    /// `n` f32 values `mean + std · N(0, 1)`.
    fn normals(&mut self, n: usize, mean: f64, std: f64) -> Vec<f32> {
        (0..n)
            .map(|_| (mean + std * self.normal()) as f32)
            .collect()
    }
    /// `n` f32 values uniform in `[lo, hi)`.
    fn uniforms(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n)
            .map(|_| (lo + (hi - lo) * self.uniform()) as f32)
            .collect()
    }
}

fn tensor(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape, CPU).unwrap()
}

/// A leaf that collects gradients.
fn leaf(v: &[f32], shape: &[usize]) -> Tensor {
    tensor(v, shape).requires_grad_(true).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

fn grad(t: &Tensor) -> Vec<f32> {
    values(&t.grad().expect("a gradient"))
}

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Root mean square: the scale of a vector, the absolute floor of relative comparisons (an
/// element near zero after cancellation keeps the error of the terms that cancelled).
fn rms(v: &[f64]) -> f64 {
    (v.iter().map(|x| x * x).sum::<f64>() / v.len().max(1) as f64).sqrt()
}

/// Bound on the normwise relative error `‖got - want‖₂ / ‖want‖₂` of every result: a few ulps.
/// Rounding errors of independent elements do not add up in it, so it stays near one ulp
/// (2.5 at most here) whatever the size, while a systematic error, such as a scale off by
/// 1e-6 (8 ulps), shows in full.
const NORMWISE: f64 = 6.0 * EPS;

/// Asserts `|got - want| <= rtol·|want| + atol` for every element, naming the worst one, and
/// the normwise relative error within [`NORMWISE`].
fn check(what: &str, got: &[f32], want: &[f64], rtol: f64, atol: f64) {
    check_each(what, got, want, |_, w| rtol * w.abs() + atol);
}

/// Asserts `|got[i] - want[i]| <= bound(i, want[i])` for every element, naming the worst one,
/// and the normwise relative error within [`NORMWISE`].
fn check_each(what: &str, got: &[f32], want: &[f64], bound: impl Fn(usize, f64) -> f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0.0f64, 0usize);
    let (mut e2, mut w2) = (0.0, 0.0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        // NaN (a kernel bug) counts as infinitely wrong.
        let ratio = match err / bound(i, w) {
            r if r.is_nan() => f64::INFINITY,
            r => r,
        };
        if ratio > worst.0 {
            worst = (ratio, i);
        }
        e2 += err * err;
        w2 += w * w;
    }
    let (ratio, i) = worst;
    let normwise = if w2 > 0.0 { (e2 / w2).sqrt() } else { 0.0 };
    eprintln!(
        "{what}: worst element at {ratio:.3} of its tolerance, normwise error {:.2} ulp",
        normwise / EPS
    );
    assert!(
        ratio <= 1.0,
        "{what}: element {i} is {} but the f64 reference gives {} (error {:.3e}, tolerance \
         {:.3e}: {ratio:.1}× over)",
        got[i],
        want[i],
        (got[i] as f64 - want[i]).abs(),
        bound(i, want[i])
    );
    assert!(
        normwise.is_finite() && normwise <= NORMWISE,
        "{what}: normwise relative error {normwise:.3e} = {:.1} ulp (at most {:.0})",
        normwise / EPS,
        NORMWISE / EPS
    );
}

/// [`check`] with the absolute floor `rtol · rms(want)`: for results of reductions.
fn check_scaled(what: &str, got: &[f32], want: &[f64], rtol: f64) {
    check(what, got, want, rtol, rtol * rms(want));
}

/// A relative tolerance for results that sum `n` rounded terms: a few ulps, growing as √n
/// (the error of a sum of independent roundings), at least `8·eps`.
fn tol(n: usize) -> f64 {
    8.0 * EPS * (n as f64).sqrt().max(1.0)
}

/// `[rows, cols]` shapes: two above the threading threshold, one with an odd width below it
/// and one odd width above it.
const ROW_SHAPES: [(usize, usize); 4] = [(768, 128), (768, 512), (37, 130), (101, 333)];

// ---------------------------------------------------------------------------------------------
// Normalisation

/// LayerNorm (or RMSNorm: no centring, no bias) of each row in f64: `(y, dx, dw, db)` for the
/// output cotangent `cot`.
#[allow(clippy::type_complexity)]
fn norm_ref(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    cot: &[f32],
    cols: usize,
    eps: f64,
    rms: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = cols as f64;
    let mut y = vec![0.0; x.len()];
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; cols];
    let mut db = vec![0.0; cols];
    for r in 0..x.len() / cols {
        let row = r * cols..(r + 1) * cols;
        let xr = &x[row.clone()];
        let mut mean = 0.0;
        if !rms {
            for &v in xr {
                mean += v as f64;
            }
            mean /= n;
        }
        let mut var = 0.0;
        for &v in xr {
            var += (v as f64 - mean) * (v as f64 - mean);
        }
        var /= n;
        let rstd = 1.0 / (var + eps).sqrt();
        let xhat: Vec<f64> = xr.iter().map(|&v| (v as f64 - mean) * rstd).collect();
        // Gradient of x̂: g·w; then dx = rstd · (gx̂ - mean(gx̂) - x̂ · mean(gx̂ · x̂)).
        let mut gsum = 0.0;
        let mut gdot = 0.0;
        for j in 0..cols {
            let i = r * cols + j;
            y[i] = xhat[j] * w[j] as f64 + b.map_or(0.0, |b| b[j] as f64);
            let gh = cot[i] as f64 * w[j] as f64;
            gsum += gh;
            gdot += gh * xhat[j];
            dw[j] += cot[i] as f64 * xhat[j];
            db[j] += cot[i] as f64;
        }
        let gmean = if rms { 0.0 } else { gsum / n };
        for j in 0..cols {
            let i = r * cols + j;
            let gh = cot[i] as f64 * w[j] as f64;
            dx[i] = rstd * (gh - gmean - xhat[j] * gdot / n);
        }
    }
    (y, dx, dw, db)
}

#[test]
fn layer_norm_forward_and_grads() {
    let mut rng = Rng(1);
    for (rows, cols) in ROW_SHAPES {
        let x = rng.normals(rows * cols, 0.3, 1.5);
        let w = rng.normals(cols, 1.0, 0.2);
        let b = rng.normals(cols, 0.0, 0.2);
        let cot = rng.normals(rows * cols, 0.0, 1.0);
        let (xt, wt, bt) = (
            leaf(&x, &[rows, cols]),
            leaf(&w, &[cols]),
            leaf(&b, &[cols]),
        );
        let y = xt.layer_norm(Some(&wt), Some(&bt), 1e-5).unwrap();
        y.backward_with(&tensor(&cot, &[rows, cols])).unwrap();
        let (ry, rdx, rdw, rdb) = norm_ref(&x, &w, Some(&b), &cot, cols, 1e-5, false);
        let at = format!("layer_norm {rows}x{cols}");
        check_scaled(&format!("{at} y"), &values(&y), &ry, tol(cols));
        check_scaled(&format!("{at} dx"), &grad(&xt), &rdx, tol(cols));
        check_scaled(&format!("{at} dweight"), &grad(&wt), &rdw, tol(rows));
        check_scaled(&format!("{at} dbias"), &grad(&bt), &rdb, tol(rows));
    }
}

#[test]
fn rms_norm_forward_and_grads() {
    let mut rng = Rng(2);
    for (rows, cols) in ROW_SHAPES {
        let x = rng.normals(rows * cols, 0.3, 1.5);
        let w = rng.normals(cols, 1.0, 0.2);
        let cot = rng.normals(rows * cols, 0.0, 1.0);
        let (xt, wt) = (leaf(&x, &[rows, cols]), leaf(&w, &[cols]));
        let y = xt.rms_norm(Some(&wt), 1e-6).unwrap();
        y.backward_with(&tensor(&cot, &[rows, cols])).unwrap();
        let (ry, rdx, rdw, _) = norm_ref(&x, &w, None, &cot, cols, 1e-6, true);
        let at = format!("rms_norm {rows}x{cols}");
        check_scaled(&format!("{at} y"), &values(&y), &ry, tol(cols));
        check_scaled(&format!("{at} dx"), &grad(&xt), &rdx, tol(cols));
        check_scaled(&format!("{at} dweight"), &grad(&wt), &rdw, tol(rows));
    }
}

// ---------------------------------------------------------------------------------------------
// Softmax and cross-entropy

/// Softmax (or log-softmax) of each row in f64, and its input gradient for `cot`.
fn softmax_ref(x: &[f32], cot: &[f32], cols: usize, log: bool) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0.0; x.len()];
    let mut dx = vec![0.0; x.len()];
    for r in 0..x.len() / cols {
        let row = r * cols..(r + 1) * cols;
        let xr = wide(&x[row.clone()]);
        let g = wide(&cot[row.clone()]);
        let max = xr.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = xr.iter().map(|v| (v - max).exp()).sum();
        let p: Vec<f64> = xr.iter().map(|v| (v - max).exp() / sum).collect();
        let (gsum, gdot): (f64, f64) = g
            .iter()
            .zip(&p)
            .fold((0.0, 0.0), |(s, d), (g, p)| (s + g, d + g * p));
        for j in 0..cols {
            let i = r * cols + j;
            if log {
                y[i] = xr[j] - max - sum.ln();
                dx[i] = g[j] - p[j] * gsum;
            } else {
                y[i] = p[j];
                dx[i] = p[j] * (g[j] - gdot);
            }
        }
    }
    (y, dx)
}

#[test]
fn softmax_and_log_softmax_forward_and_grads() {
    let mut rng = Rng(3);
    for (rows, cols) in ROW_SHAPES {
        // Rows at different offsets, so the max subtraction matters.
        let mut x = rng.normals(rows * cols, 0.0, 2.0);
        for (i, v) in x.iter_mut().enumerate() {
            *v += ((i / cols) % 5) as f32 * 10.0 - 20.0;
        }
        let cot = rng.normals(rows * cols, 0.0, 1.0);
        for log in [false, true] {
            let xt = leaf(&x, &[rows, cols]);
            let y = if log {
                xt.log_softmax(1).unwrap()
            } else {
                xt.softmax(-1).unwrap()
            };
            y.backward_with(&tensor(&cot, &[rows, cols])).unwrap();
            let (ry, rdx) = softmax_ref(&x, &cot, cols, log);
            let at = format!(
                "{} {rows}x{cols}",
                if log { "log_softmax" } else { "softmax" }
            );
            // Softmax: relative to each probability (they span many decades); log-softmax:
            // relative to the row's scale.
            if log {
                check_scaled(&format!("{at} y"), &values(&y), &ry, tol(cols));
            } else {
                check(&format!("{at} y"), &values(&y), &ry, tol(cols), 0.0);
            }
            check_scaled(&format!("{at} dx"), &grad(&xt), &rdx, tol(cols));
        }
    }
}

/// Per row in f64: the loss `logsumexp - x[target]` and the gradient `softmax - onehot`, both 0
/// for an ignored (`-100`) target.
fn cross_entropy_ref(x: &[f32], targets: &[i64], c: usize) -> (Vec<f64>, Vec<f64>) {
    let mut nll = vec![0.0; targets.len()];
    let mut dx = vec![0.0; x.len()];
    for (r, &t) in targets.iter().enumerate() {
        if t == -100 {
            continue;
        }
        let row = wide(&x[r * c..(r + 1) * c]);
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
        nll[r] = max + sum.ln() - row[t as usize];
        for j in 0..c {
            let p = (row[j] - max).exp() / sum;
            dx[r * c + j] = p - (j == t as usize) as u8 as f64;
        }
    }
    (nll, dx)
}

/// Targets in `0..c`, every seventh ignored (`-100`) when `ignore`.
fn class_targets(rng: &mut Rng, n: usize, c: usize, ignore: bool) -> Vec<i64> {
    (0..n)
        .map(|i| {
            if ignore && i % 7 == 3 {
                -100
            } else {
                (rng.next_u64() % c as u64) as i64
            }
        })
        .collect()
}

/// 512×65 (a character vocabulary) is above the threading threshold.
const CE_SHAPES: [(usize, usize); 3] = [(512, 65), (256, 1000), (37, 130)];

#[test]
fn cross_entropy_mean_and_grad() {
    let mut rng = Rng(4);
    for (n, c) in CE_SHAPES {
        let x = rng.normals(n * c, 0.0, 3.0);
        let targets = class_targets(&mut rng, n, c, true);
        let xt = leaf(&x, &[n, c]);
        let tt = Tensor::from_slice(&targets, [n], CPU).unwrap();
        let loss = xt.cross_entropy(&tt, Some(-100), Reduction::Mean).unwrap();
        loss.backward().unwrap();
        // The mean over kept rows; the gradient is (softmax - one_hot) / kept.
        let kept = targets.iter().filter(|&&t| t != -100).count() as f64;
        let (nll, dx) = cross_entropy_ref(&x, &targets, c);
        let dx: Vec<f64> = dx.iter().map(|v| v / kept).collect();
        let at = format!("cross_entropy {n}x{c}");
        check(
            &format!("{at} loss"),
            &values(&loss),
            &[nll.iter().sum::<f64>() / kept],
            tol(c) + tol(n),
            0.0,
        );
        check_scaled(&format!("{at} dlogits"), &grad(&xt), &dx, tol(c));
    }
}

#[test]
fn into_cross_entropy_writes_the_gradient_in_its_forward() {
    // Logits only the loss holds (`x · 2`) get their gradient in the forward pass: a mean
    // backpropagated from 1 (the rows are not touched again), the same mean scaled by 0.25
    // (every row rescaled), and a sum with ignored rows.
    let mut rng = Rng(5);
    for (n, c) in CE_SHAPES {
        let x = rng.normals(n * c, 0.0, 1.5);
        let doubled: Vec<f32> = x.iter().map(|v| v * 2.0).collect();
        for (ignore, reduction, scale) in [
            (false, Reduction::Mean, 1.0),
            (false, Reduction::Mean, 0.25),
            (true, Reduction::Sum, 1.0),
        ] {
            let targets = class_targets(&mut rng, n, c, ignore);
            let (nll, dx) = cross_entropy_ref(&doubled, &targets, c);
            let per_row = match reduction {
                Reduction::Mean => scale / n as f64,
                _ => scale,
            };
            let xt = leaf(&x, &[n, c]);
            let tt = Tensor::from_slice(&targets, [n], CPU).unwrap();
            let ignore = ignore.then_some(-100);
            let loss = xt
                .mul_scalar(2.0)
                .unwrap()
                .into_cross_entropy(&tt, ignore, reduction)
                .unwrap()
                .mul_scalar(scale)
                .unwrap();
            loss.backward().unwrap();
            let at = format!("into_cross_entropy {n}x{c} {reduction:?} x{scale}");
            check(
                &format!("{at} loss"),
                &values(&loss),
                &[nll.iter().sum::<f64>() * per_row],
                tol(c) + tol(n),
                0.0,
            );
            let dx: Vec<f64> = dx.iter().map(|v| v * 2.0 * per_row).collect();
            check_scaled(&format!("{at} dlogits"), &grad(&xt), &dx, tol(c));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// GELU

/// GELU (erf form) and its derivative in f64: `x Φ(x)` and `Φ(x) + x φ(x)`.
fn gelu_ref(x: f64) -> (f64, f64) {
    let cdf = 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
    let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    (x * cdf, cdf + x * pdf)
}

#[test]
fn gelu_forward_and_grad() {
    let mut rng = Rng(5);
    // 768×512 runs the threaded vector kernel; the other lengths end in every kind of tail of
    // its 32-element blocks (and of 8-lane loops).
    for shape in [
        vec![768, 512],
        vec![37, 130],
        vec![1, 1],
        vec![3, 7],
        vec![1, 33],
        vec![5, 45],
        vec![1031],
    ] {
        let n: usize = shape.iter().product();
        let mut x = rng.uniforms(n, -8.0, 8.0);
        for (v, s) in x.iter_mut().zip([0.0, -0.0, 12.0, -12.0, 1e-20, -3.0]) {
            *v = s;
        }
        let cot = rng.normals(n, 0.0, 1.0);
        let xt = leaf(&x, &shape);
        let y = xt.gelu().unwrap();
        y.backward_with(&tensor(&cot, &shape)).unwrap();
        let (mut ry, mut rdx) = (vec![0.0; n], vec![0.0; n]);
        for i in 0..n {
            let (f, d) = gelu_ref(x[i] as f64);
            ry[i] = f;
            rdx[i] = cot[i] as f64 * d;
        }
        // Elementwise: erf's approximation is within 1.5e-7 (absolute) in the derivative (A&S
        // 7.1.26) and 3e-7 in the forward (7.1.28, without an exponential), and `1 - p·t·e^{-a²}`
        // cancels, so the few ulps of error in its factors become a few ulps of 1. With `E` the
        // sum, `y = x/2 (1 + erf)` is within `|x|/2 · E` plus the rounding of `y`, `Φ` within
        // `E/2`, and the `x φ(x)` term of the derivative within a few ulps of itself.
        let e = 1.5e-7 + 8.0 * EPS;
        let e_fwd = 3e-7 + 8.0 * EPS;
        let at = format!("gelu {shape:?}");
        check_each(&format!("{at} y"), &values(&y), &ry, |i, w| {
            0.5 * (x[i] as f64).abs() * e_fwd + 2.0 * EPS * w.abs() + f64::MIN_POSITIVE
        });
        check_each(&format!("{at} dx"), &grad(&xt), &rdx, |i, w| {
            let xf = x[i] as f64;
            let xpdf = (xf * (-0.5 * xf * xf).exp()).abs() / (2.0 * std::f64::consts::PI).sqrt();
            (cot[i] as f64).abs() * (0.5 * e + 4.0 * EPS * xpdf)
                + 2.0 * EPS * w.abs()
                + f64::MIN_POSITIVE
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Attention

/// Attention of `n` slices of `(t, d)` q, k, v in f64: `(out, dq, dk, dv)` for `cot`.
#[allow(clippy::type_complexity)]
fn attention_ref(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    cot: &[f32],
    (n, t, d): (usize, usize, usize),
    causal: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let scale = 1.0 / (d as f64).sqrt();
    let (mut out, mut dq, mut dk, mut dv) = (
        vec![0.0; n * t * d],
        vec![0.0; n * t * d],
        vec![0.0; n * t * d],
        vec![0.0; n * t * d],
    );
    let at = |b: usize, i: usize, c: usize| (b * t + i) * d + c;
    for b in 0..n {
        for i in 0..t {
            let seen = if causal { i + 1 } else { t };
            let mut p = vec![0.0; seen];
            for (j, pj) in p.iter_mut().enumerate() {
                let mut s = 0.0;
                for c in 0..d {
                    s += q[at(b, i, c)] as f64 * k[at(b, j, c)] as f64;
                }
                *pj = s * scale;
            }
            let max = p.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            p.iter_mut().for_each(|s| *s = (*s - max).exp());
            let sum: f64 = p.iter().sum();
            p.iter_mut().for_each(|s| *s /= sum);
            // dP_j = g · v_j; dS_j = P_j (dP_j - Σ P dP) · scale.
            let dp: Vec<f64> = (0..seen)
                .map(|j| {
                    (0..d)
                        .map(|c| cot[at(b, i, c)] as f64 * v[at(b, j, c)] as f64)
                        .sum()
                })
                .collect();
            let pdp: f64 = p.iter().zip(&dp).map(|(p, g)| p * g).sum();
            for j in 0..seen {
                let ds = p[j] * (dp[j] - pdp) * scale;
                for c in 0..d {
                    out[at(b, i, c)] += p[j] * v[at(b, j, c)] as f64;
                    dv[at(b, j, c)] += p[j] * cot[at(b, i, c)] as f64;
                    dq[at(b, i, c)] += ds * k[at(b, j, c)] as f64;
                    dk[at(b, j, c)] += ds * q[at(b, i, c)] as f64;
                }
            }
        }
    }
    (out, dq, dk, dv)
}

#[test]
fn causal_attention_forward_and_grads() {
    let mut rng = Rng(6);
    // (batch, heads, T, D): B·H = 8 slices; T = 67 and D = 41 leave tails in every loop; T 131
    // and D 64 take the 64-lane blocks (AVX-512 on Intel) with the odd query and key last.
    for ((b, h, t, d), causal) in [
        ((2, 4, 64, 32), true),
        ((2, 4, 67, 41), true),
        ((1, 3, 67, 41), false),
        ((1, 3, 131, 64), true),
        ((1, 2, 131, 64), false),
    ] {
        let shape = [b, h, t, d];
        let len = b * h * t * d;
        let (q, k, v) = (
            rng.normals(len, 0.0, 1.0),
            rng.normals(len, 0.0, 1.0),
            rng.normals(len, 0.0, 1.0),
        );
        let cot = rng.normals(len, 0.0, 1.0);
        let (qt, kt, vt) = (leaf(&q, &shape), leaf(&k, &shape), leaf(&v, &shape));
        let out = qt
            .scaled_dot_product_attention(&kt, &vt, causal, 0.0)
            .unwrap();
        out.backward_with(&tensor(&cot, &shape)).unwrap();
        let (ro, rdq, rdk, rdv) = attention_ref(&q, &k, &v, &cot, (b * h, t, d), causal);
        let at = format!("attention (causal: {causal}) {shape:?}");
        // Each result sums over up to T keys of products over D.
        let r = tol(t * d);
        check_scaled(&format!("{at} out"), &values(&out), &ro, r);
        check_scaled(&format!("{at} dq"), &grad(&qt), &rdq, r);
        check_scaled(&format!("{at} dk"), &grad(&kt), &rdk, r);
        check_scaled(&format!("{at} dv"), &grad(&vt), &rdv, r);
    }
}

// ---------------------------------------------------------------------------------------------
// Matmul

/// Asserts `|got - Σ a b| <= k·eps·Σ |a||b|` for every element of a batch of `(m, k)·(k, n)`
/// products (row-major `a`, `b`): twice the rounding-error bound of any summation order; and
/// the normwise error within [`NORMWISE`].
fn check_matmul(what: &str, got: &[f32], a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) {
    let batch = a.len() / (m * k);
    assert_eq!(got.len(), batch * m * n, "{what}: length");
    let mut worst = (0.0f64, 0usize, 0.0f64);
    let (mut e2, mut w2) = (0.0, 0.0);
    for bi in 0..batch {
        let (a, b) = (
            &a[bi * m * k..(bi + 1) * m * k],
            &b[bi * k * n..(bi + 1) * k * n],
        );
        let mut acc = vec![0.0f64; n];
        let mut mag = vec![0.0f64; n];
        for i in 0..m {
            acc.fill(0.0);
            mag.fill(0.0);
            for p in 0..k {
                let x = a[i * k + p] as f64;
                for j in 0..n {
                    let y = b[p * n + j] as f64;
                    acc[j] += x * y;
                    mag[j] += (x * y).abs();
                }
            }
            for j in 0..n {
                let o = (bi * m + i) * n + j;
                let bound = k as f64 * EPS * mag[j] + 1e-30;
                let err = (got[o] as f64 - acc[j]).abs();
                let ratio = match err / bound {
                    r if r.is_nan() => f64::INFINITY,
                    r => r,
                };
                if ratio > worst.0 {
                    worst = (ratio, o, acc[j]);
                }
                e2 += err * err;
                w2 += acc[j] * acc[j];
            }
        }
    }
    let (ratio, o, want) = worst;
    let normwise = (e2 / w2).sqrt();
    eprintln!(
        "{what}: worst element at {ratio:.3} of its bound, normwise error {:.2} ulp",
        normwise / EPS
    );
    assert!(
        ratio <= 1.0,
        "{what}: element {o} is {} but the f64 reference gives {want} ({ratio:.1}× the bound)",
        got[o]
    );
    assert!(
        normwise.is_finite() && normwise <= NORMWISE,
        "{what}: normwise relative error {:.1} ulp",
        normwise / EPS
    );
}

/// `[r, c]` row-major values transposed to `[c, r]`.
fn transposed(v: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut t = vec![0.0; v.len()];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = v[i * c + j];
        }
    }
    t
}

/// The `[r, c]` row-major values as a tensor: stored so (`t` false), or stored transposed and
/// read through the transposed view.
fn as_stored(v: &[f32], r: usize, c: usize, t: bool) -> Tensor {
    if t {
        tensor(&transposed(v, r, c), &[c, r]).t().unwrap()
    } else {
        tensor(v, &[r, c])
    }
}

#[test]
fn matmul_f32_within_rounding_bound() {
    let mut rng = Rng(7);
    // 1030 rows: a transposed A whose columns lie 4 KiB apart, which the AVX-512 kernel packs;
    // 700 columns: two blocks of B where it sizes them to an Intel L2.
    for (m, k, n) in [(768, 128, 384), (37, 130, 41), (1030, 70, 700)] {
        let a = rng.normals(m * k, 0.1, 1.0);
        let b = rng.normals(k * n, -0.1, 1.0);
        // Each operand plain, or stored transposed and read through its transposed view.
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let y = values(
                &as_stored(&a, m, k, ta)
                    .matmul(&as_stored(&b, k, n, tb))
                    .unwrap(),
            );
            let what = format!("matmul {m}x{k}·{k}x{n} (transposed: {ta}, {tb})");
            check_matmul(&what, &y, &a, &b, (m, k, n));
        }
    }
    // Past every block of the AVX-512 kernel (480 rows, 256 deep, 4096 columns), with partial
    // tiles at each edge: plain and with both operands transposed.
    let (m, k, n) = (491, 517, 4133);
    let a = rng.normals(m * k, 0.0, 1.0);
    let b = rng.normals(k * n, 0.0, 1.0);
    for t in [false, true] {
        let (at, bt) = if t {
            (
                tensor(&transposed(&a, m, k), &[k, m]).t().unwrap(),
                tensor(&transposed(&b, k, n), &[n, k]).t().unwrap(),
            )
        } else {
            (tensor(&a, &[m, k]), tensor(&b, &[k, n]))
        };
        let y = values(&at.matmul(&bt).unwrap());
        check_matmul(
            &format!("matmul {m}x{k}·{k}x{n} (transposed: {t})"),
            &y,
            &a,
            &b,
            (m, k, n),
        );
    }
    // A batch of small products.
    let (bs, m, k, n) = (3, 37, 130, 41);
    let a = rng.normals(bs * m * k, 0.0, 1.0);
    let b = rng.normals(bs * k * n, 0.0, 1.0);
    let y = values(
        &tensor(&a, &[bs, m, k])
            .matmul(&tensor(&b, &[bs, k, n]))
            .unwrap(),
    );
    check_matmul("batched matmul", &y, &a, &b, (m, k, n));
}

/// `v` rounded to bf16 (to nearest even) and back.
fn bf16_rounded(v: &[f32]) -> Vec<f32> {
    values(
        &tensor(v, &[v.len()])
            .to_dtype(DType::BF16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap(),
    )
}

/// With bf16 products allowed, on a CPU with AMX: each product equals the f64 product of its
/// operands rounded to bf16, within f32's summation bound. (Unrounded, the normwise error would
/// be near 2^-9, hundreds of times [`NORMWISE`]: the test fails if the f32 path ran instead.)
/// Without AMX the switch changes nothing, and the products are checked as f32. Runs only in
/// the child processes of [`matmul_bf16_in_child_processes`], since the switch is process-wide.
#[test]
fn matmul_bf16_products_within_rounding_bound() {
    if std::env::var(CHILD_MARKER).as_deref() != Ok("bf16") {
        return;
    }
    rustygradients_core::set_matmul_allow_bf16(true);
    let amx = rustygradients_core::cpu_amx_available();
    eprintln!("bf16 products on AMX: {amx}");
    let reference = |v: &[f32]| if amx { bf16_rounded(v) } else { v.to_vec() };
    let mut rng = Rng(11);
    // Partial tiles at every edge; past every block (256 rows, 512 deep, 1024 columns); the
    // GPT-2 products' shapes.
    for (m, k, n) in [
        (37, 130, 41),
        (768, 128, 384),
        (5, 33, 17),
        (491, 517, 1100),
    ] {
        let a = rng.normals(m * k, 0.1, 1.0);
        let b = rng.normals(k * n, -0.1, 1.0);
        let (ra, rb) = (reference(&a), reference(&b));
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let y = values(
                &as_stored(&a, m, k, ta)
                    .matmul(&as_stored(&b, k, n, tb))
                    .unwrap(),
            );
            let what = format!("bf16 matmul {m}x{k}·{k}x{n} (transposed: {ta}, {tb})");
            check_matmul(&what, &y, &ra, &rb, (m, k, n));
        }
        // Neither stride 1: every other element of a wider operand.
        let spread = |v: &[f32]| v.iter().flat_map(|&x| [x, f32::NAN]).collect::<Vec<_>>();
        let strided = |v: &[f32], r: usize, c: usize| {
            tensor(&spread(v), &[r, c, 2])
                .narrow(2, 0, 1)
                .unwrap()
                .squeeze(2)
                .unwrap()
        };
        let y = values(&strided(&a, m, k).matmul(&strided(&b, k, n)).unwrap());
        let what = format!("bf16 matmul {m}x{k}·{k}x{n} (strided)");
        check_matmul(&what, &y, &ra, &rb, (m, k, n));
    }
}

/// bf16 × bf16 matmul (autocast's, a bf16 model's): on a CPU with AMX it runs on the tiles,
/// elsewhere it widens to f32. Either way each element is the f64 product of the operands
/// within f32's summation bound plus one rounding to bf16, for every packing layout, partial
/// tiles, past every block, and a batch of small products.
#[test]
fn matmul_bf16_tensors_within_rounding_bound() {
    let mut rng = Rng(13);
    let bf16_tensor = |v: &[f32], shape: &[usize]| tensor(v, shape).to_dtype(DType::BF16).unwrap();
    for (bs, m, k, n) in [(1, 37, 130, 41), (1, 491, 517, 1100), (3, 37, 130, 41)] {
        let a = bf16_rounded(&rng.normals(bs * m * k, 0.1, 1.0));
        let b = bf16_rounded(&rng.normals(bs * k * n, -0.1, 1.0));
        let layouts: &[(bool, bool)] = if bs == 1 {
            &[(false, false), (true, false), (false, true), (true, true)]
        } else {
            &[(false, false)]
        };
        for &(ta, tb) in layouts {
            let (at, bt) = if bs == 1 {
                (
                    as_stored(&a, m, k, ta).to_dtype(DType::BF16).unwrap(),
                    as_stored(&b, k, n, tb).to_dtype(DType::BF16).unwrap(),
                )
            } else {
                (bf16_tensor(&a, &[bs, m, k]), bf16_tensor(&b, &[bs, k, n]))
            };
            let y = at.matmul(&bt).unwrap();
            assert_eq!(y.dtype(), DType::BF16);
            let got = values(&y.to_dtype(DType::F32).unwrap());
            let what = format!("bf16 tensors {bs}x{m}x{k}·{k}x{n} (transposed: {ta}, {tb})");
            let (mut e2, mut w2) = (0.0, 0.0);
            for bi in 0..bs {
                for i in 0..m {
                    for j in 0..n {
                        let (mut want, mut mag) = (0.0f64, 0.0f64);
                        for p in 0..k {
                            let t = a[(bi * m + i) * k + p] as f64 * b[(bi * k + p) * n + j] as f64;
                            want += t;
                            mag += t.abs();
                        }
                        let g = got[(bi * m + i) * n + j] as f64;
                        let bound = k as f64 * EPS * mag + want.abs() / 256.0 + 1e-30;
                        assert!(
                            (g - want).abs() <= bound,
                            "{what}: ({bi}, {i}, {j}) is {g}, the f64 product {want}"
                        );
                        e2 += (g - want) * (g - want);
                        w2 += want * want;
                    }
                }
            }
            // One rounding to bf16 (8 significant bits): a normwise error near 2^-9.5.
            let normwise = (e2 / w2).sqrt();
            eprintln!("{what}: normwise error {normwise:.2e}");
            assert!(
                normwise < 1.0 / 512.0,
                "{what}: normwise error {normwise:.2e}"
            );
        }
    }
}

/// [`matmul_bf16_products_within_rounding_bound`] on one thread (one GEMM through every block)
/// and on eight (the grid of tiles, each on its own thread and tile configuration).
#[test]
fn matmul_bf16_in_child_processes() {
    if std::env::var_os(CHILD_MARKER).is_some() {
        return;
    }
    let test = "matmul_bf16_products_within_rounding_bound";
    for threads in ["1", "8"] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env("RAYON_NUM_THREADS", threads)
            .env(CHILD_MARKER, "bf16")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("test result: ok. 1 passed"),
            "{test} on {threads} threads failed ({})\n--- stdout\n{stdout}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A few rows times a large matrix (a token being generated) takes the streaming path: both
/// weight layouts, widths that are not a multiple of its blocks, each row the same alone as in
/// a batch, and f16/bf16 weights widened as they stream.
#[test]
fn matmul_few_rows_within_rounding_bound() {
    let mut rng = Rng(11);
    for (k, n) in [(768, 2304), (130, 1001), (77, 3001)] {
        let a = rng.normals(8 * k, 0.1, 1.0);
        let b = rng.normals(k * n, -0.1, 1.0);
        for tb in [false, true] {
            let bt = if tb {
                tensor(&transposed(&b, k, n), &[n, k]).t().unwrap()
            } else {
                tensor(&b, &[k, n])
            };
            let all = values(&tensor(&a, &[8, k]).matmul(&bt).unwrap());
            for m in [1, 3, 8] {
                let y = values(&tensor(&a[..m * k], &[m, k]).matmul(&bt).unwrap());
                let what = format!("matmul {m}x{k}·{k}x{n} (transposed: {tb})");
                check_matmul(&what, &y, &a[..m * k], &b, (m, k, n));
                assert_eq!(
                    y[..],
                    all[..m * n],
                    "{what}: rows differ from the same rows in a batch of 8"
                );
            }
            // Rows folded from a (batch, 1, k) activation.
            let y = values(&tensor(&a[..2 * k], &[2, 1, k]).matmul(&bt).unwrap());
            assert_eq!(y[..], all[..2 * n], "(2, 1, {k}) rows");
            for dt in [DType::F16, DType::BF16] {
                let (ah, bh) = (
                    tensor(&a[..3 * k], &[3, k]).to_dtype(dt).unwrap(),
                    bt.to_dtype(dt).unwrap(),
                );
                let y = values(&ah.matmul(&bh).unwrap().to_dtype(DType::F32).unwrap());
                // The f64 product of the rounded operands, rounded once more on output.
                let (ar, br) = (
                    values(&ah.to_dtype(DType::F32).unwrap()),
                    values(&bh.to_dtype(DType::F32).unwrap().contiguous().unwrap()),
                );
                let unit = if dt == DType::F16 {
                    2f64.powi(-11)
                } else {
                    2f64.powi(-8)
                };
                for i in 0..3 {
                    for j in 0..n {
                        let (mut want, mut mag) = (0f64, 0f64);
                        for p in 0..k {
                            let t = ar[i * k + p] as f64 * br[p * n + j] as f64;
                            want += t;
                            mag += t.abs();
                        }
                        let err = (y[i * n + j] as f64 - want).abs();
                        let bound = unit * want.abs() + k as f64 * EPS * mag + 1e-30;
                        assert!(
                            err <= bound,
                            "{dt:?} {k}x{n} (transposed: {tb}) [{i},{j}]: {} vs {want}",
                            y[i * n + j]
                        );
                    }
                }
            }
        }
    }
}

/// Attention while generating: one query row per head against the cached keys (read through
/// a transposed, sliced view of the cache) and the probabilities times the cached values.
#[test]
fn matmul_few_rows_per_head_within_rounding_bound() {
    let mut rng = Rng(12);
    let (heads, cap, len, d) = (6, 300, 257, 64);
    let kc = rng.normals(heads * cap * d, 0.0, 1.0);
    let q = rng.normals(heads * d, 0.0, 1.0);
    let p = rng.normals(heads * len, 0.5, 0.3);
    let cache = tensor(&kc, &[1, heads, cap, d]).narrow(2, 0, len).unwrap();
    for dt in [DType::F32, DType::BF16] {
        let cast = |t: Tensor| t.to_dtype(dt).unwrap();
        let (qt, ct, pt) = (
            cast(tensor(&q, &[1, heads, 1, d])),
            cast(cache.clone()),
            cast(tensor(&p, &[1, heads, 1, len])),
        );
        let scores = values(
            &cast(qt.matmul(&ct.transpose(2, 3).unwrap()).unwrap())
                .to_dtype(DType::F32)
                .unwrap(),
        );
        let out = values(&pt.matmul(&ct).unwrap().to_dtype(DType::F32).unwrap());
        // References from the operands as rounded to `dt`, per head.
        let (qr, cr, pr) = (
            values(&qt.to_dtype(DType::F32).unwrap()),
            values(&ct.to_dtype(DType::F32).unwrap().contiguous().unwrap()),
            values(&pt.to_dtype(DType::F32).unwrap()),
        );
        for h in 0..heads {
            let keys = &cr[h * len * d..(h + 1) * len * d];
            if dt == DType::F32 {
                check_matmul(
                    "q·kᵀ per head",
                    &scores[h * len..(h + 1) * len],
                    &qr[h * d..(h + 1) * d],
                    &transposed(keys, len, d),
                    (1, d, len),
                );
                check_matmul(
                    "p·v per head",
                    &out[h * d..(h + 1) * d],
                    &pr[h * len..(h + 1) * len],
                    keys,
                    (1, len, d),
                );
            } else {
                for j in 0..len {
                    let want: f64 = (0..d)
                        .map(|i| qr[h * d + i] as f64 * keys[j * d + i] as f64)
                        .sum();
                    let mag: f64 = (0..d)
                        .map(|i| (qr[h * d + i] as f64 * keys[j * d + i] as f64).abs())
                        .sum();
                    let got = scores[h * len + j] as f64;
                    assert!(
                        (got - want).abs()
                            <= 2f64.powi(-8) * want.abs() + d as f64 * EPS * mag + 1e-6,
                        "bf16 score {h},{j}: {got} vs {want}"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Optimizer

#[test]
fn adam_step_matches_f64() {
    let mut rng = Rng(8);
    for (rows, cols) in [(768, 128), (37, 130)] {
        for decoupled in [true, false] {
            let len = rows * cols;
            let p0 = rng.normals(len, 0.0, 1.0);
            let grads: Vec<Vec<f32>> = (0..3).map(|_| rng.normals(len, 0.0, 0.5)).collect();
            let p = tensor(&p0, &[rows, cols]);
            let (m, v) = (p.zeros_like().unwrap(), p.zeros_like().unwrap());
            let (lr, beta1, beta2, eps, wd) = (1e-2, 0.9, 0.95, 1e-8, 0.1);
            let (mut rp, mut rm, mut rv) = (wide(&p0), vec![0.0; len], vec![0.0; len]);
            for (s, g) in grads.iter().enumerate() {
                let step = s as u64 + 1;
                let h = AdamHyper {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay: wd,
                    decoupled,
                    step,
                };
                p.adam_step_(&tensor(g, &[rows, cols]), &m, &v, h).unwrap();
                // PyTorch's Adam / AdamW, written out.
                let (bc1, bc2) = (1.0 - beta1.powi(step as i32), 1.0 - beta2.powi(step as i32));
                for i in 0..len {
                    let mut gi = g[i] as f64;
                    if decoupled {
                        rp[i] *= 1.0 - lr * wd;
                    } else {
                        gi += wd * rp[i];
                    }
                    rm[i] = beta1 * rm[i] + (1.0 - beta1) * gi;
                    rv[i] = beta2 * rv[i] + (1.0 - beta2) * gi * gi;
                    let denom = (rv[i] / bc2).sqrt() + eps;
                    rp[i] -= lr * (rm[i] / bc1) / denom;
                }
            }
            // Each step rounds the state to f32 once.
            let at = format!("adam_step_ {rows}x{cols} (decoupled: {decoupled})");
            check_scaled(&format!("{at} param"), &values(&p), &rp, tol(3));
            check_scaled(&format!("{at} m"), &values(&m), &rm, tol(3));
            check_scaled(&format!("{at} v"), &values(&v), &rv, tol(3));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Every instruction set

/// Set in the child processes of [`every_cpu_isa_passes_in_a_child_process`] (to the ISA they
/// run), so that they never spawn children of their own.
const CHILD_MARKER: &str = "RG_KERNELS_F32_CHILD";

/// Whether this CPU runs the AVX2 + FMA kernels.
fn host_has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU runs the AVX-512 kernels (F, BW, VL, DQ as the library asks).
fn host_has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        host_has_avx2_fma()
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// This process chose its kernels once, so the scalar fallbacks (and, when this process runs
/// scalar code, the AVX2 kernels) are checked by running every other test of this binary again
/// in a child process per `RG_CPU_ISA` value.
#[test]
fn every_cpu_isa_passes_in_a_child_process() {
    const ME: &str = "every_cpu_isa_passes_in_a_child_process";
    if std::env::var_os(CHILD_MARKER).is_some() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    // The other tests of this binary, by name.
    let list = std::process::Command::new(&exe)
        .args(["--list", "--format=terse"])
        .env(CHILD_MARKER, "list")
        .output()
        .unwrap();
    assert!(list.status.success(), "listing the tests failed");
    let tests: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .filter(|name| *name != ME)
        .map(str::to_owned)
        .collect();
    assert!(tests.len() >= 8, "too few tests found: {tests:?}");
    let mut isas = vec!["scalar"];
    if host_has_avx2_fma() {
        isas.push("avx2");
    }
    if host_has_avx512() {
        isas.push("avx512");
    }
    // The children at once: each is mostly single-threaded f64 reference loops.
    let children: Vec<_> = isas
        .iter()
        .map(|isa| {
            let child = std::process::Command::new(&exe)
                .arg("--exact")
                .args(&tests)
                .args(["--nocapture", "--test-threads=1"])
                .env("RG_CPU_ISA", isa)
                .env(CHILD_MARKER, isa)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (isa, child)
        })
        .collect();
    for (isa, child) in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary = format!("test result: ok. {} passed", tests.len());
        // The child's stderr without the per-check accuracy lines: the panics.
        let stderr: Vec<&str> = std::str::from_utf8(&out.stderr)
            .unwrap_or("")
            .lines()
            .filter(|l| !l.contains("worst element at"))
            .collect();
        assert!(
            out.status.success() && stdout.contains(&summary),
            "RG_CPU_ISA={isa}: the kernel tests failed ({})\n--- stdout\n{stdout}\n--- stderr\n{}",
            out.status,
            stderr.join("\n")
        );
    }
}

/// The f32 GEMM splits large products into one row band per thread, and from four bands on
/// they share one packing of B: this host may have two cores, so the matmul test runs again in
/// a child process with an 8-thread pool (its 768×128·128×384 product then takes 8 bands).
#[test]
fn matmul_on_eight_threads_in_a_child_process() {
    if std::env::var_os(CHILD_MARKER).is_some() {
        return;
    }
    let test = "matmul_f32_within_rounding_bound";
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("RAYON_NUM_THREADS", "8")
        .env(CHILD_MARKER, "threads")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{test} on 8 threads failed ({})\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
