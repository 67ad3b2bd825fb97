#!/usr/bin/env bash
# The CPU kernels' code that a native run on an AVX-512 machine never executes, in two parts:
# 1. The AVX2 code: the kernel tests run under valgrind, whose virtual CPU has AVX2 + FMA but no
#    AVX-512, so the loader picks the x86-64-v3 clones (PYGEN_CPU_CLONES) and the 32-byte
#    matrix-product and Philox paths (PYGEN_CPU_AVX512=0 switches the latter only). torch.compile
#    tests are left out: inductor compiles its kernels for the host, AVX-512 included, which
#    valgrind cannot run.
# 2. The baseline code (the "default" clones, what a CPU without AVX2 runs, and the Philox
#    generator's scalar loop, the samplers' 16-byte products): a CPU-only build with
#    PYGEN_CPU_BASELINE=1, which compiles the kernels for the x86-64 baseline alone, into a copy of
#    the package in build/baseline; the same tests and the samplers' run natively on it.
# Usage: scripts/cpu_clones_check.sh [pytest args]
#   default: the affine coupling, reparam+KL, Philox and MADE solve tests (~4 min on 2 cores under
#   valgrind), then those and the PixelCNN and PixelRNN sampler tests on the baseline build (its
#   build ~2 min, the tests ~1 min)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")  # absolute: the baseline tests run elsewhere
command -v valgrind >/dev/null || { echo "cpu_clones_check: valgrind is not installed" >&2; exit 1; }
run() { valgrind --tool=none -q "$PY" "$@"; }
width=$(run -c "import pygen; print(pygen.build_info()['cpu_matmul_vector_bytes'])")
if [ "$width" != 32 ]; then
  echo "cpu_clones_check: under valgrind the kernels chose $width-byte vectors, not 32" >&2
  exit 1
fi
kernel_tests=(tests/test_affine_coupling.py tests/test_reparam_kl.py tests/test_philox.py
  tests/test_autoregressive_flows.py)
skip="not compile and not learns and not cnf and not trace and not euler"
if [ $# -eq 0 ]; then
  run -m pytest -p no:cacheprovider -q "${kernel_tests[@]}" \
    -k "$skip and not (gradients_match and (y or logdet))"
else
  run -m pytest -p no:cacheprovider -q "$@"
fi

echo "cpu_clones_check: the baseline build"
base=build/baseline
rm -rf "$base" && mkdir -p "$base"
cp -r pygen "$base/"
rm -f "$base"/pygen/_C*.so
export PATH="$(dirname "$PY"):$PATH"  # cmake and ninja from the virtual environment
PYGEN_CUDA=0 PYGEN_CPU_BASELINE=1 cmake -S . -B build/cmake-baseline -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DPython_EXECUTABLE="$PY" -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$PWD/$base/pygen" >/dev/null
cmake --build build/cmake-baseline -j "${MAX_JOBS:-$(nproc)}" >/dev/null
# From the copy's folder, which python puts first on sys.path (ahead of the editable install).
root=$PWD
baseline() { (cd "$base" && "$PY" "$@"); }
found=$(baseline -c "import pygen; i = pygen.build_info(); print(pygen.__file__, \
  i['cpu_baseline_only'], i['cpu_matmul_vector_bytes'])")
if [ "$found" != "$root/$base/pygen/__init__.py True 16" ]; then
  echo "cpu_clones_check: the tests would not run the baseline build ($found)" >&2
  exit 1
fi
if [ $# -eq 0 ]; then
  set -- "${kernel_tests[@]}" tests/test_pixelcnn.py tests/test_pixelrnn.py -k "$skip"
fi
args=()
for a in "$@"; do [ -e "${a%%::*}" ] && args+=("$root/$a") || args+=("$a"); done
baseline -m pytest -p no:cacheprovider -q "${args[@]}"
