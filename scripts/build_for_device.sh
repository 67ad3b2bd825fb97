#!/usr/bin/env bash
# Builds the extension here, on the CPU machine, for the GPU machines' image (Python 3.12, torch
# 2.11.0+cu130, sm_90), into .prebuilt/ with the stamp of its sources (source_stamp.sh), so that
# gpu_check.sh there skips the build: about two minutes of a 15-minute device lease. gpu_check.sh
# builds anyway where the stamp differs or the build does not load there.
# Usage: scripts/build_for_device.sh   (env: PYTHON312, a Python 3.12, default pyenv's newest;
# DEVICE_TORCH, default 2.11.0; DEVICE_VENV, default .venv-device)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${DEVICE_VENV:-.venv-device}
if [ ! -x "$VENV/bin/python" ]; then
  pyenv_312=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 2>/dev/null | tail -1)
  PY312=${PYTHON312:-$pyenv_312}
  [ -x "$PY312" ] || { echo "no Python 3.12: set PYTHON312" >&2; exit 1; }
  "$PY312" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q "torch==${DEVICE_TORCH:-2.11.0}" numpy setuptools wheel \
    ninja "cmake>=3.26"
fi
"$VENV/bin/python" -m pip install -q --no-build-isolation --no-deps -e .
so=$(ls pygen/_C.cpython-312-*.so)
# It loads beside torch here (no GPU needed; the package's other dependencies are not installed).
"$VENV/bin/python" - "$so" <<'PY'
import importlib.util, sys
import torch  # noqa: F401  (the extension links against torch's libraries)
spec = importlib.util.spec_from_file_location("pygen._C", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
PY
mkdir -p .prebuilt
rm -f .prebuilt/*
gzip -c "$so" >".prebuilt/$(basename "$so").gz"
scripts/source_stamp.sh >.prebuilt/source.sha256
ls -l .prebuilt
