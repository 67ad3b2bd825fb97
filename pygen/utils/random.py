"""Latent draws that follow the caller's generator wherever it lives."""

from __future__ import annotations

import torch
from torch import Tensor


def standard_normal(
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Standard normals of ``shape`` drawn on ``generator``'s device (the CPU without one), then
    moved to ``device``: a CPU generator gives the same numbers for a model on any device, and a
    CUDA generator (what ``pygen sample`` passes on a GPU) works too."""
    source = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=source, dtype=dtype).to(device)
