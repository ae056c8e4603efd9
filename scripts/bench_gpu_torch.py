"""GPU benchmark, PyTorch side: the same measurements as RustyGradients' `gpu_bench` example
(matmul TFLOP/s in f32/TF32/bf16; a GPT-2-124M AdamW training step in f32 and TF32, eager mode),
printed as the same JSON lines. Run both with scripts/bench_gpu.sh.

    python scripts/bench_gpu_torch.py [--steps N] [--batch B] [--only matmul|gpt]
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


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


class Block(nn.Module):
    def __init__(self, c, heads):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(c)
        self.c_attn = nn.Linear(c, 3 * c)
        self.c_proj = nn.Linear(c, c)
        self.ln_2 = nn.LayerNorm(c)
        self.c_fc = nn.Linear(c, 4 * c)
        self.mlp_proj = nn.Linear(4 * c, c)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


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


def gpt2(batch, steps):
    for mode, tf32 in [("f32", False), ("tf32", True)]:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.manual_seed(1337)
        model = GPT(50304, 1024, 12, 12, 768).cuda()
        decay = [p for p in model.parameters() if p.dim() >= 2]
        rest = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                 {"params": rest, "weight_decay": 0.0}], lr=1e-3)
        x = torch.randint(0, 50257, (batch, 1024), device="cuda")
        y = torch.randint(0, 50257, (batch, 1024), device="cuda")

        def step():
            opt.zero_grad(set_to_none=True)
            loss = model(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            return loss.item()

        for _ in range(3):
            step()
        torch.cuda.reset_peak_memory_stats()
        times, last = [], 0.0
        for _ in range(steps):
            t = time.perf_counter()
            last = step()
            times.append(time.perf_counter() - t)
        secs = statistics.median(times)
        print(json.dumps({"bench": "gpt2_step", "mode": mode, "batch": batch,
                          "ms": round(secs * 1e3, 2), "tokens_per_s": round(batch * 1024 / secs),
                          "peak_bytes": torch.cuda.max_memory_allocated(),
                          "loss": round(last, 4)}), flush=True)
        del model, opt
        torch.cuda.empty_cache()
    torch.backends.cuda.matmul.allow_tf32 = False


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--only", choices=["matmul", "gpt"])
    a = p.parse_args()
    if a.only != "gpt":
        matmuls()
    if a.only != "matmul":
        gpt2(a.batch, a.steps)


if __name__ == "__main__":
    main()
