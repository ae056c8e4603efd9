//! The `cpu-blas` feature: f32 and f64 matmul through the system's OpenBLAS (CBLAS), for users
//! who want to compare it with our own kernels or prefer it. OpenBLAS threads each product
//! itself, with as many threads as rayon has (set once); a batch runs its products one by one.

use std::sync::Once;

use cblas_sys::{CBLAS_LAYOUT, CBLAS_TRANSPOSE};

use super::strided::map1;
use crate::Layout;

// Links the system's libopenblas, which also provides the `cblas_*` functions cblas-sys declares.
#[link(name = "openblas")]
extern "C" {
    /// OpenBLAS's own (not part of CBLAS): the threads its kernels use.
    fn openblas_set_num_threads(n: std::ffi::c_int);
}

/// An element type OpenBLAS multiplies.
pub(crate) trait Blas: Copy + Default + Send + Sync + 'static {
    /// `cblas_?gemm`, row-major, `C = A·B` (alpha 1, beta 0).
    ///
    /// # Safety
    /// The pointers address matrices of the sizes and leading dimensions given.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        a: *const Self,
        lda: usize,
        b: *const Self,
        ldb: usize,
        c: *mut Self,
    );
}

fn trans(t: bool) -> CBLAS_TRANSPOSE {
    if t {
        CBLAS_TRANSPOSE::CblasTrans
    } else {
        CBLAS_TRANSPOSE::CblasNoTrans
    }
}

macro_rules! blas_impl {
    ($t:ty, $f:ident) => {
        impl Blas for $t {
            unsafe fn gemm(
                ta: bool,
                tb: bool,
                m: usize,
                n: usize,
                k: usize,
                a: *const $t,
                lda: usize,
                b: *const $t,
                ldb: usize,
                c: *mut $t,
            ) {
                cblas_sys::$f(
                    CBLAS_LAYOUT::CblasRowMajor,
                    trans(ta),
                    trans(tb),
                    m as i32,
                    n as i32,
                    k as i32,
                    1.0,
                    a,
                    lda as i32,
                    b,
                    ldb as i32,
                    0.0,
                    c,
                    n as i32,
                );
            }
        }
    };
}
blas_impl!(f32, cblas_sgemm);
blas_impl!(f64, cblas_dgemm);

/// How CBLAS reads a `rows × cols` matrix with strides `(rs, cs)`: `(transposed, leading
/// dimension)`, or `None` when neither its rows nor its columns are contiguous.
fn describe(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<(bool, usize)> {
    if cs == 1 || cols == 1 {
        let ld = if rows == 1 { cols } else { rs };
        return (ld >= cols.max(1)).then_some((false, ld));
    }
    if rs == 1 || rows == 1 {
        let ld = if cols == 1 { rows } else { cs };
        return (ld >= rows.max(1)).then_some((true, ld));
    }
    None
}

/// `out[b] = a[b] · b[b]` for `[.., m, k]` and `[.., k, n]` layouts of equal batch dims, as
/// one contiguous `[.., m, n]` vector. Matrices CBLAS cannot read in place are copied first.
/// `None` for sizes beyond CBLAS's 32-bit integers (our own GEMM runs those).
pub(crate) fn gemm_batched<T: Blas>(a: &[T], la: &Layout, b: &[T], lb: &Layout) -> Option<Vec<T>> {
    static THREADS: Once = Once::new();
    THREADS.call_once(|| {
        // SAFETY: a plain setter of OpenBLAS's thread count.
        unsafe { openblas_set_num_threads(rayon::current_num_threads() as std::ffi::c_int) }
    });
    let rank = la.dims().len();
    let (m, k, n) = (
        la.dims()[rank - 2],
        la.dims()[rank - 1],
        lb.dims()[rank - 1],
    );
    let batch: usize = la.dims()[..rank - 2].iter().product();
    let fits = |v: usize| v <= i32::MAX as usize;
    let lds = |l: &Layout| l.strides()[rank - 2].max(l.strides()[rank - 1]);
    if ![m, k, n, lds(la), lds(lb)].into_iter().all(fits) {
        return None;
    }
    let mut out = vec![T::default(); batch * m * n];
    if m == 0 || n == 0 || k == 0 {
        return Some(out);
    }
    // One operand as CBLAS reads it: in place, or a contiguous copy.
    let prepare = |v: &[T], l: &Layout| -> (Vec<T>, Layout) {
        let (r, c) = (l.dims()[rank - 2], l.dims()[rank - 1]);
        let (rs, cs) = (l.strides()[rank - 2], l.strides()[rank - 1]);
        if describe(r, c, rs, cs).is_some() {
            (Vec::new(), l.clone())
        } else {
            (map1(v, l, |x| x), Layout::contiguous(l.shape().clone()))
        }
    };
    let ((ca, la2), (cb, lb2)) = (prepare(a, la), prepare(b, lb));
    let (sa, sb) = (
        if ca.is_empty() { a } else { &ca[..] },
        if cb.is_empty() { b } else { &cb[..] },
    );
    let offsets = |l: &Layout| -> Vec<usize> {
        Layout::new(
            crate::Shape::new(l.dims()[..rank - 2].to_vec()),
            l.strides()[..rank - 2].to_vec(),
            l.offset(),
        )
        .offsets()
        .collect()
    };
    let (oa, ob) = (offsets(&la2), offsets(&lb2));
    let (ta, lda) = describe(m, k, la2.strides()[rank - 2], la2.strides()[rank - 1])
        .expect("a contiguous copy is row-major");
    let (tb, ldb) = describe(k, n, lb2.strides()[rank - 2], lb2.strides()[rank - 1])
        .expect("a contiguous copy is row-major");
    for (i, (&pa, &pb)) in oa.iter().zip(&ob).enumerate() {
        // SAFETY: the layouts keep every position inside their storages (this crate's view ops
        // guarantee it), `describe` checked the leading dimensions, and `out` holds `m × n`
        // elements per batch entry.
        unsafe {
            T::gemm(
                ta,
                tb,
                m,
                n,
                k,
                sa.as_ptr().add(pa),
                lda,
                sb.as_ptr().add(pb),
                ldb,
                out.as_mut_ptr().add(i * m * n),
            );
        }
    }
    Some(out)
}
