#!/usr/bin/env python3
"""Generate PyTorch reference fixtures for the RustyGradients test-suite.

Usage (from the repository root):

    .venv/bin/python scripts/gen_torch_fixtures.py

This (re)writes crates/rustygradients-core/tests/fixtures/torch_ops.json.
The output is deterministic: the global RNG is seeded once with
torch.manual_seed(0), every case draws from it in a fixed order, and all
floating-point work is done in float64.

File format
-----------
{
  "generator": "scripts/gen_torch_fixtures.py",
  "torch_version": "<torch.__version__>",
  "cases": [CASE, ...]
}

CASE = {
  "name":       unique string,
  "op":         op name (see the sections below),
  "params":     op parameters (omitted when the op has none),
  "inputs":     [TENSOR, ...],
  "output":     TENSOR            -- single-output ops, or
  "outputs":    [TENSOR, ...]     -- multi-output ops (split / chunk),
  "cotangent":  TENSOR            -- single-output differentiable ops, or
  "cotangents": [TENSOR, ...]     -- multi-output differentiable ops,
  "grads":      [TENSOR | null, ...]   -- one per input, present iff a
                                          cotangent is present
}

TENSOR = {"dtype": "f64" | "i64" | "u8", "shape": [...], "data": [...]}
with data flattened in row-major order. Booleans are written as u8 0/1.

The gradients are d/d input of sum_i (output_i * cotangent_i).sum(), i.e. the
vector-Jacobian product with a random-normal cotangent. Integer and mask
inputs get null. Floats are written with Python's shortest round-trip repr,
so they parse back to the exact float64 value with a correctly rounded parser.

The file has one case per line to keep diffs readable.
"""

import json
from pathlib import Path

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_PATH = REPO_ROOT / "crates" / "rustygradients-core" / "tests" / "fixtures" / "torch_ops.json"
GENERATOR = "scripts/gen_torch_fixtures.py"

F64 = torch.float64
I64 = torch.int64
U8 = torch.uint8

# ---------------------------------------------------------------------------
# Serialisation helpers
# ---------------------------------------------------------------------------

_DTYPE_NAMES = {F64: "f64", I64: "i64", U8: "u8"}


def tensor_to_json(t):
    """Turn a torch tensor into the TENSOR json object (row-major flat data)."""
    t = t.detach()
    if t.dtype == torch.bool:
        t = t.to(U8)
    if t.dtype not in _DTYPE_NAMES:
        raise TypeError(f"unsupported dtype in fixture: {t.dtype}")
    if t.dtype == F64 and not torch.isfinite(t).all():
        raise ValueError("non-finite value in fixture tensor; fix the case's input domain")
    return {
        "dtype": _DTYPE_NAMES[t.dtype],
        "shape": list(t.shape),
        "data": t.contiguous().reshape(-1).tolist(),
    }


# ---------------------------------------------------------------------------
# Input generators (all draw from the global, seeded RNG)
# ---------------------------------------------------------------------------


def randn(*shape, scale=1.0):
    """Standard normal values (times `scale`)."""
    return torch.randn(shape, dtype=F64) * scale


def uniform(lo, hi, *shape):
    """Uniform values in [lo, hi)."""
    return lo + (hi - lo) * torch.rand(shape, dtype=F64)


def positive(*shape):
    """Values in [0.2, 3.0): safe for log / sqrt / rsqrt / pow bases."""
    return uniform(0.2, 3.0, *shape)


def away_from_zero(*shape, margin=0.1, scale=1.0):
    """Normal-ish values with |x| >= margin (for abs / relu kinks)."""
    x = randn(*shape, scale=scale)
    return x + torch.where(x >= 0, margin, -margin)


def recip_safe(*shape):
    """Values with 0.3 <= |x| < 3 and random sign (for 1/x and divisors)."""
    mag = uniform(0.3, 3.0, *shape)
    sign = torch.where(torch.rand(shape) < 0.5, -1.0, 1.0).to(F64)
    return mag * sign


def avoid_points(x, points, margin=0.05):
    """Shift every element lying within `margin` of any of `points` away
    from it (used to keep clamp bounds off the data)."""
    x = x.clone()
    for p in points:
        near = (x - p).abs() < margin
        x = torch.where(near, x + 3 * margin, x)
    for p in points:
        assert ((x - p).abs() >= margin).all(), "avoid_points failed"
    return x


def distinct_pair(shape_a, shape_b, gap=0.05):
    """Two normal tensors whose broadcast element pairs differ by >= gap
    (no ties for maximum / minimum). Resamples until the condition holds."""
    while True:
        a, b = randn(*shape_a), randn(*shape_b)
        if ((a - b).abs() >= gap).all():
            return a, b


def mask(*shape):
    """Random 0/1 uint8 mask."""
    return torch.randint(0, 2, shape, dtype=U8)


def ids(high, *shape):
    """Random int64 indices in [0, high)."""
    return torch.randint(0, high, shape, dtype=I64)


def shape_tag(*shapes):
    """'3x1_1x4' style tag for case names; '' for a scalar shape is 's'."""
    return "_".join("x".join(map(str, s)) if len(s) else "s" for s in shapes)


# ---------------------------------------------------------------------------
# Case runner
# ---------------------------------------------------------------------------

CASES = []
_NAMES = set()


def add_case(name, op, inputs, fn, params=None, differentiable=True):
    """Run one case and append its json object to CASES.

    inputs         -- list of tensors (f64 / i64 / u8), in the order of the spec.
    fn             -- callable taking the inputs positionally and returning a
                      tensor or a tuple/list of tensors.
    differentiable -- if True, draw a random cotangent per output and record
                      the gradients of sum(out * cot) w.r.t. every f64 input.
    """
    assert name not in _NAMES, f"duplicate case name {name}"
    _NAMES.add(name)

    # Fresh leaves for the f64 inputs so autograd can track them.
    args = []
    for t in inputs:
        if differentiable and t.dtype == F64:
            args.append(t.detach().clone().requires_grad_(True))
        else:
            args.append(t)

    result = fn(*args)
    multi = isinstance(result, (tuple, list))
    outs = list(result) if multi else [result]

    case = {"name": name, "op": op}
    if params is not None:
        case["params"] = params
    case["inputs"] = [tensor_to_json(t) for t in inputs]
    if multi:
        case["outputs"] = [tensor_to_json(o) for o in outs]
    else:
        case["output"] = tensor_to_json(outs[0])

    if differentiable:
        for o in outs:
            assert o.dtype == F64, f"{name}: differentiable op produced {o.dtype}"
        cots = [randn(*o.shape) for o in outs]
        wrt = [a for a in args if a.requires_grad]
        grads = torch.autograd.grad(outs, wrt, grad_outputs=cots, allow_unused=True)
        grads = iter(grads)
        grad_json = []
        for a in args:
            if a.requires_grad:
                g = next(grads)
                # An unused f64 input has a mathematically zero gradient.
                grad_json.append(tensor_to_json(g if g is not None else torch.zeros_like(a)))
            else:
                grad_json.append(None)
        if multi:
            case["cotangents"] = [tensor_to_json(c) for c in cots]
        else:
            case["cotangent"] = tensor_to_json(cots[0])
        case["grads"] = grad_json

    CASES.append(case)


# ---------------------------------------------------------------------------
# Case definitions, grouped by op family
# ---------------------------------------------------------------------------


def unary_cases():
    # op name -> (torch function, input generator taking a shape)
    unary = {
        "neg": (torch.neg, randn),
        "abs": (torch.abs, away_from_zero),
        "exp": (torch.exp, randn),
        "log": (torch.log, positive),
        "sqrt": (torch.sqrt, positive),
        "rsqrt": (torch.rsqrt, positive),
        "sin": (torch.sin, lambda *s: randn(*s, scale=2.0)),
        "cos": (torch.cos, lambda *s: randn(*s, scale=2.0)),
        "tanh": (torch.tanh, lambda *s: randn(*s, scale=1.5)),
        "sigmoid": (torch.sigmoid, lambda *s: randn(*s, scale=2.0)),
        "relu": (torch.relu, away_from_zero),
        "gelu": (lambda x: F.gelu(x), lambda *s: randn(*s, scale=2.0)),
        "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), lambda *s: randn(*s, scale=2.0)),
        "silu": (F.silu, lambda *s: randn(*s, scale=2.0)),
        "softplus": (lambda x: F.softplus(x, beta=1), lambda *s: randn(*s, scale=2.0)),
        "sqr": (lambda x: x * x, randn),
        "recip": (lambda x: 1.0 / x, recip_safe),
    }
    shapes = [(3, 4), (7,), (2, 3, 4), ()]
    for op, (fn, gen) in unary.items():
        for shape in shapes:
            add_case(f"{op}_{shape_tag(shape)}", op, [gen(*shape)], fn)

    # powf: x ** e with a scalar float exponent, x positive.
    for e, shape in [(2.5, (3, 4)), (-0.5, (3, 4)), (3.0, (2, 3, 4)), (0.5, (5,))]:
        tag = str(e).replace("-", "neg").replace(".", "p")
        add_case(f"powf_{tag}_{shape_tag(shape)}", "powf", [positive(*shape)],
                 lambda x, e=e: torch.pow(x, e), params={"exponent": e})

    # clamp: data kept >= 0.05 away from both bounds.
    for lo, hi, shape in [(-0.5, 0.8, (3, 4)), (-1.0, 1.0, (2, 3, 4)), (0.0, 2.0, (6,))]:
        x = avoid_points(randn(*shape, scale=1.5), [lo, hi])
        add_case(f"clamp_{shape_tag(shape)}", "clamp", [x],
                 lambda x, lo=lo, hi=hi: torch.clamp(x, min=lo, max=hi),
                 params={"min": lo, "max": hi})


# Shape pairs shared by the binary elementwise ops.
BINARY_SHAPES = [
    ((3, 4), (3, 4)),
    ((3, 1), (1, 4)),
    ((2, 3, 4), (4,)),
    ((2, 1, 3), (4, 1)),
    ((), (3, 4)),
]


def binary_cases():
    for sa, sb in BINARY_SHAPES:
        tag = shape_tag(sa, sb)
        add_case(f"add_{tag}", "add", [randn(*sa), randn(*sb)], torch.add)
        add_case(f"sub_{tag}", "sub", [randn(*sa), randn(*sb)], torch.sub)
        add_case(f"mul_{tag}", "mul", [randn(*sa), randn(*sb)], torch.mul)
        add_case(f"div_{tag}", "div", [randn(*sa), recip_safe(*sb)], torch.div)
        add_case(f"pow_{tag}", "pow", [positive(*sa), randn(*sb)], torch.pow)
        add_case(f"maximum_{tag}", "maximum", list(distinct_pair(sa, sb)), torch.maximum)
        add_case(f"minimum_{tag}", "minimum", list(distinct_pair(sa, sb)), torch.minimum)


def comparison_cases():
    cmps = {"eq": torch.eq, "ne": torch.ne, "lt": torch.lt,
            "le": torch.le, "gt": torch.gt, "ge": torch.ge}

    def small_ints(*shape):
        # Values from {-1, -0.5, 0, 0.5, 1}: many exact ties.
        return torch.randint(-2, 3, shape).to(F64) / 2

    def continuous_with_ties(shape):
        # Continuous values with roughly a third of the elements copied across.
        a, b = randn(*shape), randn(*shape)
        copy = torch.rand(shape) < 1 / 3
        return a, torch.where(copy, a, b)

    def mixed_pair(make):
        # Resample until the (broadcast) pair contains <, == and > so that
        # every comparison op sees both true and false results.
        while True:
            a, b = make()
            if (a < b).any() and (a == b).any() and (a > b).any():
                return a, b

    # Each input pair is shared by all six comparison ops.
    pairs = [
        ("3x4_3x4", mixed_pair(lambda: continuous_with_ties((3, 4)))),
        ("3x1_1x4", mixed_pair(lambda: (small_ints(3, 1), small_ints(1, 4)))),
        ("2x3x4_4", mixed_pair(lambda: (small_ints(2, 3, 4), small_ints(4)))),
    ]
    for tag, (a, b) in pairs:
        for op, fn in cmps.items():
            add_case(f"{op}_{tag}", op, [a, b], fn, differentiable=False)


def select_cases():
    # where_cond(mask, a, b) = torch.where(mask.bool(), a, b)
    def where_cond(m, a, b):
        return torch.where(m.bool(), a, b)

    for sm, sa, sb in [((3, 4), (3, 4), (3, 4)),
                       ((3, 1), (1, 4), (3, 4)),
                       ((2, 3, 4), (4,), ())]:
        add_case(f"where_cond_{shape_tag(sm, sa, sb)}", "where_cond",
                 [mask(*sm), randn(*sa), randn(*sb)], where_cond)

    # masked_fill(x, mask, value); the mask broadcasts to x's shape.
    for sx, sm, value in [((3, 4), (3, 4), 0.5),
                          ((3, 4), (1, 4), -1e9),
                          ((2, 3, 4), (3, 4), -2.25)]:
        add_case(f"masked_fill_{shape_tag(sx, sm)}", "masked_fill",
                 [randn(*sx), mask(*sm)],
                 lambda x, m, v=value: x.masked_fill(m.bool(), v),
                 params={"value": value})


def reduction_cases():
    def dims_tag(dims, keepdim):
        return "d" + "_".join(str(d).replace("-", "neg") for d in dims) + ("_keep" if keepdim else "")

    dim_sets = [([0], False), ([1], True), ([-1], False), ([0, 2], False),
                ([0, -1], True), ([0, 1, 2], False)]

    for op, fn in [("sum", torch.sum), ("mean", torch.mean),
                   ("max", torch.amax), ("min", torch.amin),
                   ("logsumexp", torch.logsumexp)]:
        for dims, keepdim in dim_sets:
            add_case(f"{op}_2x3x4_{dims_tag(dims, keepdim)}", op, [randn(2, 3, 4)],
                     lambda x, fn=fn, dims=dims, keepdim=keepdim: fn(x, dim=dims, keepdim=keepdim),
                     params={"dims": dims, "keepdim": keepdim})
        # A 2-D input too.
        add_case(f"{op}_3x4_d1", op, [randn(3, 4)],
                 lambda x, fn=fn: fn(x, dim=[1], keepdim=False),
                 params={"dims": [1], "keepdim": False})

    for op, fn in [("argmax", torch.argmax), ("argmin", torch.argmin)]:
        for dim, keepdim in [(0, False), (1, True), (-1, False), (2, True)]:
            add_case(f"{op}_2x3x4_d{str(dim).replace('-', 'neg')}{'_keep' if keepdim else ''}",
                     op, [randn(2, 3, 4)],
                     lambda x, fn=fn, dim=dim, keepdim=keepdim: fn(x, dim=dim, keepdim=keepdim),
                     params={"dim": dim, "keepdim": keepdim}, differentiable=False)

    # var: unbiased=True divides by (n - 1), False by n.
    for dims, unbiased, keepdim in [([-1], True, False), ([1], False, True),
                                    ([0, 2], True, False), ([0, 1, 2], False, False),
                                    ([0], True, True)]:
        tag = dims_tag(dims, keepdim) + ("_unbiased" if unbiased else "_biased")
        add_case(f"var_2x3x4_{tag}", "var", [randn(2, 3, 4)],
                 lambda x, dims=dims, unbiased=unbiased, keepdim=keepdim:
                     torch.var(x, dim=dims, correction=1 if unbiased else 0, keepdim=keepdim),
                 params={"dims": dims, "unbiased": unbiased, "keepdim": keepdim})


def softmax_cases():
    for op, fn in [("softmax", F.softmax), ("log_softmax", F.log_softmax)]:
        # Rows of 37 and 70 reach the CPU kernels' 16-lane partial sums and their tails.
        for shape, dim in [((3, 4), -1), ((3, 4), 0), ((2, 3, 4), 1), ((2, 3, 4), -1),
                           ((3, 37), -1), ((2, 70), -1)]:
            add_case(f"{op}_{shape_tag(shape)}_d{str(dim).replace('-', 'neg')}", op,
                     [randn(*shape, scale=2.0)],
                     lambda x, fn=fn, dim=dim: fn(x, dim=dim), params={"dim": dim})


def norm_cases():
    eps = 1e-5
    for shape in [(3, 5), (2, 3, 4), (4, 37), (2, 130)]:
        d = shape[-1]
        add_case(f"layer_norm_{shape_tag(shape)}", "layer_norm",
                 [randn(*shape, scale=2.0) + 0.5, 1.0 + 0.3 * randn(d), 0.3 * randn(d)],
                 lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b, eps),
                 params={"eps": eps})

    rms_eps = 1e-6

    def rms_norm(x, w):
        # y = x / sqrt(mean(x^2, -1, keepdim) + eps) * weight
        return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + rms_eps) * w

    for shape in [(3, 5), (2, 3, 4), (3, 37)]:
        add_case(f"rms_norm_{shape_tag(shape)}", "rms_norm",
                 [randn(*shape, scale=2.0), 1.0 + 0.3 * randn(shape[-1])],
                 rms_norm, params={"eps": rms_eps})


def matmul_cases():
    for sa, sb in [((4,), (4,)),              # dot product -> scalar
                   ((3, 4), (4,)),            # matrix-vector
                   ((4,), (4, 3)),            # vector-matrix
                   ((3, 4), (4, 5)),          # matrix-matrix
                   ((2, 3, 4), (4, 5)),       # batched @ matrix
                   ((2, 3, 4), (2, 4, 5)),    # batched @ batched
                   ((2, 1, 3, 4), (5, 4, 2))]:  # batch broadcast -> (2,5,3,2)
        add_case(f"matmul_{shape_tag(sa, sb)}", "matmul", [randn(*sa), randn(*sb)], torch.matmul)


def loss_cases():
    n, c = 5, 4
    # (name suffix, reduction, ignore_index, targets or None for random)
    ce = [("mean", "mean", -100, None),
          ("mean_ignored", "mean", -100, [1, -100, 3, 0, -100]),
          ("sum_ignored", "sum", -100, [2, -100, 0, 3, 1]),
          ("none_ignored", "none", -100, [-100, 1, 2, 3, 0]),
          ("mean_ignore_class2", "mean", 2, [2, 0, 2, 3, 1]),
          ("none_ignore_class1", "none", 1, [1, 0, 3, 1, 2])]
    for suffix, reduction, ignore_index, targets in ce:
        logits = randn(n, c, scale=2.0)
        target = ids(c, n) if targets is None else torch.tensor(targets, dtype=I64)
        add_case(f"cross_entropy_{suffix}", "cross_entropy", [logits, target],
                 lambda x, t, r=reduction, ii=ignore_index:
                     F.cross_entropy(x, t, reduction=r, ignore_index=ii),
                 params={"reduction": reduction, "ignore_index": ignore_index})

    for shape, reduction in [((3, 4), "mean"), ((3, 4), "sum"), ((3, 4), "none"), ((2, 3), "mean")]:
        add_case(f"mse_loss_{shape_tag(shape)}_{reduction}", "mse_loss",
                 [randn(*shape), randn(*shape)],
                 lambda a, b, r=reduction: F.mse_loss(a, b, reduction=r),
                 params={"reduction": reduction})


def indexing_cases():
    # embedding(weight (V, D), ids): ids contain repeats so gradients accumulate.
    add_case("embedding_6x3_ids2x3", "embedding",
             [randn(6, 3), torch.tensor([[1, 4, 1], [0, 5, 4]], dtype=I64)],
             lambda w, i: F.embedding(i, w))
    add_case("embedding_5x4_ids4", "embedding",
             [randn(5, 4), torch.tensor([3, 3, 0, 2], dtype=I64)],
             lambda w, i: F.embedding(i, w))

    # index_select(x, dim, index) with repeated indices.
    for sx, dim, index in [((4, 3), 0, [2, 0, 2, 3]),
                           ((4, 3), 1, [1, 1, 0]),
                           ((2, 3, 4), -1, [3, 0, 3, 1, 3])]:
        add_case(f"index_select_{shape_tag(sx)}_d{str(dim).replace('-', 'neg')}", "index_select",
                 [randn(*sx), torch.tensor(index, dtype=I64)],
                 lambda x, i, dim=dim: torch.index_select(x, dim, i), params={"dim": dim})

    # gather(x, dim, index): index has the same rank as x.
    for sx, dim, si in [((3, 4), 1, (3, 2)),
                        ((3, 4), 0, (2, 4)),
                        ((2, 3, 4), 2, (2, 3, 5))]:
        add_case(f"gather_{shape_tag(sx)}_d{dim}", "gather",
                 [randn(*sx), ids(sx[dim], *si)],
                 lambda x, i, dim=dim: torch.gather(x, dim, i), params={"dim": dim})

    # scatter_add(x, dim, index, src): index.shape == src.shape, repeated
    # target positions along `dim` so contributions accumulate.
    for sx, dim, ss in [((3, 5), 1, (3, 4)),
                        ((4, 3), 0, (5, 3)),
                        ((2, 3, 4), 2, (2, 3, 2))]:
        add_case(f"scatter_add_{shape_tag(sx)}_d{dim}", "scatter_add",
                 [randn(*sx), ids(sx[dim], *ss), randn(*ss)],
                 lambda x, i, s, dim=dim: torch.scatter_add(x, dim, i, s),
                 params={"dim": dim})


def shape_cases():
    # cat: three tensors of different sizes along `dim`.
    for shapes, dim in [([(2, 3), (1, 3), (3, 3)], 0),
                        ([(2, 1), (2, 3), (2, 2)], 1),
                        ([(2, 3, 1), (2, 3, 2), (2, 3, 3)], -1)]:
        add_case(f"cat_d{str(dim).replace('-', 'neg')}_{shape_tag(*shapes)}", "cat",
                 [randn(*s) for s in shapes],
                 lambda a, b, c, dim=dim: torch.cat([a, b, c], dim=dim), params={"dim": dim})

    # stack: two (2, 3) tensors, new axis at 0..=ndim, plus -1.
    for dim in [0, 1, 2, -1]:
        add_case(f"stack_d{str(dim).replace('-', 'neg')}", "stack",
                 [randn(2, 3), randn(2, 3)],
                 lambda a, b, dim=dim: torch.stack([a, b], dim=dim), params={"dim": dim})

    # split(x, split_size, dim): last piece may be smaller.
    for shape, size, dim in [((5, 3), 2, 0), ((2, 7), 3, 1), ((2, 3, 4), 3, -1), ((4, 2), 2, 0)]:
        add_case(f"split_{shape_tag(shape)}_s{size}_d{str(dim).replace('-', 'neg')}", "split",
                 [randn(*shape)],
                 lambda x, size=size, dim=dim: torch.split(x, size, dim=dim),
                 params={"split_size": size, "dim": dim})

    # chunk(x, chunks, dim): torch uses ceil(n / chunks) per chunk, so it
    # can return fewer chunks than requested (the (5, 2) / 4 case gives 3).
    for shape, chunks, dim in [((5, 3), 2, 0), ((2, 7), 3, 1), ((2, 3, 4), 2, -1), ((5, 2), 4, 0)]:
        add_case(f"chunk_{shape_tag(shape)}_c{chunks}_d{str(dim).replace('-', 'neg')}", "chunk",
                 [randn(*shape)],
                 lambda x, chunks=chunks, dim=dim: torch.chunk(x, chunks, dim=dim),
                 params={"chunks": chunks, "dim": dim})

    # tril / triu on the last two dims.
    for op, fn in [("tril", torch.tril), ("triu", torch.triu)]:
        for shape in [(3, 4), (2, 3, 3)]:
            for k in [0, 1, -1]:
                add_case(f"{op}_{shape_tag(shape)}_k{str(k).replace('-', 'neg')}", op,
                         [randn(*shape)],
                         lambda x, fn=fn, k=k: fn(x, diagonal=k), params={"diagonal": k})


def attention_cases():
    # scaled_dot_product_attention(q, k, v, causal): q, k (B, H, T, D), v (B, H, T, Dv), scale
    # 1/sqrt(D). The sizes reach every path of the fused CPU kernel: one query; odd and even
    # T (queries and keys go in pairs, an odd one alone); rows of visible keys padded to
    # 32-lane blocks, with and without a remainder (T = 33, 37, 64); head dims with 8-lane
    # blocks and scalar tails (D = 4, 8, 16, 41, Dv = 35). Batch and heads > 1 only on a small
    # shape, to keep the file small (f32 at training sizes is tests/kernels_f32.rs's job).
    for b, h, t, d, dv in [(1, 1, 1, 4, 4), (2, 3, 5, 8, 8), (1, 1, 37, 41, 35),
                           (1, 1, 64, 8, 8), (1, 1, 33, 16, 16)]:
        tag = shape_tag((b, h, t, d)) + (f"_dv{dv}" if dv != d else "")
        for causal in [False, True]:
            add_case(f"scaled_dot_product_attention_{tag}_{'causal' if causal else 'full'}",
                     "scaled_dot_product_attention",
                     [randn(b, h, t, d), randn(b, h, t, d), randn(b, h, t, dv)],
                     lambda q, k, v, causal=causal:
                         F.scaled_dot_product_attention(q, k, v, is_causal=causal),
                     params={"causal": causal})


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def main():
    torch.manual_seed(0)
    torch.set_default_dtype(F64)
    torch.use_deterministic_algorithms(True)

    unary_cases()
    binary_cases()
    comparison_cases()
    select_cases()
    reduction_cases()
    softmax_cases()
    norm_cases()
    matmul_cases()
    loss_cases()
    indexing_cases()
    shape_cases()
    attention_cases()

    # One case per line: valid JSON, readable diffs. allow_nan=False makes
    # sure nothing non-finite slips through.
    OUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    header = {"generator": GENERATOR, "torch_version": torch.__version__}
    lines = ["{"]
    for key, value in header.items():
        lines.append(f"  {json.dumps(key)}: {json.dumps(value)},")
    lines.append('  "cases": [')
    for i, case in enumerate(CASES):
        sep = "," if i + 1 < len(CASES) else ""
        lines.append("    " + json.dumps(case, allow_nan=False, separators=(",", ":")) + sep)
    lines.append("  ]")
    lines.append("}")
    OUT_PATH.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(CASES)} cases to {OUT_PATH.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
