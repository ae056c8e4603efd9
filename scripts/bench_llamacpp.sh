#!/usr/bin/env bash
# llama.cpp side of the CPU generation benchmark (batch 1): builds llama.cpp, converts a
# HuggingFace GPT-2 model directory to GGUF in f32 / f16 / bf16 with llama.cpp's own
# convert_hf_to_gguf.py, and times token generation with llama-bench.
#
#   scripts/bench_llamacpp.sh                                   # defaults below
#   THREADS=2 TOKENS=128 REPS=3 DTYPES="f32 f16 bf16" scripts/bench_llamacpp.sh
#   MODEL=target/bench-models/gpt2-124m-f32 scripts/bench_llamacpp.sh
#
# Prints one JSON line per dtype on stdout (everything else goes to stderr), e.g.
#   {"impl": "llama.cpp", "dtype": "f16", "batch": 1, "threads": 2, "new_tokens": 128,
#    "tokens_per_s": 123.4, "tokens_per_s_runs": [...], "llama_cpp_commit": "0c1e570...", ...}
# tokens_per_s is the median over REPS llama-bench repetitions of `-p 0 -n TOKENS` (tg128:
# TOKENS tokens decoded one at a time from an empty context, after llama-bench's own warm-up run);
# tokens_per_s_best is the fastest repetition and loadavg_1m_before the load average before the
# run: on a shared machine other work can slow ggml's spinning threads down many times over.
#
# Make the model first: .venv/bin/python scripts/make_bench_models.py --only gpt2
#
# What it does (everything lives in target/llama.cpp/, git-ignored; each step is skipped when its
# output is already there, so a rerun only benchmarks):
#   1. pip download the llama-cpp-python sdist (version LLAMA_CPP_PYTHON_VERSION, pinned for
#      reproducibility) into target/llama.cpp/dl/ and unpack it into target/llama.cpp/src/; the
#      llama.cpp sources are its vendor/llama.cpp (a git submodule checkout: the commit is read
#      from it and printed).
#   2. cmake (Release, CPU only, GGML_NATIVE=ON, static, no curl/openssl, no tests/examples/server;
#      about 8 minutes with 2 jobs on a 2-core VM)
#      into target/llama.cpp/build/ and build only the llama-bench target with JOBS jobs.
#      cmake comes from PATH, else from the venv (pip-installed there if missing).
#   3. convert_hf_to_gguf.py MODEL --outtype DTYPE -> target/llama.cpp/gguf/<model>-<dtype>.gguf
#      (<model> = MODEL's name less a -f32/-f16/-bf16 suffix; redone when model.safetensors is newer),
#      using the sources' own gguf-py (needs torch, transformers, numpy, pyyaml, tqdm, requests in
#      the venv; the missing small ones are pip-installed).
#   4. llama-bench -m X.gguf -p 0 -n TOKENS -t THREADS -r REPS -o json, one run per dtype.
#
# Environment knobs: PY (default .venv/bin/python), MODEL, THREADS (2), TOKENS (128), REPS (3),
# DTYPES ("f32 f16 bf16"), JOBS (2, build parallelism), LLAMA_CPP_PYTHON_VERSION (0.3.36),
# EXTRA_CMAKE_ARGS (e.g. "-DGGML_CUDA=ON" for a GPU build in another BUILD dir), BUILD
# (target/llama.cpp/build), BENCH_ARGS (extra llama-bench arguments, e.g. "-ngl 99").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PY=${PY:-$ROOT/.venv/bin/python}
MODEL=${MODEL:-target/bench-models/gpt2-124m-f32}
THREADS=${THREADS:-2}
TOKENS=${TOKENS:-128}
REPS=${REPS:-3}
DTYPES=${DTYPES:-"f32 f16 bf16"}
JOBS=${JOBS:-2}
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
W=$ROOT/target/llama.cpp
BUILD=${BUILD:-$W/build}
EXTRA_CMAKE_ARGS=${EXTRA_CMAKE_ARGS:-}
BENCH_ARGS=${BENCH_ARGS:-}

log() { echo "[bench_llamacpp $(date +%H:%M:%S)] $*" >&2; }
step_start() { STEP_T0=$(date +%s.%N); }
step_end() { log "$1 took $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $STEP_T0}") s"; }


# 1. sources
SDIST=$W/dl/llama_cpp_python-$VERSION.tar.gz
SRC=$W/src/llama_cpp_python-$VERSION/vendor/llama.cpp
if [ ! -f "$SDIST" ]; then
    step_start
    mkdir -p "$W/dl"
    # --no-binary only for llama-cpp-python itself: its build dependencies (cmake,
    # scikit-build-core, needed to prepare metadata) still come as wheels.
    "$PY" -m pip download --no-deps --no-binary llama-cpp-python -d "$W/dl" \
        "llama-cpp-python==$VERSION" >&2
    step_end "sdist download"
fi
if [ ! -f "$SRC/CMakeLists.txt" ]; then
    mkdir -p "$W/src"
    tar xzf "$SDIST" -C "$W/src"
fi
COMMIT=$(git -C "$SRC" rev-parse HEAD 2>/dev/null || echo unknown)
log "llama-cpp-python $VERSION, vendored llama.cpp commit $COMMIT"

# 2. build llama-bench
CMAKE=$(command -v cmake || true)
if [ -z "$CMAKE" ]; then
    CMAKE=$(dirname "$PY")/cmake
    [ -x "$CMAKE" ] || "$PY" -m pip install cmake >&2
fi
step_start
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    "$CMAKE" -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
        -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
        -DLLAMA_BUILD_APP=OFF $EXTRA_CMAKE_ARGS >&2
fi
"$CMAKE" --build "$BUILD" --target llama-bench -j "$JOBS" >&2
step_end "cmake configure+build"
BENCH=$BUILD/bin/llama-bench

# 3. convert
[ -f "$MODEL/config.json" ] || { log "no model at $MODEL (run scripts/make_bench_models.py)"; exit 1; }
MODEL_NAME=$(basename "$MODEL" | sed -E 's/-(f32|f16|bf16)$//')  # gpt2-124m-f32 -> gpt2-124m
"$PY" -c "import yaml, tqdm, requests" 2>/dev/null || "$PY" -m pip install pyyaml tqdm requests >&2
mkdir -p "$W/gguf"
for DT in $DTYPES; do
    OUT=$W/gguf/$MODEL_NAME-$DT.gguf
    if [ ! -f "$OUT" ] || [ "$MODEL/model.safetensors" -nt "$OUT" ]; then
        step_start
        "$PY" "$SRC/convert_hf_to_gguf.py" "$MODEL" --outtype "$DT" --outfile "$OUT.tmp" >&2
        mv "$OUT.tmp" "$OUT"
        step_end "convert $DT"
    fi
done

# 4. bench
for DT in $DTYPES; do
    OUT=$W/gguf/$MODEL_NAME-$DT.gguf
    LOAD=$(cut -d' ' -f1 /proc/loadavg)
    step_start
    # shellcheck disable=SC2086
    "$BENCH" -m "$OUT" -p 0 -n "$TOKENS" -t "$THREADS" -r "$REPS" -o json $BENCH_ARGS \
        > "$W/bench-$MODEL_NAME-$DT.json"
    step_end "llama-bench $DT"
    "$PY" - "$W/bench-$MODEL_NAME-$DT.json" "$DT" "$COMMIT" "$VERSION" "$LOAD" <<'EOF'
import json, statistics, sys
path, dtype, commit, version, load = sys.argv[1:]
rows = [r for r in json.load(open(path)) if r.get("n_gen", 0) > 0]
r = rows[0]
runs = r.get("samples_ts") or [r["avg_ts"]]
print(json.dumps({
    "impl": "llama.cpp", "dtype": dtype, "batch": 1, "threads": r.get("n_threads"),
    "new_tokens": r["n_gen"], "tokens_per_s": round(statistics.median(runs), 2),
    "tokens_per_s_best": round(max(runs), 2), "tokens_per_s_runs": [round(x, 2) for x in runs],
    "avg_ts": round(r["avg_ts"], 2), "stddev_ts": round(r.get("stddev_ts", 0.0), 2),
    "model_type": r.get("model_type"), "model_size": r.get("model_size"),
    "backends": r.get("backends"), "cpu_info": r.get("cpu_info"),
    "llama_cpp_commit": commit, "build_commit": r.get("build_commit"),
    "llama_cpp_python": version, "loadavg_1m_before": float(load)}), flush=True)
EOF
done
