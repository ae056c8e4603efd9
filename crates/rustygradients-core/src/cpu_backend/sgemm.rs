//! Our own f32 GEMM for AVX-512 CPUs (the `gemm` crate runs AVX2 code on stable Rust): the
//! operands are packed into panels and a 12×32 register-blocked micro-kernel of 512-bit FMAs
//! runs over them, in the loop order of BLIS (Goto's algorithm):
//!
//! ```text
//! for each NC-column block of B:          (B block in L3)
//!   for each KC-deep slice:  pack B[kc × nc] into 32-wide panels
//!     for each MC-row block of A: pack A[mc × kc] into 12-tall panels   (A block in L2)
//!       for each 32-wide B panel, 12-tall A panel:  C tile (12×32) += A panel · B panel
//! ```
//!
//! The micro-kernel keeps the 12×32 tile of C in 24 of the 32 zmm registers; each step of `k`
//! loads two vectors of the B panel and broadcasts 12 elements of the A panel into 24 FMAs.
//! Packing reads both operands through any row and column strides, with contiguous fast paths
//! for plain and transposed operands, and zero-pads partial panels; partial C tiles go through
//! a scratch tile.

use std::cell::RefCell;

/// Rows of the micro-tile (broadcast A elements).
const MR: usize = 12;
/// Columns of the micro-tile (two 16-float vectors).
const NR: usize = 32;
/// Depth of one packed slice (a 32-wide B panel of KC rows is 48 KiB, streamed from L2). 256,
/// 384 and 512 measured alike on a Zen 5 host (within its run-to-run noise, 2026-11-27).
const KC: usize = 384;
/// Rows of A packed at once (MC × KC floats = 720 KiB, in a 1 MiB L2).
const MC: usize = 480;
/// Columns of B packed at once, at most (KC × NC floats = 6 MiB, in L3); see [`nc`].
const NC: usize = 4096;

/// Columns of B packed at once on this CPU. Each A panel runs over the whole packed B block,
/// so the block is re-read once per 12 rows of A: from L3 at [`NC`] columns. A Zen core's L3
/// feeds that (86% of the FMA peak at 1024×768·768×3072 on a Zen 5, 2026-11-27), an Intel
/// Xeon's mesh L3 does not (49%). On Intel the block is sized to half the core's L2 (640
/// columns for a 2 MiB L2: 70% at that shape, 2026-11-28), at the price of reading A once per
/// block.
fn nc() -> usize {
    static V: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *V.get_or_init(|| {
        let l2 = if super::caches::is_intel() {
            super::caches::l2_bytes()
        } else {
            None
        };
        l2.map_or(NC, |b| (b / 2 / (KC * 4) / NR * NR).clamp(4 * NR, NC))
    })
}

/// A 64-byte aligned block of 16 floats: the packed buffers are made of these.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

thread_local! {
    /// Each thread's packing buffers (A block, B block), grown on demand and reused.
    static PACKS: RefCell<(Vec<Line>, Vec<Line>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// A matrix operand: element `(i, j)` at `ptr + i·rs + j·cs` (f32 here; the AMX kernel also
/// reads bf16 ones).
pub(crate) struct Mat<T = f32> {
    pub ptr: *const T,
    pub rs: isize,
    pub cs: isize,
}

impl<T> Clone for Mat<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Mat<T> {}

// SAFETY: an operand is only read, by any number of threads at once.
unsafe impl<T> Send for Mat<T> {}
unsafe impl<T> Sync for Mat<T> {}

impl<T> Mat<T> {
    /// The operand from its element `(r, c)` on.
    ///
    /// # Safety
    /// `(r, c)` must address an element of the operand.
    pub(crate) unsafe fn from(self, r: usize, c: usize) -> Mat<T> {
        Mat {
            ptr: self.ptr.offset(r as isize * self.rs + c as isize * self.cs),
            ..self
        }
    }
}

/// Whether this CPU runs the kernel (AVX-512 F; decided with the other kernels, see
/// `strided::isa`).
pub(crate) fn applies() -> bool {
    super::strided::isa() >= super::strided::Isa::Avx512
}

/// `C (m × n, row-major, row stride ldc) = A (m × k) · B (k × n)`; C is written, never read.
///
/// # Safety
/// The CPU must have AVX-512 F ([`applies`]); `a` and `b` must address `m × k` and `k × n`
/// valid elements through their strides, and `c` `m` rows of `n` writable elements `ldc`
/// apart.
pub(crate) unsafe fn sgemm(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: *mut f32, ldc: usize) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for i in 0..m {
            std::ptr::write_bytes(c.add(i * ldc), 0, n);
        }
        return;
    }
    if super::amx_applies() {
        return super::amx::bgemm(m, n, k, a, b, c, ldc);
    }
    PACKS.with(|packs| {
        let mut packs = packs.borrow_mut();
        let (pa, pb) = &mut *packs;
        let (pa, pb) = (grown(pa, A_LINES), grown(pb, b_lines(n)));
        for jc in (0..n).step_by(nc()) {
            let nc = nc().min(n - jc);
            for pc in (0..k).step_by(KC) {
                let kc = KC.min(k - pc);
                pack_b(kc, nc, b, pc, jc, pb);
                for ic in (0..m).step_by(MC) {
                    let mc = MC.min(m - ic);
                    let block = a_block(mc, kc, a, ic, pc, pa);
                    let ct = c.add(ic * ldc + jc);
                    macro_tile(mc, nc, kc, block, pa, pb, ct, ldc, pc > 0);
                }
            }
        }
    });
}

/// Lines of a packed A block (`MC × KC`, rows rounded up to `MR`).
const A_LINES: usize = MC.next_multiple_of(MR) * KC / 16;

/// Lines of a packed B block for `n` columns (`KC × NC` at most, columns rounded up to `NR`).
fn b_lines(n: usize) -> usize {
    nc().min(n.next_multiple_of(NR)) * KC / 16
}

/// The buffer grown to at least `lines` lines (never shrunk: reused across calls), as the
/// packing routines write it.
fn grown(v: &mut Vec<Line>, lines: usize) -> *mut f32 {
    if v.len() < lines {
        v.resize(lines, Line([0.0; 16]));
    }
    v.as_mut_ptr().cast::<f32>()
}

/// The `mc × kc` block of A at `(ic, pc)` as the micro-kernel reads it: where it lies when A's
/// rows or columns are contiguous (the kernel broadcasts its elements one by one, so any such
/// layout serves), else packed into `pa` first (then `rs = -1` marks it packed).
///
/// # Safety
/// As [`sgemm`]; `pa` holds an `MC × KC` block.
unsafe fn a_block(mc: usize, kc: usize, a: Mat, ic: usize, pc: usize, pa: *mut f32) -> Mat {
    // A transposed A whose columns lie 4 KiB or more apart is packed: read in place, each step
    // of k would touch a new page (gᵀ·x at 3072×1024·1024×768: 185 → 280 GFLOP/s packed, on
    // an Intel Xeon, 2026-11-28).
    if a.cs == 1 || (a.rs == 1 && a.cs.unsigned_abs() < 1024) {
        a.from(ic, pc)
    } else {
        pack_a(mc, kc, a, ic, pc, pa);
        Mat {
            ptr: pa,
            rs: -1,
            cs: 0,
        }
    }
}

/// C's pointer, shared by the tasks of [`sgemm_grid`] (each writes its own tile).
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: the tasks write disjoint tiles of C.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer (a method, so that closures capture the whole `Shared`).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// [`sgemm`] on the thread pool for many threads: C split into a grid of at most `tasks`
/// tiles, each a single-threaded [`sgemm`] over the whole depth with its own packing, so a
/// product costs one fork and join. The grid's shape minimises what each tile reads
/// (its rows of A plus its columns of B): at 16 threads, 1024×3072·3072×768 runs as 4 × 4
/// tiles, each packing a quarter of B, where 16 row bands would pack all of B 16 times, and
/// sharing one packing of B among them (as before) cost two synchronisations per KC slice.
///
/// # Safety
/// As [`sgemm`].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm_grid(
    m: usize,
    n: usize,
    k: usize,
    a: Mat,
    b: Mat,
    c: *mut f32,
    ldc: usize,
    tasks: usize,
) {
    in_grid(m, n, k, a, b, c, ldc, tasks, |m, n, k, a, b, c, ldc| {
        // SAFETY: as this function's contract, for the tile.
        unsafe { sgemm(m, n, k, a, b, c, ldc) }
    });
}

/// Runs `gemm(rows, cols, k, A from (r0, 0), B from (0, c0), C at (r0, c0), ldc)` for each
/// tile of [`grid`]'s split of C, the tiles in parallel.
///
/// # Safety
/// `a` and `b` must address `m × k` and `k × n` valid elements through their strides, and `c`
/// `m` rows of `n` writable elements `ldc` apart.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn in_grid<T>(
    m: usize,
    n: usize,
    k: usize,
    a: Mat<T>,
    b: Mat<T>,
    c: *mut f32,
    ldc: usize,
    tasks: usize,
    gemm: impl Fn(usize, usize, usize, Mat<T>, Mat<T>, *mut f32, usize) + Sync,
) {
    use rayon::prelude::*;
    let (gm, gn) = grid(m, n, tasks);
    let rows = m.div_ceil(gm).next_multiple_of(16).min(m);
    let cols = n.div_ceil(gn).next_multiple_of(NR).min(n);
    let (tm, tn) = (m.div_ceil(rows), n.div_ceil(cols));
    let cc = Shared(c);
    (0..tm * tn).into_par_iter().for_each(|t| {
        let (r0, c0) = ((t / tn) * rows, (t % tn) * cols);
        // SAFETY: the tile's rows of A, columns of B and block of C lie inside the product,
        // and no other task writes that block of C.
        unsafe {
            let c = cc.get().add(r0 * ldc + c0);
            gemm(
                rows.min(m - r0),
                cols.min(n - c0),
                k,
                a.from(r0, 0),
                b.from(0, c0),
                c,
                ldc,
            );
        }
    });
}

/// The `(row, column)` split of an `m × n` product into `tasks` tiles that minimises the rows
/// of A plus the columns of B each tile reads, keeping tiles at least 16 rows and `NR` columns
/// (row bands where no split does).
fn grid(m: usize, n: usize, tasks: usize) -> (usize, usize) {
    let tasks = tasks.max(1);
    (1..=tasks)
        .filter(|&g| tasks.is_multiple_of(g))
        .map(|gm| (gm, tasks / gm))
        .filter(|&(gm, gn)| m / gm >= 16 && n / gn >= NR)
        .min_by_key(|&(gm, gn)| m.div_ceil(gm) + n.div_ceil(gn))
        .unwrap_or((tasks, 1))
}

/// B[pc.., jc..] (kc × nc) into NR-wide panels: panel `j` holds, for each of the kc rows, NR
/// consecutive columns (zero past `nc`).
#[target_feature(enable = "avx512f")]
unsafe fn pack_b(kc: usize, nc: usize, b: Mat, pc: usize, jc: usize, out: *mut f32) {
    for (panel, j0) in (0..nc).step_by(NR).enumerate() {
        let w = NR.min(nc - j0);
        let dst = out.add(panel * NR * kc);
        let src = b.ptr.offset(pc as isize * b.rs + (jc + j0) as isize * b.cs);
        if b.rs == 1 && b.cs != 1 && w == NR {
            // A transposed B (Wᵀ): each column is contiguous. Blocks of 16 rows are moved as
            // two 16×16 transposes in registers; the last rows one by one.
            let full = kc / 16 * 16;
            for p0 in (0..full).step_by(16) {
                for half in 0..2 {
                    let cols = src.offset(p0 as isize + (16 * half) as isize * b.cs);
                    transpose16(cols, b.cs, dst.add(p0 * NR + 16 * half), NR);
                }
            }
            for j in 0..NR {
                let col = src.offset(j as isize * b.cs);
                for p in full..kc {
                    *dst.add(p * NR + j) = *col.add(p);
                }
            }
            continue;
        }
        if b.rs == 1 && b.cs != 1 {
            // A transposed B (Wᵀ): each column is contiguous; read it down, write across.
            for j in 0..w {
                let col = std::slice::from_raw_parts(src.offset(j as isize * b.cs), kc);
                for (p, &v) in col.iter().enumerate() {
                    *dst.add(p * NR + j) = v;
                }
            }
            for p in 0..kc {
                for j in w..NR {
                    *dst.add(p * NR + j) = 0.0;
                }
            }
            continue;
        }
        for p in 0..kc {
            let row = src.offset(p as isize * b.rs);
            let d = dst.add(p * NR);
            if b.cs == 1 && w == NR {
                // A whole row of the panel: two 64-byte moves, not a call to memmove.
                d.cast::<[f32; NR]>()
                    .write(row.cast::<[f32; NR]>().read_unaligned());
            } else if b.cs == 1 {
                std::ptr::copy_nonoverlapping(row, d, w);
            } else {
                for j in 0..w {
                    *d.add(j) = *row.offset(j as isize * b.cs);
                }
            }
            for j in w..NR {
                *d.add(j) = 0.0;
            }
        }
    }
}

/// Writes the transpose of a 16×16 block: row `q` of the output (at `dst + q·ld_dst`, 16
/// floats) is element `q` of each of the 16 source vectors (vector `c` at `src + c·ld_src`).
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn transpose16(src: *const f32, ld_src: isize, dst: *mut f32, ld_dst: usize) {
    use std::arch::x86_64::*;
    let r: [__m512; 16] = std::array::from_fn(|c| _mm512_loadu_ps(src.offset(c as isize * ld_src)));
    // Pairs of rows interleaved, then pairs of pairs, then 128-bit lanes regrouped twice.
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    let u: [__m512; 16] = std::array::from_fn(|i| {
        // Within each group of 4: (t0, t2) and (t1, t3).
        let g = i & !3;
        let h = (i >> 1) & 1;
        let (a, b) = (t[g + h], t[g + 2 + h]);
        if i % 2 == 0 {
            _mm512_shuffle_ps::<0x44>(a, b)
        } else {
            _mm512_shuffle_ps::<0xEE>(a, b)
        }
    });
    let v: [__m512; 16] = std::array::from_fn(|i| {
        // Within each group of 8: lanes (0, 2) of u[j] and u[j + 4], then lanes (1, 3).
        let g = i & !7;
        let j = g + (i & 3);
        if i & 4 == 0 {
            _mm512_shuffle_f32x4::<0x88>(u[j], u[j + 4])
        } else {
            _mm512_shuffle_f32x4::<0xDD>(u[j], u[j + 4])
        }
    });
    for i in 0..16 {
        let j = i & 7;
        let w = if i < 8 {
            _mm512_shuffle_f32x4::<0x88>(v[j], v[j + 8])
        } else {
            _mm512_shuffle_f32x4::<0xDD>(v[j], v[j + 8])
        };
        _mm512_storeu_ps(dst.add(i * ld_dst), w);
    }
}

/// A[ic.., pc..] (mc × kc) into MR-tall panels: panel `i` holds, for each of the kc columns,
/// MR consecutive rows (zero past `mc`).
#[target_feature(enable = "avx512f")]
unsafe fn pack_a(mc: usize, kc: usize, a: Mat, ic: usize, pc: usize, out: *mut f32) {
    for (panel, i0) in (0..mc).step_by(MR).enumerate() {
        let h = MR.min(mc - i0);
        let dst = out.add(panel * MR * kc);
        if a.rs == 1 && a.cs != 1 {
            // A transposed A (gᵀ): each column of the panel is contiguous.
            let src = a.ptr.offset((ic + i0) as isize + pc as isize * a.cs);
            for p in 0..kc {
                let d = dst.add(p * MR);
                let col = src.offset(p as isize * a.cs);
                if h == MR {
                    d.cast::<[f32; MR]>()
                        .write_unaligned(col.cast::<[f32; MR]>().read_unaligned());
                } else {
                    std::ptr::copy_nonoverlapping(col, d, h);
                    for r in h..MR {
                        *d.add(r) = 0.0;
                    }
                }
            }
            continue;
        }
        if a.cs == 1 && h == MR {
            // A row-major A: the panel's MR rows read side by side, each step of k written as
            // MR consecutive floats.
            let rows: [*const f32; MR] =
                std::array::from_fn(|r| a.ptr.offset((ic + i0 + r) as isize * a.rs + pc as isize));
            for p in 0..kc {
                let d = dst.add(p * MR);
                for (r, row) in rows.iter().enumerate() {
                    *d.add(r) = *row.add(p);
                }
            }
            continue;
        }
        for r in 0..h {
            let src = a
                .ptr
                .offset((ic + i0 + r) as isize * a.rs + pc as isize * a.cs);
            if a.cs == 1 {
                let row = std::slice::from_raw_parts(src, kc);
                for (p, &v) in row.iter().enumerate() {
                    *dst.add(p * MR + r) = v;
                }
            } else {
                for p in 0..kc {
                    *dst.add(p * MR + r) = *src.offset(p as isize * a.cs);
                }
            }
        }
        for r in h..MR {
            for p in 0..kc {
                *dst.add(p * MR + r) = 0.0;
            }
        }
    }
}

/// Every micro-tile of an mc × nc block of C from the packed B and the A block: in place
/// (`a` its first element and strides) or packed into `pa` (marked by `a.rs == -1`). `pa` is
/// also the scratch for the last, partial panel of an A read in place.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn macro_tile(
    mc: usize,
    nc: usize,
    kc: usize,
    a: Mat,
    pa: *mut f32,
    pb: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let mut scratch = [Line([0.0; 16]); MR * NR / 16];
    let tmp = scratch.as_mut_ptr().cast::<f32>();
    let packed = a.rs == -1;
    for (ip, i0) in (0..mc).step_by(MR).enumerate() {
        let h = MR.min(mc - i0);
        // The panel's first element and its (row, k) strides.
        let (ap, ars, acs) = if packed {
            (pa.add(ip * MR * kc).cast_const(), 1, MR as isize)
        } else if h < MR {
            // Rows past the matrix must not be read: pack this panel, zero-padded.
            let rest = Mat {
                ptr: a.ptr.offset(i0 as isize * a.rs),
                ..a
            };
            pack_a(h, kc, rest, 0, 0, pa);
            (pa.cast_const(), 1, MR as isize)
        } else {
            (a.ptr.offset(i0 as isize * a.rs), a.rs, a.cs)
        };
        for (jp, j0) in (0..nc).step_by(NR).enumerate() {
            let w = NR.min(nc - j0);
            let bp = pb.add(jp * NR * kc);
            let ct = c.add(i0 * ldc + j0);
            if h == MR && w == NR {
                kernel(kc, (ap, ars, acs), bp, ct, ldc, accumulate);
            } else {
                // A partial tile: the kernel writes a full scratch tile, and the valid part
                // is added (or copied) into C.
                kernel(kc, (ap, ars, acs), bp, tmp, NR, false);
                for r in 0..h {
                    for j in 0..w {
                        let (d, s) = (ct.add(r * ldc + j), *tmp.add(r * NR + j));
                        *d = if accumulate { *d + s } else { s };
                    }
                }
            }
        }
    }
}

/// C tile (MR × NR, row stride ldc) = (C tile if `accumulate`) + A panel · B panel, with
/// element (r, p) of the A panel at `a.0 + r·a.1 + p·a.2`.
#[target_feature(enable = "avx512f")]
unsafe fn kernel(
    kc: usize,
    a: (*const f32, isize, isize),
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    if accumulate {
        for (r, row) in acc.iter_mut().enumerate() {
            row[0] = _mm512_loadu_ps(c.add(r * ldc));
            row[1] = _mm512_loadu_ps(c.add(r * ldc + 16));
        }
    }
    for p in 0..kc {
        let b0 = _mm512_load_ps(b.add(p * NR));
        let b1 = _mm512_load_ps(b.add(p * NR + 16));
        let ap = a.0.offset(p as isize * a.2);
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*ap.offset(r as isize * a.1));
            row[0] = _mm512_fmadd_ps(av, b0, row[0]);
            row[1] = _mm512_fmadd_ps(av, b1, row[1]);
        }
    }
    for (r, row) in acc.iter().enumerate() {
        _mm512_storeu_ps(c.add(r * ldc), row[0]);
        _mm512_storeu_ps(c.add(r * ldc + 16), row[1]);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn grids_read_the_least() {
        // GPT-2-small's products at 16 threads: square-ish tiles.
        assert_eq!(super::grid(1024, 768, 16), (4, 4));
        assert_eq!(super::grid(1024, 3072, 16), (2, 8));
        // Too narrow to split the columns: row bands.
        assert_eq!(super::grid(1024, 40, 8), (8, 1));
        // Nothing fits the minimum tile: row bands all the same.
        assert_eq!(super::grid(20, 20, 4), (4, 1));
    }

    #[test]
    fn transpose16_transposes() {
        if !super::applies() {
            return;
        }
        // 16 source vectors 19 floats apart; the output rows 21 apart.
        let src: Vec<f32> = (0..16 * 19).map(|i| i as f32).collect();
        let mut dst = vec![-1f32; 16 * 21];
        // SAFETY: AVX-512 F checked above; both buffers hold the strided blocks.
        unsafe { super::transpose16(src.as_ptr(), 19, dst.as_mut_ptr(), 21) };
        for q in 0..16 {
            for c in 0..16 {
                assert_eq!(dst[q * 21 + c], src[c * 19 + q], "row {q}, column {c}");
            }
            assert_eq!(dst[q * 21 + 16], -1.0);
        }
    }
}
