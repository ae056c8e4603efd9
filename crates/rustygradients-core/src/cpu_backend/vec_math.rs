//! GELU forward and backward, sigmoid and SiLU forward, for contiguous f32, written once over a
//! thin vector layer (`V`) and compiled for AVX2 + FMA (8 lanes) and AVX-512 (16 lanes); the
//! process's ISA level (`RG_CPU_ISA`) picks one. The polynomial chains of `exp` and `erf` are
//! long; each loop iteration carries four independent vectors through them side by side, so
//! the core overlaps their latencies instead of waiting on one chain. Inputs that are not f32,
//! not contiguous, or on a CPU without AVX2 take the generic loops in `elementwise.rs`.
//!
//! Accuracy: erf by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7, as the scalar
//! path) where `e^{-x²/2}` is needed anyway (GELU's gradient), by A&S 7.1.28 (below 4.3e-7
//! in f32, no exponential) in GELU's forward; `exp` by a degree-6 polynomial after range
//! reduction, reciprocals by `rcp` plus one Newton step: results stay within a few f32 ulps of
//! the scalar path (sigmoid within 4e-7 relative, and 0 below x = -87 where it is under
//! 2e-38). NaN in, NaN out.

use super::strided::{build, has_avx2, isa, Isa};
use crate::backend::UnaryOp;

/// Which function a kernel computes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gelu,
    GeluTanh,
    Sigmoid,
    Silu,
    Tanh,
}

fn kind(op: UnaryOp) -> Option<Kind> {
    match op {
        UnaryOp::Tanh => Some(Kind::Tanh),
        UnaryOp::Gelu => Some(Kind::Gelu),
        UnaryOp::GeluTanh => Some(Kind::GeluTanh),
        UnaryOp::Sigmoid => Some(Kind::Sigmoid),
        UnaryOp::Silu => Some(Kind::Silu),
        _ => None,
    }
}

/// The ops whose gradient has a kernel here (sigmoid's and SiLU's come from their outputs).
fn grad_kind(op: UnaryOp) -> Option<Kind> {
    kind(op).filter(|k| matches!(k, Kind::Gelu | Kind::GeluTanh))
}

/// `op(x)` elementwise, when `op` has a vector kernel here and the CPU runs it.
pub(crate) fn unary(x: &[f32], op: UnaryOp) -> Option<Vec<f32>> {
    let k = kind(op)?;
    if !has_avx2() {
        return None;
    }
    let f = simd_x86::forward(isa());
    Some(build(x.len(), |off, out| {
        let x = &x[off..off + out.len()];
        // SAFETY: `f` is the kernel for the ISA level detected (AVX2 at least, checked above).
        unsafe { f(k, x, out) }
    }))
}

/// `g · op'(x)` elementwise (the gradient of `op` at `x` times the incoming gradient), when
/// `op` has a vector kernel here and the CPU runs it.
pub(crate) fn unary_grad(x: &[f32], g: &[f32], op: UnaryOp) -> Option<Vec<f32>> {
    let k = grad_kind(op)?;
    if !has_avx2() || x.len() != g.len() {
        return None;
    }
    let f = simd_x86::backward(isa());
    Some(build(x.len(), |off, out| {
        let n = out.len();
        // SAFETY: `f` is the kernel for the ISA level detected (AVX2 at least, checked above).
        unsafe { f(k, &x[off..off + n], &g[off..off + n], out) }
    }))
}

/// Softmax (or log-softmax) over contiguous rows of width `w`, when the CPU runs the vector
/// kernels; rows run in parallel when large.
pub(crate) fn softmax_rows(x: &[f32], w: usize, log: bool) -> Option<Vec<f32>> {
    use rayon::prelude::*;
    if !has_avx2() || w == 0 {
        return None;
    }
    let f = simd_x86::softmax(isa());
    let n = x.len();
    debug_assert_eq!(
        n % w,
        0,
        "softmax rows: {n} elements are not whole rows of {w}"
    );
    let mut out: Vec<f32> = Vec::with_capacity(n);
    let spare = &mut out.spare_capacity_mut()[..n];
    // SAFETY (both calls): `f` is the kernel for the ISA level detected (AVX2 at least); the
    // chunks hold whole rows, and the kernel writes every element of its chunk.
    if n >= super::strided::PAR_MIN {
        let rows = super::strided::rows_per_task(w);
        spare
            .par_chunks_mut(rows * w)
            .zip(x.par_chunks(rows * w))
            .for_each(|(o, x)| unsafe { f(x, o, w, log) });
    } else {
        unsafe { f(x, spare, w, log) };
    }
    // SAFETY: every one of the `n` elements was written above.
    unsafe { out.set_len(n) };
    Some(out)
}

#[cfg(target_arch = "x86_64")]
mod simd_x86 {
    use super::Kind;
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// Vectors in flight per iteration.
    const U: usize = 4;

    /// The thin vector layer the kernels below are written over, once: `U` independent
    /// registers of one width, operated on together so their instructions interleave. Each
    /// width implements only these primitives; `exp`, reciprocals and the GELU pieces are
    /// generic over them.
    ///
    /// Every method is `inline(always)` and only ever expanded inside the `target_feature`
    /// entry points at the bottom, where that width's intrinsics are legal.
    pub(super) trait V: Copy {
        /// f32 lanes in one `V` (all `U` registers).
        const W: usize;
        fn splat(v: f32) -> Self;
        fn add(self, o: Self) -> Self;
        fn mul(self, o: Self) -> Self;
        /// `self · b + c`
        fn fma(self, b: Self, c: Self) -> Self;
        /// `c - self · b`
        fn fnma(self, b: Self, c: Self) -> Self;
        /// Lane-wise max with a constant; a NaN lane of `self` stays NaN.
        fn max_c(self, c: f32) -> Self;
        /// Lane-wise min with a constant; a NaN lane of `self` becomes `c`.
        fn min_c(self, c: f32) -> Self;
        fn abs(self) -> Self;
        /// `|self|` with the sign of `s`.
        fn with_sign_of(self, s: Self) -> Self;
        /// The hardware reciprocal estimate.
        fn rcp(self) -> Self;
        /// Rounded to the nearest integer (ties to even).
        fn round(self) -> Self;
        /// `2^self` for integral lanes in [-126, 127], built in the exponent field.
        fn pow2i(self) -> Self;
        /// `self` where `x` is not NaN, `x` (NaN) where it is.
        fn keep_nan(self, x: Self) -> Self;
        /// Lane-wise maximum (which lane wins when one is NaN is unspecified).
        fn max(self, o: Self) -> Self;
        /// The sum of all lanes.
        #[inline(always)]
        fn reduce_sum(self) -> f32 {
            let mut a = [0f32; 64];
            // SAFETY: `a` holds the widest `V` (64 lanes).
            unsafe { self.store(a.as_mut_ptr()) };
            a[..Self::W].iter().sum()
        }
        /// The largest lane (NaN lanes ignored).
        #[inline(always)]
        fn reduce_max(self) -> f32 {
            let mut a = [0f32; 64];
            // SAFETY: as in `reduce_sum`.
            unsafe { self.store(a.as_mut_ptr()) };
            a[..Self::W]
                .iter()
                .fold(f32::NEG_INFINITY, |m, &v| m.max(v))
        }
        /// `self` where `x ≥ c` (or `x` is NaN), `0` where `x < c`.
        fn zero_below(self, x: Self, c: f32) -> Self;
        /// # Safety
        /// `p` must be valid for `W` reads.
        unsafe fn load(p: *const f32) -> Self;
        /// # Safety
        /// `p` must be valid for `W` writes.
        unsafe fn store(self, p: *mut f32);
    }

    /// AVX2 + FMA: 8-lane registers.
    #[derive(Clone, Copy)]
    pub(super) struct Avx2([__m256; U]);
    /// AVX-512 F/DQ: 16-lane registers.
    #[derive(Clone, Copy)]
    pub(super) struct Avx512([__m512; U]);

    // The two widths' primitives, from one template: `$p` is the intrinsic prefix.
    macro_rules! width {
        ($t:ident, $r:ty, $l:expr, $set1:ident, $add:ident, $mul:ident, $fmadd:ident,
         $fnmadd:ident, $max:ident, $min:ident, $andnot:ident, $and:ident, $or:ident,
         $rcp:ident, $cvt:ident, $addi:ident, $set1i:ident, $slli:ident, $cast:ident,
         $loadu:ident, $storeu:ident, |$rv:ident| $round:expr,
         |$nr:ident, $nx:ident| $keep_nan:expr, |$zr:ident, $zx:ident, $zc:ident| $zero_below:expr) => {
            impl $t {
                #[inline(always)]
                fn map(self, f: impl Fn($r) -> $r) -> Self {
                    $t(std::array::from_fn(|i| f(self.0[i])))
                }
                #[inline(always)]
                fn zip(self, o: Self, f: impl Fn($r, $r) -> $r) -> Self {
                    $t(std::array::from_fn(|i| f(self.0[i], o.0[i])))
                }
            }
            impl V for $t {
                const W: usize = $l * U;
                #[inline(always)]
                fn splat(v: f32) -> Self {
                    unsafe { $t([$set1(v); U]) }
                }
                #[inline(always)]
                fn add(self, o: Self) -> Self {
                    self.zip(o, |a, b| unsafe { $add(a, b) })
                }
                #[inline(always)]
                fn mul(self, o: Self) -> Self {
                    self.zip(o, |a, b| unsafe { $mul(a, b) })
                }
                #[inline(always)]
                fn fma(self, b: Self, c: Self) -> Self {
                    $t(std::array::from_fn(|i| unsafe {
                        $fmadd(self.0[i], b.0[i], c.0[i])
                    }))
                }
                #[inline(always)]
                fn fnma(self, b: Self, c: Self) -> Self {
                    $t(std::array::from_fn(|i| unsafe {
                        $fnmadd(self.0[i], b.0[i], c.0[i])
                    }))
                }
                #[inline(always)]
                fn max_c(self, c: f32) -> Self {
                    self.map(|a| unsafe { $max($set1(c), a) })
                }
                #[inline(always)]
                fn min_c(self, c: f32) -> Self {
                    self.map(|a| unsafe { $min(a, $set1(c)) })
                }
                #[inline(always)]
                fn abs(self) -> Self {
                    self.map(|a| unsafe { $andnot($set1(-0.0), a) })
                }
                #[inline(always)]
                fn with_sign_of(self, s: Self) -> Self {
                    self.zip(s, |m, s| unsafe { $or(m, $and(s, $set1(-0.0))) })
                }
                #[inline(always)]
                fn rcp(self) -> Self {
                    self.map(|d| unsafe { $rcp(d) })
                }
                #[inline(always)]
                fn round(self) -> Self {
                    self.map(|$rv| unsafe { $round })
                }
                #[inline(always)]
                fn pow2i(self) -> Self {
                    self.map(|n| unsafe { $cast($slli::<23>($addi($cvt(n), $set1i(127)))) })
                }
                #[inline(always)]
                fn max(self, o: Self) -> Self {
                    self.zip(o, |a, b| unsafe { $max(a, b) })
                }
                #[inline(always)]
                fn keep_nan(self, x: Self) -> Self {
                    self.zip(x, |$nr, $nx| unsafe { $keep_nan })
                }
                #[inline(always)]
                fn zero_below(self, x: Self, c: f32) -> Self {
                    self.zip(x, |$zr, $zx| unsafe {
                        let $zc = $set1(c);
                        $zero_below
                    })
                }
                #[inline(always)]
                unsafe fn load(p: *const f32) -> Self {
                    $t(std::array::from_fn(|i| unsafe { $loadu(p.add($l * i)) }))
                }
                #[inline(always)]
                unsafe fn store(self, p: *mut f32) {
                    for (i, v) in self.0.iter().enumerate() {
                        unsafe { $storeu(p.add($l * i), *v) };
                    }
                }
            }
        };
    }
    width!(
        Avx2,
        __m256,
        8,
        _mm256_set1_ps,
        _mm256_add_ps,
        _mm256_mul_ps,
        _mm256_fmadd_ps,
        _mm256_fnmadd_ps,
        _mm256_max_ps,
        _mm256_min_ps,
        _mm256_andnot_ps,
        _mm256_and_ps,
        _mm256_or_ps,
        _mm256_rcp_ps,
        _mm256_cvtps_epi32,
        _mm256_add_epi32,
        _mm256_set1_epi32,
        _mm256_slli_epi32,
        _mm256_castsi256_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        |v| _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v),
        |r, x| _mm256_blendv_ps(r, x, _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x)),
        |r, x, c| _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(x, c), r)
    );
    width!(
        Avx512,
        __m512,
        16,
        _mm512_set1_ps,
        _mm512_add_ps,
        _mm512_mul_ps,
        _mm512_fmadd_ps,
        _mm512_fnmadd_ps,
        _mm512_max_ps,
        _mm512_min_ps,
        _mm512_andnot_ps,
        _mm512_and_ps,
        _mm512_or_ps,
        _mm512_rcp14_ps,
        _mm512_cvtps_epi32,
        _mm512_add_epi32,
        _mm512_set1_epi32,
        _mm512_slli_epi32,
        _mm512_castsi512_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        |v| _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v),
        |r, x| _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x), r, x),
        |r, x, c| _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_NLT_UQ>(x, c), r)
    );

    /// `1 / x`: the hardware estimate refined by one Newton step.
    #[inline(always)]
    fn recip<G: V>(d: G) -> G {
        let r = d.rcp();
        r.mul(d.fnma(r, G::splat(2.0)))
    }

    /// `e^x` with lanes clamped to [-87.3, 88] first (so `2^n` stays a normal f32):
    /// `x = n·ln2 + r`, a degree-6 polynomial for `e^r`, and `2^n` built in the exponent.
    #[inline(always)]
    fn exp<G: V>(x: G) -> G {
        let x = x.max_c(-87.336_55).min_c(88.0);
        let n = x.mul(G::splat(std::f32::consts::LOG2_E)).round();
        let r = n.fnma(G::splat(0.693_145_75), x);
        let r = n.fnma(G::splat(1.428_606_8e-6), r);
        let mut p = G::splat(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = p.fma(r, G::splat(c));
        }
        p.mul(n.pow2i())
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
    fn erf_parts<G: V>(x: G) -> (G, G) {
        let a = x.mul(G::splat(SQRT1_2)).abs().min_c(10.0);
        let t = recip(a.fma(G::splat(0.327_591_1), G::splat(1.0)));
        let mut p = G::splat(1.061_405_4);
        for c in [-1.453_152_1, 1.421_413_8, -0.284_496_74, 0.254_829_6] {
            p = p.fma(t, G::splat(c));
        }
        let e = exp(a.mul(a).mul(G::splat(-1.0)));
        let erf_abs = p.mul(t).fnma(e, G::splat(1.0));
        (erf_abs.with_sign_of(x), e)
    }

    /// `erf(x/√2)` without an exponential, for GELU's forward: Abramowitz & Stegun 7.1.28,
    /// `erf z = 1 − (1 + q)^−16` with `q = a₁z + … + a₆z⁶` at `z = |x|/√2` (absolute error
    /// below 3e-7), about half the work of the form with `e^{-z²}`. It is evaluated without
    /// cancellation as `u/(1 + u)`, `u = (1 + q)^16 − 1` from four steps `u ← u(u + 2)`
    /// (rounding `1 + q` first would lose 16× its last bit near z = 0): within 4.3e-7 in f32.
    #[inline(always)]
    fn erf_no_exp<G: V>(x: G) -> G {
        let z = x.mul(G::splat(SQRT1_2)).abs().min_c(10.0);
        let mut q = G::splat(4.306_38e-5);
        for c in [
            2.765_672e-4,
            1.520_143e-4,
            9.270_527e-3,
            4.228_201e-2,
            7.052_307_6e-2,
        ] {
            q = q.fma(z, G::splat(c));
        }
        let mut u = q.mul(z);
        for _ in 0..4 {
            u = u.mul(u.add(G::splat(2.0)));
        }
        u.mul(recip(u.add(G::splat(1.0)))).with_sign_of(x)
    }

    /// `σ(2u) = 1 / (1 + e^{-2u})` with `u = K (x + A x³)`, `u' = K (1 + 3A x²)`, and
    /// `1 - σ(2u) = e^{-2u} σ(2u)`, computed from `e^{-2u}` rather than by subtracting: the
    /// refined reciprocal is within 1e-7 of 1 for large `u`, and the derivative multiplies
    /// `1 - σ` by about `0.1 x³`.
    #[inline(always)]
    fn tanh_parts<G: V>(x: G) -> (G, G, G) {
        let x2 = x.mul(x);
        let u = x2.fma(G::splat(A), G::splat(1.0)).mul(x).mul(G::splat(K));
        let e = exp(u.mul(G::splat(-2.0)));
        let s = recip(e.add(G::splat(1.0)));
        let du = x2.fma(G::splat(3.0 * A * K), G::splat(K));
        (s, du, e.mul(s))
    }

    /// `σ(x) = 1 / (1 + e^{-x})`: `e^{-x}` is clamped (see [`exp`]), so lanes below -87
    /// (where σ is under 2e-38) are set to 0 and NaN lanes restored.
    #[inline(always)]
    fn sigmoid<G: V>(x: G) -> G {
        let e = exp(x.mul(G::splat(-1.0)));
        recip(e.add(G::splat(1.0))).zero_below(x, -87.0).keep_nan(x)
    }

    /// `-0.125` nudged up by one ulp: `-|x| ≥` it exactly where `|x| < 0.125`.
    const MINUS_EIGHTH_UP: f32 = -f32::from_bits(0x3dff_ffff);

    /// `tanh x = ±(1 - 2e / (1 + e))` with `e = e^{-2|x|}` (at most 1: no overflow, and
    /// exactly ±1 far out), through a refined reciprocal rather than a division (16 cycles a
    /// vector on an Intel core); and the odd series `x (1 - x²/3 + 2x⁴/15 - 17x⁶/315)` where
    /// `|x| < 0.125`, where the first form cancels. NaN stays NaN.
    #[inline(always)]
    fn tanh<G: V>(x: G) -> G {
        let ax = x.abs();
        let e = exp(ax.mul(G::splat(-2.0)));
        let far = e
            .mul(recip(e.add(G::splat(1.0))))
            .fnma(G::splat(2.0), G::splat(1.0))
            .with_sign_of(x);
        let x2 = x.mul(x);
        let mut p = G::splat(-17.0 / 315.0);
        for c in [2.0 / 15.0, -1.0 / 3.0, 1.0] {
            p = p.fma(x2, G::splat(c));
        }
        // Each lane keeps exactly one of the two forms.
        let near = x.mul(p).zero_below(ax.mul(G::splat(-1.0)), MINUS_EIGHTH_UP);
        far.zero_below(ax, 0.125).add(near).keep_nan(x)
    }

    /// The forward kernels: GELU (both forms), sigmoid, SiLU (`x σ(x)`) and tanh.
    #[inline(always)]
    fn forward_of<G: V>(k: Kind, x: G) -> G {
        match k {
            Kind::Tanh => tanh(x),
            Kind::Sigmoid => sigmoid(x),
            Kind::Silu => x.mul(sigmoid(x)),
            // 0.5 x (1 + erf(x/√2)); (1 + erf) first so that -inf gives NaN as the scalar path.
            Kind::Gelu => x.mul(G::splat(0.5)).mul(erf_no_exp(x).add(G::splat(1.0))),
            // 0.5 x (1 + tanh u) = x σ(2u)
            Kind::GeluTanh => x.mul(tanh_parts(x).0),
        }
    }

    #[inline(always)]
    fn gelu_grad<G: V>(k: Kind, x: G, g: G) -> G {
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
            Kind::Sigmoid | Kind::Silu | Kind::Tanh => {
                unreachable!("no gradient kernel (see grad_kind)")
            }
        };
        g.mul(d)
    }

    /// `e^{v + nmax}`, exactly 0 where the exponent is below -87 and NaN where it is NaN.
    /// (A function, not a closure: a closure that is not inlined is compiled without the
    /// caller's target features, and every intrinsic in it becomes a call.)
    #[inline(always)]
    fn exp_shifted<G: V>(v: G, nmax: G) -> G {
        let d = v.add(nmax);
        exp(d).zero_below(d, -87.0).keep_nan(d)
    }

    /// Softmax (or log-softmax) of each `w`-wide row of `x` into `out`. A row's maximum is
    /// taken first (NaN lanes then make their outputs, and through the sum every output of
    /// the row, NaN, as a row of -inf does: as in PyTorch); `e^{x - max}` is written and
    /// summed in one pass (exactly 0 below -87, where it is under 2e-38), then scaled by
    /// `1 / sum` (or `x - max - ln sum` written). Rows narrower than `G::W` and the ragged
    /// tail of each row go through a zero-padded block.
    #[inline(always)]
    unsafe fn softmax_rows<G: V>(x: &[f32], out: &mut [MaybeUninit<f32>], w: usize, log: bool) {
        let mut pad = [0f32; 64];
        for (r, o) in x.chunks_exact(w).zip(out.chunks_exact_mut(w)) {
            // Written before it is read: every element gets `e` (or its log-softmax) first.
            let o: *mut f32 = o.as_mut_ptr().cast();
            let full = w - w % G::W;
            let tail = &r[full..];
            let mut m = G::splat(f32::NEG_INFINITY);
            for i in (0..full).step_by(G::W) {
                m = m.max(unsafe { G::load(r.as_ptr().add(i)) });
            }
            let max = tail.iter().fold(m.reduce_max(), |m, &v| m.max(v));
            let nmax = G::splat(-max);
            let mut sum = G::splat(0.0);
            for i in (0..full).step_by(G::W) {
                let e = exp_shifted(unsafe { G::load(r.as_ptr().add(i)) }, nmax);
                sum = sum.add(e);
                if !log {
                    unsafe { e.store(o.add(i)) };
                }
            }
            let mut tail_sum = 0.0;
            if !tail.is_empty() {
                // Padding lanes hold -inf: e = 0, so they add nothing.
                pad.fill(f32::NEG_INFINITY);
                pad[..tail.len()].copy_from_slice(tail);
                let e = exp_shifted(unsafe { G::load(pad.as_ptr()) }, nmax);
                unsafe { e.store(pad.as_mut_ptr()) };
                tail_sum = pad[..tail.len()].iter().sum();
                if !log {
                    // SAFETY: the tail's `tail.len()` elements of this row.
                    unsafe { std::ptr::copy_nonoverlapping(pad.as_ptr(), o.add(full), tail.len()) };
                }
            }
            let total = sum.reduce_sum() + tail_sum;
            if log {
                let lse = max + total.ln();
                for (i, &v) in r.iter().enumerate() {
                    unsafe { o.add(i).write(v - lse) };
                }
            } else {
                let inv = G::splat(1.0 / total);
                for i in (0..full).step_by(G::W) {
                    let p = unsafe { o.add(i) };
                    unsafe { G::load(p).mul(inv).store(p) };
                }
                let inv = 1.0 / total;
                for i in full..w {
                    unsafe { *o.add(i) *= inv };
                }
            }
        }
    }

    /// The softmax rows kernel for the process's ISA level (AVX2 at least).
    pub(super) fn softmax(
        isa: super::Isa,
    ) -> unsafe fn(&[f32], &mut [MaybeUninit<f32>], usize, bool) {
        if isa >= super::Isa::Avx512 {
            softmax_avx512
        } else {
            softmax_avx2
        }
    }

    /// Runs `f` over `G::W`-element blocks of the inputs into `out`; the ragged tail goes
    /// through a zero-padded block, so every element takes the same arithmetic.
    #[inline(always)]
    unsafe fn blocks<G: V, const N: usize>(
        ins: [&[f32]; N],
        out: &mut [MaybeUninit<f32>],
        f: impl Fn([G; N]) -> G,
    ) {
        let n = out.len();
        let o = out.as_mut_ptr() as *mut f32;
        let mut i = 0;
        while i + G::W <= n {
            let v = std::array::from_fn(|j| unsafe { G::load(ins[j].as_ptr().add(i)) });
            unsafe { f(v).store(o.add(i)) };
            i += G::W;
        }
        if i < n {
            // Sized for the widest `V` (64 lanes).
            let mut pad = [[0f32; 64]; N];
            for (p, s) in pad.iter_mut().zip(&ins) {
                p[..n - i].copy_from_slice(&s[i..n]);
            }
            let v = std::array::from_fn(|j| unsafe { G::load(pad[j].as_ptr()) });
            let mut res = [0f32; 64];
            unsafe { f(v).store(res.as_mut_ptr()) };
            for (o, &r) in out[i..].iter_mut().zip(&res) {
                o.write(r);
            }
        }
    }

    // The entry points of one width: the `target_feature` frames the generic kernels above
    // are expanded in.
    macro_rules! entries {
        ($g:ident, $feat:literal, $fwd:ident, $bwd:ident, $soft:ident) => {
            /// # Safety
            /// The CPU must support the features this frame enables.
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn $fwd(k: Kind, x: &[f32], out: &mut [MaybeUninit<f32>]) {
                debug_assert_eq!(x.len(), out.len());
                unsafe {
                    blocks::<$g, 1>(
                        [x],
                        out,
                        #[inline(always)]
                        |[x]| forward_of(k, x),
                    )
                }
            }

            /// # Safety
            /// The CPU must support the features this frame enables.
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn $bwd(k: Kind, x: &[f32], g: &[f32], out: &mut [MaybeUninit<f32>]) {
                debug_assert!(x.len() == out.len() && g.len() == out.len());
                unsafe {
                    blocks::<$g, 2>(
                        [x, g],
                        out,
                        #[inline(always)]
                        |[x, g]| gelu_grad(k, x, g),
                    )
                }
            }

            /// # Safety
            /// The CPU must support the features this frame enables.
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn $soft(
                x: &[f32],
                out: &mut [MaybeUninit<f32>],
                w: usize,
                log: bool,
            ) {
                unsafe { softmax_rows::<$g>(x, out, w, log) }
            }
        };
    }
    entries!(Avx2, "avx2,fma", forward_avx2, backward_avx2, softmax_avx2);
    entries!(
        Avx512,
        "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma",
        forward_avx512,
        backward_avx512,
        softmax_avx512
    );

    /// The entry points for the process's ISA level (AVX2 at least).
    pub(super) fn forward(isa: super::Isa) -> unsafe fn(Kind, &[f32], &mut [MaybeUninit<f32>]) {
        if isa >= super::Isa::Avx512 {
            forward_avx512
        } else {
            forward_avx2
        }
    }

    #[allow(clippy::type_complexity)]
    pub(super) fn backward(
        isa: super::Isa,
    ) -> unsafe fn(Kind, &[f32], &[f32], &mut [MaybeUninit<f32>]) {
        if isa >= super::Isa::Avx512 {
            backward_avx512
        } else {
            backward_avx2
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod simd_x86 {
    use super::Kind;
    use std::mem::MaybeUninit;
    pub(super) fn softmax(
        _: super::Isa,
    ) -> unsafe fn(&[f32], &mut [MaybeUninit<f32>], usize, bool) {
        unreachable!("no AVX2 off x86-64")
    }
    // Never called: `has_avx2()` is false off x86-64.
    pub(super) fn forward(_: super::Isa) -> unsafe fn(Kind, &[f32], &mut [MaybeUninit<f32>]) {
        unreachable!("no AVX2 off x86-64")
    }
    #[allow(clippy::type_complexity)]
    pub(super) fn backward(
        _: super::Isa,
    ) -> unsafe fn(Kind, &[f32], &[f32], &mut [MaybeUninit<f32>]) {
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
        let d = elementwise::unary_grad(&xs, &l, &gs, &l, op)
            .unwrap()
            .to_vec::<f32>(&l);
        assert_eq!(unary_grad(x, g, op).is_some(), has_avx2());
        (dispatched_forward(x, op), d)
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
    fn sigmoid_and_silu_kernels_match_f64_reference() {
        let specials = [
            f32::INFINITY,
            f32::NEG_INFINITY,
            86.9,
            -86.9,
            87.5,
            -87.5,
            88.5,
            -88.5,
        ];
        for op in [UnaryOp::Sigmoid, UnaryOp::Silu] {
            // Lengths around both widths' 32- and 64-lane blocks and past the parallel threshold.
            for n in [0, 1, 31, 32, 33, 63, 64, 65, 1000, PAR_MIN + 77] {
                let mut x = inputs(n);
                for (v, &s) in x.iter_mut().skip(16).zip(&specials) {
                    *v = s;
                }
                let y = unary(&x, op).unwrap_or_else(|| {
                    let l = Layout::contiguous(n);
                    elementwise::unary(&HostBuffer::from_vec(x.clone()), &l, op)
                        .unwrap()
                        .to_vec::<f32>(&l)
                });
                assert_eq!(unary(&x, op).is_some(), has_avx2());
                for (&x, &y) in x.iter().zip(&y) {
                    let s = 1.0 / (1.0 + (-(x as f64)).exp());
                    let want = if op == UnaryOp::Silu { x as f64 * s } else { s };
                    if want.is_nan() {
                        // SiLU(-inf) = -inf · 0, NaN as in the scalar path and PyTorch.
                        assert!(y.is_nan(), "{op:?}({x}) = {y} want NaN");
                        continue;
                    }
                    if want.is_infinite() {
                        assert_eq!(y as f64, want, "{op:?}({x})");
                        continue;
                    }
                    // σ within 4e-7 relative (or 1.2e-38 absolute: lanes below -87 are 0);
                    // SiLU the same relative to x·σ.
                    let tol = 4e-7 * want.abs() + 1.2e-38 * (x as f64).abs().max(1.0);
                    assert!(
                        (y as f64 - want).abs() <= tol,
                        "{op:?}({x}) = {y} want {want}"
                    );
                }
            }
            let y = unary(&[f32::NAN, 0.5], op);
            if let Some(y) = y {
                assert!(y[0].is_nan() && !y[1].is_nan(), "{op:?} NaN");
            }
        }
    }

    /// The vector tanh against f64 within the scalar path's 2e-7, on both sides of the series'
    /// 0.125 switch, far out (exactly ±1), at ±0, ±inf and NaN, over lengths that reach both
    /// widths' blocks, tails and the parallel path.
    #[test]
    fn tanh_kernel_matches_f64_reference() {
        let eighth = 0.125f32;
        let specials = [
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            eighth,
            -eighth,
            f32::from_bits(eighth.to_bits() - 1),
            -f32::from_bits(eighth.to_bits() - 1),
            0.3,
            -0.3,
            9.0,
            -9.0,
            50.0,
            -50.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        // The lengths, then a dense sweep of [-12, 12] (the largest error is near |x| = 0.13).
        let sweep: Vec<f32> = (0..1 << 16)
            .map(|i| i as f32 * (24.0 / 65536.0) - 12.0)
            .collect();
        for n in [
            0,
            1,
            15,
            16,
            17,
            31,
            32,
            33,
            63,
            64,
            65,
            1000,
            PAR_MIN + 77,
            sweep.len(),
        ] {
            let mut x: Vec<f32> = if n == sweep.len() {
                sweep.clone()
            } else {
                inputs(n).iter().map(|v| v / 8.0).collect()
            };
            for (v, &s) in x.iter_mut().skip(1).zip(&specials) {
                *v = s;
            }
            let y = dispatched_forward(&x, UnaryOp::Tanh);
            for (&x, &y) in x.iter().zip(&y) {
                let want = (x as f64).tanh();
                assert!(
                    (y as f64 - want).abs() <= 2e-7,
                    "tanh({x}) = {y} want {want}"
                );
                if x.abs() >= 10.0 {
                    assert_eq!(y, x.signum(), "tanh({x})");
                }
            }
        }
        let y = dispatched_forward(&[f32::NAN, 0.5, f32::NAN], UnaryOp::Tanh);
        assert!(y[0].is_nan() && !y[1].is_nan() && y[2].is_nan());
    }

    /// `op(x)` through the backend's f32 dispatch (asserting that the vector kernel ran
    /// exactly when `has_avx2()`).
    fn dispatched_forward(x: &[f32], op: UnaryOp) -> Vec<f32> {
        let l = Layout::contiguous(x.len());
        let y = elementwise::unary(&HostBuffer::from_vec(x.to_vec()), &l, op)
            .unwrap()
            .to_vec::<f32>(&l);
        assert_eq!(
            unary(x, op).is_some(),
            has_avx2(),
            "vector kernel availability"
        );
        y
    }

    #[test]
    fn softmax_rows_match_f64_reference_with_masks_and_nan() {
        for w in [1, 7, 16, 63, 64, 65, 130, 768] {
            let rows = 6;
            let mut x: Vec<f32> = inputs(rows * w);
            // Row 1: a causal-style mask (-inf past the first few); row 2 all -inf; row 3 one
            // NaN; row 4 one +inf; row 5 large values.
            for (j, v) in x[w..2 * w].iter_mut().enumerate() {
                if j > 2 {
                    *v = f32::NEG_INFINITY;
                }
            }
            x[2 * w..3 * w].fill(f32::NEG_INFINITY);
            x[3 * w + w / 2] = f32::NAN;
            x[4 * w + w / 3] = f32::INFINITY;
            x[5 * w..].iter_mut().for_each(|v| *v *= 40.0);
            for log in [false, true] {
                let Some(y) = softmax_rows(&x, w, log) else {
                    assert!(!has_avx2());
                    return;
                };
                for (r, (xr, yr)) in x.chunks(w).zip(y.chunks(w)).enumerate() {
                    let max = xr.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
                    let sum: f64 = xr.iter().map(|&v| (v as f64 - max).exp()).sum();
                    let bad = xr.iter().any(|v| v.is_nan() || *v == f32::INFINITY)
                        || max == f64::NEG_INFINITY;
                    for (&v, &y) in xr.iter().zip(yr) {
                        if bad {
                            assert!(y.is_nan(), "w {w} row {r}: {y} want NaN");
                            continue;
                        }
                        let p = (v as f64 - max).exp() / sum;
                        if v == f32::NEG_INFINITY && !log {
                            // Masked positions are exactly 0.
                            assert_eq!(y, 0.0, "w {w} row {r}");
                            continue;
                        }
                        if log {
                            let want = v as f64 - max - sum.ln();
                            if want.is_infinite() {
                                assert_eq!(y as f64, want, "w {w} row {r}");
                            } else {
                                // `v - lse` in f32: the rounding of `v`'s magnitude.
                                let tol = 2e-6 * want.abs().max((v as f64).abs()).max(1.0);
                                assert!(
                                    (y as f64 - want).abs() <= tol,
                                    "w {w} row {r}: log {y} want {want}"
                                );
                            }
                        } else {
                            assert!(
                                (y as f64 - p).abs() <= 2e-6 * p + 1e-37,
                                "w {w} row {r}: {y} want {p}"
                            );
                        }
                    }
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
