#!/usr/bin/env bash
# One command for a GPU machine (issue: GPU validation): build against the torch installed there,
# report the build and the GPU, run the whole test suite with the CUDA tests active, run
# compute-sanitizer memcheck and racecheck over the CUDA kernel tests, run the benchmark suite,
# and collect the results JSON and a log in one folder. Usage: scripts/gpu_check.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-gpu_check_out}}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
status=0
step() {  # step NAME COMMAND...: run, log, remember a failure, keep going
  echo "=== $1" | tee -a "$LOG"
  shift
  "$@" >>"$LOG" 2>&1 || { echo "FAILED (exit $?)" | tee -a "$LOG"; status=1; }
}
: >"$LOG"
step build "$PYTHON" -m pip install --no-build-isolation --no-deps -e .
step info "$PYTHON" -m pygen info
step nvidia-smi nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
step tests timeout 900 "$PYTHON" -m pytest tests -q -p no:cacheprovider
KERNEL_TESTS="tests/test_reparam_kl.py $(ls tests/test_affine_coupling.py tests/test_pixelcnn.py 2>/dev/null)"
for tool in memcheck racecheck; do
  step "compute-sanitizer $tool" compute-sanitizer --tool "$tool" --error-exitcode 1 \
    "$PYTHON" -m pytest $KERNEL_TESTS -q -k cuda -p no:cacheprovider
done
step benchmarks "$PYTHON" -m benchmarks.run
cp benchmarks/results/cuda-*.json benchmarks/REPORT.md "$OUT_DIR"/ 2>/dev/null
grep -E "^(===|FAILED)|passed|failed" "$LOG"
exit $status
