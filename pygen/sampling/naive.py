"""The naive sampler of any autoregressive image model (PixelCNN, PixelRNN): the full network
once per generated value."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, Protocol, overload

import torch
from torch import Tensor, nn

from pygen.layers import frozen_masked_weights
from pygen.sampling.draw import draw_or_keep


class ImageModel(Protocol):
    """What the naive sampler reads: a module giving logits ``(B, n_levels, C, H, W)`` of integer
    images."""

    n_levels: int

    def __call__(self, x: Tensor, y: Tensor | None = None) -> Tensor: ...

    def modules(self) -> Iterator[nn.Module]: ...


@overload
def sample_naive(
    model: ImageModel,
    noise: Tensor,
    y: Tensor | None = ...,
    temperature: float = ...,
    return_logits: Literal[False] = ...,
    given: Tensor | None = ...,
) -> tuple[Tensor, None]: ...


@overload
def sample_naive(
    model: ImageModel,
    noise: Tensor,
    y: Tensor | None = ...,
    temperature: float = ...,
    *,
    return_logits: Literal[True],
    given: Tensor | None = ...,
) -> tuple[Tensor, Tensor]: ...


@overload
def sample_naive(
    model: ImageModel,
    noise: Tensor,
    y: Tensor | None = ...,
    temperature: float = ...,
    return_logits: bool = ...,
    given: Tensor | None = ...,
) -> tuple[Tensor, Tensor | None]: ...


@torch.no_grad()
def sample_naive(
    model: ImageModel,
    noise: Tensor,
    y: Tensor | None = None,
    temperature: float = 1.0,
    return_logits: bool = False,
    given: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Images ``(B, C, H, W)`` drawn value by value with uniforms ``noise`` ``(B, C, H, W)``,
    keeping the levels of ``given`` (``-1``: drawn; None: every value drawn).

    Returns ``(images, logits)``; logits ``(B, L, C, H, W)`` only with ``return_logits``.
    """
    b, channels, height, width = noise.shape
    images = torch.zeros(noise.shape, dtype=torch.int64, device=noise.device)
    used = noise.new_empty(b, model.n_levels, channels, height, width) if return_logits else None
    with frozen_masked_weights(model):
        for i in range(height):
            for j in range(width):
                for c in range(channels):
                    logits = model(images, y)[:, :, c, i, j]
                    kept = None if given is None else given[:, c, i, j]
                    images[:, c, i, j] = draw_or_keep(logits, noise[:, c, i, j], temperature, kept)
                    if used is not None:
                        used[:, :, c, i, j] = logits
    return images, used
