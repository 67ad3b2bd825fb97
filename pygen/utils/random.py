"""Latent draws that follow the caller's generator wherever it lives, and the seeds of a run's
separate random streams."""

from __future__ import annotations

import hashlib

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


def derived_seed(seed: int, *keys: int | str) -> int:
    """A seed for the stream named by ``keys`` (e.g. ``"batch", step``) of a run seeded with
    ``seed``: a hash of them all, so that no two streams share a seed (an arithmetic rule such as
    ``seed * K + step`` gives seed 1's first batch to seed 0's step ``K``)."""
    digest = hashlib.blake2b(repr((seed, *keys)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # below 2**63: any torch generator takes it
