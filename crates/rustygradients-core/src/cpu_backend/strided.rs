//! Walking strided layouts: the loops every CPU kernel is built from. Contiguous inputs take a
//! slice fast path; strided ones walk the innermost dim as a block. Large outputs are filled in
//! parallel chunks whose inner loops are plain slice loops the compiler vectorises.

use std::mem::MaybeUninit;
use std::sync::OnceLock;

use rayon::prelude::*;

use crate::Layout;

/// Below this many elements, threads cost more than they save.
pub(crate) const PAR_MIN: usize = 1 << 15;
/// Elements per parallel task.
pub(crate) const CHUNK: usize = 1 << 13;

/// Rows of width `w` per parallel task: at least [`CHUNK`] elements each, so that a small
/// tensor on a many-core machine is split into a few tasks, not one per thread (each task
/// costs a wake-up and a steal).
pub(crate) fn rows_per_task(w: usize) -> usize {
    CHUNK.div_ceil(w.max(1))
}

/// The instruction-set level the vectorised kernels run at: one per process, from the CPU and
/// the `RG_CPU_ISA` environment variable (see [`has_avx2`]). Ordered: a level implies the ones
/// below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Isa {
    /// The portable loops, compiled for the target's baseline (SSE2 on x86-64).
    Scalar,
    /// AVX2 + FMA (x86-64).
    Avx2,
    /// AVX-512 F, BW, VL and DQ (x86-64-v4) on top of AVX2 + FMA: the f32 GEMM runs 512-bit
    /// micro-kernels (`sgemm.rs`), the loops under [`simd`] and the vector math
    /// (`vec_math.rs`) run 16 lanes wide, and attention does on Intel CPUs (elsewhere it runs
    /// its AVX2 code, measured faster on a Zen 5).
    Avx512,
}

impl Isa {
    /// The highest level this CPU runs.
    fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                {
                    return Isa::Avx512;
                }
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// The level for a value of `RG_CPU_ISA` (`None` when unset) on a CPU whose highest level
    /// is `best`, and a warning when the request cannot be honoured as written. Never above
    /// `best`: a level the CPU lacks falls back to scalar code.
    fn choose(request: Option<&str>, best: Isa) -> (Isa, Option<String>) {
        let Some(raw) = request else {
            return (best, None);
        };
        let wanted = match raw.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => return (best, None),
            "scalar" => Isa::Scalar,
            "avx2" => Isa::Avx2,
            "avx512" => Isa::Avx512,
            _ => {
                return (
                    best,
                    Some(format!(
                        "RG_CPU_ISA={raw:?} is not one of auto, scalar, avx2, avx512; detecting \
                         ({best:?})"
                    )),
                )
            }
        };
        if wanted <= best {
            (wanted, None)
        } else {
            (
                Isa::Scalar,
                Some(format!(
                    "RG_CPU_ISA={raw:?}: this CPU lacks it (best: {best:?}); using scalar code"
                )),
            )
        }
    }
}

/// The process's [`Isa`], decided on the first call (one atomic load afterwards).
#[inline]
pub(crate) fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let request = std::env::var("RG_CPU_ISA").ok();
        let (isa, warning) = Isa::choose(request.as_deref(), Isa::detect());
        if let Some(w) = warning {
            eprintln!("rustygradients: {w}");
        }
        isa
    })
}

/// True when the AVX2 + FMA kernels are to run (the feature set our vectorised loops are
/// compiled for); false selects the scalar fallbacks. This is the one place that choice is
/// made, once per process, from the environment variable `RG_CPU_ISA`:
///
/// - unset, empty or `auto`: detect; AVX2 + FMA when the CPU has both;
/// - `scalar`: the scalar paths, even on a CPU with AVX2 (to test or compare them);
/// - `avx2`: the AVX2 + FMA paths (also on an AVX-512 CPU); on a CPU without them, a warning
///   and the scalar paths (unsupported instructions are never executed);
/// - `avx512`: the AVX-512 kernels (the f32 GEMM, the vector layer's kernels, and every loop
///   run through [`simd`]); on a CPU without AVX-512, a warning and the scalar paths.
///
/// Any other value warns on stderr and detects. The variable is read on the first call only,
/// so it must be set before the process runs its first kernel.
#[inline]
pub(crate) fn has_avx2() -> bool {
    isa() >= Isa::Avx2
}

/// Runs `f` compiled for the process's ISA level: AVX-512 (the loops in `f` are inlined into
/// the feature-enabled frame and vectorised 16-wide), AVX2 + FMA (8-wide), or plain code.
#[inline(always)]
pub(crate) fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if isa() >= Isa::Avx512 {
            // SAFETY: the AVX-512 level is chosen only when the CPU was detected to have it.
            return unsafe { with_avx512(f) };
        }
        if has_avx2() {
            // SAFETY: `has_avx2` is true only when the CPU was detected to have AVX2 and FMA.
            return unsafe { with_avx2(f) };
        }
    }
    f()
}

/// A vector of `n` elements written by `fill(offset, out_chunk)` over disjoint chunks, in
/// parallel when large; every element is written exactly once before the length is set.
pub(crate) fn build<U: Send>(
    n: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<U>]) + Sync + Send,
) -> Vec<U> {
    let mut out: Vec<U> = Vec::with_capacity(n);
    let spare = &mut out.spare_capacity_mut()[..n];
    if n >= PAR_MIN {
        spare.par_chunks_mut(CHUNK).enumerate().for_each(|(i, c)| {
            simd(
                #[inline(always)]
                || fill(i * CHUNK, c),
            )
        });
    } else {
        simd(
            #[inline(always)]
            || fill(0, spare),
        );
    }
    // SAFETY: `fill` wrote every one of the first `n` slots (each caller's loop covers its
    // whole chunk).
    unsafe { out.set_len(n) };
    out
}

/// `f` applied to each element that `l` selects, into a new contiguous vector.
pub(crate) fn map1<T: Copy + Sync, U: Send>(
    v: &[T],
    l: &Layout,
    f: impl Fn(T) -> U + Sync + Send,
) -> Vec<U> {
    if let Some(r) = l.contiguous_range() {
        let s = &v[r];
        return build(
            s.len(),
            #[inline(always)]
            |off, out| {
                let n = out.len();
                for (o, &x) in out.iter_mut().zip(&s[off..off + n]) {
                    o.write(f(x));
                }
            },
        );
    }
    let mut out = Vec::with_capacity(l.elem_count());
    l.for_each_offset(|i| out.push(f(v[i])));
    out
}

/// `f` applied pairwise to the elements of two same-shape layouts.
pub(crate) fn map2<T: Copy + Sync, U: Copy + Sync, V: Send>(
    a: &[T],
    la: &Layout,
    b: &[U],
    lb: &Layout,
    f: impl Fn(T, U) -> V + Sync + Send,
) -> Vec<V> {
    if let (Some(ra), Some(rb)) = (la.contiguous_range(), lb.contiguous_range()) {
        let (sa, sb) = (&a[ra], &b[rb]);
        return build(
            sa.len(),
            #[inline(always)]
            |off, out| {
                let n = out.len();
                for ((o, &x), &y) in out.iter_mut().zip(&sa[off..off + n]).zip(&sb[off..off + n]) {
                    o.write(f(x, y));
                }
            },
        );
    }
    // Broadcast or strided: rows of the innermost dim.
    let (oa, n, sa) = la.blocks();
    let (ob, _, sb) = lb.blocks();
    let starts: Vec<(usize, usize)> = oa.zip(ob).collect();
    let total = la.elem_count();
    if n == 0 {
        return Vec::new();
    }
    let mut out: Vec<V> = Vec::with_capacity(total);
    let spare = &mut out.spare_capacity_mut()[..total];
    if total >= PAR_MIN {
        spare
            .par_chunks_mut(n)
            .zip(starts.par_iter())
            .for_each(|(o, &s)| {
                simd(
                    #[inline(always)]
                    || map2_row(a, b, s, n, (sa, sb), &f, o),
                )
            });
    } else {
        simd(
            #[inline(always)]
            || {
                spare
                    .chunks_mut(n)
                    .zip(starts.iter())
                    .for_each(|(o, &s)| map2_row(a, b, s, n, (sa, sb), &f, o))
            },
        );
    }
    // SAFETY: the rows (one per start) tile the `total` slots and each row writes all of its own.
    unsafe { out.set_len(total) };
    out
}

/// One output row of [`map2`]: each side's row read as a slice (stride 1), a repeated scalar
/// (stride 0) or a strided walk. Always inlined, so the loop is compiled inside the caller's
/// AVX2 frame.
#[inline(always)]
fn map2_row<T: Copy, U: Copy, V>(
    a: &[T],
    b: &[U],
    (ia, ib): (usize, usize),
    n: usize,
    strides: (usize, usize),
    f: &impl Fn(T, U) -> V,
    out: &mut [MaybeUninit<V>],
) {
    match strides {
        (1, 1) => out
            .iter_mut()
            .zip(&a[ia..ia + n])
            .zip(&b[ib..ib + n])
            .for_each(|((o, &x), &y)| {
                o.write(f(x, y));
            }),
        (1, 0) => {
            let y = b[ib];
            out.iter_mut().zip(&a[ia..ia + n]).for_each(|(o, &x)| {
                o.write(f(x, y));
            })
        }
        (0, 1) => {
            let x = a[ia];
            out.iter_mut().zip(&b[ib..ib + n]).for_each(|(o, &y)| {
                o.write(f(x, y));
            })
        }
        (sa, sb) => out.iter_mut().enumerate().for_each(|(j, o)| {
            o.write(f(a[ia + j * sa], b[ib + j * sb]));
        }),
    }
}

/// A contiguous copy of what `l` selects.
pub(crate) fn copy_strided<T: Copy + Sync + Send>(v: &[T], l: &Layout) -> Vec<T> {
    if let Some(r) = l.contiguous_range() {
        return v[r].to_vec();
    }
    let (outer, n, stride) = l.blocks();
    let mut out = Vec::with_capacity(l.elem_count());
    for start in outer {
        if stride == 1 {
            out.extend_from_slice(&v[start..start + n]);
        } else {
            out.extend((0..n).map(|j| v[start + j * stride]));
        }
    }
    out
}

/// Combines each element `ls` selects from `src` into the position `ld` selects in `dst` with
/// `f(dst_elem, src_elem)`: a copy, or an accumulation.
#[inline(always)]
pub(crate) fn combine_into<T: Copy + Send + Sync>(
    src: &[T],
    ls: &Layout,
    dst: &mut [T],
    ld: &Layout,
    f: impl Fn(&mut T, T) + Sync + Send,
) {
    if let (Some(rs), Some(rd)) = (ls.contiguous_range(), ld.contiguous_range()) {
        let (s, d) = (&src[rs], &mut dst[rd]);
        if d.len() >= PAR_MIN {
            d.par_chunks_mut(CHUNK)
                .zip(s.par_chunks(CHUNK))
                .for_each(|(d, s)| simd(|| d.iter_mut().zip(s).for_each(|(d, &s)| f(d, s))));
        } else {
            simd(|| d.iter_mut().zip(s).for_each(|(d, &s)| f(d, s)));
        }
        return;
    }
    let (os, n, ss) = ls.blocks();
    let (od, _, sd) = ld.blocks();
    simd(|| {
        for (is, id) in os.zip(od) {
            if ss == 1 && sd == 1 {
                dst[id..id + n]
                    .iter_mut()
                    .zip(&src[is..is + n])
                    .for_each(|(d, &s)| f(d, s));
            } else {
                for j in 0..n {
                    f(&mut dst[id + j * sd], src[is + j * ss]);
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rg_cpu_isa_picks_a_level_the_cpu_runs() {
        use Isa::{Avx2, Avx512, Scalar};
        for best in [Scalar, Avx2, Avx512] {
            for unset in [None, Some(""), Some("auto"), Some(" AUTO ")] {
                assert_eq!(Isa::choose(unset, best), (best, None));
            }
            assert_eq!(Isa::choose(Some("scalar"), best), (Scalar, None));
            assert_eq!(Isa::choose(Some("Scalar"), best), (Scalar, None));
            // Unknown levels warn and detect.
            for other in ["avx512f", "sse", "scaler"] {
                let (isa, warning) = Isa::choose(Some(other), best);
                assert_eq!(isa, best);
                assert!(warning.unwrap().contains(other));
            }
        }
        assert_eq!(Isa::choose(Some("avx2"), Avx2), (Avx2, None));
        assert_eq!(Isa::choose(Some("avx2"), Avx512), (Avx2, None));
        assert_eq!(Isa::choose(Some("avx512"), Avx512), (Avx512, None));
        // Requested on a CPU without it: scalar code, with a warning.
        for (want, best) in [("avx2", Scalar), ("avx512", Avx2), ("avx512", Scalar)] {
            let (isa, warning) = Isa::choose(Some(want), best);
            assert_eq!(isa, Scalar);
            assert!(warning.is_some());
        }
    }

    #[test]
    fn has_avx2_never_exceeds_the_cpu() {
        assert!(isa() <= Isa::detect());
        assert_eq!(has_avx2(), isa() >= Isa::Avx2);
        if std::env::var("RG_CPU_ISA").as_deref() == Ok("scalar") {
            assert!(!has_avx2());
        }
    }
}
