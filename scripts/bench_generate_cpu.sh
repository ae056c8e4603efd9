#!/usr/bin/env bash
# CPU generation benchmark, batch 1, all implementations side by side on a shared machine:
# ROUNDS interleaved rounds of { transformers f32/f16/bf16 (scripts/bench_generate_torch.py),
# llama.cpp f32/f16/bf16 (scripts/bench_llamacpp.sh), optionally RustyGradients (RG_CMD) },
# each measurement started only once the machine has been idle for a moment (other people's
# builds on a 2-core VM slow these benchmarks down 2-50x), then a summary.
#
#   scripts/bench_generate_cpu.sh                          # 3 rounds, 2 threads, 128 tokens
#   ROUNDS=5 THREADS=2 TOKENS=128 DTYPES="f32 bf16" scripts/bench_generate_cpu.sh
#   RG_CMD='target/release/rustygradients generate --model {model} ... --json' \
#       scripts/bench_generate_cpu.sh                      # add RustyGradients; {model} and
#                                                          # {dtype} are substituted, it must
#                                                          # print one JSON line with "impl",
#                                                          # "dtype" and "tokens_per_s"
#
# Needs the models (.venv/bin/python scripts/make_bench_models.py --only gpt2); the first
# llama.cpp call builds llama.cpp (about 8 minutes on 2 cores). Prints every JSON line as it comes,
# prefixed with the round ("R1 {...}"), then one summary line per implementation and dtype:
#   SUMMARY {"impl": ..., "dtype": ..., "median_of_round_medians": ..., "best_run": ...,
#            "round_medians": [...]}
# best_run (the fastest single timed run of any round) is the least disturbed figure; compare
# implementations on it, or on round medians from rounds whose loadavg/idle wait look clean.
#
# Knobs: ROUNDS (3), THREADS (2), TOKENS (128), DTYPES ("f32 f16 bf16"), MODELS
# (target/bench-models), IDLE_PCT (90: minimum idle % over IDLE_SECS=3 s before each measurement),
# IDLE_TIMEOUT (600 s: then measure anyway and say so on stderr), PY (.venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
TOKENS=${TOKENS:-128}
DTYPES=${DTYPES:-"f32 f16 bf16"}
MODELS=${MODELS:-target/bench-models}
IDLE_PCT=${IDLE_PCT:-90}
IDLE_SECS=${IDLE_SECS:-3}
IDLE_TIMEOUT=${IDLE_TIMEOUT:-600}
RG_CMD=${RG_CMD:-}
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

idle_pct() {  # idle % of all CPUs over $1 seconds, from /proc/stat
    local a b
    a=($(head -1 /proc/stat)); sleep "$1"; b=($(head -1 /proc/stat))
    local ta=0 tb=0 i
    for i in 1 2 3 4 5 6 7 8; do ta=$((ta + a[i])); tb=$((tb + b[i])); done
    echo $(( 100 * ((b[4] + b[5]) - (a[4] + a[5])) / (tb - ta > 0 ? tb - ta : 1) ))
}
wait_idle() {
    local t0=$SECONDS p
    while :; do
        p=$(idle_pct "$IDLE_SECS")
        [ "$p" -ge "$IDLE_PCT" ] && return 0
        if [ $((SECONDS - t0)) -ge "$IDLE_TIMEOUT" ]; then
            echo "machine still busy (idle ${p}%) after ${IDLE_TIMEOUT}s; measuring anyway" >&2
            return 0
        fi
    done
}

for r in $(seq "$ROUNDS"); do
    echo "round $r, $(date -u +%H:%M:%S) UTC, loadavg $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    for dt in $DTYPES; do
        wait_idle
        "$PY" scripts/bench_generate_torch.py --model "$MODELS/gpt2-124m-$dt" --dtype "$dt" \
            --tokens "$TOKENS" --batch 1 --threads "$THREADS" --device cpu 2>/dev/null \
            | sed "s/^/R$r /" | tee -a "$LOG"
        wait_idle
        MODEL=$MODELS/gpt2-124m-f32 DTYPES=$dt THREADS=$THREADS TOKENS=$TOKENS \
            scripts/bench_llamacpp.sh 2>/dev/null | sed "s/^/R$r /" | tee -a "$LOG"
        if [ -n "$RG_CMD" ]; then
            wait_idle
            cmd=${RG_CMD//\{model\}/$MODELS/gpt2-124m-$dt}
            cmd=${cmd//\{dtype\}/$dt}
            bash -c "$cmd" 2>/dev/null | grep '^{' | sed "s/^/R$r /" | tee -a "$LOG"
        fi
    done
done

"$PY" - "$LOG" <<'EOF'
import collections, json, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    d = json.loads(line.split(" ", 1)[1])
    rows[(d["impl"], d["dtype"])].append(d)
for (impl, dtype), ds in rows.items():
    meds = [d["tokens_per_s"] for d in ds]
    best = max(max(d.get("tokens_per_s_runs") or [d["tokens_per_s"]]) for d in ds)
    print("SUMMARY " + json.dumps({"impl": impl, "dtype": dtype,
          "median_of_round_medians": round(statistics.median(meds), 2), "best_run": round(best, 2),
          "round_medians": meds}))
EOF
