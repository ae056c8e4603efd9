//! The ops autograd records: a small set of primitives from which every public op is composed.
//! Their gradient rules live together in `backprop.rs`.

use crate::backend::{BinaryOp, ReduceOp, UnaryOp};
use crate::Tensor;

pub(crate) enum Op {
    Unary(Tensor, UnaryOp),
    /// Both inputs have the output's shape (broadcasting is an `Expand` below them).
    Binary(Tensor, Tensor, BinaryOp),
    /// `(mask, on_true, on_false)`, all of the output's shape.
    WhereCond(Tensor, Tensor, Tensor),
    /// Sum, Max or Min over sorted `dims`, keeping them with size 1.
    Reduce(Tensor, ReduceOp, Vec<usize>),
    /// Same batch dims on both sides.
    Matmul(Tensor, Tensor),
    ToDType(Tensor),
    ToDevice(Tensor),
    /// A contiguous copy.
    Copy(Tensor),
    Reshape(Tensor),
    Permute(Tensor, Vec<usize>),
    /// `(input, dim, start)`; the length is the output's size along `dim`.
    Narrow(Tensor, usize, usize),
    /// A broadcast view.
    Expand(Tensor),
    IndexSelect(Tensor, Tensor, usize),
    Gather(Tensor, Tensor, usize),
    /// `(input, index, src, dim)`.
    ScatterAdd(Tensor, Tensor, Tensor, usize),
    Cat(Vec<Tensor>, usize),
    /// Softmax over the last dim (`true`: log-softmax); the rule reads the output.
    SoftmaxLast(Tensor, bool),
    /// `(input, 1/σ per row, rms)`: row normalisation over the last dim; the rule reads `x̂`.
    NormLast(Tensor, Tensor, bool),
    /// Fused attention on `(N, T, d)` / `(N, S, d)` / `(N, S, dv)` inputs, with the forward's
    /// probabilities kept for the rule.
    Attention {
        q: Tensor,
        k: Tensor,
        v: Tensor,
        probs: Tensor,
        dims: crate::backend::AttnDims,
    },
}

impl Op {
    /// The tensors this op read.
    pub(crate) fn inputs(&self) -> Vec<&Tensor> {
        match self {
            Op::Unary(a, _)
            | Op::Reduce(a, ..)
            | Op::ToDType(a)
            | Op::ToDevice(a)
            | Op::Copy(a)
            | Op::Reshape(a)
            | Op::Permute(a, _)
            | Op::Narrow(a, ..)
            | Op::Expand(a)
            | Op::SoftmaxLast(a, _)
            | Op::NormLast(a, _, _) => vec![a],
            Op::Binary(a, b, _) | Op::Matmul(a, b) => vec![a, b],
            Op::IndexSelect(a, i, _) | Op::Gather(a, i, _) => vec![a, i],
            Op::WhereCond(m, a, b) => vec![m, a, b],
            Op::ScatterAdd(a, i, s, _) => vec![a, i, s],
            Op::Attention { q, k, v, .. } => vec![q, k, v],
            Op::Cat(ts, _) => ts.iter().collect(),
        }
    }

    /// Consumes the op, handing back its inputs (for iterative graph teardown).
    pub(crate) fn into_inputs(self) -> Vec<Tensor> {
        self.inputs().into_iter().cloned().collect()
    }
}
