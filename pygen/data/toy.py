"""2-D toy data: a mixture of Gaussians with modes on a circle (the GAN mode-collapse benchmark)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def ring_modes(n_modes: int = 8, radius: float = 2.0) -> Tensor:
    """``(n_modes, 2)`` mode centres evenly spaced on a circle of ``radius``."""
    if n_modes < 1 or radius <= 0:
        raise ValueError(f"need n_modes >= 1 and radius > 0, got {n_modes} and {radius}")
    angles = torch.arange(n_modes, dtype=torch.float32) * (2 * math.pi / n_modes)
    return radius * torch.stack([angles.cos(), angles.sin()], dim=1)


def gaussian_ring(
    n: int,
    n_modes: int = 8,
    radius: float = 2.0,
    std: float = 0.02,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """``n`` samples ``(n, 2)`` of an equal-weight Gaussian mixture on a ring, and their modes."""
    centres = ring_modes(n_modes, radius)
    labels = torch.randint(n_modes, (n,), generator=generator)
    noise = std * torch.randn(n, 2, generator=generator)
    return centres[labels] + noise, labels
