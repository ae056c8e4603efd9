//! Branch-free f32 `exp` and `tanh`, written so that loops over slices vectorise (the library
//! calls behind `f32::exp`/`f32::tanh` are scalar). Accuracy: `exp` within 2 ulp over its range,
//! `tanh` within 2e-7 absolute; both keep NaN, ±inf and underflow to 0 exact.

const LOG2E: f32 = std::f32::consts::LOG2_E;
// ln 2 split into a part exact in f32 and the rest, so `x - n·ln2` keeps full precision.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;

/// `e^x`: `x = n·ln2 + r`, a degree-6 polynomial for `e^r` on `|r| ≤ ln2/2`, and `2^n` built
/// in the exponent bits.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    let xc = x.clamp(-87.336_55, 88.722_83);
    // n = round(xc·log2e) by the 1.5·2^23 trick, and 2^n from the bits of 2^23 + 127 + n:
    // float-only arithmetic and integer bit operations, so the loop stays in SIMD registers.
    const ROUND: f32 = 12_582_912.0;
    let n = (xc * LOG2E + ROUND) - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // Near the top of the range n reaches 128, one past the largest exponent: 2^n is built as
    // 2^min(n, 127) and the result doubled where n was 128 (e^88.7 is finite).
    let n1 = n.min(127.0);
    let biased = n1 + (8_388_608.0 + 127.0);
    let scale = f32::from_bits((biased.to_bits() & 0x7f_ffff) << 23);
    let y = p * scale * (1.0 + (n - n1));
    // Past the clamp: exact limits; NaN passes through the arithmetic above.
    if x < -87.336_55 {
        0.0
    } else if x > 88.722_83 {
        f32::INFINITY
    } else {
        y
    }
}

/// `tanh x = 1 - 2 / (e^{2x} + 1)`, with a short odd series near 0 where that form cancels.
#[inline(always)]
pub(crate) fn tanh_f32(x: f32) -> f32 {
    let e = exp_f32(2.0 * x);
    let big = 1.0 - 2.0 / (e + 1.0);
    let x2 = x * x;
    let small = x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0))));
    if x.abs() < 0.125 {
        small
    } else {
        big
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_tanh_track_the_library() {
        let mut worst_exp = 0f64;
        let mut worst_tanh = 0f64;
        let mut x = -100.0f32;
        while x < 100.0 {
            let (e, t) = (exp_f32(x) as f64, tanh_f32(x) as f64);
            let (we, wt) = ((x as f64).exp(), (x as f64).tanh());
            if we > 1e-37 && we < f32::MAX as f64 {
                worst_exp = worst_exp.max(((e - we) / we).abs());
            }
            worst_tanh = worst_tanh.max((t - wt).abs());
            x += 0.00937;
        }
        assert!(worst_exp < 3e-7, "exp relative error {worst_exp}");
        assert!(worst_tanh < 3e-7, "tanh absolute error {worst_tanh}");
        assert_eq!(exp_f32(-1000.0), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(1000.0), f32::INFINITY);
        // The top of the range, where 2^n needs the largest exponent and one more.
        for x in [88.0f32, 88.4, 88.6, 88.72] {
            let (e, we) = (exp_f32(x) as f64, (x as f64).exp());
            assert!(((e - we) / we).abs() < 3e-7, "exp({x}) = {e}, not {we}");
        }
        assert_eq!(exp_f32(88.73), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan() && tanh_f32(f32::NAN).is_nan());
        assert_eq!(tanh_f32(50.0), 1.0);
        assert_eq!(tanh_f32(-50.0), -1.0);
    }
}
