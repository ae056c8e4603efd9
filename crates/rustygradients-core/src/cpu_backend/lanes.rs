//! Horizontal reductions of one short slice (a row of a softmax, a norm, an attention score
//! row): sums, sums of products and the maximum, each kept in 16 independent partial results
//! that the compiler turns into vector operations. The combination order depends only on the
//! length, so results are deterministic. All are `inline(always)`, to be compiled inside the
//! caller's AVX2 frame.

use crate::FloatDType;

/// Independent partial results per slice.
const LANES: usize = 16;

/// `Σ f(aᵢ)` over a row.
#[inline(always)]
pub(crate) fn sum_map<T: FloatDType>(a: &[T], f: impl Fn(T) -> T) -> T {
    let mut acc = [T::zero(); LANES];
    let mut chunks = a.chunks_exact(LANES);
    for c in &mut chunks {
        for (s, &v) in acc.iter_mut().zip(c) {
            *s = *s + f(v);
        }
    }
    let tail = chunks.remainder().iter().fold(T::zero(), |s, &v| s + f(v));
    acc.iter().fold(tail, |s, &v| s + v)
}

/// `Σ f(aᵢ, bᵢ)` over two rows of the same width.
#[inline(always)]
pub(crate) fn sum_map2<T: FloatDType>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> T {
    let mut acc = [T::zero(); LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for ((s, &u), &v) in acc.iter_mut().zip(x).zip(y) {
            *s = *s + f(u, v);
        }
    }
    let tail = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .fold(T::zero(), |s, (&u, &v)| s + f(u, v));
    acc.iter().fold(tail, |s, &v| s + v)
}

/// The largest element of a row (`-inf` when empty); a NaN element makes the result NaN.
#[inline(always)]
pub(crate) fn row_max<T: FloatDType>(a: &[T]) -> T {
    let mut acc = [T::neg_infinity(); LANES];
    let mut chunks = a.chunks_exact(LANES);
    let mut nan = false;
    for c in &mut chunks {
        for (m, &v) in acc.iter_mut().zip(c) {
            nan |= v.is_nan();
            *m = if v > *m { v } else { *m };
        }
    }
    let mut m = acc
        .iter()
        .fold(T::neg_infinity(), |m, &v| if v > m { v } else { m });
    for &v in chunks.remainder() {
        nan |= v.is_nan();
        m = if v > m { v } else { m };
    }
    if nan {
        T::nan()
    } else {
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_reductions_match_plain_folds() {
        for n in [0, 1, 15, 16, 17, 33, 64, 130] {
            let a: Vec<f64> = (0..n).map(|i| ((i * 37) % 11) as f64 - 4.5).collect();
            let b: Vec<f64> = (0..n).map(|i| ((i * 13) % 7) as f64 * 0.25).collect();
            let sum: f64 = a.iter().map(|x| x * 2.0).sum();
            let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            // Small integers and quarters: every order of addition is exact.
            assert_eq!(sum_map(&a, |x| x * 2.0), sum);
            assert_eq!(sum_map2(&a, &b, |x, y| x * y), dot);
            let max = a.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(row_max(&a), max);
        }
    }

    #[test]
    fn row_max_sees_nan_and_infinities_in_every_position() {
        for n in [1, 5, 16, 40] {
            for at in 0..n {
                let mut a = vec![1.0f32; n];
                a[at] = f32::NAN;
                assert!(row_max(&a).is_nan(), "NaN at {at} of {n}");
                a[at] = f32::INFINITY;
                assert_eq!(row_max(&a), f32::INFINITY);
                let ninf = vec![f32::NEG_INFINITY; n];
                assert_eq!(row_max(&ninf), f32::NEG_INFINITY);
            }
        }
    }
}
