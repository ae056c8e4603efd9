//! Elementwise CPU kernels: unary functions, binary arithmetic, comparisons and `where`.
//! The op is matched once per call; the per-element loop is a monomorphised closure.

use super::strided::{build, map1, map2};
use super::vec_math;
use super::HostBuf;
use super::{float_map2, map_pair, with_pair, HostBuffer};
use crate::backend::{BinaryOp, CmpOp, UnaryOp};
use crate::{Error, FloatDType, Layout, Result, WithDType};

/// Arithmetic that never panics: wrapping for integers, IEEE for floats.
pub(crate) trait Arith: WithDType {
    fn add(a: Self, b: Self) -> Self;
    fn sub(a: Self, b: Self) -> Self;
    fn mul(a: Self, b: Self) -> Self;
    fn div(a: Self, b: Self) -> Self;
    fn maximum(a: Self, b: Self) -> Self;
    fn minimum(a: Self, b: Self) -> Self;
}

macro_rules! arith_float {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            #[inline(always)] fn add(a: Self, b: Self) -> Self { a + b }
            #[inline(always)] fn sub(a: Self, b: Self) -> Self { a - b }
            #[inline(always)] fn mul(a: Self, b: Self) -> Self { a * b }
            #[inline(always)] fn div(a: Self, b: Self) -> Self { a / b }
            // NaN propagates, as in PyTorch.
            #[inline(always)] fn maximum(a: Self, b: Self) -> Self {
                if a >= b { a } else if b > a { b } else { a + b }
            }
            #[inline(always)] fn minimum(a: Self, b: Self) -> Self {
                if a <= b { a } else if b < a { b } else { a + b }
            }
        }
    )*};
}
arith_float!(f32, f64, half::f16, half::bf16);

macro_rules! arith_int {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            #[inline(always)] fn add(a: Self, b: Self) -> Self { a.wrapping_add(b) }
            #[inline(always)] fn sub(a: Self, b: Self) -> Self { a.wrapping_sub(b) }
            #[inline(always)] fn mul(a: Self, b: Self) -> Self { a.wrapping_mul(b) }
            #[inline(always)] fn div(a: Self, b: Self) -> Self { a.checked_div(b).unwrap_or(0) }
            #[inline(always)] fn maximum(a: Self, b: Self) -> Self { a.max(b) }
            #[inline(always)] fn minimum(a: Self, b: Self) -> Self { a.min(b) }
        }
    )*};
}
arith_int!(i64, u32, u8);

#[inline(always)]
fn c<T: WithDType>(v: f64) -> T {
    T::from_f64(v)
}

/// erf at the precision of `T`: f64 through `libm::erf`; narrower types through a rational
/// approximation (Abramowitz & Stegun 7.1.26, absolute error below 1.5e-7, under f32's rounding
/// near 1) that is several times faster than a correctly rounded `erff`.
#[inline(always)]
fn erf<T: FloatDType>(x: T) -> T {
    if T::DTYPE == crate::DType::F64 {
        return T::from_f64(libm::erf(x.to_f64()));
    }
    let x32 = x.to_f64() as f32;
    let a = x32.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * crate::fast_math::exp_f32(-a * a);
    T::from_f64(y.copysign(x32) as f64)
}

/// `map1` with the element expression written into the loop itself: for the transcendental ops,
/// a closure or function call per element would not be inlined into the AVX2-compiled loop, and
/// the loop would stay scalar.
macro_rules! map_inline {
    ($v:expr, $l:expr, $f:ident) => {
        match $l.contiguous_range() {
            Some(r) => {
                let s = &$v[r];
                build(
                    s.len(),
                    #[inline(always)]
                    |off, out| {
                        let n = out.len();
                        for (o, &x) in out.iter_mut().zip(&s[off..off + n]) {
                            o.write($f(x));
                        }
                    },
                )
            }
            None => map1($v, $l, $f),
        }
    };
}

// The transcendental ops, `#[inline(always)]` so `map_inline!` expands them inside its loop.
#[inline(always)]
fn exp_op<T: FloatDType>(x: T) -> T {
    x.fast_exp()
}
#[inline(always)]
fn tanh_op<T: FloatDType>(x: T) -> T {
    x.fast_tanh()
}
#[inline(always)]
fn sigmoid_op<T: FloatDType>(x: T) -> T {
    sigmoid(x, T::one())
}
#[inline(always)]
fn silu_op<T: FloatDType>(x: T) -> T {
    x * sigmoid(x, T::one())
}
#[inline(always)]
fn gelu_op<T: FloatDType>(x: T) -> T {
    c::<T>(0.5) * x * (T::one() + erf(x * c::<T>(std::f64::consts::FRAC_1_SQRT_2)))
}
#[inline(always)]
fn gelu_tanh_op<T: FloatDType>(x: T) -> T {
    let (k, a) = (
        c::<T>((2.0 / std::f64::consts::PI).sqrt()),
        c::<T>(0.044715),
    );
    c::<T>(0.5) * x * (T::one() + (k * (x + a * x * x * x)).fast_tanh())
}
/// `Φ(x) + x·φ(x)`, the derivative of exact GELU.
#[inline(always)]
fn gelu_deriv_op<T: FloatDType>(x: T) -> T {
    let half = c::<T>(0.5);
    let cdf = half * (T::one() + erf(x * c::<T>(std::f64::consts::FRAC_1_SQRT_2)));
    cdf + x * c::<T>(1.0 / (2.0 * std::f64::consts::PI).sqrt()) * (-half * x * x).fast_exp()
}
#[inline(always)]
fn gelu_tanh_deriv_op<T: FloatDType>(x: T) -> T {
    let (k, a, one, half) = (
        c::<T>((2.0 / std::f64::consts::PI).sqrt()),
        c::<T>(0.044715),
        T::one(),
        c::<T>(0.5),
    );
    let t = (k * (x + a * x * x * x)).fast_tanh();
    half * (one + t) + half * x * (one - t * t) * k * (one + c::<T>(3.0) * a * x * x)
}

fn unary_float<T: FloatDType>(v: &[T], l: &Layout, op: UnaryOp) -> Vec<T> {
    let (zero, one) = (c::<T>(0.0), c::<T>(1.0));
    match op {
        UnaryOp::Neg => map1(v, l, |x| -x),
        UnaryOp::Abs => map1(v, l, |x| x.abs()),
        UnaryOp::Exp => map_inline!(v, l, exp_op),
        UnaryOp::Log => map1(v, l, |x| x.ln()),
        UnaryOp::Sqrt => map1(v, l, |x| x.sqrt()),
        UnaryOp::Rsqrt => map1(v, l, |x| x.sqrt().recip()),
        UnaryOp::Sin => map1(v, l, |x| x.sin()),
        UnaryOp::Cos => map1(v, l, |x| x.cos()),
        UnaryOp::Tanh => map_inline!(v, l, tanh_op),
        UnaryOp::Sigmoid => map_inline!(v, l, sigmoid_op),
        // NaN passes through, as in PyTorch.
        UnaryOp::Relu => map1(v, l, move |x| if x > zero || x.is_nan() { x } else { zero }),
        UnaryOp::Gelu => map_inline!(v, l, gelu_op),
        UnaryOp::GeluTanh => map_inline!(v, l, gelu_tanh_op),
        UnaryOp::Silu => map_inline!(v, l, silu_op),
        // max(x, 0) + log1p(exp(-|x|)): exact, and no overflow for large |x|.
        UnaryOp::Softplus => map1(v, l, move |x| x.max(zero) + (-x.abs()).exp().ln_1p()),
        UnaryOp::Sqr => map1(v, l, |x| x * x),
        UnaryOp::Recip => map1(v, l, |x| x.recip()),
        UnaryOp::Erf => map1(v, l, erf::<T>),
        UnaryOp::Sign => map1(v, l, move |x| {
            if x > zero {
                one
            } else if x < zero {
                -one
            } else {
                x
            }
        }),
        UnaryOp::Powf(e) => {
            let e = c::<T>(e);
            map1(v, l, move |x| x.powf(e))
        }
        UnaryOp::Clamp(lo, hi) => {
            let (lo, hi) = (c::<T>(lo), c::<T>(hi));
            map1(v, l, move |x| {
                if x < lo {
                    lo
                } else if x > hi {
                    hi
                } else {
                    x
                }
            })
        }
        UnaryOp::Affine(m, a) => {
            let (m, a) = (c::<T>(m), c::<T>(a));
            map1(v, l, move |x| x * m + a)
        }
    }
}

/// `1 / (1 + e^{-x})`; exact limits at ±inf, no branches.
#[inline(always)]
fn sigmoid<T: FloatDType>(x: T, one: T) -> T {
    one / (one + (-x).fast_exp())
}

/// Integer unary ops are computed in f64 and converted back (saturating).
fn unary_int<T: WithDType>(v: &[T], l: &Layout, op: UnaryOp) -> Vec<T> {
    let f = move |x: f64| -> f64 {
        match op {
            UnaryOp::Neg => -x,
            UnaryOp::Abs => x.abs(),
            UnaryOp::Relu => x.max(0.0),
            UnaryOp::Sqr => x * x,
            UnaryOp::Sign => x.signum() * (x != 0.0) as i32 as f64,
            UnaryOp::Clamp(lo, hi) => x.max(lo).min(hi),
            UnaryOp::Affine(m, a) => x * m + a,
            _ => x,
        }
    };
    map1(v, l, move |x| T::from_f64(f(x.to_f64())))
}

pub(crate) fn unary(s: &HostBuffer, l: &Layout, op: UnaryOp) -> Result<HostBuffer> {
    Ok(match s {
        HostBuffer::F32(v) => HostBuffer::F32(HostBuf::from(
            l.contiguous_range()
                .and_then(|r| vec_math::unary(&v[r], op))
                .unwrap_or_else(|| unary_float(v, l, op)),
        )),
        HostBuffer::F64(v) => HostBuffer::F64(HostBuf::from(unary_float(v, l, op))),
        HostBuffer::F16(v) => HostBuffer::F16(HostBuf::from(unary_float(v, l, op))),
        HostBuffer::BF16(v) => HostBuffer::BF16(HostBuf::from(unary_float(v, l, op))),
        s if op.supports_int() => match s {
            HostBuffer::I64(v) => HostBuffer::I64(HostBuf::from(unary_int(v, l, op))),
            HostBuffer::U32(v) => HostBuffer::U32(HostBuf::from(unary_int(v, l, op))),
            HostBuffer::U8(v) => HostBuffer::U8(HostBuf::from(unary_int(v, l, op))),
            _ => unreachable!("float dtypes are matched above"),
        },
        s => {
            return Err(Error::UnsupportedDType {
                op: op.name(),
                got: crate::backend::BackendStorage::dtype(s),
                expected: "a floating-point dtype",
            })
        }
    })
}

/// `g · f'(x)` for the ops whose derivative has its own loop; the others are an error here
/// (their gradient rules are built from other ops).
fn unary_grad_float<T: FloatDType>(
    x: &[T],
    xl: &Layout,
    g: &[T],
    gl: &Layout,
    op: UnaryOp,
) -> Result<Vec<T>> {
    let d: fn(T) -> T = match op {
        UnaryOp::Gelu => gelu_deriv_op,
        UnaryOp::GeluTanh => gelu_tanh_deriv_op,
        _ => {
            return Err(Error::Backward(format!(
                "{} has no fused gradient kernel",
                op.name()
            )))
        }
    };
    Ok(map2(
        x,
        xl,
        g,
        gl,
        #[inline(always)]
        move |x, g| g * d(x),
    ))
}

pub(crate) fn unary_grad(
    x: &HostBuffer,
    xl: &Layout,
    g: &HostBuffer,
    gl: &Layout,
    op: UnaryOp,
) -> Result<HostBuffer> {
    if let (HostBuffer::F32(xv), HostBuffer::F32(gv), Some(rx), Some(rg)) =
        (x, g, xl.contiguous_range(), gl.contiguous_range())
    {
        if let Some(out) = vec_math::unary_grad(&xv[rx], &gv[rg], op) {
            return Ok(HostBuffer::F32(HostBuf::from(out)));
        }
    }
    Ok(float_map2!(op.name(), x, g, (x, g) => HostBuf::from(unary_grad_float(x, xl, g, gl, op)?)))
}

fn binary_typed<T: Arith>(a: &[T], la: &Layout, b: &[T], lb: &Layout, op: BinaryOp) -> Vec<T> {
    match op {
        BinaryOp::Add => map2(a, la, b, lb, <T as Arith>::add),
        BinaryOp::Sub => map2(a, la, b, lb, <T as Arith>::sub),
        BinaryOp::Mul => map2(a, la, b, lb, <T as Arith>::mul),
        BinaryOp::Div => map2(a, la, b, lb, <T as Arith>::div),
        BinaryOp::Maximum => map2(a, la, b, lb, <T as Arith>::maximum),
        BinaryOp::Minimum => map2(a, la, b, lb, <T as Arith>::minimum),
        // Integer pow is rejected above this layer; computing in f64 keeps this total.
        BinaryOp::Pow => map2(a, la, b, lb, |x, y| {
            T::from_f64(x.to_f64().powf(y.to_f64()))
        }),
    }
}

fn pow_float<T: FloatDType>(a: &[T], la: &Layout, b: &[T], lb: &Layout) -> Vec<T> {
    map2(a, la, b, lb, |x, y| x.powf(y))
}

pub(crate) fn binary(
    a: &HostBuffer,
    la: &Layout,
    b: &HostBuffer,
    lb: &Layout,
    op: BinaryOp,
) -> Result<HostBuffer> {
    if op == BinaryOp::Pow {
        match (a, b) {
            (HostBuffer::F32(x), HostBuffer::F32(y)) => {
                return Ok(HostBuffer::F32(HostBuf::from(pow_float(x, la, y, lb))))
            }
            (HostBuffer::F64(x), HostBuffer::F64(y)) => {
                return Ok(HostBuffer::F64(HostBuf::from(pow_float(x, la, y, lb))))
            }
            (HostBuffer::F16(x), HostBuffer::F16(y)) => {
                return Ok(HostBuffer::F16(HostBuf::from(pow_float(x, la, y, lb))))
            }
            (HostBuffer::BF16(x), HostBuffer::BF16(y)) => {
                return Ok(HostBuffer::BF16(HostBuf::from(pow_float(x, la, y, lb))))
            }
            _ => {}
        }
    }
    Ok(map_pair!(op.name(), a, b, (x, y) => binary_typed(x, la, y, lb, op)))
}

fn cmp_typed<T: WithDType>(a: &[T], la: &Layout, b: &[T], lb: &Layout, op: CmpOp) -> Vec<u8> {
    match op {
        CmpOp::Eq => map2(a, la, b, lb, |x, y| (x == y) as u8),
        CmpOp::Ne => map2(a, la, b, lb, |x, y| (x != y) as u8),
        CmpOp::Lt => map2(a, la, b, lb, |x, y| (x < y) as u8),
        CmpOp::Le => map2(a, la, b, lb, |x, y| (x <= y) as u8),
        CmpOp::Gt => map2(a, la, b, lb, |x, y| (x > y) as u8),
        CmpOp::Ge => map2(a, la, b, lb, |x, y| (x >= y) as u8),
    }
}

pub(crate) fn cmp(
    a: &HostBuffer,
    la: &Layout,
    b: &HostBuffer,
    lb: &Layout,
    op: CmpOp,
) -> Result<HostBuffer> {
    Ok(HostBuffer::U8(
        with_pair!(op.name(), a, b, (x, y) => HostBuf::from(cmp_typed(x, la, y, lb, op))),
    ))
}

pub(crate) fn where_cond(
    m: &HostBuffer,
    lm: &Layout,
    t: &HostBuffer,
    lt: &Layout,
    f: &HostBuffer,
    lf: &Layout,
) -> Result<HostBuffer> {
    let HostBuffer::U8(mask) = m else {
        return Err(Error::UnsupportedDType {
            op: "where_cond",
            got: crate::backend::BackendStorage::dtype(m),
            expected: "a u8 mask",
        });
    };
    // Pick the index first, then the value: one pass over three strided inputs.
    let picks = map1(mask, lm, |m| m != 0);
    let pl = Layout::contiguous(lm.shape().clone());
    Ok(map_pair!("where_cond", t, f, (x, y) => {
        let tv = map2(&picks, &pl, x, lt, |p, v| (p, v));
        map2(&tv, &pl, y, lf, |(p, a), b| if p { a } else { b })
    }))
}
