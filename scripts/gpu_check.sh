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
  # The benchmarks end 10 s before the limit with fewer rounds (benchmarks.common.fit_to_deadline)
  # rather than lose the case the limit would cut.
  PYGEN_BENCH_DEADLINE=$(($(date +%s) + limit - 10)) timeout "$limit" "$@" >>"$LOG" 2>&1
  local code=$?
  [ $code -ne 0 ] && { echo "FAILED $name (exit $code)" | tee -a "$LOG"; status=1; }
  echo "--- $name: $((SECONDS - start)) s" | tee -a "$LOG"
}
collect() { cp benchmarks/results/cuda-*.json "$OUT_DIR"/ 2>/dev/null; }
: >"$LOG"
# Times seen on an H200 (2026-11-26): build 57-105 s, the whole suite 118 s with -n 14,
# copy/reparam/affine benchmarks 35 s, PixelCNN benchmarks ~150 s (a case's rows are written when
# it ends; near a step's limit the cases take fewer rounds, and those past it are skipped).
# Pure-Python dependencies the image lacks (geomloss) travel as wheels in .whl/ (NOTES.md).
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q --no-index --no-deps --target /tmp/pygen_wheels .whl/*.whl &&
    export PYTHONPATH=/tmp/pygen_wheels${PYTHONPATH:+:$PYTHONPATH}
fi
# A carried build (.prebuilt/: from scripts/build_for_device.sh on the CPU machine, or from an
# earlier call, below) saves the build's two minutes where it was built from these sources (its
# stamp, source_stamp.sh) and loads here; else it is set aside and the extension built.
stamp=$(scripts/source_stamp.sh)
use_prebuilt() {
  ls .prebuilt/_C*.so.gz >/dev/null 2>&1 || return 1
  [ "$(cat .prebuilt/source.sha256 2>/dev/null)" = "$stamp" ] || {
    echo "carried build ignored: built from other sources" | tee -a "$LOG"
    return 1
  }
  local f so=()
  for f in .prebuilt/_C*.so.gz; do
    so+=("pygen/$(basename "$f" .gz)")
    gunzip -c "$f" >"${so[-1]}"
  done
  PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} "$PYTHON" -c "import pygen._C" >>"$LOG" 2>&1 || {
    echo "carried build ignored: it does not load here" | tee -a "$LOG"
    rm -f "${so[@]}"
    return 1
  }
  echo "carried build used (sources $stamp)" | tee -a "$LOG"
}
if use_prebuilt; then
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  step build 240 "$PYTHON" -m pip install --no-build-isolation --no-deps -e .
  # The extension and its stamp, for a later call of the same sources to carry in .prebuilt/.
  for f in pygen/_C*.so; do
    [ -e "$f" ] && gzip -c "$f" >"$OUT_DIR/$(basename "$f").gz" && echo "$stamp" >"$OUT_DIR/source.sha256"
  done
fi
step info 15 "$PYTHON" -m pygen info
step nvidia-smi 5 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
# The sanitizers run beside the test suite and beside each other (all only check results; nothing
# is timed until all end), each in a subshell with a log of its own that joins the main log
# afterwards. Under them a sampler test takes 15-40 s (H200, 2026-11-27, beside the suite: memcheck
# passed 16 PixelCNN tests in 300 s; racecheck took 44 s on the block kernel's case and 278 s on
# the cluster kernel's), so each runs a chosen few cases.
in_background() {  # in_background NAME SECONDS COMMAND...: step, in a subshell with its own log
  local log="$OUT_DIR/$(echo "$1" | tr -c 'a-zA-Z0-9\n' '_').log"
  (LOG=$log && : >"$LOG" && step "$@" && exit $status) &
  background+=($!)
  background_logs+=("$log")
}
background=()
background_logs=()
# Only pygen's kernels are instrumented where compute-sanitizer filters by kernel name (every
# mangled name holds the namespace): the reference samplers' and PyTorch's own kernels in the same
# tests then run uninstrumented, which cut two cases at the time limit in the last runs.
kernel_filter=()
compute-sanitizer --help 2>/dev/null | grep -- "--kernel-name" >/dev/null && kernel_filter=(--kernel-name kns=pygen)
sanitize() {  # sanitize TOOL NAME TEST_FILE -k EXPRESSION: one background step
  in_background "compute-sanitizer $1 ($2)" 300 compute-sanitizer --tool "$1" --error-exitcode 1 \
    "${kernel_filter[@]}" "$PYTHON" -m pytest "$3" -v -p no:cacheprovider -x -k "$4"
}
# memcheck: the PixelCNN logits tests on every row kernel variant (grey, RGB class-conditional),
# the cluster kernel's same-noise case unfolded and folded and its tensor-core products (2 blocks,
# folded, float32 and bfloat16); one case of every other kernel.
cases="cuda_fused_logits_equal_full_forward_float32 and (1-None-3 or 3-2-5)"
cases="$cases or cluster_kernel_same_noise and 1.0 and 4x2x1 or cluster_kernel_on_tensor_cores and (48-2-1 or bfloat16-2-1)"
sanitize memcheck "PixelCNN" tests/test_pixelcnn.py "$cases"
cases="cuda_fused_same_noise and 1.0 and 1-2-size0 or fused_solve_and_backward_on_cuda and float32 and tanh"
sanitize memcheck "other kernels" tests "$cases or cuda_noise_equals_cpu_noise or cuda_matches_cpu_on_large_inputs"
# racecheck instruments every shared-memory access: one small case per kernel. The cluster
# kernel's stores into other blocks go through distributed shared memory.
sanitize racecheck "block kernel" tests/test_pixelcnn.py "cuda_fused_same_noise and block-1-None-3-1.0"
sanitize racecheck "cluster kernel" tests/test_pixelcnn.py "cluster_kernel_same_noise and 4x2x1x0 and 1.0"
sanitize racecheck "cluster kernel, folded" tests/test_pixelcnn.py "cluster_kernel_same_noise and 4x2x1x1 and 1.0"
sanitize racecheck "PixelRNN" tests/test_pixelrnn.py "cuda_fused_same_noise and 1.0 and diagonal-1-2-size0"
# One line per test, so that a run cut at its limit still names what passed and failed; a test
# that hangs (a kernel waiting on a barrier) is stopped by pytest-timeout where it is installed.
# (2026-11-27, H200, beside the sanitizers: 4696 passed in 236 s; the two failures were CPU tests,
# a CycleGAN training and a torch.compile, over 90 s on the shared cores: hence 240 s.)
hang_limit=()
"$PYTHON" -c "import pytest_timeout" 2>/dev/null && hang_limit=(--timeout 240)
# The CPU emulation of the CUDA kernels is left out: here the kernels themselves run, and each
# worker would build the emulators again.
step tests 300 "$PYTHON" -m pytest tests -v -p no:cacheprovider -n 10 -rfE "${hang_limit[@]}" \
  --ignore tests/test_cuda_emulation.py
# The cluster kernel's counters at batch 1 (what each product waits on; two sessions' runs ended
# before the profile step), while the sanitizers finish.
GPU_PROFILE_SECONDS=65 step "gpu_profile (cluster kernel)" 70 scripts/gpu_profile.sh "$OUT_DIR" \
  pixelcnn-b1-cluster
for i in "${!background[@]}"; do
  wait "${background[$i]}" || status=1
  cat "${background_logs[$i]}" >>"$LOG" && rm "${background_logs[$i]}"  # few files come back
done
# The sampler's kernels side by side (the block kernel and the opt-in cluster kernel): the numbers
# that decide which one runs by default; then the suite's rows, the newest kernels' first (a
# deadline cuts the rows, not the validation).
step "tune_pixelcnn" 100 "$PYTHON" -m benchmarks.tune_pixelcnn
collect
step "benchmarks (PixelRNN sampler, MADE solve)" 120 "$PYTHON" -m benchmarks.run --ops pixelrnn \
  autoregressive_flows
collect
# The ceilings first (copy, matmul, the cluster step: the sampler's floor needs the last).
step "benchmarks (ceilings, PixelCNN sampler)" 165 "$PYTHON" -m benchmarks.run --ops copy pixelcnn
collect
step "benchmarks (memory-bound ops)" 35 "$PYTHON" -m benchmarks.run --ops reparam_kl affine_coupling
collect
# In the time left, the counters (text reports in OUT_DIR, the most wanted first).
# gpu_profile.sh keeps to the time left itself (its ncu runs in process groups of their own, which
# this step's timeout would not reach).
GPU_PROFILE_SECONDS=$((DEADLINE - SECONDS - 5)) step "gpu_profile" 600 scripts/gpu_profile.sh "$OUT_DIR" \
  memory-bound pixelcnn-b1-row pixelcnn-b256-block
grep -E "^(===|---|FAILED|ERROR|SKIPPED)|[0-9]+ (passed|failed)" "$LOG" | tail -60
exit $status
