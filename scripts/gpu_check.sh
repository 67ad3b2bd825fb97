#!/usr/bin/env bash
# One command for a GPU machine (issue: GPU validation): build against the torch installed there,
# report the build and the GPU, run the CUDA tests, the benchmarks of the CUDA kernels,
# compute-sanitizer memcheck and racecheck over the kernel tests, then the whole test suite, and
# collect the results JSON and a log in one folder. The order puts what only a GPU can show first,
# and every step has a time limit, so that a lease that ends early still returns the most.
# Usage: scripts/gpu_check.sh [OUT_DIR]   (env: PYTHON, GPU_CHECK_BENCH_OPS)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-gpu_check_out}}
PYTHON=${PYTHON:-python3}
BENCH_OPS=${GPU_CHECK_BENCH_OPS:-copy reparam_kl affine_coupling pixelcnn}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
export PYTHONUNBUFFERED=1
status=0
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, remember a failure, go on
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  echo "=== $name" | tee -a "$LOG"
  timeout "$limit" "$@" >>"$LOG" 2>&1
  local code=$?
  [ $code -ne 0 ] && { echo "FAILED $name (exit $code)" | tee -a "$LOG"; status=1; }
  echo "--- $name: $((SECONDS - start)) s" | tee -a "$LOG"
}
collect() { cp benchmarks/results/cuda-*.json "$OUT_DIR"/ 2>/dev/null; }
: >"$LOG"
step build 300 "$PYTHON" -m pip install --no-build-isolation --no-deps -e .
step info 60 "$PYTHON" -m pygen info
step nvidia-smi 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
KERNEL_TESTS="tests/test_reparam_kl.py tests/test_affine_coupling.py tests/test_pixelcnn.py"
step "cuda tests" 240 "$PYTHON" -m pytest $KERNEL_TESTS tests/test_build.py -q -k cuda -p no:cacheprovider -x -rf
step benchmarks 420 "$PYTHON" -m benchmarks.run --ops $BENCH_OPS
collect
for tool in memcheck racecheck; do
  step "compute-sanitizer $tool" 180 compute-sanitizer --tool "$tool" --error-exitcode 1 \
    "$PYTHON" -m pytest tests/test_pixelcnn.py tests/test_reparam_kl.py tests/test_affine_coupling.py \
    -q -p no:cacheprovider -k "cuda and not opcheck and not compile and not moments"
done
step "whole suite" 600 "$PYTHON" -m pytest tests -q -p no:cacheprovider -n 8 -rf
collect
grep -E "^(===|---|FAILED)|passed|failed|error" "$LOG" | tail -60
exit $status
