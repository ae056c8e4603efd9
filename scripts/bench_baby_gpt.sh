#!/usr/bin/env bash
# Trains nanoGPT's CPU "baby GPT" (4 layers, 4 heads, 128 embd, block 64, batch 12, dropout 0,
# lr 1e-3 cosine to 1e-4) on Shakespeare with RustyGradients and then with PyTorch, on this
# machine, and prints both results.
#
# Quality comes from one full run of each. Speed on a shared machine drifts by tens of percent
# over minutes, so two long runs one after the other compare two different machines; the
# speed ratio therefore comes from ROUNDS short interleaved runs (RustyGradients, then PyTorch,
# SPEED_STEPS steps each, no evaluation), and the script prints each round's ratio and their
# median.
#
#   scripts/bench_baby_gpt.sh                       # full runs (2000 steps) + 5 speed rounds
#   STEPS=200 ROUNDS=3 scripts/bench_baby_gpt.sh    # a quicker look
#
# Needs a venv with torch at .venv (python3 -m venv .venv && .venv/bin/pip install torch).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/shakespeare/shakespeare.txt}
STEPS=${STEPS:-2000}
EVAL_INTERVAL=${EVAL_INTERVAL:-250}
ROUNDS=${ROUNDS:-5}
SPEED_STEPS=${SPEED_STEPS:-300}
PY=${PY:-.venv/bin/python}
OUT=target/bench-baby-gpt
mkdir -p "$OUT"

cargo build --release -p rustygradients-cli
model=(--n-layer 4 --n-head 4 --n-embd 128 --block-size 64 --batch-size 12 --dropout 0.0
       --lr 1e-3 --min-lr 1e-4 --warmup 100 --weight-decay 0.1 --seed 1337)
# --overwrite: each run replaces the previous one in its output folder.
rg() { ./target/release/rustygradients train --data "$DATA" "${model[@]}" --overwrite "$@"; }
pt() { "$PY" scripts/train_baby_gpt_torch.py --data "$DATA" "${model[@]}" "$@"; }

echo "== RustyGradients, full run =="
rg --steps "$STEPS" --eval-interval "$EVAL_INTERVAL" --eval-iters 20 --out "$OUT/rustygradients" | tee "$OUT/rustygradients.log"
echo "== PyTorch, full run =="
pt --max-iters "$STEPS" --eval-interval "$EVAL_INTERVAL" --eval-iters 20 | tee "$OUT/pytorch.log"

for r in $(seq 1 "$ROUNDS"); do
    echo "== speed round $r/$ROUNDS =="
    rg --steps "$SPEED_STEPS" --eval-interval 1000000 --eval-iters 1 --out "$OUT/speed" > "$OUT/speed_rg_$r.log"
    pt --max-iters "$SPEED_STEPS" --eval-interval 1000000 --eval-iters 1 > "$OUT/speed_pt_$r.log"
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def result(p):
    return json.loads(next(l for l in open(p) if l.startswith("RESULT "))[7:])
res = [result(f"{out}/rustygradients.log"), result(f"{out}/pytorch.log")]
print("full runs (quality; the tokens/s of runs minutes apart are not comparable):")
print(f"{'':16}{'val loss':>10}{'train loss':>12}{'tokens/s':>12}{'peak RSS MB':>13}")
for r in res:
    print(f"{r['impl']:16}{r['final_val_loss']:>10.4f}{r['final_train_loss']:>12.4f}{r['tokens_per_s']:>12.0f}{r['peak_rss_mb']:>13.0f}")
ratios = []
print("speed rounds (interleaved):")
for i in range(1, rounds + 1):
    a, b = result(f"{out}/speed_rg_{i}.log"), result(f"{out}/speed_pt_{i}.log")
    ratios.append(a["tokens_per_s"] / b["tokens_per_s"])
    print(f"  round {i}: RustyGradients {a['tokens_per_s']:>7.0f}  PyTorch {b['tokens_per_s']:>7.0f} tokens/s  ratio {ratios[-1]:.2f}x")
if ratios:
    print(f"speed ratio (RustyGradients / PyTorch), median of {rounds} rounds: {statistics.median(ratios):.2f}x "
          f"(range {min(ratios):.2f}-{max(ratios):.2f})")
PY
