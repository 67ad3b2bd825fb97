"""GaussianReparameterize: the VAE sampling step and its KL term as one module."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pygen import ops


class GaussianReparameterize(nn.Module):
    """``(mu, logvar) -> (z, kl)`` through the fused ``pygen.ops.reparameterize_kl``;
    ``forward_stacked`` takes the two as one tensor, an encoder's output.

    Args:
        n_samples: draws of z per row (``z`` gets a leading sample dimension when > 1).
        reference: use the pure-PyTorch twin instead of the fused kernel (for comparisons).
    """

    def __init__(self, n_samples: int = 1, reference: bool = False) -> None:
        super().__init__()
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        self.n_samples = n_samples
        self.reference = reference

    def forward(
        self,
        mu: Tensor,
        logvar: Tensor,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        n_samples: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``n_samples`` overrides the module's count for this call (an IWAE bound with k draws)."""
        op = ops.reference.reparameterize_kl if self.reference else ops.reparameterize_kl
        n_samples = self.n_samples if n_samples is None else n_samples
        return op(mu, logvar, noise, n_samples=n_samples, generator=generator)

    def forward_stacked(
        self,
        stats: Tensor,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        n_samples: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``forward(*stats.chunk(2, dim=-1), ...)`` for ``stats`` ``(..., 2 * D)``, mu then
        logvar, through ``pygen.ops.reparameterize_kl_stacked``: the same results, and the
        gradient of ``stats`` written as one tensor (no concatenation of the halves')."""
        op = (
            ops.reference.reparameterize_kl_stacked
            if self.reference
            else ops.reparameterize_kl_stacked
        )
        n_samples = self.n_samples if n_samples is None else n_samples
        return op(stats, noise, n_samples=n_samples, generator=generator)

    def extra_repr(self) -> str:
        return f"n_samples={self.n_samples}, reference={self.reference}"
