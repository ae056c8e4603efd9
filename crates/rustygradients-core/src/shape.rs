//! Shapes, dimension arguments (negative dims count from the end, as in PyTorch) and the NumPy
//! broadcasting rule.

use crate::{Error, Result};

/// The sizes of a tensor's dimensions; `[]` is a scalar.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

impl Shape {
    /// The shape with these dim sizes (`vec![]` for a scalar).
    pub fn new(dims: Vec<usize>) -> Self {
        Shape(dims)
    }
    /// The sizes of the dims.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    /// Number of dims (0 for a scalar).
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    /// Number of elements (1 for a scalar); saturates instead of overflowing.
    pub fn elem_count(&self) -> usize {
        self.0.iter().fold(1usize, |acc, &d| acc.saturating_mul(d))
    }
    /// Row-major (C-contiguous) strides, in elements.
    pub fn stride_contiguous(&self) -> Vec<usize> {
        let mut strides = vec![0; self.0.len()];
        let mut acc = 1;
        for (s, &d) in strides.iter_mut().zip(self.0.iter()).rev() {
            *s = acc;
            acc *= d;
        }
        strides
    }

    /// The shape after a keepdim reduction over `dims` (each becomes size 1).
    pub fn reduced(&self, dims: &[usize]) -> Shape {
        Shape(
            self.0
                .iter()
                .enumerate()
                .map(|(i, &d)| if dims.contains(&i) { 1 } else { d })
                .collect(),
        )
    }

    /// The broadcast of two shapes under NumPy's rule (align right; sizes equal or one is 1).
    pub fn broadcast_with(&self, rhs: &Shape, op: &'static str) -> Result<Shape> {
        let (l, r) = (self.dims(), rhs.dims());
        let rank = l.len().max(r.len());
        let mut out = vec![0; rank];
        for (i, o) in out.iter_mut().enumerate() {
            let ld = if i + l.len() >= rank {
                l[i + l.len() - rank]
            } else {
                1
            };
            let rd = if i + r.len() >= rank {
                r[i + r.len() - rank]
            } else {
                1
            };
            *o = match (ld, rd) {
                (a, b) if a == b => a,
                (1, b) => b,
                (a, 1) => a,
                _ => {
                    return Err(Error::BroadcastIncompatible {
                        op,
                        lhs: self.clone(),
                        rhs: rhs.clone(),
                    })
                }
            };
        }
        Ok(Shape(out))
    }
}

impl std::fmt::Debug for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<Vec<usize>> for Shape {
    fn from(v: Vec<usize>) -> Self {
        Shape(v)
    }
}
impl From<&[usize]> for Shape {
    fn from(v: &[usize]) -> Self {
        Shape(v.to_vec())
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(v: [usize; N]) -> Self {
        Shape(v.to_vec())
    }
}
impl<const N: usize> From<&[usize; N]> for Shape {
    fn from(v: &[usize; N]) -> Self {
        Shape(v.to_vec())
    }
}
impl From<()> for Shape {
    fn from(_: ()) -> Self {
        Shape(vec![])
    }
}
impl From<usize> for Shape {
    fn from(d: usize) -> Self {
        Shape(vec![d])
    }
}
impl From<&Shape> for Shape {
    fn from(s: &Shape) -> Self {
        s.clone()
    }
}

/// One dimension argument. Negative values count from the end, as in PyTorch.
pub trait Dim: Copy {
    /// The dim as given (negative counts from the end).
    fn as_i64(self) -> i64;
    /// Resolves against a rank; `extra` widens the range (used by `unsqueeze`/`stack`).
    fn resolve_with(
        self,
        rank: usize,
        extra: usize,
        shape: &Shape,
        op: &'static str,
    ) -> Result<usize> {
        let d = self.as_i64();
        let r = (rank + extra) as i64;
        let idx = if d < 0 { d + r } else { d };
        if idx < 0 || idx >= r {
            return Err(Error::DimOutOfRange {
                op,
                dim: d,
                shape: shape.clone(),
            });
        }
        Ok(idx as usize)
    }
    /// The index in `0..shape.rank()` this dim names; [`Error::DimOutOfRange`], naming `op`,
    /// when there is none.
    fn resolve(self, shape: &Shape, op: &'static str) -> Result<usize> {
        self.resolve_with(shape.rank(), 0, shape, op)
    }
}

macro_rules! dim_int {
    ($($t:ty),*) => {$(
        impl Dim for $t {
            fn as_i64(self) -> i64 { self as i64 }
        }
    )*};
}
dim_int!(usize, i32, i64, isize);

/// A set of dimensions (for reductions): one dim, an array, a slice or a vector of dims.
pub trait Dims {
    /// The dims as given, before resolution (negative counts from the end).
    fn to_i64s(&self) -> Vec<i64>;
    /// Resolves every dim, sorted, rejecting duplicates.
    fn resolve(&self, shape: &Shape, op: &'static str) -> Result<Vec<usize>> {
        let mut out = Vec::new();
        for d in self.to_i64s() {
            let idx = d.resolve(shape, op)?;
            if out.contains(&idx) {
                return Err(Error::DuplicateDim { op, dim: idx });
            }
            out.push(idx);
        }
        out.sort_unstable();
        Ok(out)
    }
}

macro_rules! dims_int {
    ($($t:ty),*) => {$(
        impl Dims for $t {
            fn to_i64s(&self) -> Vec<i64> { vec![*self as i64] }
        }
        impl<const N: usize> Dims for [$t; N] {
            fn to_i64s(&self) -> Vec<i64> { self.iter().map(|&d| d as i64).collect() }
        }
        impl<const N: usize> Dims for &[$t; N] {
            fn to_i64s(&self) -> Vec<i64> { self.iter().map(|&d| d as i64).collect() }
        }
        impl Dims for &[$t] {
            fn to_i64s(&self) -> Vec<i64> { self.iter().map(|&d| d as i64).collect() }
        }
        impl Dims for Vec<$t> {
            fn to_i64s(&self) -> Vec<i64> { self.iter().map(|&d| d as i64).collect() }
        }
    )*};
}
dims_int!(usize, i32, i64, isize);

/// Every dimension of a tensor (`x.sum(All, false)` reduces to a scalar).
#[derive(Clone, Copy, Debug)]
pub struct All;

impl Dims for All {
    /// `All` depends on the rank, so it has no fixed list; [`Dims::resolve`] expands it.
    fn to_i64s(&self) -> Vec<i64> {
        Vec::new()
    }
    fn resolve(&self, shape: &Shape, _op: &'static str) -> Result<Vec<usize>> {
        Ok((0..shape.rank()).collect())
    }
}
