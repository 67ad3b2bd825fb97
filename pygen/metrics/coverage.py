"""Mode coverage of samples from a Gaussian mixture with known modes (Srivastava et al. 2017)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class ModeCoverage(NamedTuple):
    """``modes_hit``: modes with at least ``min_hits`` samples near them; ``high_quality``: the
    fraction of samples near any mode; ``counts``: samples near each mode."""

    modes_hit: int
    high_quality: float
    counts: Tensor


@torch.no_grad()
def mode_coverage(
    samples: Tensor, modes: Tensor, std: float, n_std: float = 3.0, min_hits: int = 1
) -> ModeCoverage:
    """Which modes ``(K, D)`` the samples ``(N, D)`` hit: a sample within ``n_std * std`` of a mode
    (in Euclidean distance) counts for its nearest mode and as high quality."""
    if samples.dim() != 2 or modes.dim() != 2 or samples.shape[1] != modes.shape[1]:
        raise ValueError(
            f"samples (N, D) and modes (K, D) needed, got {tuple(samples.shape)} and "
            f"{tuple(modes.shape)}"
        )
    if not len(samples) or not len(modes):
        raise ValueError(f"needs samples and modes, got {len(samples)} and {len(modes)}")
    dist, nearest = torch.cdist(samples.float(), modes.float().to(samples.device)).min(dim=1)
    close = dist <= n_std * std
    counts = torch.bincount(nearest[close].cpu(), minlength=len(modes))
    return ModeCoverage(int((counts >= min_hits).sum()), close.float().mean().item(), counts)
