#!/usr/bin/env bash
# The GPU machine's half of issue 11's proof, run from the repository root there:
#   1. every test binary in $BINS (built on a development machine with the `cuda` feature, see
#      below) — the whole suite, with the GPU tests running instead of skipping;
#   2. compute-sanitizer: memcheck over a representative set of GPU op tests, racecheck over
#      the reduction, softmax and normalisation kernels;
#   3. the CLI training on the GPU.
# Logs go to $OUT (the device tool brings them back). STAGES picks parts (default all three):
#   STAGES="tests cli" scripts/gpu_check.sh
#
# Build here:
#   CARGO_PROFILE_DEV_DEBUG=0 cargo test --workspace --features rustygradients-core/cuda \
#       --no-run --message-format=json | scripts/collect_test_bins.py .gpu/tests
#   cargo build --release --features rustygradients-core/cuda -p rustygradients-cli
set -uo pipefail
cd "$(dirname "$0")/.."
BINS=${BINS:-.gpu/tests}
OUT=${OUT:-target/gpu-check}
mkdir -p "$OUT"
uname -r | tee "$OUT/host.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$OUT/host.txt"
# Test fixtures and the CLI tests' binary are found through paths compiled in on the build
# machine (/work/main/...).
here=$(pwd)
if [ ! -e /work/main ]; then mkdir -p /work && ln -s "$here" /work/main; fi
if [ -f .gpu/tests.tar.xz ] && [ ! -d "$BINS" ]; then tar xJf .gpu/tests.tar.xz -C .gpu; fi
if [ -f .gpu/rustygradients-debug ]; then
    mkdir -p target/debug && cp .gpu/rustygradients-debug target/debug/rustygradients
fi

# Where cuDNN 9 is installed, cuda_flash must see its fused attention run, not only ours.
if ldconfig -p 2>/dev/null | grep -q 'libcudnn\.so\.9'; then export RUSTYGRADIENTS_EXPECT_CUDNN=1; fi

STAGES=${STAGES:-tests sanitizer cli}
has() { [[ " $STAGES " == *" $1 "* ]]; }
failed=0
: >"$OUT/tests.txt"
has tests && for t in "$BINS"/*; do
    log="$OUT/test-$(basename "$t").log"
    if ! "$t" >"$log" 2>&1; then
        echo "FAILED: $t" | tee -a "$OUT/tests.txt"; failed=1
        tail -n 40 "$log"
    fi
    grep -E "^test result" "$log" | sed "s|^|$(basename "$t"): |" | tee -a "$OUT/tests.txt"
done
grep -h "skipping" "$OUT"/test-*.log | sort | uniq -c | tee -a "$OUT/tests.txt"

ops=$(ls "$BINS"/cuda_ops-* | head -1)
if has sanitizer && command -v compute-sanitizer >/dev/null; then
    compute-sanitizer --tool memcheck --error-exitcode 9 "$ops" --test-threads=1 \
        cuda_binary_broadcast cuda_reductions cuda_softmax cuda_layer_norm cuda_losses \
        cuda_matmul cuda_scaled_dot_product_attention cuda_indexing cuda_adamw_step \
        cuda_dtype_casts cuda_index_errors cuda_random >"$OUT/memcheck.log" 2>&1
    echo "memcheck exit $?" | tee -a "$OUT/tests.txt"; tail -n 5 "$OUT/memcheck.log"
    compute-sanitizer --tool racecheck --error-exitcode 9 "$ops" --test-threads=1 \
        cuda_reductions cuda_softmax cuda_layer_norm cuda_losses >"$OUT/racecheck.log" 2>&1
    echo "racecheck exit $?" | tee -a "$OUT/tests.txt"; tail -n 5 "$OUT/racecheck.log"
    # FlashAttention's tiles (shared memory, cp.async, ldmatrix) at every tail size.
    flash=$(ls "$BINS"/cuda_flash-* | head -1)
    compute-sanitizer --tool memcheck --error-exitcode 9 "$flash" --test-threads=1 \
        cuda_flash_attention_small cuda_flash_attention_on_strided >"$OUT/memcheck-flash.log" 2>&1
    echo "memcheck (flash) exit $?" | tee -a "$OUT/tests.txt"; tail -n 3 "$OUT/memcheck-flash.log"
    compute-sanitizer --tool racecheck --error-exitcode 9 "$flash" --test-threads=1 \
        cuda_flash_attention_small >"$OUT/racecheck-flash.log" 2>&1
    echo "racecheck (flash) exit $?" | tee -a "$OUT/tests.txt"; tail -n 3 "$OUT/racecheck-flash.log"
fi

CLI=${CLI:-.gpu/rustygradients}
DATA=${DATA:-.gpu/shakespeare.txt}
if has cli && [ -x "$CLI" ] && [ -f "$DATA" ]; then
    "$CLI" train --device cuda --precision bf16 --data "$DATA" --steps 500 --eval-interval 250 \
        --out /tmp/rg-gpu --overwrite 2>&1 | tail -n 15 | tee "$OUT/train.log"
    "$CLI" generate --model /tmp/rg-gpu --device cuda --prompt "ROMEO:" --max-tokens 80 \
        2>&1 | tail -n 5 | tee -a "$OUT/train.log"
fi
exit $failed
