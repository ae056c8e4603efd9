//! The operations every device backend implements. Op code above this layer never looks at the
//! device: it calls [`crate::storage::Storage`], which dispatches to a [`BackendStorage`] here.

use crate::host::HostBuffer;
use crate::{DType, Device, Error, Layout, Result};

/// Elementwise functions of one tensor. Parameterised variants carry their scalars.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnaryOp {
    Neg,
    Abs,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Sin,
    Cos,
    Tanh,
    Sigmoid,
    Relu,
    /// GELU with the exact erf formulation (PyTorch's default).
    Gelu,
    /// GELU with the tanh approximation (`approximate="tanh"`).
    GeluTanh,
    Silu,
    Softplus,
    Sqr,
    Recip,
    Erf,
    Sign,
    Powf(f64),
    Clamp(f64, f64),
    /// `x * mul + add`.
    Affine(f64, f64),
}

impl UnaryOp {
    pub fn name(&self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Abs => "abs",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Relu => "relu",
            UnaryOp::Gelu => "gelu",
            UnaryOp::GeluTanh => "gelu_tanh",
            UnaryOp::Silu => "silu",
            UnaryOp::Softplus => "softplus",
            UnaryOp::Sqr => "sqr",
            UnaryOp::Recip => "recip",
            UnaryOp::Erf => "erf",
            UnaryOp::Sign => "sign",
            UnaryOp::Powf(_) => "powf",
            UnaryOp::Clamp(..) => "clamp",
            UnaryOp::Affine(..) => "affine",
        }
    }
    /// Ops that are also defined on integer tensors.
    pub fn supports_int(&self) -> bool {
        matches!(
            self,
            UnaryOp::Neg
                | UnaryOp::Abs
                | UnaryOp::Relu
                | UnaryOp::Sqr
                | UnaryOp::Sign
                | UnaryOp::Clamp(..)
                | UnaryOp::Affine(..)
        )
    }
}

/// Elementwise functions of two tensors of the same shape (broadcasting happens above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Maximum,
    Minimum,
}

impl BinaryOp {
    pub fn name(&self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Pow => "pow",
            BinaryOp::Maximum => "maximum",
            BinaryOp::Minimum => "minimum",
        }
    }
}

/// Comparisons; the result is a `u8` mask of 0/1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn name(&self) -> &'static str {
        match self {
            CmpOp::Eq => "eq",
            CmpOp::Ne => "ne",
            CmpOp::Lt => "lt",
            CmpOp::Le => "le",
            CmpOp::Gt => "gt",
            CmpOp::Ge => "ge",
        }
    }
}

/// Reductions over a set of dims. `ArgMax`/`ArgMin` take exactly one dim and give `i64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
    ArgMax,
    ArgMin,
}

impl ReduceOp {
    pub fn name(&self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::ArgMax => "argmax",
            ReduceOp::ArgMin => "argmin",
        }
    }
}

/// Sizes of one fused attention call: `n` slices of `(t, d)` queries against `(s, d)` keys and
/// `(s, dv)` values.
#[derive(Debug, Clone, Copy)]
pub struct AttnDims {
    pub n: usize,
    pub t: usize,
    pub s: usize,
    pub d: usize,
    pub dv: usize,
    pub scale: f64,
    pub causal: bool,
    /// `Some` when q, k and v are read in place from strided `(batch, heads, rows, dim)` views
    /// (a GPU's FlashAttention only): outputs, their gradient and the input gradients are then
    /// `(batch, rows, heads, dim)`-major. `None`: contiguous `(n, rows, dim)` operands.
    pub strided: Option<AttnStrides>,
}

/// The layout of strided attention operands (see [`AttnDims::strided`]): `heads` per batch
/// entry, and for each of q, k and v its storage offset and its batch, head and row strides,
/// in elements (the last dim is contiguous).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub struct AttnStrides {
    pub heads: usize,
    pub q: [usize; 4],
    pub k: [usize; 4],
    pub v: [usize; 4],
}

impl AttnDims {
    /// Keys visible to query `i` (causal masks are top-left aligned, as PyTorch's `is_causal`).
    pub fn visible(&self, i: usize) -> usize {
        if self.causal {
            (i + 1).min(self.s)
        } else {
            self.s
        }
    }
}

/// The scalars of one Adam/AdamW update (PyTorch's rule), for the backends' `adam_step`.
#[derive(Debug, Clone, Copy)]
pub struct AdamHyper {
    /// Learning rate.
    pub lr: f64,
    /// Decay rate of the first-moment (mean) estimate.
    pub beta1: f64,
    /// Decay rate of the second-moment (uncentred variance) estimate.
    pub beta2: f64,
    /// Added to the bias-corrected `√v` before dividing, for stability.
    pub eps: f64,
    /// Weight-decay coefficient (0 for none); how it applies depends on `decoupled`.
    pub weight_decay: f64,
    /// AdamW's decoupled decay when true; an L2 term added to the gradient when false.
    pub decoupled: bool,
    /// The number of this update, counting from 1 (for bias correction).
    pub step: u64,
}

/// The distributions [`BackendDevice::rand`] samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    /// Uniform in `[0, 1)`.
    Uniform,
    /// Standard normal.
    Normal,
}

/// The handle of one device: made once per device and shared by all of its storages (a GPU's
/// context, stream, library handles, compiled kernels and memory pool live behind it). Everything
/// that creates memory on the device goes through here, so nothing is built on the host and
/// uploaded op by op.
pub trait BackendDevice: Clone {
    /// The storage this device's memory is held in.
    type Storage: BackendStorage;
    /// Moves host data onto the device (a move, not a copy, for the CPU).
    fn storage_from_host(&self, host: HostBuffer) -> Result<Self::Storage>;
    /// `n` zeros of `dtype`.
    fn zeros(&self, n: usize, dtype: DType) -> Result<Self::Storage>;
    /// `n` copies of `value` converted to `dtype`.
    fn full(&self, n: usize, value: f64, dtype: DType) -> Result<Self::Storage>;
    /// `start + i * step` for `i` in `0..n`, computed in f64 and converted to `dtype`.
    fn arange(&self, n: usize, start: f64, step: f64, dtype: DType) -> Result<Self::Storage>;
    /// `n` samples of `dist` as `dtype` (a float type), drawn from the process's seeded
    /// generator ([`crate::manual_seed`]): the same seed gives the same numbers run to run on the
    /// same device kind. The CPU draws every sample from the generator; a GPU draws one key from
    /// it and runs a counter-based generator (Philox) on the device.
    fn rand(&self, n: usize, dtype: DType, dist: Distribution) -> Result<Self::Storage>;
    /// Waits until all queued work on the device has finished and reports a failure that a
    /// kernel recorded on the device (a bad index) since the last check.
    fn synchronize(&self) -> Result<()>;
    /// `(bytes held now, most bytes held since the last reset)` by this device's allocator,
    /// where the device tracks them (GPUs); `None` for the CPU.
    fn memory_stats(&self) -> Result<Option<(u64, u64)>>;
    /// Starts a new peak for [`BackendDevice::memory_stats`].
    fn reset_peak_memory(&self) -> Result<()>;
    /// Bytes still free for new tensors, where the device reports it (GPUs; the CPU's answer
    /// comes from the OS, see [`crate::Device::available_memory`]).
    fn free_memory(&self) -> Option<u64> {
        None
    }
    /// Time per kernel since the last report, when the device is profiling (see
    /// [`crate::Device::profile_report`]).
    fn profile_report(&self) -> Option<String> {
        None
    }
}

/// The storage of one device. Every method reads its operands through their layouts and returns
/// a new contiguous storage, except `copy_into`, `add_into` and `adam_step`, which write in place.
pub trait BackendStorage: Sized {
    fn dtype(&self) -> DType;
    fn device(&self) -> Device;
    /// Number of elements held.
    fn elem_len(&self) -> usize;
    /// The elements `layout` selects, row-major, copied to the host (only those elements
    /// cross the bus).
    fn to_host(&self, layout: &Layout) -> Result<HostBuffer>;

    fn to_dtype(&self, layout: &Layout, dtype: DType) -> Result<Self>;
    /// A contiguous copy of the elements that `layout` selects.
    fn copy_strided(&self, layout: &Layout) -> Result<Self>;
    /// Copies the elements `src_l` selects into the positions `dst_l` selects (same shape).
    fn copy_into(&self, src_l: &Layout, dst: &mut Self, dst_l: &Layout) -> Result<()>;
    /// Adds the elements `src_l` selects to the positions `dst_l` selects (same shape, dtype).
    fn add_into(&self, src_l: &Layout, dst: &mut Self, dst_l: &Layout) -> Result<()>;
    /// One fused Adam update of the contiguous parameter `self` and its contiguous moments `m`
    /// and `v`, from the contiguous gradient `g` (all of one length and dtype).
    fn adam_step(&mut self, m: &mut Self, v: &mut Self, g: &Self, h: AdamHyper) -> Result<()>;
    /// `adam_step` for many `(parameter, m, v, gradient)` at once; backends that can batch
    /// them into few launches override this.
    #[allow(clippy::type_complexity)]
    fn adam_step_many(
        items: &mut [(&mut Self, &mut Self, &mut Self, &Self)],
        h: AdamHyper,
    ) -> Result<()> {
        for (p, m, v, g) in items.iter_mut() {
            p.adam_step(m, v, g, h)?;
        }
        Ok(())
    }
    fn unary(&self, layout: &Layout, op: UnaryOp) -> Result<Self>;
    /// `g · op'(x)` with `self` as `x`, fused, for the ops whose derivative depends on `x`
    /// alone and has a kernel (`Gelu`, `GeluTanh`); `g` has the shape of `x`.
    fn unary_grad(&self, layout: &Layout, g: &Self, gl: &Layout, op: UnaryOp) -> Result<Self>;
    fn binary(&self, l: &Layout, rhs: &Self, r: &Layout, op: BinaryOp) -> Result<Self>;
    fn cmp(&self, l: &Layout, rhs: &Self, r: &Layout, op: CmpOp) -> Result<Self>;
    /// `self` is a `u8` mask; picks `on_true` where it is non-zero.
    fn where_cond(
        &self,
        l: &Layout,
        on_true: &Self,
        t: &Layout,
        on_false: &Self,
        f: &Layout,
    ) -> Result<Self>;
    /// Reduces `dims` (sorted, unique); the output keeps them with size 1. `Sum` of an integer
    /// dtype gives `I64` (exact, wrapping on overflow, as PyTorch); floats keep their dtype.
    fn reduce(&self, layout: &Layout, op: ReduceOp, dims: &[usize]) -> Result<Self>;
    /// Batched matmul: both layouts have the same batch dims, `[.., m, k]` and `[.., k, n]`.
    fn matmul(&self, l: &Layout, rhs: &Self, r: &Layout) -> Result<Self>;
    /// `out[.., i, ..] = self[.., ids[i], ..]` along `dim`; `ids` is a 1-D integer tensor.
    fn index_select(&self, l: &Layout, ids: &Self, il: &Layout, dim: usize) -> Result<Self>;
    /// `out[i][j] = self[i][ids[i][j]]` along `dim` (PyTorch's `gather`).
    fn gather(&self, l: &Layout, ids: &Self, il: &Layout, dim: usize) -> Result<Self>;
    /// A copy of `self` with `src` added at `ids` along `dim` (PyTorch's `scatter_add`).
    fn scatter_add(
        &self,
        l: &Layout,
        ids: &Self,
        il: &Layout,
        src: &Self,
        sl: &Layout,
        dim: usize,
    ) -> Result<Self>;

    /// Softmax (log-softmax when `log`) over the last dim; `layout` must be contiguous.
    fn softmax_last(&self, layout: &Layout, log: bool) -> Result<Self>;
    /// The input gradient of `softmax_last` from its output `self` and the output gradient `g`.
    fn softmax_last_bwd(&self, l: &Layout, g: &Self, gl: &Layout, log: bool) -> Result<Self>;
    /// Row normalisation over the last dim: `(x̂, 1/σ)`, centred unless `rms`; contiguous input.
    fn norm_last(&self, layout: &Layout, eps: f64, rms: bool) -> Result<(Self, Self)>;
    /// The input gradient of `norm_last` from `x̂` (`self`), `1/σ` and the output gradient.
    fn norm_last_bwd(&self, rstd: &Self, g: &Self, gl: &Layout, rms: bool) -> Result<Self>;
    /// Cross-entropy rows of contiguous `(N, C)` logits against `(N,)` class indices (`i64` or
    /// `u32`, any layout): per row `logsumexp(x) - x[target]` (0 for an `ignore` target) and
    /// each row's logsumexp (for the gradient), both in f32 (f64 for f64 logits).
    /// A target outside `0..C` is an error: at once on the CPU, at the next synchronisation on a
    /// GPU (which only queues work).
    fn cross_entropy_fwd(
        &self,
        layout: &Layout,
        targets: &Self,
        tl: &Layout,
        ignore: Option<i64>,
    ) -> Result<(Self, Self)>;
    /// The logits' gradient `(softmax(x) - onehot(target)) · g[row]` (0 for ignored rows) from
    /// the forward's logsumexp and the contiguous `(N,)` output gradient `g` (in the losses'
    /// dtype: f32, or f64 for f64 logits), in the logits' dtype.
    fn cross_entropy_bwd(
        &self,
        targets: &Self,
        tl: &Layout,
        lse: &Self,
        g: &Self,
        ignore: Option<i64>,
    ) -> Result<Self>;
    /// Fused attention on contiguous `(n, t, d)`, `(n, s, d)`, `(n, s, dv)` operands (`self` is
    /// q): the output and what the backward needs besides q, k, v and that output, in a form of the
    /// backend's choosing (the CPU keeps the probabilities; a GPU keeps each row's logsumexp
    /// and recomputes them, so no `(n, t, s)` tensor outlives the forward).
    fn attention_fwd(&self, k: &Self, v: &Self, dims: AttnDims) -> Result<(Self, Self)>;
    /// Gradients of q, k and v from the forward's output `out`, what it `saved` and the
    /// output gradient `g`.
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn attention_bwd(
        &self,
        k: &Self,
        v: &Self,
        out: &Self,
        saved: &Self,
        g: &Self,
        dims: AttnDims,
    ) -> Result<(Self, Self, Self)>;
}

/// Ops that pair elements one to one (`copy_into`, `add_into`, elementwise kernels) need
/// layouts of one shape. Shared by the backends.
pub(crate) fn same_shape(op: &'static str, a: &Layout, b: &Layout) -> Result<()> {
    if a.shape() == b.shape() {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            op,
            lhs: a.shape().clone(),
            rhs: b.shape().clone(),
        })
    }
}

/// PyTorch's rule for `gather` and `scatter_add`: the index has the rank of `l` and fits inside
/// it on every dim but `dim`. Shared by the backends.
pub(crate) fn check_index_shape(
    op: &'static str,
    l: &Layout,
    il: &Layout,
    dim: usize,
) -> Result<()> {
    let ok = l.shape().rank() == il.shape().rank()
        && il
            .dims()
            .iter()
            .zip(l.dims())
            .enumerate()
            .all(|(d, (&i, &x))| d == dim || i <= x);
    if ok {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            op,
            lhs: l.shape().clone(),
            rhs: il.shape().clone(),
        })
    }
}
