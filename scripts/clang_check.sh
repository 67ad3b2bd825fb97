#!/usr/bin/env bash
# The CPU sources compiled by clang (zig's, from the ziglang wheel) for x86-64 and aarch64 Linux,
# with -Wall, against the installed torch's headers: compile only, nothing links or runs. The build
# here uses GCC, whose function multi-versioning clang does not take for templates: under clang
# the kernels take their one portable path (common/cpu_vec.h, PYGEN_X86_LEVELS), and this check
# keeps that path compiling, on Arm too (a Grace Hopper machine, say).
# Usage: scripts/clang_check.sh [TARGET...]   (default: x86_64-linux-gnu aarch64-linux-gnu;
# ~4 min on 2 cores, and ~2 min the first time for zig's libc++ of each target)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -c "import ziglang" 2>/dev/null || "$PY" -m pip install -q ziglang
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(x86_64-linux-gnu aarch64-linux-gnu)
mapfile -t includes < <("$PY" - <<'PY'
import sysconfig

import torch.utils.cpp_extension as e

for path in [*e.include_paths(), sysconfig.get_paths()["include"]]:
    print(f"-isystem{path}")
PY
)
defines=(-DTORCH_EXTENSION_NAME=_C -DTORCH_API_INCLUDE_EXTENSION_H -DPYGEN_TORCH_VERSION='"clang"'
  -DPYGEN_CUDA_ARCH_LIST='""' -DPYGEN_CXX_COMPILER='"clang"' -DPYGEN_CUDA_COMPILER='""')
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
failed=0
for target in "${targets[@]}"; do
  for source in csrc/*.cpp csrc/*/*.cpp; do
    if ! "$PY" -m ziglang c++ -target "$target" -std=c++20 -O2 -fno-math-errno -Wall -Werror \
      -Icsrc "${includes[@]}" "${defines[@]}" -c "$source" -o "$out/$(basename "$source").o"; then
      echo "clang_check: $source does not compile for $target" >&2
      failed=1
    fi
  done
  echo "clang_check: $target done"
done
exit $failed
