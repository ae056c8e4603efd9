//! Products of a few rows by a large matrix (`m ≤ 8`: a token being generated, a short batch of
//! them): matrix-vector work whose speed is how fast the matrix streams from memory. GEMM
//! packs its right operand before multiplying, reading and writing the whole weight once more
//! per call, and splits rows across threads, of which there is one; here the matrix is read
//! once, straight through its strides, split by columns across threads, and half-precision
//! weights are widened a block at a time as they are read (f16 and bf16 weights stream half
//! the bytes of f32 ones).
//!
//! Two layouts are streamed: rows of the matrix contiguous (GPT-2's Conv1D weights: each row
//! scaled and added into the outputs) and columns contiguous (the transposed view of an
//! `nn.Linear` weight or a tied output head: one dot product per output). Each output is
//! computed the same way whatever `m` is, so a batch gets exactly the numbers of its rows alone.

use half::{bf16, f16, slice::HalfFloatSliceExt};
use rayon::prelude::*;

use super::strided::{has_avx2, simd};

/// Rows at most for which [`gemv`] is used.
pub(crate) const MAX_ROWS: usize = 8;

/// Columns per block of the row-contiguous form (the accumulators of one row stay in L1).
const BLOCK: usize = 256;

/// Element types a matrix may stream in.
pub(crate) trait GemvElem: x86::Load8 + Copy + Send + Sync + 'static {
    /// `src` as f32: itself for f32, else widened into `buf` (at least as long as `src`).
    fn as_f32<'a>(src: &'a [Self], buf: &'a mut [f32]) -> &'a [f32];
    /// Rounds a result back.
    fn from_f32(v: f32) -> Self;
}

impl GemvElem for f32 {
    #[inline(always)]
    fn as_f32<'a>(src: &'a [f32], _: &'a mut [f32]) -> &'a [f32] {
        src
    }
    fn from_f32(v: f32) -> f32 {
        v
    }
}

impl GemvElem for f16 {
    #[inline(always)]
    fn as_f32<'a>(src: &'a [f16], buf: &'a mut [f32]) -> &'a [f32] {
        let buf = &mut buf[..src.len()];
        src.convert_to_f32_slice(buf);
        buf
    }
    fn from_f32(v: f32) -> f16 {
        f16::from_f32(v)
    }
}

impl GemvElem for bf16 {
    #[inline(always)]
    fn as_f32<'a>(src: &'a [bf16], buf: &'a mut [f32]) -> &'a [f32] {
        let buf = &mut buf[..src.len()];
        for (d, s) in buf.iter_mut().zip(src) {
            *d = f32::from_bits((s.to_bits() as u32) << 16);
        }
        buf
    }
    fn from_f32(v: f32) -> bf16 {
        bf16::from_f32(v)
    }
}

/// The matrix operand: element `(r, c)` at `off + r·rs + c·cs` of `data`.
pub(crate) struct Matrix<'a, T> {
    pub data: &'a [T],
    pub off: usize,
    pub rs: usize,
    pub cs: usize,
    pub rows: usize,
    pub cols: usize,
}

/// Whether [`gemv`] handles `m` rows times `b`: few rows, and `b` with contiguous rows or
/// contiguous columns.
pub(crate) fn applies<T>(m: usize, b: &Matrix<'_, T>) -> bool {
    (1..=MAX_ROWS).contains(&m) && b.rows > 0 && b.cols > 0 && (b.cs == 1 || b.rs == 1)
}

/// `a · b` for `a` `m × k` (f32, row-major, contiguous) and `b` `k × n`; returns `m × n`
/// row-major. Call only when [`applies`].
pub(crate) fn gemv<T: GemvElem>(a: &[f32], m: usize, b: &Matrix<'_, T>) -> Vec<T> {
    // Fused multiply-adds where the CPU has them (inside `simd`'s AVX2 + FMA frame); without,
    // `mul_add` would be a slow library call, so the scalar path rounds twice.
    if has_avx2() {
        gemv_with::<T, true>(a, m, b)
    } else {
        gemv_with::<T, false>(a, m, b)
    }
}

fn gemv_with<T: GemvElem, const FMA: bool>(a: &[f32], m: usize, b: &Matrix<'_, T>) -> Vec<T> {
    let (k, n) = (b.rows, b.cols);
    debug_assert_eq!(a.len(), m * k);
    // Small products (one attention head) stay on the calling thread.
    let threads = if m * k * n < 1 << 16 {
        1
    } else {
        rayon::current_num_threads().max(1)
    };
    // The explicit AVX2 kernels (weights widened in registers, four rows per pass).
    let wide = FMA && x86::available();
    let mut out = vec![0f32; m * n];
    if b.cs == 1 {
        // Rows contiguous: each thread streams its own run of whole rows (one linear sweep of
        // memory), adding `a[i][r] · row` into its own `m × n` partial sums; the partial sums
        // are then added in thread order (so a row's result never depends on `m`).
        let parts = threads.min(k.div_ceil(4)).max(1);
        let rows_per = k.div_ceil(parts).next_multiple_of(4);
        let partials: Vec<Vec<f32>> = (0..k.div_ceil(rows_per))
            .into_par_iter()
            .map(|pi| {
                let (r0, rows) = (pi * rows_per, rows_per.min(k - pi * rows_per));
                let mut acc = vec![0f32; m * n];
                // The rows `r0..r0 + rows` of `b`, and the matching columns of `a`.
                let sub = Matrix {
                    data: b.data,
                    off: b.off + r0 * b.rs,
                    rs: b.rs,
                    cs: 1,
                    rows,
                    cols: n,
                };
                let a_sub: Vec<f32> = (0..m)
                    .flat_map(|i| a[i * k + r0..i * k + r0 + rows].iter().copied())
                    .collect();
                #[cfg(target_arch = "x86_64")]
                if wide {
                    // SAFETY: `wide` is true only when the CPU has AVX2, FMA and F16C; the
                    // rows lie inside `b` (checked by the caller's layout).
                    unsafe { x86::axpy_band(&a_sub, m, rows, &sub, 0, n, &mut acc) };
                    return acc;
                }
                let mut buf = vec![0f32; BLOCK];
                simd(|| {
                    for r in 0..rows {
                        let start = sub.off + r * sub.rs;
                        for b0 in (0..n).step_by(BLOCK) {
                            let bw = BLOCK.min(n - b0);
                            let row = T::as_f32(&b.data[start + b0..start + b0 + bw], &mut buf);
                            for i in 0..m {
                                let x = a_sub[i * rows + r];
                                let dst = &mut acc[i * n + b0..i * n + b0 + bw];
                                for (d, &v) in dst.iter_mut().zip(row) {
                                    *d = madd::<FMA>(x, v, *d);
                                }
                            }
                        }
                    }
                });
                acc
            })
            .collect();
        let mut parts = partials.into_iter();
        out = parts.next().unwrap_or_else(|| vec![0f32; m * n]);
        for p in parts {
            for (o, v) in out.iter_mut().zip(&p) {
                *o += v;
            }
        }
    } else {
        // Columns contiguous: one dot product per output, columns split across threads.
        let chunk = if threads == 1 {
            n
        } else {
            n.div_ceil(threads * 4).max(1)
        };
        let cols: Vec<Vec<f32>> = (0..n.div_ceil(chunk))
            .into_par_iter()
            .map(|ci| {
                let (c0, w) = (ci * chunk, chunk.min(n - ci * chunk));
                let mut res = vec![0f32; m * w];
                #[cfg(target_arch = "x86_64")]
                if wide {
                    // SAFETY: as above; columns `c0..c0 + w` lie inside `b`.
                    unsafe { x86::dot_cols(a, m, k, b, c0, w, &mut res) };
                    return res;
                }
                let mut buf = vec![0f32; k];
                simd(|| {
                    for j in 0..w {
                        let start = b.off + (c0 + j) * b.cs;
                        let col = T::as_f32(&b.data[start..start + k], &mut buf);
                        for i in 0..m {
                            res[i * w + j] = dot::<FMA>(&a[i * k..(i + 1) * k], col);
                        }
                    }
                });
                res
            })
            .collect();
        for (ci, res) in cols.iter().enumerate() {
            let (c0, w) = (ci * chunk, res.len() / m);
            for i in 0..m {
                out[i * n + c0..i * n + c0 + w].copy_from_slice(&res[i * w..(i + 1) * w]);
            }
        }
    }
    out.into_iter().map(T::from_f32).collect()
}

/// `x·v + d`, fused when `FMA`.
#[inline(always)]
fn madd<const FMA: bool>(x: f32, v: f32, d: f32) -> f32 {
    if FMA {
        x.mul_add(v, d)
    } else {
        x * v + d
    }
}

/// `Σ xᵢ·yᵢ` in 16 independent partial sums.
#[inline(always)]
fn dot<const FMA: bool>(x: &[f32], y: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let (mut cx, mut cy) = (x.chunks_exact(L), y.chunks_exact(L));
    for (u, v) in (&mut cx).zip(&mut cy) {
        for ((s, &p), &q) in acc.iter_mut().zip(u).zip(v) {
            *s = madd::<FMA>(p, q, *s);
        }
    }
    let tail = cx
        .remainder()
        .iter()
        .zip(cy.remainder())
        .fold(0f32, |s, (&p, &q)| madd::<FMA>(p, q, s));
    acc.iter().fold(tail, |s, &v| s + v)
}

/// Explicit AVX2 + FMA + F16C kernels: each weight vector is loaded once, widened in a register
/// (bf16 by a shift, f16 by `vcvtph2ps`) and multiplied into every row's accumulators.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::{bf16, f16};

    use super::{GemvElem, Matrix};

    /// How far ahead the kernels prefetch: rows of a row-contiguous matrix, columns of a
    /// column-contiguous one (two groups of four).
    const AHEAD_ROWS: usize = 8;
    const AHEAD_COLS: usize = 8;

    /// Whether these kernels may run: AVX2 and FMA chosen (`RG_CPU_ISA`) and F16C present.
    pub(super) fn available() -> bool {
        super::has_avx2() && std::arch::is_x86_feature_detected!("f16c")
    }

    /// Eight consecutive elements as f32 lanes.
    pub(crate) trait Load8 {
        /// # Safety
        /// Eight elements from `p` must be readable; the CPU must have AVX2 and F16C.
        unsafe fn load8(p: *const Self) -> __m256;
        /// One element as f32.
        fn widen(self) -> f32;
    }

    impl Load8 for f32 {
        #[inline(always)]
        unsafe fn load8(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        fn widen(self) -> f32 {
            self
        }
    }

    impl Load8 for bf16 {
        #[inline(always)]
        unsafe fn load8(p: *const bf16) -> __m256 {
            let h = _mm_loadu_si128(p.cast::<__m128i>());
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        }
        #[inline(always)]
        fn widen(self) -> f32 {
            self.to_f32()
        }
    }

    impl Load8 for f16 {
        #[inline(always)]
        unsafe fn load8(p: *const f16) -> __m256 {
            _mm256_cvtph_ps(_mm_loadu_si128(p.cast::<__m128i>()))
        }
        #[inline(always)]
        fn widen(self) -> f32 {
            self.to_f32()
        }
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// The end of one dot product of `x` and `c` (length `k`) whose 16-wide loop stopped at
    /// `p` with the partial sums `s`: one more 8-wide step if it fits, the horizontal sum, then
    /// the scalar tail.
    ///
    /// # Safety
    /// As [`dot_cols`]: `k` elements readable from `x` and `c`, AVX2 + FMA + F16C present.
    #[inline(always)]
    unsafe fn finish_dot<T: GemvElem>(
        x: *const f32,
        c: *const T,
        mut p: usize,
        k: usize,
        s: [__m256; 2],
    ) -> f32 {
        let mut v = s[0];
        if p + 8 <= k {
            v = _mm256_fmadd_ps(_mm256_loadu_ps(x.add(p)), T::load8(c.add(p)), v);
            p += 8;
        }
        let mut t = hsum(_mm256_add_ps(v, s[1]));
        for r in p..k {
            t = (*x.add(r)).mul_add((*c.add(r)).widen(), t);
        }
        t
    }

    /// `acc[i·w + j] = Σ_r a[i·k + r] · b[r, c0 + j]` for a band of `w` columns of a matrix
    /// whose rows are contiguous, four rows per pass.
    ///
    /// # Safety
    /// [`available`] must be true, and rows `0..k`, columns `c0..c0 + w` must lie in `b.data`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn axpy_band<T: GemvElem>(
        a: &[f32],
        m: usize,
        k: usize,
        b: &Matrix<'_, T>,
        c0: usize,
        w: usize,
        acc: &mut [f32],
    ) {
        let base = b.data.as_ptr().add(b.off + c0);
        let out = acc.as_mut_ptr();
        let mut r = 0;
        while r + 4 <= k {
            let rows = [0, 1, 2, 3].map(|q| base.add((r + q) * b.rs));
            let mut j = 0;
            while j + 8 <= w {
                for p in &rows {
                    let ahead = p.wrapping_add(j + AHEAD_ROWS * b.rs);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.cast::<i8>());
                }
                let wv = rows.map(|p| T::load8(p.add(j)));
                for i in 0..m {
                    let x = a.as_ptr().add(i * k + r);
                    let p = out.add(i * w + j);
                    let mut s = _mm256_loadu_ps(p);
                    for (q, v) in wv.iter().enumerate() {
                        s = _mm256_fmadd_ps(_mm256_broadcast_ss(&*x.add(q)), *v, s);
                    }
                    _mm256_storeu_ps(p, s);
                }
                j += 8;
            }
            for jj in j..w {
                for i in 0..m {
                    let mut s = acc[i * w + jj];
                    for (q, p) in rows.iter().enumerate() {
                        s = a[i * k + r + q].mul_add((*p.add(jj)).widen(), s);
                    }
                    acc[i * w + jj] = s;
                }
            }
            r += 4;
        }
        for r in r..k {
            let row = base.add(r * b.rs);
            let mut j = 0;
            while j + 8 <= w {
                let v = T::load8(row.add(j));
                for i in 0..m {
                    let p = out.add(i * w + j);
                    let x = _mm256_broadcast_ss(&a[i * k + r]);
                    _mm256_storeu_ps(p, _mm256_fmadd_ps(x, v, _mm256_loadu_ps(p)));
                }
                j += 8;
            }
            for jj in j..w {
                for i in 0..m {
                    acc[i * w + jj] = a[i * k + r].mul_add((*row.add(jj)).widen(), acc[i * w + jj]);
                }
            }
        }
    }

    /// `res[i·w + j] = a[i] · b[:, c0 + j]` for `w` columns of a matrix whose columns are
    /// contiguous: one dot product per output.
    ///
    /// # Safety
    /// [`available`] must be true, and columns `c0..c0 + w` (each `k` long) must lie in `b.data`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_cols<T: GemvElem>(
        a: &[f32],
        m: usize,
        k: usize,
        b: &Matrix<'_, T>,
        c0: usize,
        w: usize,
        res: &mut [f32],
    ) {
        // Four columns at a time: four independent streams through memory and eight chains of
        // partial sums in flight. Each output's own sum runs in the same order whatever `m` is.
        let mut j = 0;
        while j + 4 <= w {
            let cols = [0, 1, 2, 3].map(|q| b.data.as_ptr().add(b.off + (c0 + j + q) * b.cs));
            for i in 0..m {
                let x = a.as_ptr().add(i * k);
                let mut acc = [[_mm256_setzero_ps(); 2]; 4];
                let mut p = 0;
                while p + 16 <= k {
                    let (x0, x1) = (_mm256_loadu_ps(x.add(p)), _mm256_loadu_ps(x.add(p + 8)));
                    // Ask for the columns two groups ahead: short column streams give the
                    // hardware prefetcher too little to lock on to.
                    if i == 0 {
                        for c in &cols {
                            let ahead = c.wrapping_add(p + AHEAD_COLS * b.cs);
                            _mm_prefetch::<_MM_HINT_T0>(ahead.cast::<i8>());
                        }
                    }
                    for (s, c) in acc.iter_mut().zip(&cols) {
                        s[0] = _mm256_fmadd_ps(x0, T::load8(c.add(p)), s[0]);
                        s[1] = _mm256_fmadd_ps(x1, T::load8(c.add(p + 8)), s[1]);
                    }
                    p += 16;
                }
                for (q, (s, c)) in acc.iter().zip(&cols).enumerate() {
                    res[i * w + j + q] = finish_dot(x, *c, p, k, *s);
                }
            }
            j += 4;
        }
        for j in j..w {
            let c = b.data.as_ptr().add(b.off + (c0 + j) * b.cs);
            for i in 0..m {
                let x = a.as_ptr().add(i * k);
                let mut s = [_mm256_setzero_ps(); 2];
                let mut p = 0;
                while p + 16 <= k {
                    s[0] = _mm256_fmadd_ps(_mm256_loadu_ps(x.add(p)), T::load8(c.add(p)), s[0]);
                    s[1] = _mm256_fmadd_ps(
                        _mm256_loadu_ps(x.add(p + 8)),
                        T::load8(c.add(p + 8)),
                        s[1],
                    );
                    p += 16;
                }
                res[i * w + j] = finish_dot(x, c, p, k, s);
            }
        }
    }
}

/// Without x86-64 there are only the portable loops.
#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    pub(crate) trait Load8 {}
    impl<T> Load8 for T {}
    pub(super) fn available() -> bool {
        false
    }
}
