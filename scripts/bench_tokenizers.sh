#!/usr/bin/env bash
# Characters vs BPE on Shakespeare: tokens per character of each tokenizer, and the val loss per
# character that the same small GPT reaches on its tokens (PERFORMANCE.md, "Tokenizers").
#
# Tokenizers: characters; byte-level BPE vocabularies of 1k, 5k and 16k tokens trained by
# `rustygradients tokenizer train` on the first 90% of the corpus's characters (so the val text,
# the last 10% of the tokens, is not what the merges were learned from); GPT-2's 50257 tokens. Each trains the same
# GPT (same layers, heads, width, block size in tokens, batch and steps), one run after another.
#
#   scripts/bench_tokenizers.sh [WORK_DIR]          # default target/bench-tokenizers
#
# It builds the release binary first unless BIN names one. Environment: BIN, DATA (the corpus),
# GPT2 (folder of encoder.json + vocab.bpe), STEPS, EVAL_ITERS, RAYON_NUM_THREADS (default 1),
# and ONLY (a space-separated subset of: char bpe1k bpe5k bpe16k gpt2).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${BIN:-}" ]; then
  cargo build --release -p rustygradients-cli
  BIN=target/release/rustygradients
fi
DATA=${DATA:-../shared/data/shakespeare/shakespeare.txt}
GPT2=${GPT2:-../shared/data/gpt2-bpe}
WORK=${1:-target/bench-tokenizers}
STEPS=${STEPS:-400}
EVAL_ITERS=${EVAL_ITERS:-40}
ONLY=${ONLY:-char bpe1k bpe5k bpe16k gpt2}
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-1}
export LC_ALL=C.UTF-8 # wc -m counts UTF-8 characters

MODEL=(--n-layer 4 --n-head 4 --n-embd 128 --block-size 64 --batch-size 12
       --steps "$STEPS" --warmup $(( STEPS / 10 )) --lr 1e-3 --min-lr 1e-4
       --eval-interval "$STEPS" --eval-iters "$EVAL_ITERS" --sample-chars 0 --seed 1337)

mkdir -p "$WORK"
chars=$(wc -m < "$DATA")
python3 - "$DATA" "$WORK/tokenizer-train.txt" <<'EOF'
import sys
text = open(sys.argv[1], encoding="utf-8").read()
open(sys.argv[2], "w", encoding="utf-8").write(text[: len(text) * 9 // 10])
EOF
rows="$WORK/rows.tsv"
: > "$rows"

for name in $ONLY; do
  dir="$WORK/$name"
  rm -rf "$dir"
  mkdir -p "$dir"
  tok_flags=()
  tok_start=$(date +%s)
  case $name in
    char) ;;
    bpe1k | bpe5k | bpe16k)
      n=${name#bpe}; n=$(( ${n%k} * 1000 ))
      "$BIN" tokenizer train --data "$WORK/tokenizer-train.txt" --vocab-size "$n" \
        --out "$dir/tokenizer.json"
      tok_flags=(--tokenizer "$dir/tokenizer.json") ;;
    gpt2)
      "$BIN" tokenizer convert --vocab "$GPT2/encoder.json" --merges "$GPT2/vocab.bpe" \
        --out "$dir/tokenizer.json"
      tok_flags=(--tokenizer "$dir/tokenizer.json") ;;
    *) echo "unknown tokenizer $name" >&2; exit 1 ;;
  esac
  tok_secs=$(( $(date +%s) - tok_start ))

  # Tokens of the whole corpus, and of the val split (the last 10% of the tokens, as
  # TextDataset splits them) with the characters they decode to.
  if [ "$name" = char ]; then
    tokens=$chars; val_tokens=$(( chars - chars * 9 / 10 )); val_chars=$val_tokens
  else
    if [ "$name" = gpt2 ]; then
      # Encoded from GPT-2's own files (the converted tokenizer.json gives the same ids:
      # tests/tokenizer_cli.rs).
      "$BIN" tokenizer encode --vocab "$GPT2/encoder.json" --merges "$GPT2/vocab.bpe" --whole \
        < "$DATA" > "$dir/ids.txt"
    else
      "$BIN" tokenizer encode --tokenizer "$dir/tokenizer.json" --whole < "$DATA" > "$dir/ids.txt"
    fi
    tokens=$(wc -w < "$dir/ids.txt")
    val_tokens=$(( tokens - tokens * 9 / 10 ))
    val_chars=$(tr ' ' '\n' < "$dir/ids.txt" | tail -n "$val_tokens" | tr '\n' ' ' \
      | "$BIN" tokenizer decode --tokenizer "$dir/tokenizer.json" --whole | wc -m)
  fi

  start=$(date +%s)
  "$BIN" train --data "$DATA" "${tok_flags[@]}" "${MODEL[@]}" --out "$dir/run" \
    > "$dir/train.log"
  secs=$(( $(date +%s) - start ))
  result=$(sed -n 's/^RESULT //p' "$dir/train.log")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$tokens" "$val_tokens" "$val_chars" \
    "$tok_secs" "$secs" "$result" >> "$rows"
  echo "$name done in ${secs}s"
done

python3 - "$rows" "$chars" <<'EOF'
import json, math, sys
rows, chars = sys.argv[1], int(sys.argv[2])
print(f"corpus: {chars} characters")
print("| tokenizer | vocab | params | tokens/char (corpus) | tokens/char (val split) | val loss (nats/token) | val loss (nats/char) | bits/char | vocab s | train s | run s | tokens/s |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for line in open(rows):
    name, tokens, val_tokens, val_chars, tok_secs, secs, result = line.rstrip("\n").split("\t")
    r = json.loads(result)
    tpc = int(tokens) / chars
    vtpc = int(val_tokens) / int(val_chars)
    loss = r["final_val_loss"]
    per_char = loss * vtpc
    print(f"| {name} | {r['vocab_size']} | {r['params']} | {tpc:.4f} | {vtpc:.4f} | {loss:.4f} | "
          f"{per_char:.4f} | {per_char / math.log(2):.3f} | {tok_secs} | {r['train_seconds']:.0f} | {secs} | "
          f"{r['tokens_per_s']:.0f} |")
EOF
