"""Loads the compiled module pygen._C, refusing one built against another torch."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

_REBUILD = (
    f"rebuild pygen (imported from {Path(__file__).parent}): `pip install --no-build-isolation "
    "-e .` in a checkout (or `make test`), `pip install --no-build-isolation pygen` otherwise"
)


def check_torch_version(built: str, installed: str) -> None:
    """Raise ImportError when the extension was built against another torch than the installed."""
    if built != installed:
        raise ImportError(
            f"pygen._C was built against torch {built} but torch {installed} is installed; "
            f"{_REBUILD}"
        )


def load():
    """Import pygen._C, with a clear error when it is missing or was built for another torch."""
    try:  # by name: `from pygen import _C` reads as a circular import when the file is missing
        _C = importlib.import_module("pygen._C")
    except ImportError as err:  # missing module or undefined symbols of another torch
        raise ImportError(
            f"pygen._C could not be loaded with torch {torch.__version__} ({err}); {_REBUILD}"
        ) from err
    check_torch_version(_C.build_info()["torch_version"], torch.__version__)
    return _C


_C = load()


def build_info() -> dict[str, Any]:
    """How pygen._C was built.

    Keys: ``cuda`` (CUDA kernels compiled in), ``cuda_arch_list`` (TORCH_CUDA_ARCH_LIST used, empty
    without CUDA), ``torch_version`` (the torch it was built against), ``openmp`` (CPU kernels
    parallelized with OpenMP), ``cxx_compiler`` and ``cuda_compiler`` (what compiled the host and
    the CUDA units; the latter empty without CUDA), and ``cpu_matmul_vector_bytes``: the vector
    width of the CPU samplers' matrix products on this machine (64 with AVX-512, unless the
    environment sets ``PYGEN_CPU_AVX512=0``, which also keeps the Philox generator off AVX-512;
    32 with AVX2 and FMA; else 16); ``cpu_baseline_only``: the CPU kernels built for the x86-64
    baseline alone, without their AVX-512 and AVX2 versions (a check build,
    ``PYGEN_CPU_BASELINE=1``).
    """
    return dict(_C.build_info())
