#!/usr/bin/env bash
# Generation on the GPU, RustyGradients and HF transformers on the same card in one run:
# random-weight GPT-2-124M (f32 and bf16) and a 1.17B Llama-shaped model (bf16), greedy, 128 new
# tokens, batch 1 and 32. One JSON line per result in $OUT/generate.jsonl.
#
# Build here (the GPU machine has no Rust toolchain):
#   cargo build --release --features rustygradients/cuda --example generate_bench
#   cp target/release/examples/generate_bench .gpu/   # then carry .gpu
# Run there, from the repository root: scripts/bench_generate_gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-.gpu/generate_bench}
PY=${PY:-python3}
OUT=${OUT:-target/generate-bench}
TOKENS=${TOKENS:-128}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/host.txt"
"$PY" scripts/make_bench_models.py --only gpt2 >&2
"$PY" scripts/make_bench_models.py --only llama >&2
for spec in "gpt2-124m-f32 f32" "gpt2-124m-bf16 bf16" "llama-1b-bf16 bf16"; do
    set -- $spec
    for batch in 1 32; do
        "$BENCH" --model "target/bench-models/$1" --dtype "$2" --tokens "$TOKENS" --batch "$batch" \
            --device cuda | tee -a "$OUT/generate.jsonl"
        "$PY" scripts/bench_generate_torch.py --model "target/bench-models/$1" --dtype "$2" \
            --tokens "$TOKENS" --batch "$batch" --device cuda 2>>"$OUT/torch.log" | tee -a "$OUT/generate.jsonl"
    done
done
