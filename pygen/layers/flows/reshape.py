"""Shape-changing flow layers of the multi-scale architecture: squeeze and split."""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from pygen.layers.flows.base import FlowLayer
from pygen.ops import logdet_dtype


class Squeeze(nn.Module):
    """``(N, C, H, W) -> (N, 4C, H/2, W/2)``: each 2x2 spatial block becomes 4 channels
    (a permutation: logdet 0)."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() != 4 or x.shape[2] % 2 or x.shape[3] % 2:
            raise ValueError(f"Squeeze needs (N, C, H, W) with H and W even, got {tuple(x.shape)}")
        n, c, h, w = x.shape
        z = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return z.reshape(n, 4 * c, h // 2, w // 2), x.new_zeros(n, dtype=logdet_dtype(x.dtype))

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        if z.dim() != 4 or z.shape[1] % 4:
            raise ValueError(
                f"Squeeze.inverse needs (N, C, H, W) with C a multiple of 4, got {tuple(z.shape)}"
            )
        n, c, h, w = z.shape
        x = z.reshape(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(n, c // 4, 2 * h, 2 * w), z.new_zeros(n, dtype=logdet_dtype(z.dtype))


class MultiScaleSplit(nn.Module):
    """RealNVP's factoring-out: the second half of the channels leaves the flow here (it is a
    final latent, modelled by the prior directly) and the first half goes through ``inner``.
    The output keeps the input's shape: ``cat([inner(first), second])``."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        first, second = x.chunk(2, dim=1)
        z, logdet = self.inner(first)
        return torch.cat([z, second], dim=1), logdet

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        first, second = z.chunk(2, dim=1)
        x, logdet = cast(FlowLayer, self.inner).inverse(first)
        return torch.cat([x, second], dim=1), logdet
