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
pub(crate) trait GemvElem: Copy + Send + Sync + 'static {
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
    let threads = rayon::current_num_threads().max(1);
    let mut out = vec![0f32; m * n];
    if b.cs == 1 {
        // Rows contiguous: each thread takes a band of columns and streams its part of every
        // row, adding `a[i][r] · row` into its `m` accumulators.
        let band = n.div_ceil(threads * 2).next_multiple_of(BLOCK.min(n));
        let bands: Vec<(usize, Vec<f32>)> = (0..n.div_ceil(band))
            .into_par_iter()
            .map(|bi| {
                let (c0, w) = (bi * band, band.min(n - bi * band));
                let mut acc = vec![0f32; m * w];
                let mut buf = vec![0f32; BLOCK];
                simd(|| {
                    for r in 0..k {
                        let start = b.off + r * b.rs + c0;
                        for b0 in (0..w).step_by(BLOCK) {
                            let bw = BLOCK.min(w - b0);
                            let row = T::as_f32(&b.data[start + b0..start + b0 + bw], &mut buf);
                            for i in 0..m {
                                let x = a[i * k + r];
                                let dst = &mut acc[i * w + b0..i * w + b0 + bw];
                                for (d, &v) in dst.iter_mut().zip(row) {
                                    *d = madd::<FMA>(x, v, *d);
                                }
                            }
                        }
                    }
                });
                (c0, acc)
            })
            .collect();
        for (c0, acc) in bands {
            let w = acc.len() / m;
            for i in 0..m {
                out[i * n + c0..i * n + c0 + w].copy_from_slice(&acc[i * w..(i + 1) * w]);
            }
        }
    } else {
        // Columns contiguous: one dot product per output, columns split across threads.
        let chunk = n.div_ceil(threads * 4).max(1);
        let cols: Vec<Vec<f32>> = (0..n.div_ceil(chunk))
            .into_par_iter()
            .map(|ci| {
                let (c0, w) = (ci * chunk, chunk.min(n - ci * chunk));
                let mut res = vec![0f32; m * w];
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
