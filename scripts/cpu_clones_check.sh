#!/usr/bin/env bash
# The CPU kernels' AVX2 code on an AVX-512 machine: the kernel tests run under valgrind, whose
# virtual CPU has AVX2 + FMA but no AVX-512, so the loader picks the x86-64-v3 clones
# (PYGEN_CPU_CLONES) and the 32-byte matrix-product and Philox paths, code that a native run here
# never executes (PYGEN_CPU_AVX512=0 switches the latter only). torch.compile tests are left out:
# inductor compiles its kernels for the host, AVX-512 included, which valgrind cannot run.
# Usage: scripts/cpu_clones_check.sh [pytest args]
#   default: the affine coupling, reparam+KL, Philox and MADE solve tests (~4 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
command -v valgrind >/dev/null || { echo "cpu_clones_check: valgrind is not installed" >&2; exit 1; }
run() { valgrind --tool=none -q "$PY" "$@"; }
width=$(run -c "import pygen; print(pygen.build_info()['cpu_matmul_vector_bytes'])")
if [ "$width" != 32 ]; then
  echo "cpu_clones_check: under valgrind the kernels chose $width-byte vectors, not 32" >&2
  exit 1
fi
if [ $# -eq 0 ]; then
  set -- tests/test_affine_coupling.py tests/test_reparam_kl.py tests/test_philox.py \
    tests/test_autoregressive_flows.py \
    -k "not compile and not learns and not cnf and not trace and not euler and not (gradients_match and (y or logdet))"
fi
run -m pytest -p no:cacheprovider -q "$@"
