//! Batched matrix multiply through the `gemm` crate, which reads both operands through their row
//! and column strides: transposed and sliced views multiply without a copy.

use std::mem::MaybeUninit;

use half::{bf16, f16};

use super::gemv::{self, GemvElem, Matrix};
use super::strided::map1;
use super::HostBuf;
use super::HostBuffer;
use crate::{Error, Layout, Result, Shape};

/// `(batch offsets, rows, cols, row stride, col stride)` of a `[.., rows, cols]` layout.
struct Mats {
    offsets: Vec<usize>,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

fn mats(l: &Layout) -> Mats {
    let rank = l.shape().rank();
    let batch = Layout::new(
        Shape::new(l.dims()[..rank - 2].to_vec()),
        l.strides()[..rank - 2].to_vec(),
        l.offset(),
    );
    Mats {
        offsets: batch.offsets().collect(),
        rows: l.dims()[rank - 2],
        cols: l.dims()[rank - 1],
        rs: l.strides()[rank - 2],
        cs: l.strides()[rank - 1],
    }
}

/// One band of output rows as a single-threaded GEMM: `dst (rows × n, row-major) = a · b` with
/// `a`, `b` read through (column, row) strides. f32 runs our AVX-512 kernel where the CPU has
/// it ([`sgemm`](super::sgemm)); everything else runs the `gemm` crate.
trait BandGemm: 'static + Copy + Default + Send + Sync {
    /// # Safety
    /// `a` and `b` address `rows × k` and `k × n` valid elements through their strides, and
    /// `dst` `rows × n` writable ones.
    #[allow(clippy::too_many_arguments)]
    unsafe fn band(
        rows: usize,
        n: usize,
        k: usize,
        dst: *mut Self,
        a: (*const Self, isize, isize),
        b: (*const Self, isize, isize),
        one: Self,
    ) {
        crate_gemm(rows, n, k, dst, a, b, one)
    }
    /// The whole product on the pool as a grid of at most `tasks` tiles (rows and columns
    /// split); false (nothing done) where this type has no such kernel.
    ///
    /// # Safety
    /// As [`BandGemm::band`], for all `m` rows.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tiles(
        _m: usize,
        _n: usize,
        _k: usize,
        _dst: *mut Self,
        _a: (*const Self, isize, isize),
        _b: (*const Self, isize, isize),
        _tasks: usize,
    ) -> bool {
        false
    }
    /// The fewest tasks that take [`BandGemm::tiles`] instead of row bands.
    fn grid_from() -> usize {
        GRID_TASKS
    }
}

/// Tasks from which a product runs as a grid of tiles (see [`BandGemm::grid_from`]).
const GRID_TASKS: usize = 4;

/// The tasks one large product (m·n·k of at least 64³) is split into: one per thread, each
/// with at least `TASK_WORK` multiply-adds, so that small products on many cores use fewer
/// threads than the pool has instead of paying a wake-up, and a packing of B, per thread for
/// a few microseconds of arithmetic each. Smaller products run on the calling thread.
fn tasks(m: usize, n: usize, k: usize) -> usize {
    const TASK_WORK: usize = 1 << 21;
    let threads = rayon::current_num_threads();
    if m * n * k >= 64 * 64 * 64 && threads > 1 {
        threads.min(m * n * k / TASK_WORK).max(1)
    } else {
        1
    }
}

/// bf16 × bf16 on AMX tiles (exact products, f32 sums), each result rounded once to bf16;
/// `None` where the CPU has no AMX. Batches of small products run in parallel over the batch.
fn bf16_on_tiles(a: &[bf16], la: &Layout, b: &[bf16], lb: &Layout) -> Option<Vec<bf16>> {
    if !super::amx_available() {
        return None;
    }
    let (ma, mb) = (mats(la), mats(lb));
    let (m, k, n) = (ma.rows, ma.cols, mb.cols);
    let batch = ma.offsets.len();
    let mut out = vec![0f32; batch * m * n];
    if m == 0 || n == 0 || k == 0 {
        return Some(vec![bf16::ZERO; out.len()]);
    }
    debug_assert!(la.storage_extent() <= a.len() && lb.storage_extent() <= b.len());
    let tasks = tasks(m, n, k);
    let one = |bi: usize, dst: &mut [f32], tasks: usize| {
        let mat = |data: &[bf16], off: usize, mm: &Mats| super::sgemm::Mat {
            // SAFETY: the batch offset lies inside the storage (checked above in debug builds).
            ptr: unsafe { data.as_ptr().add(off) },
            rs: mm.rs as isize,
            cs: mm.cs as isize,
        };
        // SAFETY: AMX usable (above); the layouts keep every element inside its storage, and
        // `dst` is this matrix's `m × n` block of the output.
        unsafe {
            super::amx::bgemm_bf16(
                m,
                n,
                k,
                mat(a, ma.offsets[bi], &ma),
                mat(b, mb.offsets[bi], &mb),
                dst.as_mut_ptr(),
                n,
                tasks,
            )
        };
    };
    if tasks == 1 && batch > 1 && batch * m * n * k >= 64 * 64 * 64 {
        use rayon::prelude::*;
        out.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(bi, dst)| one(bi, dst, 1));
    } else {
        for (bi, dst) in out.chunks_mut(m * n).enumerate() {
            one(bi, dst, tasks);
        }
    }
    Some(out.into_iter().map(bf16::from_f32).collect())
}

/// [`BandGemm::band`] through the `gemm` crate, which does not read `dst` (`read_dst` is false)
/// and writes all of it.
///
/// # Safety
/// As [`BandGemm::band`].
unsafe fn crate_gemm<T: 'static + Copy>(
    rows: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    a: (*const T, isize, isize),
    b: (*const T, isize, isize),
    one: T,
) {
    gemm::gemm(
        rows,
        n,
        k,
        dst,
        1,
        n as isize,
        false,
        a.0,
        a.1,
        a.2,
        b.0,
        b.1,
        b.2,
        one,
        one,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

impl BandGemm for f64 {}
impl BandGemm for f16 {}
impl BandGemm for f32 {
    unsafe fn band(
        rows: usize,
        n: usize,
        k: usize,
        dst: *mut f32,
        a: (*const f32, isize, isize),
        b: (*const f32, isize, isize),
        one: f32,
    ) {
        if super::sgemm::applies() {
            let (ma, mb) = (
                super::sgemm::Mat {
                    ptr: a.0,
                    rs: a.2,
                    cs: a.1,
                },
                super::sgemm::Mat {
                    ptr: b.0,
                    rs: b.2,
                    cs: b.1,
                },
            );
            return super::sgemm::sgemm(rows, n, k, ma, mb, dst, n);
        }
        crate_gemm(rows, n, k, dst, a, b, one)
    }
    unsafe fn tiles(
        m: usize,
        n: usize,
        k: usize,
        dst: *mut f32,
        a: (*const f32, isize, isize),
        b: (*const f32, isize, isize),
        tasks: usize,
    ) -> bool {
        if !super::sgemm::applies() {
            return false;
        }
        let mat = |x: (*const f32, isize, isize)| super::sgemm::Mat {
            ptr: x.0,
            rs: x.2,
            cs: x.1,
        };
        super::sgemm::sgemm_grid(m, n, k, mat(a), mat(b), dst, n, tasks);
        true
    }
    fn grid_from() -> usize {
        // AMX tiles multiply so fast that packing is a large part of a product: from two
        // tasks on, a grid, so that no task packs all of B (x·Wᵀ at 1024×768→3072 on 2
        // threads splits W in halves).
        if super::amx_applies() {
            2
        } else {
            GRID_TASKS
        }
    }
}

fn gemm_batched<T: BandGemm>(a: &[T], la: &Layout, b: &[T], lb: &Layout, one: T) -> Vec<T> {
    let (ma, mb) = (mats(la), mats(lb));
    let (m, k, n) = (ma.rows, ma.cols, mb.cols);
    let total = ma.offsets.len() * m * n;
    if m == 0 || n == 0 || k == 0 {
        return vec![T::default(); total];
    }
    // gemm writes every output element without reading it: no zero fill needed.
    let mut out: Vec<T> = Vec::with_capacity(total);
    debug_assert!(la.storage_extent() <= a.len() && lb.storage_extent() <= b.len());
    let big = m * n * k >= 64 * 64 * 64;
    let batch = ma.offsets.len();
    // Large products split into one task per thread, each a single-threaded GEMM: no
    // synchronisation inside the product, and each task packs its own operands. Up to 3
    // tasks take row bands; from GRID_TASKS on, a grid of tiles (rows and columns split, where
    // the type has it), so that no task packs all of B.
    // Batches of small products split across the batch.
    let tasks = tasks(m, n, k);
    let bands = tasks.min(m / 32).max(1);
    let band_rows = m.div_ceil(bands).next_multiple_of(16).min(m);
    // `rows` of output rows starting at `r0` of matrix `bi`, into `dst` (those rows only).
    let band = |bi: usize, r0: usize, rows: usize, dst: &mut [MaybeUninit<T>]| {
        let (oa, ob) = (ma.offsets[bi] + r0 * ma.rs, mb.offsets[bi]);
        // SAFETY: every layout was built by this crate's view ops, which keep each strided
        // position inside its storage (checked above in debug builds), and rows `r0..r0+rows`
        // of `a` lie inside its `m` rows; `dst` is an exclusive `rows × n` row-major block,
        // which the band writes in full.
        unsafe {
            T::band(
                rows,
                n,
                k,
                dst.as_mut_ptr().cast::<T>(),
                (a.as_ptr().add(oa), ma.cs as isize, ma.rs as isize),
                (b.as_ptr().add(ob), mb.cs as isize, mb.rs as isize),
                one,
            );
        }
    };
    let one_matrix = |bi: usize, dst: &mut [MaybeUninit<T>]| {
        if tasks >= T::grid_from() {
            let (oa, ob) = (ma.offsets[bi], mb.offsets[bi]);
            // SAFETY: as in `band`, for all `m` rows of matrix `bi`.
            let done = unsafe {
                T::tiles(
                    m,
                    n,
                    k,
                    dst.as_mut_ptr().cast::<T>(),
                    (a.as_ptr().add(oa), ma.cs as isize, ma.rs as isize),
                    (b.as_ptr().add(ob), mb.cs as isize, mb.rs as isize),
                    tasks,
                )
            };
            if done {
                return;
            }
        }
        if bands == 1 {
            return band(bi, 0, m, dst);
        }
        use rayon::prelude::*;
        dst.par_chunks_mut(band_rows * n)
            .enumerate()
            .for_each(|(i, d)| band(bi, i * band_rows, d.len() / n, d));
    };
    let spare = &mut out.spare_capacity_mut()[..total];
    if !big && batch > 1 && batch * m * n * k >= 64 * 64 * 64 {
        use rayon::prelude::*;
        spare
            .par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(bi, dst)| one_matrix(bi, dst));
    } else {
        spare
            .chunks_mut(m * n)
            .enumerate()
            .for_each(|(bi, dst)| one_matrix(bi, dst));
    }
    // SAFETY: every one of the `batch` blocks of `m × n` elements was written by gemm above.
    unsafe { out.set_len(total) };
    out
}

/// A few rows times a matrix (generating a token: the projections, and per head the scores
/// against the KV-cache and the weighted sum of its values) through [`gemv`], which streams
/// each matrix once through its strides; `None` when the product is not of that kind.
fn few_rows<T: GemvElem>(
    a: &[T],
    la: &Layout,
    b: &[T],
    lb: &Layout,
    widen: impl Fn(T) -> f32 + Sync + Send,
) -> Option<Vec<T>> {
    let (ma, mb) = (mats(la), mats(lb));
    let matrix = |off: usize| Matrix {
        data: b,
        off,
        rs: mb.rs,
        cs: mb.cs,
        rows: mb.rows,
        cols: mb.cols,
    };
    let batch = ma.offsets.len();
    let first = matrix(*mb.offsets.first()?);
    // One product of a large matrix, or a batch of them (attention heads) with enough work.
    let big = mb.rows * mb.cols >= 1 << 14 || (batch > 1 && batch * mb.rows * mb.cols >= 1 << 12);
    if batch != mb.offsets.len() || !big || !gemv::applies(ma.rows, &first) {
        return None;
    }
    debug_assert!(lb.storage_extent() <= b.len());
    let (m, k) = (ma.rows, ma.cols);
    let wide = map1(a, la, widen);
    let mut out = Vec::with_capacity(batch * m * mb.cols);
    for (bi, &off) in mb.offsets.iter().enumerate() {
        out.extend(gemv::gemv(
            &wide[bi * m * k..(bi + 1) * m * k],
            m,
            &matrix(off),
        ));
    }
    Some(out)
}

pub(crate) fn matmul(
    a: &HostBuffer,
    la: &Layout,
    b: &HostBuffer,
    lb: &Layout,
) -> Result<HostBuffer> {
    let few = match (a, b) {
        (HostBuffer::F32(x), HostBuffer::F32(y)) => {
            few_rows(x, la, y, lb, |v| v).map(|v| HostBuffer::F32(HostBuf::from(v)))
        }
        (HostBuffer::F16(x), HostBuffer::F16(y)) => {
            few_rows(x, la, y, lb, f16::to_f32).map(|v| HostBuffer::F16(HostBuf::from(v)))
        }
        (HostBuffer::BF16(x), HostBuffer::BF16(y)) => {
            few_rows(x, la, y, lb, bf16::to_f32).map(|v| HostBuffer::BF16(HostBuf::from(v)))
        }
        _ => None,
    };
    if let Some(out) = few {
        return Ok(out);
    }
    #[cfg(feature = "cpu-blas")]
    {
        use super::blas::gemm_batched as blas;
        let out = match (a, b) {
            // Not when bf16 products are asked for: OpenBLAS has none, our AMX kernel does.
            (HostBuffer::F32(x), HostBuffer::F32(y)) if !super::amx_applies() => {
                blas(x, la, y, lb).map(HostBuf::from).map(HostBuffer::F32)
            }
            (HostBuffer::F64(x), HostBuffer::F64(y)) => {
                blas(x, la, y, lb).map(HostBuf::from).map(HostBuffer::F64)
            }
            _ => None,
        };
        if let Some(out) = out {
            return Ok(out);
        }
    }
    Ok(match (a, b) {
        (HostBuffer::F32(x), HostBuffer::F32(y)) => {
            HostBuffer::F32(HostBuf::from(gemm_batched(x, la, y, lb, 1.0)))
        }
        (HostBuffer::F64(x), HostBuffer::F64(y)) => {
            HostBuffer::F64(HostBuf::from(gemm_batched(x, la, y, lb, 1.0)))
        }
        (HostBuffer::F16(x), HostBuffer::F16(y)) => {
            HostBuffer::F16(HostBuf::from(gemm_batched(x, la, y, lb, f16::ONE)))
        }
        (HostBuffer::BF16(x), HostBuffer::BF16(y)) => {
            if let Some(out) = bf16_on_tiles(x, la, y, lb) {
                return Ok(HostBuffer::BF16(HostBuf::from(out)));
            }
            // No AMX: widen to f32 (exact), multiply, round once.
            let (xf, yf) = (map1(x, la, |v| v.to_f32()), map1(y, lb, |v| v.to_f32()));
            let (cla, clb) = (
                Layout::contiguous(la.shape().clone()),
                Layout::contiguous(lb.shape().clone()),
            );
            HostBuffer::BF16(HostBuf::from(
                gemm_batched(&xf, &cla, &yf, &clb, 1.0)
                    .into_iter()
                    .map(bf16::from_f32)
                    .collect::<Vec<_>>(),
            ))
        }
        (x, y) if x.dtype() != y.dtype() => {
            return Err(Error::DTypeMismatch {
                op: "matmul",
                lhs: x.dtype(),
                rhs: y.dtype(),
            })
        }
        (x, _) => {
            return Err(Error::UnsupportedDType {
                op: "matmul",
                got: x.dtype(),
                expected: "a floating-point dtype",
            })
        }
    })
}
