#!/usr/bin/env bash
# CPU benchmark: the FMA peak and copy bandwidth of this host, our f32 GEMM with each kernel
# the CPU runs (RG_CPU_ISA=avx2, and avx512 where present), PyTorch and numpy/OpenBLAS, in one
# run, then a table of GFLOP/s and ratios. On a CPU with AMX, a second table: the same f32
# products multiplied in bf16, ours on AMX tiles against PyTorch's oneDNN in that mode. From the repository root:
#
#   scripts/bench_cpu.sh [--quick]      # RAYON_NUM_THREADS sets the threads of all three
#
# Builds the release example first. Python: .venv/bin/python if present (torch and numpy).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/bench-cpu}
mkdir -p "$OUT"
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
# BIN: a prebuilt cpu_bench (on a machine without the toolchain); else built here.
if [ -z "${BIN:-}" ]; then
    cargo build --release -q -p rustygradients-core --example cpu_bench
    BIN=target/release/examples/cpu_bench
fi
grep -m1 "model name" /proc/cpuinfo | tee "$OUT/cpu.txt"
grep -m1 -o "avx512[a-z_0-9]*\|avx2\|fma" /proc/cpuinfo | sort -u | tr '\n' ' ' | tee -a "$OUT/cpu.txt"; echo
: >"$OUT/results.jsonl"
isas="avx2"
grep -q avx512f /proc/cpuinfo && isas="avx2 avx512"
for isa in $isas; do
    RG_CPU_ISA=$isa "$BIN" "$@" | tee -a "$OUT/results.jsonl"
done
"$PY" scripts/bench_cpu_baselines.py torch "$@" | tee -a "$OUT/results.jsonl"
# OpenBLAS's best kernel for this host: no forced core type.
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PY" scripts/bench_cpu_baselines.py numpy "$@" \
    | tee -a "$OUT/results.jsonl"
"$PY" - "$OUT/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
peak = {r["isa"]: r["gflops"] for r in rows if r["bench"] == "fma_peak"}
copy = [r["gbs"] for r in rows if r["bench"] == "copy"]
print(f"FMA peak (GFLOP/s): {peak}; copy bandwidth: {max(copy) if copy else '?'} GB/s")
ours = {}
for r in rows:
    if r["bench"] == "sgemm" and "isa" in r and r["isa"] != "amx-bf16":
        ours.setdefault(r["shape"], {})[r["isa"]] = r["gflops"]
base = {}
for r in rows:
    if r["bench"] == "sgemm" and "impl" in r:
        base.setdefault(r["shape"], {})[r["impl"]] = r["gflops"]
amx = {r["shape"]: r["gflops"] for r in rows if r["bench"] == "sgemm" and r.get("isa") == "amx-bf16"}
isas = sorted({i for v in ours.values() for i in v})
head = "".join(f"{'ours ' + i:>12}" for i in isas)
print(f"{'sgemm (GFLOP/s)':<26}{head}{'torch':>10}{'numpy':>10}{'best/torch':>12}{'best/numpy':>12}{'% peak':>8}")
for shape, v in ours.items():
    b = base.get(shape, {})
    best = max(v.values())
    cells = "".join(f"{v.get(i, float('nan')):>12.1f}" for i in isas)
    t, n = b.get("torch"), b.get("numpy")
    ratio = lambda x: f"{best / x:>12.2f}" if x else f"{'':>12}"
    top = max(peak.values()) if peak else None
    pct = f"{100 * best / top:>7.0f}%" if top else ""
    print(f"{shape:<26}{cells}{(t or 0):>10.1f}{(n or 0):>10.1f}{ratio(t)}{ratio(n)}{pct}")
if amx:
    # f32 in and out, products in bf16 on AMX tiles: ours and oneDNN's (torch-bf16).
    print(f"{'bf16 products (GFLOP/s)':<26}{'ours amx':>12}{'torch-bf16':>12}{'vs torch':>10}{'vs f32 torch':>14}")
    for shape, v in amx.items():
        b = base.get(shape, {})
        tb, t = b.get("torch-bf16"), b.get("torch")
        vs = lambda x: f"{v / x:>10.2f}" if x else f"{'':>10}"
        print(f"{shape:<26}{v:>12.1f}{(tb or 0):>12.1f}{vs(tb)}{vs(t):>14}")

# GEMV (GB/s of weights), elementwise (Gelem/s), row kernels (GB/s of input) and attention
# forward + backward (GFLOP/s): ours with the
# widest ISA run (the last in the file) against PyTorch (and numpy for GEMV).
def table(bench, key, unit, label):
    ours, base = {}, {}
    for r in rows:
        if r["bench"] != bench:
            continue
        name = r.get("shape") or r.get("op")
        if "isa" in r:
            ours[name] = r[key]
        else:
            base.setdefault(name, {})[r["impl"]] = r[key]
    if not ours:
        return
    print(f"{label + ' (' + unit + ')':<30}{'ours':>10}{'torch':>10}{'numpy':>10}{'vs torch':>10}")
    for name, v in ours.items():
        b = base.get(name, {})
        t, n = b.get("torch"), b.get("numpy")
        vs = f"{v / t:>9.2f}x" if t else ""
        print(f"{name:<30}{v:>10}{(t or ''):>10}{(n or ''):>10}{vs}")
table("gemv", "gbs", "GB/s", "gemv")
table("elementwise", "gelems", "Gelem/s", "elementwise 1M f32")
table("rows", "gbs", "GB/s", "row kernels")
table("attention", "gflops", "GFLOP/s", "attention")
PY
