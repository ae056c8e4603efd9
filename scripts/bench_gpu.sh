#!/usr/bin/env bash
# GPU benchmark: RustyGradients' `gpu_bench` example and its PyTorch twin back to back on the
# same card, then a table of the ratios. Run on the GPU machine from the repository root:
#
#   scripts/bench_gpu.sh BIN [--steps N] [--batch B] [--layers L --heads H --embd C] [--recompute]
#       [--only matmul|attention|gpt]
#
# RustyGradients runs the modes fp32, tf32, bf16 (or MODES); PyTorch the same plus bf16_compile
# (torch.compile), which the bf16 row is also compared with.
#
# BIN is the example built on a development machine:
#   cargo build --release --features cuda --example gpu_bench   # target/release/examples/gpu_bench
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$1
shift
OUT=${OUT:-target/bench-gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/card.txt"
MODES=${MODES:-fp32,tf32,bf16}
"$BIN" --modes "$MODES" "$@" | tee "$OUT/rustygradients.jsonl"
python3 scripts/bench_gpu_torch.py --modes "$MODES,bf16_compile" "$@" | tee "$OUT/pytorch.jsonl"
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
load = lambda f: [json.loads(l) for l in open(f"{out}/{f}") if l.startswith("{")]
rg, pt = load("rustygradients.jsonl"), load("pytorch.jsonl")
key = lambda r: (r["bench"], r["mode"], r.get("shape", ""))
ptk = {key(r): r for r in pt}
print(f"{'bench':<10} {'mode':<5} {'shape':<13} {'RustyGradients':>16} {'PyTorch':>16} {'ratio':>7}")
for r in rg:
    others = [ptk.get(key(r))]
    if r["bench"] == "attention":
        # Each of ours (cuDNN's kernels, our own) against each of SDPA's flash and cuDNN backends.
        others = [p for p in pt if key(p) == key(r)]
        others.append(ptk.get((r["bench"], "bf16_compile", r.get("shape", ""))))
    for p in others:
        if not p:
            continue
        if r["bench"] in ("matmul", "attention"):
            a, b, unit = r["tflops"], p["tflops"], "TFLOP/s"
        else:
            a, b, unit = r["tokens_per_s"], p["tokens_per_s"], "tok/s"
        mode = r["mode"] if p["mode"] == r["mode"] else f"{r['mode']} vs {p['mode']}"
        if "backend" in r:
            mode = f"{r['backend']} vs {p.get('backend', '?')}"
        print(f"{r['bench']:<10} {mode:<5} {r.get('shape',''):<13} {a:>10} {unit:<5} {b:>10} {unit:<5} {a / b:>6.2f}x")
        if r["bench"] == "gpt2_step":
            print(f"{'':<30} MFU {r['mfu']:.3f} vs {p['mfu']:.3f}; peak memory {r['peak_bytes'] / 2**30:>6.2f} GiB"
                  f" vs {p['peak_bytes'] / 2**30:.2f} GiB ({r['peak_bytes'] / p['peak_bytes']:.2f}x);"
                  f" loss {r['loss']} vs {p['loss']}")
PY
