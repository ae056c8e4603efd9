#!/usr/bin/env python3
"""Generate PyTorch reference fixtures for the RustyGradients optimizers.

Usage (from the repository root):

    .venv/bin/python scripts/gen_optim_fixtures.py

This (re)writes crates/rustygradients-nn/tests/fixtures/optim.json.
The output is deterministic: the global RNG is seeded once with
torch.manual_seed(0), every case draws from it in a fixed order, and all
floating-point work is done in float64.

File format
-----------
{
  "generator":     "scripts/gen_optim_fixtures.py",
  "torch_version": "<torch.__version__>",
  "optimizers":    [OPTCASE, ...],
  "clip":          [CLIPCASE, ...],
  "schedules":     [SCHEDCASE, ...]
}

TENSOR = {"shape": [...], "data": [flat row-major float64 values]}

OPTCASE = {
  "name":    unique string,
  "kind":    "sgd" | "adam" | "adamw",
  "hyper":   sgd:          {"lr", "momentum", "dampening" (always 0.0),
                            "nesterov", "weight_decay"}
             adam / adamw: {"lr", "beta1", "beta2", "eps", "weight_decay"}
             (amsgrad is never used; Adam's weight_decay is the L2-style
             penalty added to the gradient, AdamW's is decoupled),
  "lrs":     [lr used at step 0, step 1, ...]   -- only in cases whose lr
             changes between steps; "hyper.lr" is then the lr of step 0,
  "params0": [TENSOR, TENSOR]            -- initial parameters, shapes (3,4), (4,)
  "grads":   [[TENSOR, TENSOR], ...]     -- per step, the gradient of each param
  "params":  [[TENSOR, TENSOR], ...]     -- per step, the params after step()
}
The gradients are random normal and independent of the parameters; they are
assigned to p.grad directly before each optimizer.step().

CLIPCASE = {
  "name":       unique string,
  "max_norm":   float,
  "grads":      [TENSOR, TENSOR]   -- gradients before clipping
  "total_norm": float              -- global L2 norm returned by torch
  "clipped":    [TENSOR, TENSOR]   -- gradients after clip_grad_norm_
}

SCHEDCASE = {
  "name":        unique string,
  "max_lr":      float, "min_lr": float,
  "warmup":      int,   "decay_iters": int,
  "lrs":         [get_lr(it) for it in range(decay_iters + 10)]
}
where get_lr is nanoGPT's linear-warmup + cosine-decay schedule (see
`nanogpt_lr` below).

Floats are written with Python's shortest round-trip repr, so a correctly
rounded parser reads back the exact float64 value. Each case is on its own
line to keep diffs readable.
"""

import json
import math
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_PATH = REPO_ROOT / "crates" / "rustygradients-nn" / "tests" / "fixtures" / "optim.json"
GENERATOR = "scripts/gen_optim_fixtures.py"

F64 = torch.float64
PARAM_SHAPES = [(3, 4), (4,)]
NUM_STEPS = 5


# ---------------------------------------------------------------------------
# Serialisation helpers
# ---------------------------------------------------------------------------


def tensor_to_json(t):
    """A float64 tensor as {"shape": [...], "data": [row-major floats]}."""
    t = t.detach().to(F64).contiguous()
    return {"shape": list(t.shape), "data": [float(v) for v in t.reshape(-1).tolist()]}


def tensors_to_json(ts):
    return [tensor_to_json(t) for t in ts]


def random_params():
    return [torch.randn(*shape, dtype=F64) for shape in PARAM_SHAPES]


# ---------------------------------------------------------------------------
# Optimizer cases
# ---------------------------------------------------------------------------


def make_optimizer(kind, hyper, params):
    """Build the torch optimizer that a case's (kind, hyper) describes."""
    if kind == "sgd":
        return torch.optim.SGD(
            params,
            lr=hyper["lr"],
            momentum=hyper["momentum"],
            dampening=hyper["dampening"],
            nesterov=hyper["nesterov"],
            weight_decay=hyper["weight_decay"],
            foreach=False,
        )
    # Adam and AdamW share their hyper-parameters; only the meaning of
    # weight_decay differs (L2 penalty vs decoupled decay).
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind]
    return cls(
        params,
        lr=hyper["lr"],
        betas=(hyper["beta1"], hyper["beta2"]),
        eps=hyper["eps"],
        weight_decay=hyper["weight_decay"],
        amsgrad=False,
        # The single-tensor reference loop: no fused / foreach kernels, so
        # the arithmetic order is the textbook one.
        foreach=False,
    )


def optimizer_case(name, kind, hyper, lrs=None):
    """Run NUM_STEPS optimizer steps from random params with random grads."""
    params = [p.requires_grad_(True) for p in random_params()]
    params0 = tensors_to_json(params)
    opt = make_optimizer(kind, hyper, params)

    grads_log, params_log = [], []
    for step in range(NUM_STEPS):
        if lrs is not None:
            for group in opt.param_groups:
                group["lr"] = lrs[step]
        grads = [torch.randn(*shape, dtype=F64) for shape in PARAM_SHAPES]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        grads_log.append(tensors_to_json(grads))
        params_log.append(tensors_to_json(params))

    case = {"name": name, "kind": kind, "hyper": hyper}
    if lrs is not None:
        case["lrs"] = list(lrs)
    case.update({"params0": params0, "grads": grads_log, "params": params_log})
    return case


def sgd_hyper(lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    return {
        "lr": lr,
        "momentum": momentum,
        "dampening": 0.0,
        "nesterov": nesterov,
        "weight_decay": weight_decay,
    }


def adam_hyper(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    return {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": weight_decay}


def optimizer_cases():
    cases = [
        optimizer_case("sgd_plain", "sgd", sgd_hyper(0.1)),
        optimizer_case("sgd_momentum", "sgd", sgd_hyper(0.1, momentum=0.9)),
        optimizer_case("sgd_nesterov", "sgd", sgd_hyper(0.1, momentum=0.9, nesterov=True)),
        optimizer_case(
            "sgd_momentum_wd", "sgd", sgd_hyper(0.1, momentum=0.9, weight_decay=0.01)
        ),
        optimizer_case("adam", "adam", adam_hyper()),
        optimizer_case("adam_l2_wd", "adam", adam_hyper(weight_decay=0.1)),
        optimizer_case("adamw", "adamw", adam_hyper(weight_decay=0.1)),
        optimizer_case(
            "adamw_beta2_095", "adamw", adam_hyper(lr=3e-3, beta2=0.95, weight_decay=0.05)
        ),
    ]
    lrs = [1e-3, 5e-4, 2e-3, 1e-4, 1e-3]
    cases.append(
        optimizer_case(
            "adamw_lr_changes", "adamw", adam_hyper(lr=lrs[0], weight_decay=0.1), lrs=lrs
        )
    )
    return cases


# ---------------------------------------------------------------------------
# Gradient clipping cases
# ---------------------------------------------------------------------------


def clip_case(name, max_norm, scale):
    """clip_grad_norm_ (L2, global over both tensors) on random-normal grads."""
    params = [p.requires_grad_(True) for p in random_params()]
    grads = [scale * torch.randn(*shape, dtype=F64) for shape in PARAM_SHAPES]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    total_norm = torch.nn.utils.clip_grad_norm_(params, max_norm=max_norm, norm_type=2.0)
    return {
        "name": name,
        "max_norm": max_norm,
        "grads": tensors_to_json(grads),
        "total_norm": float(total_norm),
        "clipped": tensors_to_json([p.grad for p in params]),
    }


def clip_cases():
    # 16 standard-normal entries have a norm of about 4, so max_norm 1.0 clips
    # and max_norm 100 leaves the grads untouched.
    cases = [clip_case("clip_active", 1.0, 1.0), clip_case("clip_inactive", 100.0, 1.0)]
    assert cases[0]["total_norm"] > 1.0, "clip_active must actually clip"
    assert cases[1]["total_norm"] < 100.0, "clip_inactive must not clip"
    return cases


# ---------------------------------------------------------------------------
# Learning-rate schedule cases
# ---------------------------------------------------------------------------


def nanogpt_lr(it, max_lr, min_lr, warmup, decay_iters):
    """nanoGPT's get_lr: linear warmup, cosine decay to min_lr, then flat."""
    if it < warmup:
        return max_lr * (it + 1) / (warmup + 1)
    if it > decay_iters:
        return min_lr
    decay_ratio = (it - warmup) / (decay_iters - warmup)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (max_lr - min_lr)


def schedule_case(name, max_lr, min_lr, warmup, decay_iters):
    return {
        "name": name,
        "max_lr": max_lr,
        "min_lr": min_lr,
        "warmup": warmup,
        "decay_iters": decay_iters,
        "lrs": [
            nanogpt_lr(it, max_lr, min_lr, warmup, decay_iters)
            for it in range(decay_iters + 10)
        ],
    }


def schedule_cases():
    return [
        schedule_case("warmup100_decay2000", 1e-3, 1e-4, 100, 2000),
        schedule_case("nowarmup_decay50", 6e-4, 6e-5, 0, 50),
    ]


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def main():
    torch.manual_seed(0)
    torch.set_default_dtype(F64)
    torch.use_deterministic_algorithms(True)

    sections = {
        "optimizers": optimizer_cases(),
        "clip": clip_cases(),
        "schedules": schedule_cases(),
    }

    # One case per line: valid JSON, readable diffs. allow_nan=False makes
    # sure nothing non-finite slips through.
    header = {"generator": GENERATOR, "torch_version": torch.__version__}
    lines = ["{"]
    for key, value in header.items():
        lines.append(f"  {json.dumps(key)}: {json.dumps(value)},")
    for s_idx, (key, cases) in enumerate(sections.items()):
        lines.append(f"  {json.dumps(key)}: [")
        for i, case in enumerate(cases):
            sep = "," if i + 1 < len(cases) else ""
            lines.append("    " + json.dumps(case, allow_nan=False, separators=(",", ":")) + sep)
        lines.append("  ]" + ("," if s_idx + 1 < len(sections) else ""))
    lines.append("}")

    OUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    OUT_PATH.write_text("\n".join(lines) + "\n")
    counts = ", ".join(f"{len(v)} {k}" for k, v in sections.items())
    print(f"wrote {counts} cases to {OUT_PATH.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
