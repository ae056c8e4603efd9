//! The ops autograd records: a small set of primitives from which every public op is composed.
//! Their gradient rules live together in `backprop.rs`.
//!
//! A recorded op also remembers, in [`SavedVersions`], the storage version of every tensor its
//! gradient rule will read (PyTorch's saved-tensor version check): `backward` refuses to run a
//! rule on values that were modified in place after the forward pass read them.

use crate::backend::{BinaryOp, ReduceOp, UnaryOp};
use crate::Tensor;

/// The tensors an op read, in slot order, as `&` or `&mut` references (whichever `$op` is):
/// one list for [`Op::inputs`] and `Op::inputs_mut`.
macro_rules! inputs_of {
    ($op:expr) => {
        match $op {
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
            | Op::NormLast(a, _, _)
            | Op::Checkpoint { x: a, .. }
            | Op::CrossEntropyGrad { logits: a, .. } => vec![a],
            Op::Binary(a, b, _) | Op::Matmul(a, b) => vec![a, b],
            Op::IndexSelect(a, i, _) | Op::Gather(a, i, _) => vec![a, i],
            Op::WhereCond(m, a, b) => vec![m, a, b],
            Op::ScatterAdd(a, i, s, _) => vec![a, i, s],
            Op::Attention {
                packed: Some(qkv), ..
            } => vec![qkv],
            Op::Attention { q, k, v, .. } => vec![q, k, v],
            Op::Linear { x, w, b, r } => {
                let mut v = vec![x, w];
                v.extend(b);
                v.extend(r);
                v
            }
            Op::FeedForward {
                x,
                w1,
                b1,
                w2,
                b2,
                r,
                ..
            } => {
                let mut v = vec![x, w1];
                v.extend(b1);
                v.push(w2);
                v.extend(b2);
                v.extend(r);
                v
            }
            Op::NormAffine { x, w, b, .. } => {
                let mut v = vec![x];
                v.extend(w);
                v.extend(b);
                v
            }
            Op::CrossEntropy {
                logits, targets, ..
            } => vec![logits, targets],
            Op::Cat(ts, _) => ts.into_iter().collect(),
        }
    };
}

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
    /// Fused cross-entropy rows of contiguous `(N, C)` logits against `(N,)` targets, with each
    /// row's logsumexp kept for the rule.
    CrossEntropy {
        logits: Tensor,
        targets: Tensor,
        lse: Tensor,
        ignore: Option<i64>,
    },
    /// Cross-entropy whose forward wrote the logits' gradient over them, for an output gradient
    /// of `scale` per row (see `Storage::cross_entropy_fwd_grad`): the rule only rescales rows
    /// where the output gradient differs.
    CrossEntropyGrad {
        logits: Tensor,
        scale: f64,
    },
    /// Fused attention on `(N, T, d)` / `(N, S, d)` / `(N, S, dv)` inputs, with what the
    /// backend's forward saved for the rule (flattened; see `BackendStorage::attention_fwd`).
    Attention {
        q: Tensor,
        k: Tensor,
        v: Tensor,
        saved: Tensor,
        dims: crate::backend::AttnDims,
        /// When q, k and v are the thirds of one fused projection `(batch, rows, 3·channels)`
        /// (GPT-2's `c_attn` output), that tensor: the op's one input then, whose gradient
        /// the rule builds whole.
        packed: Option<Tensor>,
    },
    /// `x (m, k) · wᵀ + b (+ r)` with `w (n, k)`, `b (n)` and `r` (`m·n` elements), all dense
    /// ([`Tensor::linear`], [`Tensor::linear_add`]): one GEMM each way on the GPU, the bias
    /// and the residual `r` added, and the bias gradient summed, by the GEMM.
    Linear {
        x: Tensor,
        w: Tensor,
        b: Option<Tensor>,
        r: Option<Tensor>,
    },
    /// `gelu_tanh(x (m, k) · w1ᵀ + b1) · w2ᵀ + b2` ([`Tensor::feed_forward_gelu_tanh`]) as
    /// the GPU ran it, with the pre-activation `pre` and the activation `act` (both `(m, h)`)
    /// it kept for the rule.
    FeedForward {
        x: Tensor,
        w1: Tensor,
        b1: Option<Tensor>,
        w2: Tensor,
        b2: Option<Tensor>,
        pre: Tensor,
        act: Tensor,
        /// The residual the second GEMM added ([`Tensor::feed_forward_gelu_tanh_add`]).
        r: Option<Tensor>,
    },
    /// LayerNorm (RMSNorm when `rms`) with its weight and bias in one GPU kernel: the inputs
    /// `x`, `w`, `b`, and each row's mean and 1/σ in f32; the rule reads `x` and `w`.
    NormAffine {
        x: Tensor,
        w: Option<Tensor>,
        b: Option<Tensor>,
        mean: Tensor,
        rstd: Tensor,
        rms: bool,
    },
    /// Activation recomputation ([`Tensor::checkpoint`]): only the input is kept; the rule runs
    /// `f` again, with the random stream and autocast state of the forward, and backpropagates
    /// through that.
    Checkpoint {
        x: Tensor,
        f: crate::checkpoint::CheckpointFn,
        rng: Box<rand_chacha::ChaCha8Rng>,
        autocast: Option<crate::DType>,
    },
}

/// A tensor a gradient rule reads: one of the op's inputs (its position in [`Op::inputs`]) or
/// the op's own output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Input(u8),
    Output,
}

/// The most tensors any gradient rule reads (pow reads both inputs and its output; attention
/// reads q, k, v and its output).
const MAX_SAVED: usize = 4;

/// The storage versions, at record time, of the tensors an op's gradient rule reads. A fixed
/// array copied into the graph node: recording costs one atomic load per saved tensor and no
/// allocation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SavedVersions {
    entries: [(Slot, u64); MAX_SAVED],
    len: u8,
}

impl SavedVersions {
    pub(crate) const NONE: SavedVersions = SavedVersions {
        entries: [(Slot::Output, 0); MAX_SAVED],
        len: 0,
    };

    fn push(&mut self, slot: Slot, version: u64) {
        self.entries[self.len as usize] = (slot, version);
        self.len += 1;
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (Slot, u64)> + '_ {
        self.entries[..self.len as usize].iter().copied()
    }
}

impl Op {
    /// The name of the public op that recorded this one (for error messages).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Op::Unary(_, u) => u.name(),
            Op::Binary(.., b) => b.name(),
            Op::WhereCond(..) => "where_cond",
            Op::Reduce(_, r, _) => r.name(),
            Op::Matmul(..) => "matmul",
            Op::Linear { .. } => "linear",
            Op::FeedForward { .. } => "feed_forward",
            Op::ToDType(_) => "to_dtype",
            Op::ToDevice(_) => "to_device",
            Op::Copy(_) => "copy",
            Op::Reshape(_) => "reshape",
            Op::Permute(..) => "permute",
            Op::Narrow(..) => "narrow",
            Op::Expand(_) => "expand",
            Op::IndexSelect(..) => "index_select",
            Op::Gather(..) => "gather",
            Op::ScatterAdd(..) => "scatter_add",
            Op::Cat(..) => "cat",
            Op::SoftmaxLast(_, false) => "softmax",
            Op::SoftmaxLast(_, true) => "log_softmax",
            Op::NormLast(_, _, false) => "layer_norm",
            Op::NormLast(_, _, true) => "rms_norm",
            Op::Attention { .. } => "scaled_dot_product_attention",
            Op::CrossEntropy { .. } | Op::CrossEntropyGrad { .. } => "cross_entropy",
            Op::Checkpoint { .. } => "checkpoint",
            Op::NormAffine { rms: false, .. } => "layer_norm",
            Op::NormAffine { rms: true, .. } => "rms_norm",
        }
    }

    /// Calls `add` for each tensor whose values this op's gradient rule (in `backprop.rs`) reads,
    /// given which inputs need gradients, with the tensor (`None` for the output, which is being
    /// built). Must agree with that rule: a tensor read but not listed here could be modified in
    /// place unnoticed; one listed but not read gives a needless error. Internal tensors no
    /// caller can reach (attention's saved state, normalisation's `1/σ`) are not listed.
    /// With `assume_tracked`, every input counts as needing a gradient (what the rule could
    /// read at most).
    fn for_each_saved(&self, assume_tracked: bool, mut add: impl FnMut(Slot, Option<&Tensor>)) {
        use Slot::{Input, Output};
        let tracked = |t: &Tensor| assume_tracked || t.is_tracked();
        match self {
            Op::Unary(x, u) => match u {
                UnaryOp::Exp
                | UnaryOp::Sqrt
                | UnaryOp::Rsqrt
                | UnaryOp::Tanh
                | UnaryOp::Sigmoid
                | UnaryOp::Recip => add(Output, None),
                UnaryOp::Neg | UnaryOp::Sign | UnaryOp::Affine(..) => {}
                _ => add(Input(0), Some(x)),
            },
            Op::Binary(a, b, op) => {
                let (ta, tb) = (tracked(a), tracked(b));
                // ∂/∂a reads b (and a for pow); ∂/∂b reads a (and b for div, the output for pow).
                let (read_a, read_b, read_out) = match op {
                    BinaryOp::Add | BinaryOp::Sub => (false, false, false),
                    BinaryOp::Mul => (tb, ta, false),
                    BinaryOp::Div => (tb, true, false),
                    BinaryOp::Pow => (true, ta, tb),
                    BinaryOp::Maximum | BinaryOp::Minimum => (true, true, false),
                };
                if read_a {
                    add(Input(0), Some(a));
                }
                if read_b {
                    add(Input(1), Some(b));
                }
                if read_out {
                    add(Output, None);
                }
            }
            Op::WhereCond(m, ..) => add(Input(0), Some(m)),
            Op::Reduce(x, r, _) => {
                if *r != ReduceOp::Sum {
                    add(Input(0), Some(x));
                    add(Output, None);
                }
            }
            Op::Matmul(a, b) => {
                if tracked(b) {
                    add(Input(0), Some(a));
                }
                if tracked(a) {
                    add(Input(1), Some(b));
                }
            }
            Op::Linear { x, w, .. } => {
                if tracked(w) {
                    add(Input(0), Some(x));
                }
                if tracked(x) {
                    add(Input(1), Some(w));
                }
            }
            Op::FeedForward { x, w1, b1, w2, .. } => {
                // Inputs: x, w1, b1?, w2, b2?. The second layer's weight carries every gradient
                // below it.
                let below = tracked(x) || tracked(w1) || b1.as_ref().is_some_and(tracked);
                if tracked(w1) {
                    add(Input(0), Some(x));
                }
                if tracked(x) {
                    add(Input(1), Some(w1));
                }
                if below {
                    add(Input(2 + b1.is_some() as u8), Some(w2));
                }
            }
            Op::IndexSelect(_, ids, _) | Op::Gather(_, ids, _) | Op::ScatterAdd(_, ids, ..) => {
                add(Input(1), Some(ids))
            }
            Op::SoftmaxLast(..) | Op::NormLast(..) => add(Output, None),
            Op::CrossEntropy {
                logits, targets, ..
            } => {
                add(Input(0), Some(logits));
                add(Input(1), Some(targets));
            }
            // The rule reads the output too (the GPU's backward starts from rowsum(dO ∘ O)).
            Op::Attention {
                packed: Some(qkv), ..
            } => {
                add(Input(0), Some(qkv));
                add(Output, None);
            }
            Op::Attention { q, k, v, .. } => {
                add(Input(0), Some(q));
                add(Input(1), Some(k));
                add(Input(2), Some(v));
                add(Output, None);
            }
            Op::Checkpoint { x, .. } => add(Input(0), Some(x)),
            Op::CrossEntropyGrad { logits, .. } => add(Input(0), Some(logits)),
            Op::NormAffine { x, w, .. } => {
                add(Input(0), Some(x));
                if let Some(w) = w {
                    add(Input(1), Some(w));
                }
            }
            Op::ToDType(_)
            | Op::ToDevice(_)
            | Op::Copy(_)
            | Op::Reshape(_)
            | Op::Permute(..)
            | Op::Narrow(..)
            | Op::Expand(_)
            | Op::Cat(..) => {}
        }
    }

    /// The current versions of the tensors the gradient rule reads; `output_version` is that of
    /// the output's storage.
    pub(crate) fn save_versions(&self, output_version: u64) -> SavedVersions {
        let mut saved = SavedVersions::NONE;
        self.for_each_saved(false, |slot, t| {
            saved.push(slot, t.map_or(output_version, Tensor::version))
        });
        saved
    }

    /// The op with every input whose values the gradient rule can never read (whichever
    /// inputs turn out to need gradients) replaced by its [`Tensor::ghost`]: the graph then
    /// keeps only the activations backward needs, as PyTorch's saved tensors do.
    pub(crate) fn without_unread_data(mut self) -> Op {
        let mut read = vec![false; self.inputs().len()];
        self.for_each_saved(true, |slot, _| {
            if let Slot::Input(i) = slot {
                read[i as usize] = true;
            }
        });
        for (t, read) in self.inputs_mut().into_iter().zip(read) {
            // An input whose own rule reads its output (exp, softmax, ...) keeps its memory.
            if !read && !t.rule_reads_own_output() {
                *t = t.ghost();
            }
        }
        self
    }

    /// True when this op's gradient rule reads the op's output.
    pub(crate) fn reads_output(&self) -> bool {
        let mut reads = false;
        self.for_each_saved(true, |slot, _| reads |= slot == Slot::Output);
        reads
    }

    fn inputs_mut(&mut self) -> Vec<&mut Tensor> {
        inputs_of!(self)
    }

    /// The tensors this op read.
    pub(crate) fn inputs(&self) -> Vec<&Tensor> {
        inputs_of!(self)
    }

    /// Consumes the op, handing back its inputs (for iterative graph teardown).
    pub(crate) fn into_inputs(self) -> Vec<Tensor> {
        self.inputs().into_iter().cloned().collect()
    }
}
