//! GELU forward and backward for contiguous f32, written with AVX2 + FMA intrinsics. The
//! polynomial chains of `exp` and `erf` are long; each loop iteration carries four independent
//! 8-lane vectors through them side by side, so the core overlaps their latencies instead of
//! waiting on one chain. Inputs that are not f32, not contiguous, or on a CPU without AVX2 take
//! the generic loops in `elementwise.rs`.
//!
//! Accuracy: erf by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7, as the scalar
//! path), `exp` by a degree-6 polynomial after range reduction, reciprocals by `rcp` plus one
//! Newton step: results stay within a few f32 ulps of the scalar path. NaN in, NaN out.

use super::strided::{build, has_avx2};
use crate::backend::UnaryOp;

/// Which function a kernel computes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gelu,
    GeluTanh,
}

fn kind(op: UnaryOp) -> Option<Kind> {
    match op {
        UnaryOp::Gelu => Some(Kind::Gelu),
        UnaryOp::GeluTanh => Some(Kind::GeluTanh),
        _ => None,
    }
}

/// `op(x)` elementwise, when `op` has a vector kernel here and the CPU runs it.
pub(crate) fn unary(x: &[f32], op: UnaryOp) -> Option<Vec<f32>> {
    let k = kind(op)?;
    if !has_avx2() {
        return None;
    }
    Some(build(x.len(), |off, out| {
        let x = &x[off..off + out.len()];
        // SAFETY: AVX2 and FMA were detected above.
        unsafe { avx2::forward(k, x, out) }
    }))
}

/// `g · op'(x)` elementwise (the gradient of `op` at `x` times the incoming gradient), when
/// `op` has a vector kernel here and the CPU runs it.
pub(crate) fn unary_grad(x: &[f32], g: &[f32], op: UnaryOp) -> Option<Vec<f32>> {
    let k = kind(op)?;
    if !has_avx2() || x.len() != g.len() {
        return None;
    }
    Some(build(x.len(), |off, out| {
        let n = out.len();
        // SAFETY: AVX2 and FMA were detected above.
        unsafe { avx2::backward(k, &x[off..off + n], &g[off..off + n], out) }
    }))
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Kind;
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// Vectors in flight per iteration.
    const U: usize = 4;
    /// Elements per iteration.
    const W: usize = 8 * U;

    /// `U` independent 8-lane vectors, operated on together so their instructions interleave.
    #[derive(Clone, Copy)]
    struct G([__m256; U]);

    // Every method is `inline(always)`: it is only ever expanded inside the
    // `#[target_feature(enable = "avx2,fma")]` kernels below, where the intrinsics are legal.
    impl G {
        #[inline(always)]
        fn splat(v: f32) -> G {
            unsafe { G([_mm256_set1_ps(v); U]) }
        }
        #[inline(always)]
        fn map(self, f: impl Fn(__m256) -> __m256) -> G {
            G(std::array::from_fn(|i| f(self.0[i])))
        }
        #[inline(always)]
        fn zip(self, o: G, f: impl Fn(__m256, __m256) -> __m256) -> G {
            G(std::array::from_fn(|i| f(self.0[i], o.0[i])))
        }
        #[inline(always)]
        fn add(self, o: G) -> G {
            self.zip(o, |a, b| unsafe { _mm256_add_ps(a, b) })
        }
        #[inline(always)]
        fn mul(self, o: G) -> G {
            self.zip(o, |a, b| unsafe { _mm256_mul_ps(a, b) })
        }
        /// `self · b + c`
        #[inline(always)]
        fn fma(self, b: G, c: G) -> G {
            G(std::array::from_fn(|i| unsafe {
                _mm256_fmadd_ps(self.0[i], b.0[i], c.0[i])
            }))
        }
        /// `c - self · b`
        #[inline(always)]
        fn fnma(self, b: G, c: G) -> G {
            G(std::array::from_fn(|i| unsafe {
                _mm256_fnmadd_ps(self.0[i], b.0[i], c.0[i])
            }))
        }
        /// Lane-wise max with a constant; a NaN lane of `self` stays NaN.
        #[inline(always)]
        fn max_c(self, c: f32) -> G {
            self.map(|a| unsafe { _mm256_max_ps(_mm256_set1_ps(c), a) })
        }
        /// Lane-wise min with a constant; a NaN lane of `self` becomes `c`.
        #[inline(always)]
        fn min_c(self, c: f32) -> G {
            self.map(|a| unsafe { _mm256_min_ps(a, _mm256_set1_ps(c)) })
        }
        #[inline(always)]
        fn abs(self) -> G {
            self.map(|a| unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), a) })
        }
        /// `|self|` with the sign of `s`.
        #[inline(always)]
        fn with_sign_of(self, s: G) -> G {
            self.zip(s, |m, s| unsafe {
                _mm256_or_ps(m, _mm256_and_ps(s, _mm256_set1_ps(-0.0)))
            })
        }
        /// `1 / self`: the hardware estimate refined by one Newton step.
        #[inline(always)]
        fn recip(self) -> G {
            self.map(|d| unsafe {
                let r = _mm256_rcp_ps(d);
                _mm256_mul_ps(r, _mm256_fnmadd_ps(d, r, _mm256_set1_ps(2.0)))
            })
        }
        /// `e^self` with lanes clamped to [-87.3, 88] first (so `2^n` stays a normal f32):
        /// `x = n·ln2 + r`, a degree-6 polynomial for `e^r`, and `2^n` built in the exponent.
        #[inline(always)]
        fn exp(self) -> G {
            let x = self.max_c(-87.336_55).min_c(88.0);
            let n = x.map(|v| unsafe {
                _mm256_round_ps(
                    _mm256_mul_ps(v, _mm256_set1_ps(std::f32::consts::LOG2_E)),
                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
                )
            });
            let r = n.fnma(G::splat(0.693_145_75), x);
            let r = n.fnma(G::splat(1.428_606_8e-6), r);
            let mut p = G::splat(1.0 / 720.0);
            for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
                p = p.fma(r, G::splat(c));
            }
            let scale = n.map(|v| unsafe {
                _mm256_castsi256_ps(_mm256_slli_epi32(
                    _mm256_add_epi32(_mm256_cvtps_epi32(v), _mm256_set1_epi32(127)),
                    23,
                ))
            });
            p.mul(scale)
        }
    }

    const SQRT1_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    /// 1 / sqrt(2π)
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    /// sqrt(2/π) and the cubic coefficient of the tanh approximation.
    const K: f32 = 0.797_884_6;
    const A: f32 = 0.044_715;

    /// `(erf(x/√2), e^{-x²/2})`, the two pieces both GELU and its derivative need. `|x/√2|` is
    /// clamped to 10 first (erf is 1 there in f32), which also keeps `e^{-x²/2}` in range.
    #[inline(always)]
    fn erf_parts(x: G) -> (G, G) {
        let a = x.mul(G::splat(SQRT1_2)).abs().min_c(10.0);
        let t = a.fma(G::splat(0.327_591_1), G::splat(1.0)).recip();
        let mut p = G::splat(1.061_405_4);
        for c in [-1.453_152_1, 1.421_413_8, -0.284_496_74, 0.254_829_6] {
            p = p.fma(t, G::splat(c));
        }
        let e = a.mul(a).mul(G::splat(-1.0)).exp();
        let erf_abs = p.mul(t).fnma(e, G::splat(1.0));
        (erf_abs.with_sign_of(x), e)
    }

    /// `σ(2u) = 1 / (1 + e^{-2u})` with `u = K (x + A x³)`, `u' = K (1 + 3A x²)`, and
    /// `1 - σ(2u) = e^{-2u} σ(2u)`, computed from `e^{-2u}` rather than by subtracting: the
    /// refined reciprocal is within 1e-7 of 1 for large `u`, and the derivative multiplies
    /// `1 - σ` by about `0.1 x³`.
    #[inline(always)]
    fn tanh_parts(x: G) -> (G, G, G) {
        let x2 = x.mul(x);
        let u = x2.fma(G::splat(A), G::splat(1.0)).mul(x).mul(G::splat(K));
        let e = u.mul(G::splat(-2.0)).exp();
        let s = e.add(G::splat(1.0)).recip();
        let du = x2.fma(G::splat(3.0 * A * K), G::splat(K));
        (s, du, e.mul(s))
    }

    #[inline(always)]
    fn gelu(k: Kind, x: G) -> G {
        match k {
            // 0.5 x (1 + erf(x/√2)); (1 + erf) first so that -inf gives NaN as the scalar path.
            Kind::Gelu => {
                let (erf, _) = erf_parts(x);
                x.mul(G::splat(0.5)).mul(erf.add(G::splat(1.0)))
            }
            // 0.5 x (1 + tanh u) = x σ(2u)
            Kind::GeluTanh => x.mul(tanh_parts(x).0),
        }
    }

    #[inline(always)]
    fn gelu_grad(k: Kind, x: G, g: G) -> G {
        let d = match k {
            // Φ(x) + x φ(x)
            Kind::Gelu => {
                let (erf, e) = erf_parts(x);
                let cdf = erf.fma(G::splat(0.5), G::splat(0.5));
                x.mul(e).fma(G::splat(INV_SQRT_2PI), cdf)
            }
            // d/dx x σ(2u) = σ + x σ (1 - σ) 2u'
            Kind::GeluTanh => {
                let (s, du, one_minus) = tanh_parts(x);
                x.mul(s).mul(one_minus).mul(du.mul(G::splat(2.0))).add(s)
            }
        };
        g.mul(d)
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> G {
        G(std::array::from_fn(|i| unsafe {
            _mm256_loadu_ps(p.add(8 * i))
        }))
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: G) {
        for (i, v) in v.0.iter().enumerate() {
            unsafe { _mm256_storeu_ps(p.add(8 * i), *v) };
        }
    }

    /// Runs `f` over `W`-element blocks of the inputs into `out`; the ragged tail goes through
    /// a zero-padded block, so every element takes the same arithmetic.
    #[inline(always)]
    unsafe fn blocks<const N: usize>(
        ins: [&[f32]; N],
        out: &mut [MaybeUninit<f32>],
        f: impl Fn([G; N]) -> G,
    ) {
        let n = out.len();
        let o = out.as_mut_ptr() as *mut f32;
        let mut i = 0;
        while i + W <= n {
            let v = std::array::from_fn(|j| unsafe { load(ins[j].as_ptr().add(i)) });
            unsafe { store(o.add(i), f(v)) };
            i += W;
        }
        if i < n {
            let mut pad = [[0f32; W]; N];
            for (p, s) in pad.iter_mut().zip(&ins) {
                p[..n - i].copy_from_slice(&s[i..n]);
            }
            let v = std::array::from_fn(|j| unsafe { load(pad[j].as_ptr()) });
            let mut res = [0f32; W];
            unsafe { store(res.as_mut_ptr(), f(v)) };
            for (o, &r) in out[i..].iter_mut().zip(&res) {
                o.write(r);
            }
        }
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn forward(k: Kind, x: &[f32], out: &mut [MaybeUninit<f32>]) {
        debug_assert_eq!(x.len(), out.len());
        unsafe { blocks([x], out, |[x]| gelu(k, x)) }
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn backward(k: Kind, x: &[f32], g: &[f32], out: &mut [MaybeUninit<f32>]) {
        debug_assert!(x.len() == out.len() && g.len() == out.len());
        unsafe { blocks([x, g], out, |[x, g]| gelu_grad(k, x, g)) }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx2 {
    use super::Kind;
    use std::mem::MaybeUninit;
    // Never called: `has_avx2()` is false off x86-64.
    pub(super) unsafe fn forward(_: Kind, _: &[f32], _: &mut [MaybeUninit<f32>]) {
        unreachable!("no AVX2 off x86-64")
    }
    pub(super) unsafe fn backward(_: Kind, _: &[f32], _: &[f32], _: &mut [MaybeUninit<f32>]) {
        unreachable!("no AVX2 off x86-64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_backend::strided::PAR_MIN;
    use crate::cpu_backend::{elementwise, HostBuffer};
    use crate::Layout;

    /// `op(x)` and `g · op'(x)` through the backend's f32 dispatch, as every caller gets them:
    /// the AVX2 kernels of this file when `has_avx2()`, the generic loops of `elementwise.rs`
    /// otherwise (`RG_CPU_ISA=scalar`, or a CPU without AVX2). Asserts which one ran, so
    /// neither case passes without checking anything.
    fn dispatched(x: &[f32], g: &[f32], op: UnaryOp) -> (Vec<f32>, Vec<f32>) {
        let l = Layout::contiguous(x.len());
        let (xs, gs) = (
            HostBuffer::from_vec(x.to_vec()),
            HostBuffer::from_vec(g.to_vec()),
        );
        let y = elementwise::unary(&xs, &l, op).unwrap().to_vec::<f32>(&l);
        let d = elementwise::unary_grad(&xs, &l, &gs, &l, op)
            .unwrap()
            .to_vec::<f32>(&l);
        assert_eq!(
            unary(x, op).is_some(),
            has_avx2(),
            "vector kernel availability"
        );
        assert_eq!(unary_grad(x, g, op).is_some(), has_avx2());
        (y, d)
    }

    fn gelu_ref(x: f64, tanh: bool) -> (f64, f64) {
        if tanh {
            let (k, a) = ((2.0 / std::f64::consts::PI).sqrt(), 0.044715);
            let t = (k * (x + a * x * x * x)).tanh();
            let d = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * a * x * x);
            (0.5 * x * (1.0 + t), d)
        } else {
            let cdf = 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
            let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
            (x * cdf, cdf + x * pdf)
        }
    }

    fn inputs(n: usize) -> Vec<f32> {
        let specials = [
            0.0, -0.0, 1e-30, -1e-30, 0.5, -0.5, 5.0, -5.0, 10.0, -10.0, 20.0, -20.0, 30.0, -30.0,
            100.0, -100.0,
        ];
        (0..n)
            .map(|i| match specials.get(i) {
                Some(&s) => s,
                // A deterministic spread over [-8, 8].
                None => ((i as u64 * 2_654_435_761) % 16_000) as f32 / 1000.0 - 8.0,
            })
            .collect()
    }

    #[test]
    fn gelu_kernels_match_f64_reference() {
        for (op, tanh) in [(UnaryOp::Gelu, false), (UnaryOp::GeluTanh, true)] {
            // Lengths around the 32-wide block and one above the parallel threshold.
            for n in [0, 1, 31, 32, 33, 1000, PAR_MIN + 77] {
                let x = inputs(n);
                let g: Vec<f32> = (0..n).map(|i| 1.0 - (i % 7) as f32 * 0.3).collect();
                let (y, dx) = dispatched(&x, &g, op);
                assert_eq!((y.len(), dx.len()), (n, n));
                for i in 0..n {
                    let (fy, fd) = gelu_ref(x[i] as f64, tanh);
                    let tol = 1e-6 * (x[i] as f64).abs().max(1.0);
                    assert!(
                        (y[i] as f64 - fy).abs() <= tol,
                        "{op:?}({}) = {} want {fy}",
                        x[i],
                        y[i]
                    );
                    let want = g[i] as f64 * fd;
                    assert!(
                        (dx[i] as f64 - want).abs() <= tol,
                        "{op:?}'({}) * {} = {} want {want}",
                        x[i],
                        g[i],
                        dx[i]
                    );
                }
            }
        }
    }

    #[test]
    fn gelu_kernels_propagate_nan_and_skip_other_ops() {
        let x = [f32::NAN, 1.0, f32::NAN];
        for op in [UnaryOp::Gelu, UnaryOp::GeluTanh] {
            let (y, d) = dispatched(&x, &[1.0; 3], op);
            assert!(y[0].is_nan() && y[2].is_nan() && !y[1].is_nan());
            assert!(d[0].is_nan() && d[2].is_nan() && !d[1].is_nan());
        }
        assert!(unary(&x, UnaryOp::Exp).is_none());
        assert!(unary_grad(&x, &[1.0; 2], UnaryOp::Gelu).is_none());
    }
}
