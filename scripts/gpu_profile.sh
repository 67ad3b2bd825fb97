#!/usr/bin/env bash
# Hardware counters of the CUDA kernels (Nsight Compute), after gpu_check.sh has built the
# extension: where each kernel's time goes (throughput against the card's peaks, occupancy, what
# its warps wait on). One text report per job in the output folder.
# Usage: scripts/gpu_profile.sh [OUT_DIR [JOB...]]   (the named jobs only, default all; env:
# PYTHON; GPU_PROFILE_SECONDS, a deadline for all jobs: each is cut to the time left, and skipped
# under 20 s)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-gpu_profile_out}}
JOBS=("${@:2}")
PYTHON=${PYTHON:-python3}
DEADLINE=${GPU_PROFILE_SECONDS:-400}
mkdir -p "$OUT_DIR"
# Clocks left alone (the device README); the sections that answer "bound by what".
NCU=(ncu --clock-control none --kernel-name-base demangled --section SpeedOfLight
  --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats
  --section WarpStateStats --section SchedulerStats)
profile() {  # profile NAME SECONDS JOB NCU_FILTER...: one job of benchmarks.profile_kernels
  local name=$1 limit=$2 job=$3 start=$SECONDS left=$((DEADLINE - SECONDS))
  shift 3
  [ ${#JOBS[@]} -gt 0 ] && [[ " ${JOBS[*]} " != *" $name "* ]] && return
  if [ $left -lt 20 ]; then
    echo "--- $name: skipped (deadline)"
    return
  fi
  [ "$limit" -gt $left ] && limit=$left
  # -k: ncu and its Python get a KILL 5 s after the TERM, so nothing outlives the deadline.
  timeout -k 5 "$limit" "${NCU[@]}" "$@" "$PYTHON" -m benchmarks.profile_kernels "$job" \
    >"$OUT_DIR/ncu-$name.txt" 2>&1
  echo "--- $name: exit $?, $((SECONDS - start)) s"
}
# Most wanted first (a deadline may cut the rest). The sampler at batch 1: one row's cluster
# kernel, then every kernel of a later row (the vertical stack's convolutions, gates and link
# products).
profile pixelcnn-b1-cluster 60 pixelcnn-1 -k "regex:cluster_row_kernel" --launch-skip 2 -c 1
# The memory-bound kernels, float32 then bfloat16 (14 launches).
profile memory-bound 100 memory -k "regex:pygen::(reparam_kl|affine_coupling)::" -c 16
profile pixelcnn-b1-row 90 pixelcnn-1 --launch-skip 150 -c 40
# At batch 256, one row of the block kernel.
profile pixelcnn-b256-block 60 pixelcnn-256 -k "regex:::row_kernel" --launch-skip 2 -c 1
