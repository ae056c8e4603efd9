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
run() {  # name steps threads model...
    local name=$1 steps=$2 th=$3
    shift 3
    RAYON_NUM_THREADS=$th "$BIN" train --data "$DATA" "$@" "${common[@]}" --steps "$steps" \
        --eval-interval 1000000 --eval-iters 1 --sample-chars 0 --overwrite --out "$OUT/run" > "$OUT/${name}_rg_$th.log"
    "$PY" scripts/train_baby_gpt_torch.py --data "$DATA" "$@" "${common[@]}" --max-iters "$steps" \
        --eval-interval 1000000 --eval-iters 1 --threads "$th" --sample-chars 0 > "$OUT/${name}_pt_$th.log"
}
for th in $THREADS; do
    run baby "${BABY_STEPS:-150}" "$th" "${baby[@]}"
    run gpt2 "${GPT2_STEPS:-4}" "$th" "${gpt2[@]}"
done
"$PY" - "$OUT" "$THREADS" <<'PY'
import json, sys
out, threads = sys.argv[1], sys.argv[2].split()
def tps(p):
    return json.loads(next(l for l in open(p) if l.startswith("RESULT "))[7:])["tokens_per_s"]
for name in ("baby", "gpt2"):
    print(f"{name}: tokens/s by threads")
    print(f"{'threads':>8}{'RustyGradients':>16}{'PyTorch':>10}{'ratio':>8}")
    for th in threads:
        a, b = tps(f"{out}/{name}_rg_{th}.log"), tps(f"{out}/{name}_pt_{th}.log")
        print(f"{th:>8}{a:>16.0f}{b:>10.0f}{a / b:>8.2f}")
PY
