"""Pure-PyTorch twins of every pygen op: the oracle of the tests and the baseline of the benchmarks.

Each function has the signature of its fused op and depends on torch only.
"""

from __future__ import annotations

import torch
from torch import Tensor


def reparameterize_kl(
    mu: Tensor,
    logvar: Tensor,
    noise: Tensor | None = None,
    *,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """z = mu + exp(logvar / 2) * noise and KL(N(mu, exp(logvar)) || N(0, I)) per row."""
    z_shape = mu.shape if n_samples == 1 else (n_samples, *mu.shape)
    if noise is None:
        noise = torch.randn(z_shape, dtype=mu.dtype, device=mu.device, generator=generator)
    z = mu + torch.exp(0.5 * logvar) * noise
    kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)
    return z, kl
