#!/usr/bin/env python3
"""The measurements of `cpu_bench` (RustyGradients' example) in PyTorch and numpy/OpenBLAS, as
JSON lines, for `scripts/bench_cpu.sh`: f32 GEMMs and GEMVs (both), elementwise ops and row
kernels (PyTorch only).

    scripts/bench_cpu_baselines.py torch|numpy [--quick]

Threads: `RAYON_NUM_THREADS` if set (the count ours uses), else every core. numpy's OpenBLAS
picks its kernel from `OPENBLAS_CORETYPE`: bench_cpu.sh runs it with that variable unset so
that the best kernel for the host (SkylakeX's AVX-512 on an AVX-512 CPU) runs.
"""
import json
import os
import sys
import time


def median_secs(reps, f):
    f()
    t = []
    for _ in range(reps):
        s = time.perf_counter()
        f()
        t.append(time.perf_counter() - s)
    t.sort()
    return t[len(t) // 2]


def amx():
    """Whether this CPU has AMX-BF16 (the flag Linux lists in /proc/cpuinfo)."""
    try:
        return " amx_bf16" in open("/proc/cpuinfo").read()
    except OSError:
        return False


def shapes(quick):
    out = [(f"square {s}", s, s, s, False, False) for s in ([1024] if quick else [1024, 2048, 4096])]
    for rows, fi, fo in [(768, 128, 384), (768, 128, 512), (1024, 768, 3072)]:
        out.append((f"x·Wt {rows}x{fi}->{fo}", rows, fi, fo, False, True))
        out.append((f"g·W {rows}x{fo}->{fi}", rows, fo, fi, False, False))
        out.append((f"gt·x {fo}x{rows}x{fi}", fo, rows, fi, True, False))
    return out


def main():
    which = sys.argv[1]
    quick = "--quick" in sys.argv
    threads = int(os.environ.get("RAYON_NUM_THREADS", os.cpu_count()))
    if which == "torch":
        import torch

        torch.set_num_threads(threads)
        randn = lambda *s: torch.randn(*s, dtype=torch.float32)
        mm = torch.matmul
        version = torch.__version__
    else:
        import numpy as np

        rng = np.random.default_rng(0)
        randn = lambda *s: rng.standard_normal(s, dtype=np.float32)
        mm = np.matmul
        version = np.__version__
    def sgemms(impl):
        for name, m, k, n, ta, tb in shapes(quick):
            a = randn(k, m).T if ta else randn(m, k)
            b = randn(n, k).T if tb else randn(k, n)
            flop = 2.0 * m * k * n
            reps = max(5, min(200, int(2e10 / flop)))
            secs = median_secs(reps, lambda: mm(a, b))
            print(json.dumps({"bench": "sgemm", "impl": impl, "version": version, "shape": name,
                              "threads": threads, "gflops": round(flop / secs / 1e9, 1)}),
                  flush=True)

    sgemms(which)
    if which == "torch" and amx():
        # f32 products multiplied in bf16 by oneDNN (AMX), beside ours with `isa` "amx-bf16".
        torch.backends.mkldnn.matmul.fp32_precision = "bf16"
        sgemms("torch-bf16")
        torch.backends.mkldnn.matmul.fp32_precision = "none"
    for k, n, transposed in [(768, 3072, False), (768, 50304, True)]:
        x = randn(1, k)
        w = randn(n, k).T if transposed else randn(k, n)
        secs = median_secs(50, lambda: mm(x, w))
        name = f"{'x·Wt' if transposed else 'x·W'} 1x{k}x{n}"
        print(json.dumps({"bench": "gemv", "impl": which, "shape": name, "threads": threads,
                          "gbs": round(k * n * 4 / secs / 1e9, 1)}), flush=True)
    if which != "torch":
        return
    import torch.nn.functional as F

    x = torch.randn(1 << 20)
    for name, f in [("gelu", F.gelu), ("sigmoid", torch.sigmoid), ("exp", torch.exp),
                    ("tanh", torch.tanh)]:
        secs = median_secs(100, lambda: f(x))
        print(json.dumps({"bench": "elementwise", "impl": which, "op": name, "threads": threads,
                          "gelems": round((1 << 20) / secs / 1e9, 2)}), flush=True)
    narrow = torch.randn(4096, 768)
    w, b = torch.ones(768), torch.zeros(768)
    logits = torch.randn(4096, 50304)
    targets = torch.randint(0, 50304, (4096,))
    for name, inp, f in [
        ("layer_norm 4096x768", narrow, lambda: F.layer_norm(narrow, (768,), w, b, 1e-5)),
        ("softmax 4096x768", narrow, lambda: torch.softmax(narrow, -1)),
        ("cross_entropy 4096x50304", logits, lambda: F.cross_entropy(logits, targets)),
    ]:
        secs = median_secs(20, f)
        print(json.dumps({"bench": "rows", "impl": which, "op": name, "threads": threads,
                          "gbs": round(inp.numel() * 4 / secs / 1e9, 1)}), flush=True)
    # Attention forward + backward, causal (B 8, H 12, T 256, D 64): GFLOP/s over the causal
    # half of the 7 products (2 forward, 5 backward), the formula cpu_bench uses.
    b_, h_, t_, d_ = 8, 12, 256, 64
    q, k, v = (torch.randn(b_, h_, t_, d_, requires_grad=True) for _ in range(3))
    go = torch.randn(b_, h_, t_, d_)

    def attn():
        F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(go)

    secs = median_secs(20, attn)
    flop = 7 * 2 * b_ * h_ * t_ * t_ * d_ / 2
    print(json.dumps({"bench": "attention", "impl": which, "op": "sdpa fwd+bwd B8 H12 T256 D64",
                      "threads": threads, "gflops": round(flop / secs / 1e9, 1)}), flush=True)


if __name__ == "__main__":
    main()
