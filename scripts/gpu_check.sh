#!/usr/bin/env bash
# One command for a GPU machine (issue: GPU validation): build against the torch installed there,
# report the build and the GPU, run the whole test suite (CUDA tests active), the sampler's tuning
# run, compute-sanitizer memcheck and racecheck over the kernel tests, the benchmarks of the CUDA
# kernels, and collect the results JSON and a log in one folder; then, in the time left, the
# kernels' hardware counters (gpu_profile.sh). Every step has a time limit, the whole run a
# deadline, and results are copied as they come, so that a lease that ends early still returns
# the most.
# Usage: scripts/gpu_check.sh [OUT_DIR]   (env: PYTHON; GPU_CHECK_SECONDS, the deadline, 570)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-gpu_check_out}}
PYTHON=${PYTHON:-python3}
DEADLINE=${GPU_CHECK_SECONDS:-570}  # one device call may run 600 s
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
export PYTHONUNBUFFERED=1
status=0
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, remember a failure, go on
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  local left=$((DEADLINE - SECONDS))
  if [ $left -lt 20 ]; then
    echo "SKIPPED $name: the run's deadline" | tee -a "$LOG"
    return 0
  fi
  [ "$limit" -gt $left ] && limit=$left
  echo "=== $name" | tee -a "$LOG"
  timeout "$limit" "$@" >>"$LOG" 2>&1
  local code=$?
  [ $code -ne 0 ] && { echo "FAILED $name (exit $code)" | tee -a "$LOG"; status=1; }
  echo "--- $name: $((SECONDS - start)) s" | tee -a "$LOG"
}
collect() { cp benchmarks/results/cuda-*.json "$OUT_DIR"/ 2>/dev/null; }
: >"$LOG"
# Times seen on an H200 (2026-11-26): build 57-105 s, the whole suite 118 s with -n 14,
# copy/reparam/affine benchmarks 35 s, PixelCNN benchmarks ~150 s (rows are written as they
# finish, so a step cut at its limit keeps the rows it timed).
# Pure-Python dependencies the image lacks (geomloss) travel as wheels in .whl/ (NOTES.md).
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q --no-index --no-deps --target /tmp/pygen_wheels .whl/*.whl &&
    export PYTHONPATH=/tmp/pygen_wheels${PYTHONPATH:+:$PYTHONPATH}
fi
step build 240 "$PYTHON" -m pip install --no-build-isolation --no-deps -e .
step info 15 "$PYTHON" -m pygen info
step nvidia-smi 5 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
# The sanitizers run beside the test suite (both only check results; nothing is timed until both
# end), in a subshell with a log of its own that joins the main log afterwards.
sanitizers() {
  LOG="$OUT_DIR/sanitizers.log"
  : >"$LOG"
  # The kernels under the sanitizer, not the argument errors (their own tests cover them).
  step "compute-sanitizer memcheck" 150 compute-sanitizer --tool memcheck --error-exitcode 1 \
    "$PYTHON" -m pytest tests/test_pixelcnn.py tests/test_pixelrnn.py tests/test_reparam_kl.py \
    tests/test_affine_coupling.py tests/test_autoregressive_flows.py \
    -q -p no:cacheprovider -x -k "cuda and not compile and not opcheck and not moments and not gradcheck and not error"
  # racecheck instruments every shared-memory access: one small case per kernel (the block
  # kernel's took 16-50 s); the cluster kernel's stores into other blocks go through distributed
  # shared memory.
  step "compute-sanitizer racecheck (block kernel)" 50 compute-sanitizer --tool racecheck \
    --error-exitcode 1 "$PYTHON" -m pytest tests/test_pixelcnn.py -q -p no:cacheprovider -x \
    -k "cuda_fused_same_noise and 1-None-3-1.0"
  step "compute-sanitizer racecheck (cluster kernel)" 60 compute-sanitizer --tool racecheck \
    --error-exitcode 1 "$PYTHON" -m pytest tests/test_pixelcnn.py -q -p no:cacheprovider -x \
    -k "cluster_kernel_same_noise and 4x2x1 and 1.0"
  step "compute-sanitizer racecheck (PixelRNN)" 50 compute-sanitizer --tool racecheck \
    --error-exitcode 1 "$PYTHON" -m pytest tests/test_pixelrnn.py -q -p no:cacheprovider -x \
    -k "cuda_fused_same_noise and 1.0 and 3-3"
  return $status
}
sanitizers &
sanitizers_pid=$!
# One line per test, so that a run cut at its limit still names what passed and failed; a test
# that hangs (a kernel waiting on a barrier) is stopped by pytest-timeout where it is installed.
hang_limit=()
"$PYTHON" -c "import pytest_timeout" 2>/dev/null && hang_limit=(--timeout 90)
step tests 200 "$PYTHON" -m pytest tests -v -p no:cacheprovider -n 12 -rfE "${hang_limit[@]}"
wait $sanitizers_pid || status=1
cat "$OUT_DIR/sanitizers.log" >>"$LOG"
# The sampler's kernels side by side (the block kernel and the opt-in cluster kernel): the numbers
# that decide which one runs by default; then the suite's rows, the newest kernels' first (a
# deadline cuts the rows, not the validation).
step "tune_pixelcnn" 100 "$PYTHON" -m benchmarks.tune_pixelcnn
step "benchmarks (PixelRNN sampler, MADE solve)" 120 "$PYTHON" -m benchmarks.run --ops pixelrnn \
  autoregressive_flows
collect
step "benchmarks (PixelCNN sampler)" 150 "$PYTHON" -m benchmarks.run --ops pixelcnn
collect
step "benchmarks (memory-bound ops)" 45 "$PYTHON" -m benchmarks.run --ops copy reparam_kl affine_coupling
collect
# In the time left, the counters (text reports in OUT_DIR, the most wanted first).
# gpu_profile.sh keeps to the time left itself (its ncu runs in process groups of their own, which
# this step's timeout would not reach).
GPU_PROFILE_SECONDS=$((DEADLINE - SECONDS - 5)) step "gpu_profile" 600 scripts/gpu_profile.sh "$OUT_DIR"
grep -E "^(===|---|FAILED|ERROR|SKIPPED)|[0-9]+ (passed|failed)" "$LOG" | tail -60
exit $status
