"""GPU benchmark, PyTorch side: the same measurements as RustyGradients' `gpu_bench` example
(matmul TFLOP/s in f32/TF32/bf16; attention forward + backward through
`scaled_dot_product_attention` with the flash and the cuDNN backends; a GPT-2 AdamW training step in each mode:
fp32, tf32, bf16 autocast eager, and `bf16_compile` = bf16 autocast with `torch.compile`),
printed as the same JSON lines. Run both with scripts/bench_gpu.sh.

    python scripts/bench_gpu_torch.py [--steps N] [--batch B] [--layers L --heads H --embd C]
        [--modes fp32,tf32,bf16,bf16_compile] [--recompute] [--only matmul|attention|gpt]
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.utils.checkpoint
import torch.nn.functional as F


# F.gelu's `approximate`: "tanh" (GPT-2's) unless `--gelu erf`.
GELU = "tanh"


def timed(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmuls():
    tokens = 8 * 1024
    shapes = [("4096^3", 4096, 4096, 4096), ("gpt2 qkv", tokens, 768, 2304),
              ("gpt2 fc", tokens, 768, 3072), ("gpt2 proj", tokens, 3072, 768),
              ("gpt2 lm_head", tokens, 768, 50304)]
    for mode, dtype, tf32 in [("f32", torch.float32, False), ("tf32", torch.float32, True),
                              ("bf16", torch.bfloat16, False)]:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for name, m, k, n in shapes:
            a = torch.randn(m, k, device="cuda", dtype=dtype)
            b = torch.randn(k, n, device="cuda", dtype=dtype)
            secs = timed(lambda: a @ b, 3, 20)
            print(json.dumps({"bench": "matmul", "mode": mode, "shape": name, "m": m, "k": k, "n": n,
                              "ms": round(secs * 1e3, 4),
                              "tflops": round(2 * m * k * n / secs / 1e12, 2)}), flush=True)
    torch.backends.cuda.matmul.allow_tf32 = False


def attention():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    b, h = 8, 12
    backends = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)]
    for t in (1024, 4096):
        for d in (64, 128):
            mk = lambda: torch.randn(b, h, t, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            q, k, v = mk(), mk(), mk()
            go = torch.randn(b, h, t, d, device="cuda", dtype=torch.bfloat16)
            for name, backend in backends:
                def run():
                    with sdpa_kernel(backend):
                        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                    out.backward(go)

                def fwd():
                    with sdpa_kernel(backend):
                        F.scaled_dot_product_attention(q, k, v, is_causal=True)

                try:
                    secs = timed(run, 3, 20)
                    fwd_secs = timed(fwd, 3, 20)
                except RuntimeError as e:
                    print(json.dumps({"bench": "attention", "backend": name, "shape": f"T{t} D{d}",
                                      "error": str(e)[:200]}), flush=True)
                    continue
                flops = 7 * 2 * b * h * t * t * d / 2
                print(json.dumps({"bench": "attention", "mode": "bf16", "backend": name,
                                  "shape": f"T{t} D{d}",
                                  "ms": round(secs * 1e3, 4), "fwd_ms": round(fwd_secs * 1e3, 4),
                                  "tflops": round(flops / secs / 1e12, 2)}), flush=True)


class Block(nn.Module):
    def __init__(self, c, heads):
        super().__init__()
        self.heads = heads
        self.recompute = False
        self.ln_1 = nn.LayerNorm(c)
        self.c_attn = nn.Linear(c, 3 * c)
        self.c_proj = nn.Linear(c, c)
        self.ln_2 = nn.LayerNorm(c)
        self.c_fc = nn.Linear(c, 4 * c)
        self.mlp_proj = nn.Linear(4 * c, c)

    def forward(self, x):
        if self.recompute and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(self.inner, x, use_reentrant=False)
        return self.inner(x)

    def inner(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))
        # GPT-2's tanh GELU by default, as in gpu_bench (`--gelu erf`: the exact one).
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate=GELU))


class GPT(nn.Module):
    def __init__(self, vocab, block, layers, heads, c):
        super().__init__()
        self.wte = nn.Embedding(vocab, c)
        self.wpe = nn.Embedding(block, c)
        self.h = nn.ModuleList(Block(c, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(c)
        # GPT-2's initialisation, as RustyGradients' Gpt::new.
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def gpt2(batch, steps, layers, heads, c, modes, recompute):
    for mode in modes.split(","):
        torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
        torch.manual_seed(1337)
        model = GPT(50304, 1024, layers, heads, c).cuda()
        for blk in model.h:
            blk.recompute = recompute
        decay = [p for p in model.parameters() if p.dim() >= 2]
        rest = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                 {"params": rest, "weight_decay": 0.0}], lr=1e-3, fused=True)
        x = torch.randint(0, 50257, (batch, 1024), device="cuda")
        y = torch.randint(0, 50257, (batch, 1024), device="cuda")
        half = mode.startswith("bf16")
        fwd = torch.compile(model) if mode.endswith("_compile") else model

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=half):
                loss = fwd(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            return loss.item()

        for _ in range(5 if mode.endswith("_compile") else 3):
            step()
        torch.cuda.reset_peak_memory_stats()
        times, last = [], 0.0
        for _ in range(steps):
            t = time.perf_counter()
            last = step()
            times.append(time.perf_counter() - t)
        secs = statistics.median(times)
        n = sum(p.numel() for p in model.parameters())
        tokens = batch * 1024 / secs
        mfu = tokens * (6 * n + 12 * layers * c * 1024) / 989e12
        shape = f"L{layers} C{c} B{batch}" + (" recompute" if recompute else "")
        print(json.dumps({"bench": "gpt2_step", "mode": mode, "gelu": "erf" if GELU == "none" else GELU,
                          "shape": shape, "batch": batch,
                          "ms": round(secs * 1e3, 2), "tokens_per_s": round(tokens),
                          "mfu": round(mfu, 4),
                          "peak_bytes": torch.cuda.max_memory_allocated(),
                          "loss": round(last, 4)}), flush=True)
        model = opt = fwd = step = None  # free before the next mode
        torch.cuda.empty_cache()
    torch.backends.cuda.matmul.allow_tf32 = False


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--embd", type=int, default=768)
    p.add_argument("--modes", default="fp32,tf32,bf16,bf16_compile")
    p.add_argument("--recompute", action="store_true")
    p.add_argument("--gelu", choices=["tanh", "erf"], default="tanh")
    p.add_argument("--only", choices=["matmul", "attention", "gpt"])
    a = p.parse_args()
    global GELU
    GELU = "none" if a.gelu == "erf" else "tanh"
    if a.only in (None, "matmul"):
        matmuls()
    if a.only in (None, "attention"):
        attention()
    if a.only in (None, "gpt"):
        gpt2(a.batch, a.steps, a.layers, a.heads, a.embd, a.modes, a.recompute)


if __name__ == "__main__":
    main()
