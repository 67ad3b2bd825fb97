# Set-up and jobs. `make demo` and `make test` each create .venv, install torch and pygen (dev
# extras) and build the extension when needed, then run their job; a second run reuses it all.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SOURCES := $(shell find csrc -type f) CMakeLists.txt setup.py pyproject.toml

.PHONY: demo test bench lint cpu-clones-check clang-check gpu-check gpu-prebuild gpu-profile clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# torch first: the extension builds against the torch already installed (no build isolation).
$(VENV)/.deps: pyproject.toml | $(PY)
	$(PIP) install "torch>=2.11" setuptools wheel ninja "cmake>=3.26"
	$(PIP) install -e ".[dev]" --no-build-isolation
	touch $@

$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	$(PIP) install --no-build-isolation --no-deps -e .
	touch $@

demo: $(VENV)/.built
	$(PY) -m pygen demo

test: $(VENV)/.built
	$(PY) -m pytest tests -q

bench: $(VENV)/.built
	$(PY) -m benchmarks.run

lint: $(VENV)/.deps
	$(PY) -m ruff check pygen tests benchmarks scripts setup.py
	$(PY) -m ruff format --check pygen tests benchmarks scripts setup.py
	$(PY) -m mypy

# On an AVX-512 CPU with valgrind: the kernel tests on the AVX2 code, then on a build for the x86-64
# baseline (scripts/cpu_clones_check.sh).
cpu-clones-check: $(VENV)/.built
	scripts/cpu_clones_check.sh

# The CPU sources compiled by clang for x86-64 and aarch64 (compile only; scripts/clang_check.sh).
clang-check: $(VENV)/.built
	scripts/clang_check.sh

# On a GPU machine (torch preinstalled, no internet): build, CUDA tests, sanitizers, benchmarks.
gpu-check:
	scripts/gpu_check.sh $(OUT)

# Here, before a GPU call: the extension built for the GPU machines' image (Python 3.12, torch
# 2.11) into .prebuilt/, which gpu-check uses where its sources match (carry .prebuilt).
gpu-prebuild:
	scripts/build_for_device.sh

# Nsight Compute counters of the kernels (gpu-check runs it too, in the time it has left).
gpu-profile:
	scripts/gpu_profile.sh $(OUT)

clean:
	rm -rf build pygen/_C*.so
