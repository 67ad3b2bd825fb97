#!/usr/bin/env bash
# Device call 1 (not committed): validate the v3 row kernel, time it, try a deeper unroll, ncu.
set -uo pipefail
export PYTHONUNBUFFERED=1 MAX_JOBS=16
L=$OUT/call1.log
t0=$SECONDS
step() { local lim=$1; shift; echo "=== $* ($((SECONDS-t0)) s)" >>$L; timeout $lim "$@" >>$L 2>&1; echo "--- rc $? ($((SECONDS-t0)) s)" >>$L; }
step 150 python3 -m pip install --no-build-isolation --no-deps -e .
step 90 python3 -m pytest tests/test_pixelcnn.py -q -p no:cacheprovider -n 8 -k cuda -x
step 90 python3 -m benchmarks.tune_pixelcnn
which ncu >>$L 2>&1 && step 60 ncu --clock-control none --kernel-name regex:row_kernel --launch-skip 20 --launch-count 1 \
  --section WarpStateStats --section SchedulerStats --section LaunchStats --section MemoryWorkloadAnalysis \
  python3 -c 'import torch; from pygen.models import PixelCNN; from benchmarks.bench_pixelcnn import MODELS; m=PixelCNN(**MODELS["mnist28"]).cuda().eval(); m.sample(1); torch.cuda.synchronize()'
sed -i 's/constexpr int kLoadsInFlight = 8;/constexpr int kLoadsInFlight = 16;/' csrc/pixelcnn/cuda.cu
step 120 python3 -m pip install --no-build-isolation --no-deps -e .
step 60 python3 -m pytest tests/test_pixelcnn.py -q -p no:cacheprovider -n 8 -k "cuda and same_noise"
step 90 python3 -m benchmarks.tune_pixelcnn
cat $L | tail -150
