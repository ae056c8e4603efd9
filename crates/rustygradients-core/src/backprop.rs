//! Reverse-mode autodiff: an iterative topological sort of the recorded graph, then every op's
//! gradient rule, all in the one `match` of [`grad_rule`]. Gradients are ordinary tensors, so this
//! works on every device. The graph is freed as it is walked.

use std::collections::{HashMap, HashSet};

use crate::backend::{BinaryOp, ReduceOp, UnaryOp};
use crate::op::Op;
use crate::{grad_mode::NoGradGuard, Error, Result, Shape, Tensor, TensorId};

impl Tensor {
    /// Backpropagates from this one-element tensor, accumulating into every leaf's `grad()`.
    pub fn backward(&self) -> Result<()> {
        if self.elem_count() != 1 {
            return Err(Error::Backward(format!(
                "backward() needs a one-element output, got shape {}; use backward_with(grad)",
                self.shape()
            )));
        }
        self.backward_with(&self.ones_like()?)
    }

    /// Backpropagates with `grad` as the gradient of this tensor (same shape and dtype).
    pub fn backward_with(&self, grad: &Tensor) -> Result<()> {
        if !self.is_tracked() {
            return Err(Error::Backward(
                "the tensor does not require grad and has no recorded op".into(),
            ));
        }
        if grad.shape() != self.shape()
            || grad.dtype() != self.dtype()
            || grad.device() != self.device()
        {
            return Err(Error::Backward(format!(
                "gradient of shape {} ({:?}, {}) does not match the output of shape {} ({:?}, {})",
                grad.shape(),
                grad.dtype(),
                grad.device(),
                self.shape(),
                self.dtype(),
                self.device()
            )));
        }
        let mut order = self.sorted_graph()?;
        let _no_grad = NoGradGuard::new();
        let mut grads: HashMap<TensorId, Tensor> = HashMap::new();
        grads.insert(self.id(), grad.clone());
        // Popped, not iterated: each node's handle (and so any memory only it still holds) is
        // released as soon as its rule has run.
        while let Some(node) = order.pop() {
            let node = &node;
            let op = node
                .0
                .node
                .op
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            let Some(g) = grads.remove(&node.id()) else {
                continue;
            };
            let Some(op) = op else {
                if node.requires_grad() {
                    let g = g.contiguous()?;
                    let acc = match node.grad() {
                        Some(prev) => prev.add(&g)?,
                        None => g,
                    };
                    node.set_grad_unchecked(Some(acc));
                }
                continue;
            };
            let rule = grad_rule(node, &op, &g, &mut |t| take_prior(&mut grads, t))?;
            for (input, ig) in rule {
                if !input.is_tracked() {
                    continue;
                }
                let acc = accumulate(grads.remove(&input.id()), &input, ig)?;
                grads.insert(input.id(), acc);
            }
        }
        Ok(())
    }

    /// Every tracked node reachable from `self`, inputs before the ops that read them. Fails,
    /// changing nothing, if part of the graph was already freed by an earlier `backward`, or if
    /// a tensor some gradient rule reads was modified in place after its op was recorded (the
    /// storage version check; see [`Tensor::version`]).
    fn sorted_graph(&self) -> Result<Vec<Tensor>> {
        let mut order = Vec::new();
        let mut visited = HashSet::new();
        let mut stack = vec![(self.clone(), false)];
        while let Some((t, done)) = stack.pop() {
            if done {
                order.push(keep_for_backward(t));
                continue;
            }
            if !visited.insert(t.id()) {
                continue;
            }
            {
                let op = t.0.node.op.lock().unwrap_or_else(|e| e.into_inner());
                match &*op {
                    Some(op) => {
                        let inputs = op.inputs();
                        t.check_saved_versions(op, &inputs)?;
                        stack.push((t.clone(), true));
                        for input in inputs {
                            if input.is_tracked() && !visited.contains(&input.id()) {
                                stack.push((input.clone(), false));
                            }
                        }
                        continue;
                    }
                    None if t.0.node.in_graph => {
                        return Err(Error::Backward(
                            "the graph was already freed by an earlier backward(); recompute the forward pass".into(),
                        ))
                    }
                    None => {}
                }
            }
            order.push(keep_for_backward(t));
        }
        Ok(order)
    }
}

/// What the walk keeps of a node until its rule runs: the tensor itself when the rule reads
/// the node's own values (exp, softmax, …), else a stand-in without memory
/// ([`Tensor::ghost`]). The walk then holds no activation alive, and a rule can tell from
/// [`Tensor::exclusively_owned`] that nothing else can read an input (cross-entropy writes
/// the logits' gradient over them then).
fn keep_for_backward(t: Tensor) -> Tensor {
    if t.rule_reads_own_output() {
        t
    } else {
        t.ghost()
    }
}

/// The gradient gathered so far for `input`, taken out of `grads` for a rule that adds its own
/// share into it in place: only when nothing else can see it and it is a dense tensor of the
/// input's shape and dtype.
fn take_prior(grads: &mut HashMap<TensorId, Tensor>, input: &Tensor) -> Option<Tensor> {
    let p = grads.get(&input.id())?;
    let fits = p.exclusively_owned() && p.dtype() == input.dtype() && p.shape() == input.shape();
    fits.then(|| grads.remove(&input.id())).flatten()
}

/// The gradient an op passes to one of its inputs.
enum InputGrad {
    /// A gradient of the input's full shape.
    Full(Tensor),
    /// The gradient of `input.narrow(dim, start, g.dims()[dim])`; zero elsewhere.
    Slice { g: Tensor, dim: usize, start: usize },
}

/// Adds `ig` to the gradient gathered so far for `input` (`prev`), in place when `prev` is
/// exclusively owned (every sum after the first then costs no allocation).
fn accumulate(prev: Option<Tensor>, input: &Tensor, ig: InputGrad) -> Result<Tensor> {
    match (prev, ig) {
        (None, InputGrad::Full(g)) => Ok(g),
        (Some(prev), InputGrad::Full(g)) => {
            if prev.exclusively_owned() {
                let full = prev.layout().clone();
                g.storage()
                    .add_into(g.layout(), &mut prev.storage_mut(), &full)?;
                Ok(prev)
            } else if g.exclusively_owned() {
                let full = g.layout().clone();
                prev.storage()
                    .add_into(prev.layout(), &mut g.storage_mut(), &full)?;
                Ok(g)
            } else {
                prev.add(&g)
            }
        }
        (prev, InputGrad::Slice { g, dim, start }) => {
            let (acc, fresh) = match prev {
                Some(p) if p.exclusively_owned() => (p, false),
                Some(p) => (p.force_copy()?, false),
                None => (
                    Tensor::zeros(input.shape().clone(), g.dtype(), g.device())?,
                    true,
                ),
            };
            let dst = acc.layout().narrow(dim, start, g.dims()[dim]);
            let src = g.storage();
            if fresh {
                src.copy_into(g.layout(), &mut acc.storage_mut(), &dst)?;
            } else {
                src.add_into(g.layout(), &mut acc.storage_mut(), &dst)?;
            }
            drop(src);
            Ok(acc)
        }
    }
}

/// Sums a broadcast gradient back to `shape` (the inverse of an `Expand`).
fn sum_to(g: &Tensor, shape: &Shape) -> Result<Tensor> {
    if g.shape() == shape {
        return Ok(g.clone());
    }
    let extra = g.rank() - shape.rank();
    let dims: Vec<usize> = (0..g.rank())
        .filter(|&d| d < extra || (shape.dims()[d - extra] == 1 && g.dims()[d] != 1))
        .collect();
    g.sum(dims, true)?.reshape(shape.clone())
}

fn mask_of(m: Tensor, like: &Tensor) -> Result<Tensor> {
    m.to_dtype(like.dtype())
}

/// The share of `maximum(x, y)`'s (or `minimum`'s) gradient that goes to `x`: 1 where `x` wins,
/// 1/2 on ties (as in PyTorch), 0 where it loses.
fn extreme_share(x: &Tensor, y: &Tensor, max: bool) -> Result<Tensor> {
    let wins = if max { x.gt(y)? } else { x.lt(y)? };
    mask_of(wins, x)?.add(&mask_of(x.eq(y)?, x)?.mul_scalar(0.5)?)
}

/// The gradients of `y = x · wᵀ + b` (`x (m, k)`, `w (n, k)`, all dense) for `g = ∂L/∂y
/// (m, n)`, to whichever of the three are tracked. On the GPU one GEMM gives both `dW = gᵀ x`
/// and `db`, summed in its epilogue; when `w` is autocast's half copy of an f32 master weight,
/// that GEMM writes f32 and the gradients go to the masters (the weight's, and the bias's if
/// it too is a cast) directly, with no cast pass between.
fn linear_grads(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    g: &Tensor,
) -> Result<Vec<(Tensor, InputGrad)>> {
    use InputGrad::Full;
    let (m, k, n) = (x.dims()[0], x.dims()[1], w.dims()[0]);
    let mut out = Vec::with_capacity(3);
    if x.is_tracked() {
        out.push((x.clone(), Full(g.matmul(w)?)));
    }
    let want_b = b.is_some_and(Tensor::is_tracked);
    let row_sum = |g: &Tensor| g.sum(0, false);
    if w.is_tracked() {
        let master = w.cast_source();
        let wdt = master.as_ref().map_or(w.dtype(), Tensor::dtype);
        let fused = if m * n * k > 0 {
            g.storage()
                .linear_wgrad(&x.storage(), (m, k, n), want_b, wdt)?
        } else {
            None
        };
        match fused {
            Some((dw, db)) => {
                out.push((
                    master.unwrap_or_else(|| w.clone()),
                    Full(Tensor::from_storage(dw, [n, k], None)),
                ));
                if let (Some(b), Some(db)) = (b, db) {
                    let db = Tensor::from_storage(db, n, None);
                    // The bias gradient comes in the weight's gradient dtype.
                    let target = match b.cast_source() {
                        Some(bm) if bm.dtype() == db.dtype() => bm,
                        _ => b.clone(),
                    };
                    let db = db.to_dtype(target.dtype())?;
                    out.push((target, Full(db)));
                }
            }
            None => {
                out.push((w.clone(), Full(g.t()?.matmul(x)?)));
                if let (Some(b), true) = (b, want_b) {
                    out.push((b.clone(), Full(row_sum(g)?)));
                }
            }
        }
    } else if let (Some(b), true) = (b, want_b) {
        out.push((b.clone(), Full(row_sum(g)?)));
    }
    Ok(out)
}

/// The gradient of `x` from `g` gathered at `ids` along `dim` (an embedding, `index_select`,
/// `gather`): `g` added at `ids` into the gradient `x` has gathered so far, or into zeros.
/// Where the backend can, into that memory itself (a tied embedding's table-sized gradient
/// then costs no copy and no separate sum).
fn scatter_grad(
    x: &Tensor,
    ids: &Tensor,
    g: &Tensor,
    dim: usize,
    prior: &mut dyn FnMut(&Tensor) -> Option<Tensor>,
) -> Result<Tensor> {
    let base = match prior(x) {
        Some(p) => p,
        None => x.zeros_like()?,
    };
    if base.exclusively_owned()
        && base.storage_mut().scatter_add_in_place(
            base.layout(),
            &ids.storage(),
            ids.layout(),
            &g.storage(),
            g.layout(),
            dim,
        )?
    {
        return Ok(base);
    }
    base.scatter_add(dim, ids, g)
}

/// The gradient of the residual `r` a GEMM added to its output (see [`Tensor::linear_add`]):
/// the output's gradient `g`, in `r`'s shape.
fn residual_grad(r: Option<&Tensor>, g: &Tensor) -> Result<Option<(Tensor, InputGrad)>> {
    r.map(|r| Ok((r.clone(), InputGrad::Full(g.reshape(r.shape().clone())?))))
        .transpose()
}

/// The gradient of each input of `op`, given the gradient `g` of its output `out`. A rule that
/// can add its share into an input's gradient gathered so far takes it from `prior` (see
/// [`take_prior`]) and returns the sum.
fn grad_rule(
    out: &Tensor,
    op: &Op,
    g: &Tensor,
    prior: &mut dyn FnMut(&Tensor) -> Option<Tensor>,
) -> Result<Vec<(Tensor, InputGrad)>> {
    use InputGrad::Full;
    let one = |t: &Tensor, gt: Tensor| Ok(vec![(t.clone(), Full(gt))]);
    match op {
        Op::Unary(x, u) => {
            let gx = match *u {
                UnaryOp::Neg => g.neg()?,
                UnaryOp::Abs => g.mul(&x.sign()?)?,
                UnaryOp::Exp => g.mul(out)?,
                UnaryOp::Log => g.div(x)?,
                UnaryOp::Sqrt => g.div(out)?.mul_scalar(0.5)?,
                UnaryOp::Rsqrt => g.mul(&out.powf(3.0)?)?.mul_scalar(-0.5)?,
                UnaryOp::Sin => g.mul(&x.cos()?)?,
                UnaryOp::Cos => g.mul(&x.sin()?)?.neg()?,
                UnaryOp::Tanh => g.mul(&out.sqr()?.affine(-1.0, 1.0)?)?,
                UnaryOp::Sigmoid => g.mul(&out.mul(&out.affine(-1.0, 1.0)?)?)?,
                UnaryOp::Relu => g.mul(&mask_of(x.gt(&x.scalar_like(0.0)?)?, x)?)?,
                UnaryOp::Gelu | UnaryOp::GeluTanh => x.unary_grad(*u, g)?,
                UnaryOp::Silu => {
                    let s = x.sigmoid()?;
                    g.mul(&s.mul(&x.mul(&s.affine(-1.0, 1.0)?)?.add_scalar(1.0)?)?)?
                }
                UnaryOp::Softplus => g.mul(&x.sigmoid()?)?,
                UnaryOp::Sqr => g.mul(x)?.mul_scalar(2.0)?,
                UnaryOp::Recip => g.mul(&out.sqr()?)?.neg()?,
                UnaryOp::Erf => g
                    .mul(&x.sqr()?.neg()?.exp()?)?
                    .mul_scalar(2.0 / std::f64::consts::PI.sqrt())?,
                UnaryOp::Sign => g.zeros_like()?,
                UnaryOp::Powf(e) => g.mul(&x.powf(e - 1.0)?)?.mul_scalar(e)?,
                UnaryOp::Clamp(lo, hi) => {
                    let inside = x
                        .ge(&x.scalar_like(lo)?)?
                        .mul(&x.le(&x.scalar_like(hi)?)?)?;
                    g.mul(&mask_of(inside, x)?)?
                }
                UnaryOp::Affine(m, _) => g.mul_scalar(m)?,
            };
            one(x, gx)
        }
        Op::Binary(a, b, bop) => {
            // Each side's gradient is computed only if that side needs one (a constant operand,
            // such as a mask or a scalar, costs nothing in the backward pass).
            let mut out_grads = Vec::with_capacity(2);
            if a.is_tracked() {
                let ga = match bop {
                    BinaryOp::Add | BinaryOp::Sub => g.clone(),
                    BinaryOp::Mul => g.mul(b)?,
                    BinaryOp::Div => g.div(b)?,
                    BinaryOp::Pow => g.mul(b)?.mul(&a.pow(&b.affine(1.0, -1.0)?)?)?,
                    BinaryOp::Maximum | BinaryOp::Minimum => {
                        g.mul(&extreme_share(a, b, *bop == BinaryOp::Maximum)?)?
                    }
                };
                out_grads.push((a.clone(), Full(ga)));
            }
            if b.is_tracked() {
                let gb = match bop {
                    BinaryOp::Add => g.clone(),
                    BinaryOp::Sub => g.neg()?,
                    BinaryOp::Mul => g.mul(a)?,
                    BinaryOp::Div => g.mul(a)?.div(&b.sqr()?)?.neg()?,
                    BinaryOp::Pow => {
                        // d/db a^b = a^b·ln a, taken as 0 where a == 0 (as PyTorch does).
                        let zero = a.eq(&a.scalar_like(0.0)?)?;
                        let ln = zero.where_cond(&a.scalar_like(0.0)?, &a.log()?)?;
                        g.mul(out)?.mul(&ln)?
                    }
                    BinaryOp::Maximum | BinaryOp::Minimum => {
                        g.mul(&extreme_share(b, a, *bop == BinaryOp::Maximum)?)?
                    }
                };
                out_grads.push((b.clone(), Full(gb)));
            }
            Ok(out_grads)
        }
        Op::WhereCond(m, t, f) => {
            let zero = g.scalar_like(0.0)?;
            let mut out_grads = Vec::with_capacity(2);
            if t.is_tracked() {
                out_grads.push((t.clone(), Full(m.where_cond(g, &zero)?)));
            }
            if f.is_tracked() {
                out_grads.push((f.clone(), Full(m.where_cond(&zero, g)?)));
            }
            Ok(out_grads)
        }
        Op::Reduce(x, rop, dims) => {
            let gx = match rop {
                ReduceOp::Sum => g.broadcast_to(x.shape().clone())?,
                _ => {
                    let hit = mask_of(x.eq(out)?, x)?;
                    let count = hit.sum(dims.as_slice(), true)?;
                    g.div(&count)?.mul(&hit)?
                }
            };
            one(x, gx)
        }
        Op::Matmul(a, b) => {
            let r = a.rank();
            let mut out_grads = Vec::with_capacity(2);
            if a.is_tracked() {
                out_grads.push((a.clone(), Full(g.matmul(&b.transpose(r - 2, r - 1)?)?)));
            }
            if b.is_tracked() {
                out_grads.push((b.clone(), Full(a.transpose(r - 2, r - 1)?.matmul(g)?)));
            }
            Ok(out_grads)
        }
        Op::Linear { x, w, b, r } => {
            let g = g.dense()?;
            let mut out = linear_grads(x, w, b.as_ref(), &g)?;
            out.extend(residual_grad(r.as_ref(), &g)?);
            Ok(out)
        }
        Op::FeedForward {
            x,
            w1,
            b1,
            w2,
            b2,
            pre,
            act,
            r,
        } => {
            let g = g.dense()?;
            // `act` has no graph: this gives the second layer's weight and bias gradients.
            let mut out = linear_grads(act, w2, b2.as_ref(), &g)?;
            out.extend(residual_grad(r.as_ref(), &g)?);
            if x.is_tracked() || w1.is_tracked() || b1.as_ref().is_some_and(Tensor::is_tracked) {
                let (m, h, n) = (g.dims()[0], pre.dims()[1], g.dims()[1]);
                // One GEMM on the GPU: (g · w2) ⊙ gelu_tanh'(pre).
                let fused =
                    g.storage()
                        .linear_gelu_dgrad(&w2.storage(), &pre.storage(), (m, h, n))?;
                let dpre = match fused {
                    Some(s) => Tensor::from_storage(s, [m, h], None),
                    None => pre.unary_grad(UnaryOp::GeluTanh, &g.matmul(w2)?)?,
                };
                out.extend(linear_grads(x, w1, b1.as_ref(), &dpre)?);
            }
            Ok(out)
        }
        Op::ToDType(x) => one(x, g.to_dtype(x.dtype())?),
        Op::ToDevice(x) => one(x, g.to_device(x.device())?),
        Op::Copy(x) => one(x, g.clone()),
        Op::Reshape(x) => one(x, g.reshape(x.shape().clone())?),
        Op::Permute(x, perm) => {
            let mut inv = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            one(x, g.permute(&inv)?)
        }
        // The gradient lands in a slice of x's: accumulated there without a zero-padded copy.
        Op::Narrow(x, dim, start) => Ok(vec![(
            x.clone(),
            InputGrad::Slice {
                g: g.clone(),
                dim: *dim,
                start: *start,
            },
        )]),
        Op::Expand(x) => one(x, sum_to(g, x.shape())?),
        Op::IndexSelect(x, ids, dim) => {
            let mut idx_shape = vec![1; g.rank()];
            idx_shape[*dim] = ids.elem_count();
            let full = ids.reshape(idx_shape)?.broadcast_to(g.shape().clone())?;
            one(x, scatter_grad(x, &full, g, *dim, prior)?)
        }
        Op::Gather(x, ids, dim) => one(x, scatter_grad(x, ids, g, *dim, prior)?),
        Op::ScatterAdd(x, ids, src, dim) => Ok(vec![
            (x.clone(), Full(g.clone())),
            (src.clone(), Full(g.gather(*dim, ids)?)),
        ]),
        Op::Attention {
            q,
            k,
            v,
            saved,
            dims,
            packed,
        } => {
            let g = g.dense()?;
            let separate = || {
                q.storage().attention_bwd(
                    &k.storage(),
                    &v.storage(),
                    &out.storage(),
                    &saved.storage(),
                    &g.storage(),
                    *dims,
                )
            };
            if let Some(qkv) = packed {
                // One buffer for the three gradients where the backend writes them so;
                // otherwise the three joined along the channels.
                let whole = q.storage().attention_bwd_packed(
                    &k.storage(),
                    &v.storage(),
                    &out.storage(),
                    &saved.storage(),
                    &g.storage(),
                    *dims,
                )?;
                let gqkv = match whole {
                    Some(s) => Tensor::from_storage(s, qkv.shape().clone(), None),
                    None => {
                        let (dq, dk, dv) = separate()?;
                        let (b, t) = (qkv.dims()[0], qkv.dims()[1]);
                        let c = qkv.dims()[2] / 3;
                        let part = |s| Tensor::from_storage(s, [b, t, c], None);
                        Tensor::cat(&[part(dq), part(dk), part(dv)], 2)?
                    }
                };
                return one(qkv, gqkv);
            }
            let (dq, dk, dv) = separate()?;
            // Strided (GPU FlashAttention) gradients come (batch, rows, heads, dim)-major.
            let grad = |s, x: &Tensor| -> Result<Tensor> {
                if dims.strided.is_some() {
                    let d = x.dims();
                    Tensor::from_storage(s, [d[0], d[2], d[1], d[3]], None).transpose(1, 2)
                } else {
                    Ok(Tensor::from_storage(s, x.shape().clone(), None))
                }
            };
            Ok(vec![
                (q.clone(), Full(grad(dq, q)?)),
                (k.clone(), Full(grad(dk, k)?)),
                (v.clone(), Full(grad(dv, v)?)),
            ])
        }
        Op::NormAffine {
            x,
            w,
            b,
            mean,
            rstd,
            rms,
        } => {
            let g = g.dense()?;
            let dims = (mean.elem_count(), x.dims()[x.rank() - 1]);
            let want = (
                w.as_ref().is_some_and(Tensor::is_tracked),
                b.as_ref().is_some_and(Tensor::is_tracked),
            );
            // The residual stream's gradient, when nothing else holds it, takes x's share in
            // the same kernel.
            let acc = if x.is_tracked() { prior(x) } else { None };
            let ws = w.as_ref().map(|w| w.storage());
            let mut acc_s = acc.as_ref().map(|a| a.storage_mut());
            let (dx, dw, db) = x.storage().norm_affine_bwd(
                ws.as_deref(),
                &mean.storage(),
                &rstd.storage(),
                &g.storage(),
                dims,
                *rms,
                want,
                acc_s.as_deref_mut(),
            )?;
            drop((ws, acc_s));
            let gx =
                match (dx, acc) {
                    (Some(dx), None) => Tensor::from_storage(dx, x.shape().clone(), None),
                    (None, Some(acc)) => acc,
                    _ => return Err(Error::Backward(
                        "layer_norm_backward: the input gradient was neither returned nor summed"
                            .into(),
                    )),
                };
            let mut out = vec![(x.clone(), Full(gx))];
            for (p, d) in [(w, dw), (b, db)] {
                if let (Some(p), Some(d)) = (p, d) {
                    let d = Tensor::from_storage(d, dims.1, None).to_dtype(p.dtype())?;
                    out.push((p.clone(), Full(d)));
                }
            }
            Ok(out)
        }
        Op::Checkpoint {
            x,
            f,
            rng,
            autocast,
        } => one(
            x,
            crate::checkpoint::recompute_grad(x, f, rng, *autocast, g)?,
        ),
        Op::CrossEntropy {
            logits,
            targets,
            lse,
            ignore,
        } => {
            let g = g.dense()?;
            // When nothing else can see the logits (a model's loss that never returned them),
            // their gradient is written over them: no second logits-sized buffer at the peak.
            if logits.exclusively_owned()
                && logits.storage_mut().cross_entropy_bwd_in_place(
                    &targets.storage(),
                    targets.layout(),
                    &lse.storage(),
                    &g.storage(),
                    *ignore,
                )?
            {
                return one(logits, logits.view_with(logits.layout().clone(), None));
            }
            let dx = logits.storage().cross_entropy_bwd(
                &targets.storage(),
                targets.layout(),
                &lse.storage(),
                &g.storage(),
                *ignore,
            )?;
            one(
                logits,
                Tensor::from_storage(dx, logits.shape().clone(), None),
            )
        }
        Op::CrossEntropyGrad { logits, scale } => {
            let g = g.dense()?;
            logits
                .storage_mut()
                .cross_entropy_grad_rescale(&g.storage(), *scale)?;
            one(logits, logits.view_with(logits.layout().clone(), None))
        }
        Op::SoftmaxLast(x, log) => one(x, out.softmax_last_backward(g, *log)?),
        Op::NormLast(x, rstd, rms) => one(x, out.norm_last_backward(rstd, g, *rms)?),
        Op::Cat(ts, dim) => {
            let mut start = 0;
            let mut out = Vec::with_capacity(ts.len());
            for t in ts {
                let len = t.dims()[*dim];
                out.push((t.clone(), Full(g.narrow(*dim, start, len)?)));
                start += len;
            }
            Ok(out)
        }
    }
}
