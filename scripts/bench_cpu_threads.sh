#!/usr/bin/env bash
# Thread scaling of a CPU training step, RustyGradients against PyTorch eager, in one run on
# one machine: the baby GPT (4 layers, 4 heads, 128 embd, block 64, batch 12) and a
# GPT-2-small-shaped model (12 layers, 12 heads, 768 embd, block 256, batch 4), both
# character-level on Shakespeare, at 1, 2, 4, 8 and 16 threads (or THREADS). Each cell is one
# short run without evaluation; the two implementations alternate at each thread count.
#
#   scripts/bench_cpu_threads.sh BIN DATA     # BIN: a release build of the `rustygradients` CLI
#
# PyTorch comes from `python3` (or PY); it uses torch.set_num_threads, ours RAYON_NUM_THREADS.
# PRECISIONS="fp32 bf16" also runs both trainers with --precision bf16: on a CPU with AMX,
# f32 tensors with matmuls multiplied in bf16 (ours on AMX tiles, PyTorch through oneDNN's
# mkldnn.matmul.fp32_precision = "bf16"). The table then sets each of ours beside PyTorch in
# the same precision and beside PyTorch's faster one.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$1
DATA=$2
PY=${PY:-python3}
THREADS=${THREADS:-"1 2 4 8 16"}
OUT=${OUT:-target/bench-cpu-threads}
mkdir -p "$OUT"
lscpu | grep -E "Model name|^CPU\(s\)|Flags" | cut -c1-400 > "$OUT/cpu.txt"
cat "$OUT/cpu.txt" | cut -c1-120
baby=(--n-layer 4 --n-head 4 --n-embd 128 --block-size 64 --batch-size 12)
gpt2=(--n-layer 12 --n-head 12 --n-embd 768 --block-size 256 --batch-size 4)
common=(--dropout 0.0 --lr 1e-3 --min-lr 1e-4 --warmup 10 --weight-decay 0.1 --seed 1337)
PRECISIONS=${PRECISIONS:-fp32}
run() {  # name steps threads precision model...
    local name=$1 steps=$2 th=$3 p=$4
    shift 4
    RAYON_NUM_THREADS=$th "$BIN" train --data "$DATA" "$@" "${common[@]}" --steps "$steps" --precision "$p" \
        --eval-interval 1000000 --eval-iters 1 --sample-chars 0 --overwrite --out "$OUT/run" > "$OUT/${name}_rg_${p}_$th.log"
    "$PY" scripts/train_baby_gpt_torch.py --data "$DATA" "$@" "${common[@]}" --max-iters "$steps" --precision "$p" \
        --eval-interval 1000000 --eval-iters 1 --threads "$th" --sample-chars 0 > "$OUT/${name}_pt_${p}_$th.log"
}
for th in $THREADS; do
    for p in $PRECISIONS; do
        run baby "${BABY_STEPS:-150}" "$th" "$p" "${baby[@]}"
        run gpt2 "${GPT2_STEPS:-4}" "$th" "$p" "${gpt2[@]}"
    done
done
"$PY" - "$OUT" "$THREADS" "$PRECISIONS" <<'PY'
import json, sys
out, threads, precisions = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
def tps(p):
    return json.loads(next(l for l in open(p) if l.startswith("RESULT "))[7:])["tokens_per_s"]
for name in ("baby", "gpt2"):
    print(f"{name}: tokens/s by threads")
    head = "".join(f"{'ours ' + p:>12}{'torch ' + p:>12}{'ratio':>7}" for p in precisions)
    best = f"{'best/best':>10}" if len(precisions) > 1 else ""
    print(f"{'threads':>8}{head}{best}")
    for th in threads:
        ours = {p: tps(f"{out}/{name}_rg_{p}_{th}.log") for p in precisions}
        torch = {p: tps(f"{out}/{name}_pt_{p}_{th}.log") for p in precisions}
        cells = "".join(f"{ours[p]:>12.0f}{torch[p]:>12.0f}{ours[p] / torch[p]:>7.2f}" for p in precisions)
        if len(precisions) > 1:
            cells += f"{max(ours.values()) / max(torch.values()):>10.2f}"
        print(f"{th:>8}{cells}")
PY
