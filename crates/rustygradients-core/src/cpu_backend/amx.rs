//! f32 GEMM with bf16 products on Intel AMX tiles (Xeon 4th generation on), for
//! [`set_matmul_allow_bf16`](crate::set_matmul_allow_bf16): the operands are rounded to bf16
//! (round to nearest even) as they are packed, and `TDPBF16PS` multiplies 16×32 by 32×16 bf16
//! tiles into 16×16 f32 accumulators. A tile product is 8,192 multiply-adds in about 16 cycles,
//! eight times the two 512-bit FMA pipes.
//!
//! The loops are those of [`sgemm`](super::sgemm), with tiles for registers:
//!
//! ```text
//! for each NC-column block of B, each KC-deep slice:  pack B into 16-column VNNI panels
//!   for each MC-row block of A:                       pack A into 16-row panels
//!     for each pair of B panels (32 columns, in L1), each pair of A panels (32 rows):
//!       C (32×32, four tiles) += A pair · B pair, 32 steps of k per tile product
//! ```
//!
//! A packed A panel holds, for each 32-deep step of k, a 16 × 32 bf16 tile (64 bytes a row); a
//! B panel holds, for each step, 16 rows of k-pairs, each row the 16 columns' two consecutive
//! k (the VNNI layout `TDPBF16PS` reads). Rows, columns and depth are zero-padded to whole
//! tiles; C tiles that cross the product's edge go through a scratch block.
//!
//! Linux hands AMX's 8 KiB of tile state to a process only on request
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), made once by [`usable`]. Each call configures the
//! calling thread's tiles and releases them at the end.

use std::arch::asm;
use std::arch::x86_64::*;
use std::cell::RefCell;

use super::sgemm::Mat;

/// Depth of a packed slice: a pair of B panels is 64 × KC bytes (32 KiB), kept in L1 while
/// the A block streams past it.
const KC: usize = 512;
/// Rows of A packed at once (MC × KC bf16 = 256 KiB, in L2).
const MC: usize = 256;
/// Columns of B packed at once (KC × NC bf16 = 1 MiB, in a 2 MiB L2).
const NC: usize = 1024;
/// bf16 elements in one tile (16 rows of 64 bytes).
const TILE: usize = 512;

/// Whether this CPU and OS run the kernel: AMX-TILE and AMX-BF16 with AVX-512 BF16 (which
/// packing uses), and Linux granting the process the tile state. Decided once per process.
pub(crate) fn usable() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        let cpu = std::arch::is_x86_feature_detected!("avx512bf16")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && {
                // CPUID leaf 7 (present on every CPU with AVX-512): EDX bit 22 AMX-BF16,
                // bit 24 AMX-TILE.
                let edx = __cpuid_count(7, 0).edx;
                edx & (1 << 22) != 0 && edx & (1 << 24) != 0
            };
        cpu && request_tile_state()
    })
}

/// Asks Linux for the AMX tile data state (XFEATURE 18) for this process.
fn request_tile_state() -> bool {
    #[cfg(target_os = "linux")]
    {
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: a plain system call with integer arguments.
        unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            ) == 0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// A 64-byte aligned line of 32 bf16 (as bits): the packed buffers are made of these.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u16; 32]);

thread_local! {
    /// Each thread's packing buffers (A block, B block), grown on demand and reused.
    static PACKS: RefCell<(Vec<Line>, Vec<Line>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The buffer grown to at least `elems` bf16 (never shrunk).
fn grown(v: &mut Vec<Line>, elems: usize) -> *mut u16 {
    let lines = elems.div_ceil(32);
    if v.len() < lines {
        v.resize(lines, Line([0; 32]));
    }
    v.as_mut_ptr().cast::<u16>()
}

/// The tile configuration: palette 1, all eight tiles 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new() -> Self {
        let mut c = [0u8; 64];
        c[0] = 1;
        for t in 0..8 {
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
        }
        TileConfig(c)
    }
}

/// `C (m × n, row-major, row stride ldc) = A (m × k) · B (k × n)` with bf16 products and f32
/// sums; C is written, never read. [`sgemm`](super::sgemm::sgemm) calls it for non-empty
/// products (m, n and k at least 1).
///
/// # Safety
/// [`usable`] must hold; `a` and `b` must address `m × k` and `k × n` valid elements through
/// their strides, and `c` `m` rows of `n` writable elements `ldc` apart.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(crate) unsafe fn bgemm<T: Source>(
    m: usize,
    n: usize,
    k: usize,
    a: Mat<T>,
    b: Mat<T>,
    c: *mut f32,
    ldc: usize,
) {
    debug_assert!(m > 0 && n > 0 && k > 0);
    let config = TileConfig::new();
    asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
    PACKS.with(|packs| {
        let mut packs = packs.borrow_mut();
        let (pa, pb) = &mut *packs;
        let kc_max = KC.min(k.next_multiple_of(32));
        let pa = grown(pa, MC.min(m).next_multiple_of(32) * kc_max);
        let pb = grown(pb, NC.min(n).next_multiple_of(32) * kc_max);
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            for pc in (0..k).step_by(KC) {
                let kc = KC.min(k - pc);
                pack_b(kc, nc, b.from(pc, jc), pb);
                for ic in (0..m).step_by(MC) {
                    let mc = MC.min(m - ic);
                    pack_a(mc, kc, a.from(ic, pc), pa);
                    let ct = c.add(ic * ldc + jc);
                    macro_tile(mc, nc, kc.div_ceil(32), pa, pb, ct, ldc, pc > 0);
                }
            }
        }
    });
    asm!("tilerelease", options(nostack, nomem));
}

/// bf16 × bf16 → f32 (the products exact, the sums f32) as a grid of at most `tasks` tiles
/// on the pool, each a [`bgemm`].
///
/// # Safety
/// [`usable`] must hold and m, n, k be at least 1; as [`bgemm`] otherwise.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn bgemm_bf16(
    m: usize,
    n: usize,
    k: usize,
    a: Mat<half::bf16>,
    b: Mat<half::bf16>,
    c: *mut f32,
    ldc: usize,
    tasks: usize,
) {
    if tasks <= 1 {
        return bgemm(m, n, k, a, b, c, ldc);
    }
    super::sgemm::in_grid(m, n, k, a, b, c, ldc, tasks, |m, n, k, a, b, c, ldc| {
        // SAFETY: as this function's contract, for the tile.
        unsafe { bgemm(m, n, k, a, b, c, ldc) }
    });
}

/// Every 32×32 block of an mc × nc block of C from the packed panels (`kbs` tiles deep).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn macro_tile(
    mc: usize,
    nc: usize,
    kbs: usize,
    pa: *const u16,
    pb: *const u16,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let mut scratch = [[0f32; 32]; 32];
    let panel = kbs * TILE;
    for j0 in (0..nc).step_by(32) {
        let b0 = pb.add(j0 / 16 * panel);
        let w = 32.min(nc - j0);
        for i0 in (0..mc).step_by(32) {
            let a0 = pa.add(i0 / 16 * panel);
            let h = 32.min(mc - i0);
            let ct = c.add(i0 * ldc + j0);
            if h == 32 && w == 32 {
                block(kbs, a0, b0, ct, ldc, accumulate);
            } else {
                let s = scratch.as_mut_ptr().cast::<f32>();
                block(kbs, a0, b0, s, 32, false);
                for (r, row) in scratch.iter().enumerate().take(h) {
                    for (j, &v) in row.iter().enumerate().take(w) {
                        let d = ct.add(r * ldc + j);
                        *d = if accumulate { *d + v } else { v };
                    }
                }
            }
        }
    }
}

/// C (32 × 32, row stride ldc) = (C if `accumulate`) + two A panels (at `a`, `kbs` tiles
/// each) times two B panels (at `b`), in tiles 0–3 (C), 4–5 (A) and 6–7 (B).
#[inline(always)]
unsafe fn block(
    kbs: usize,
    a: *const u16,
    b: *const u16,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let panel = kbs * TILE;
    let (a1, b1) = (a.add(panel), b.add(panel));
    let cs = ldc * 4;
    let (c01, c10, c11) = (c.add(16), c.add(16 * ldc), c.add(16 * ldc + 16));
    if accumulate {
        asm!(
            "tileloadd tmm0, [{c00} + {cs}]",
            "tileloadd tmm1, [{c01} + {cs}]",
            "tileloadd tmm2, [{c10} + {cs}]",
            "tileloadd tmm3, [{c11} + {cs}]",
            c00 = in(reg) c, c01 = in(reg) c01, c10 = in(reg) c10, c11 = in(reg) c11,
            cs = in(reg) cs, options(nostack, readonly),
        );
    } else {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
    }
    for kb in 0..kbs {
        let o = kb * TILE;
        asm!(
            "tileloadd tmm4, [{a0} + {s}]",
            "tileloadd tmm6, [{b0} + {s}]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{b1} + {s}]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {s}]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            a0 = in(reg) a.add(o), a1 = in(reg) a1.add(o),
            b0 = in(reg) b.add(o), b1 = in(reg) b1.add(o),
            s = in(reg) 64usize, options(nostack, readonly),
        );
    }
    asm!(
        "tilestored [{c00} + {cs}], tmm0",
        "tilestored [{c01} + {cs}], tmm1",
        "tilestored [{c10} + {cs}], tmm2",
        "tilestored [{c11} + {cs}], tmm3",
        c00 = in(reg) c, c01 = in(reg) c01, c10 = in(reg) c10, c11 = in(reg) c11,
        cs = in(reg) cs, options(nostack),
    );
}

/// An element type the packing reads: f32 (rounded to bf16 as it is packed) or bf16 (packed as
/// it is, so that bf16 × bf16 products are exact).
pub(crate) trait Source: Copy + Send + Sync + 'static {
    /// The first `min(len, 16)` elements at `p` as f32, zero past them (nothing is read past
    /// them).
    ///
    /// # Safety
    /// AVX-512 F, BW and VL; those elements readable.
    unsafe fn load16(p: *const Self, len: usize) -> __m512;
    /// The element as bf16 bits, rounded to nearest even (NaN stays NaN), as the vector paths
    /// round.
    fn bits(self) -> u16;
}

impl Source for f32 {
    #[inline(always)]
    unsafe fn load16(p: *const f32, len: usize) -> __m512 {
        if len >= 16 {
            _mm512_loadu_ps(p)
        } else {
            _mm512_maskz_loadu_ps(((1u32 << len) - 1) as u16, p)
        }
    }
    fn bits(self) -> u16 {
        half::bf16::from_f32(self).to_bits()
    }
}

impl Source for half::bf16 {
    #[inline(always)]
    unsafe fn load16(p: *const half::bf16, len: usize) -> __m512 {
        let v = if len >= 16 {
            _mm256_loadu_si256(p.cast())
        } else {
            _mm256_maskz_loadu_epi16(((1u32 << len) - 1) as u16, p.cast())
        };
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(v)))
    }
    fn bits(self) -> u16 {
        self.to_bits()
    }
}

/// Sixteen words, each a pair of bf16: the low half from `lo`, the high half from `hi`.
#[inline(always)]
unsafe fn pairs(lo: __m512, hi: __m512) -> __m512i {
    // [lo as bf16 × 16, hi as bf16 × 16], then interleaved.
    let both = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
    let idx = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4,
        19, 3, 18, 2, 17, 1, 16, 0,
    );
    _mm512_permutexvar_epi16(idx, both)
}

/// 32 consecutive bf16: `lo`'s 16 then `hi`'s 16.
#[inline(always)]
unsafe fn run32(lo: __m512, hi: __m512) -> __m512i {
    std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo))
}

/// A (mc × kc, its element (0, 0) at `a`) into 16-row panels of 32-deep tiles, rows padded
/// to a multiple of 32 and depth to a multiple of 32 with zeros.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn pack_a<T: Source>(mc: usize, kc: usize, a: Mat<T>, out: *mut u16) {
    let kbs = kc.div_ceil(32);
    let panels = mc.div_ceil(32) * 2;
    let line = |panel: usize, kb: usize, r: usize| out.add((panel * kbs + kb) * TILE + r * 32);
    if a.cs == 1 {
        // A row-major A (x, g): each row read once along its length, 32 k into each tile.
        for i in 0..panels * 16 {
            let row = a.ptr.wrapping_offset(i as isize * a.rs);
            for kb in 0..kbs {
                let (p0, d) = (kb * 32, kc - kb * 32);
                let v = if i < mc {
                    let at = row.add(p0);
                    run32(
                        T::load16(at, d),
                        T::load16(at.wrapping_add(16), d.saturating_sub(16)),
                    )
                } else {
                    _mm512_setzero_si512()
                };
                _mm512_store_si512(line(i / 16, kb, i % 16).cast(), v);
            }
        }
        return;
    }
    // Depth blocks outermost: a transposed A (gᵀ) is then read along its rows of storage (the
    // 32 k of a block, every panel's 16 rows in turn), not down its columns.
    for kb in 0..kbs {
        for panel in 0..panels {
            let tile = line(panel, kb, 0);
            let (i0, p0) = (panel * 16, kb * 32);
            let h = mc.saturating_sub(i0).min(16);
            let d = kc - p0;
            if a.rs == 1 && h == 16 {
                // A transposed A (gᵀ): each k is a contiguous run of rows. Pair words of
                // (k, k + 1) across the 16 rows, then transposed to one row per line.
                let mut t = [Line([0; 32]); 16];
                for (q, line) in t.iter_mut().enumerate() {
                    let p = p0 + 2 * q;
                    let col = |p: usize| {
                        if p < kc {
                            T::load16(a.ptr.offset(i0 as isize + p as isize * a.cs), 16)
                        } else {
                            _mm512_setzero_ps()
                        }
                    };
                    _mm512_store_si512(line.0.as_mut_ptr().cast(), pairs(col(p), col(p + 1)));
                }
                super::sgemm::transpose16(t.as_ptr().cast(), 16, tile.cast(), 16);
            } else {
                for r in 0..16 {
                    for q in 0..32 {
                        *tile.add(r * 32 + q) = if r < h && q < d {
                            (*a.ptr
                                .offset((i0 + r) as isize * a.rs + (p0 + q) as isize * a.cs))
                            .bits()
                        } else {
                            0
                        };
                    }
                }
            }
        }
    }
}

/// B (kc × nc, its element (0, 0) at `b`) into 16-column panels of 32-deep VNNI tiles: row
/// `q` of a tile holds, for each of the 16 columns, k = 2q and 2q + 1. Columns padded to a
/// multiple of 32 and depth to a multiple of 32 with zeros.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn pack_b<T: Source>(kc: usize, nc: usize, b: Mat<T>, out: *mut u16) {
    let kbs = kc.div_ceil(32);
    let panels = nc.div_ceil(32) * 2;
    let tile = |panel: usize, kb: usize| out.add((panel * kbs + kb) * TILE);
    if b.cs == 1 {
        // A row-major B (W in g·W, x in gᵀ·x): each pair of rows read once along its length,
        // 16 columns at a time into each panel's line for that pair.
        for kb in 0..kbs {
            for q in 0..16 {
                let p = kb * 32 + 2 * q;
                let row = |p: usize| b.ptr.wrapping_offset(p as isize * b.rs);
                let (r0, r1) = (row(p), row(p + 1));
                for panel in 0..panels {
                    let j0 = panel * 16;
                    let w = nc.saturating_sub(j0).min(16);
                    let load = |r: *const T, p: usize| {
                        if p < kc && w > 0 {
                            T::load16(r.add(j0), w)
                        } else {
                            _mm512_setzero_ps()
                        }
                    };
                    let v = pairs(load(r0, p), load(r1, p + 1));
                    _mm512_store_si512(tile(panel, kb).add(q * 32).cast(), v);
                }
            }
        }
        return;
    }
    for panel in 0..panels {
        let j0 = panel * 16;
        let w = nc.saturating_sub(j0).min(16);
        for kb in 0..kbs {
            let tile = tile(panel, kb);
            let p0 = kb * 32;
            let d = kc - p0;
            if b.rs == 1 {
                // A transposed B (Wᵀ): each column is a contiguous run of k, which as bf16
                // is already that column's 16 pair words; transposed to one k-pair per line.
                let mut t = [Line([0; 32]); 16];
                for (j, line) in t.iter_mut().enumerate().take(w) {
                    let col = b.ptr.offset(p0 as isize + (j0 + j) as isize * b.cs);
                    let v = run32(
                        T::load16(col, d),
                        T::load16(col.wrapping_add(16), d.saturating_sub(16)),
                    );
                    _mm512_store_si512(line.0.as_mut_ptr().cast(), v);
                }
                super::sgemm::transpose16(t.as_ptr().cast(), 16, tile.cast(), 16);
            } else {
                for q in 0..16 {
                    for j in 0..16 {
                        for s in 0..2 {
                            let p = 2 * q + s;
                            *tile.add(q * 32 + 2 * j + s) = if j < w && p < d {
                                (*b.ptr
                                    .offset((p0 + p) as isize * b.rs + (j0 + j) as isize * b.cs))
                                .bits()
                            } else {
                                0
                            };
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GFLOP/s of the 32×32 block on panels that stay in L1 (`cargo test --release -p
    /// rustygradients-core --lib amx_block_rate -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn amx_block_rate() {
        if !usable() {
            return;
        }
        for kbs in [2usize, 4, 8, 16] {
            let pa = vec![Line([0x3f80; 32]); 2 * kbs * 16];
            let pb = vec![Line([0x3f80; 32]); 2 * kbs * 16];
            let mut c = vec![0f32; 32 * 32];
            let reps = 200_000 / kbs;
            let config = TileConfig::new();
            let t = std::time::Instant::now();
            // SAFETY: AMX usable; the panels hold 2 × kbs tiles each, C 32 × 32.
            unsafe {
                asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
                for r in 0..reps {
                    block(
                        kbs,
                        pa.as_ptr().cast(),
                        pb.as_ptr().cast(),
                        c.as_mut_ptr(),
                        32,
                        r > 0,
                    );
                }
                asm!("tilerelease", options(nostack, nomem));
            }
            let s = t.elapsed().as_secs_f64();
            let flop = (reps * kbs * 32 * 32 * 32 * 2) as f64;
            eprintln!("kbs {kbs}: {:.0} GFLOP/s", flop / s / 1e9);
        }
    }
}
