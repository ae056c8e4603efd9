#!/usr/bin/env bash
# Trains nanoGPT's CPU "baby GPT" (4 layers, 4 heads, 128 embd, block 64, batch 12, dropout 0,
# lr 1e-3 cosine to 1e-4) on Shakespeare with RustyGradients and then with PyTorch, on this
# machine, one after the other, and prints both results and the tokens/s ratio.
#
#   scripts/bench_baby_gpt.sh               # full run: 2000 steps each
#   STEPS=200 scripts/bench_baby_gpt.sh     # a quicker speed comparison
#
# Needs a venv with torch at .venv (python3 -m venv .venv && .venv/bin/pip install torch).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/shakespeare/shakespeare.txt}
STEPS=${STEPS:-2000}
EVAL_INTERVAL=${EVAL_INTERVAL:-250}
PY=${PY:-.venv/bin/python}
OUT=target/bench-baby-gpt
mkdir -p "$OUT"

cargo build --release -p rustygradients-cli
common=(--n-layer 4 --n-head 4 --n-embd 128 --block-size 64 --batch-size 12 --dropout 0.0
        --lr 1e-3 --min-lr 1e-4 --warmup 100 --weight-decay 0.1 --eval-interval "$EVAL_INTERVAL" --eval-iters 20 --seed 1337)

echo "== RustyGradients =="
./target/release/rustygradients train --data "$DATA" --steps "$STEPS" --out "$OUT/rustygradients" "${common[@]}" | tee "$OUT/rustygradients.log"
echo "== PyTorch =="
"$PY" scripts/train_baby_gpt_torch.py --data "$DATA" --max-iters "$STEPS" "${common[@]}" | tee "$OUT/pytorch.log"

python3 - "$OUT/rustygradients.log" "$OUT/pytorch.log" <<'PY'
import json, sys
res = [json.loads(next(l for l in open(p) if l.startswith("RESULT "))[7:]) for p in sys.argv[1:]]
print(f"{'':16}{'val loss':>10}{'train loss':>12}{'tokens/s':>12}{'peak RSS MB':>13}")
for r in res:
    print(f"{r['impl']:16}{r['final_val_loss']:>10.4f}{r['final_train_loss']:>12.4f}{r['tokens_per_s']:>12.0f}{r['peak_rss_mb']:>13.0f}")
print(f"speed ratio (RustyGradients / PyTorch): {res[0]['tokens_per_s'] / res[1]['tokens_per_s']:.2f}x")
PY
