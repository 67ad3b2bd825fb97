"""What the fused samplers' operators (``pixelcnn_sample``, ``pixelrnn_sample``) share: their
outputs' shapes, for the fake implementations, and the call with an optional in-kernel seed."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from pygen.ops._fake import check_same_device, indexed
from pygen.ops._random import draw_seed


def empty_samples(
    weights: Sequence[Tensor],
    noise: Tensor | None,
    given: Tensor | None,
    shape: tuple[int, int, int, int],
    n_levels: int,
    return_logits: bool,
) -> tuple[Tensor, Tensor]:
    """Empty outputs of a sampler of images ``shape = (B, C, H, W)``: int64 images and logits
    ``(B, L, C, H, W)`` of the weights' dtype (``(0,)`` unless asked), on the device that the
    weights, ``noise`` and ``given`` share."""
    others = dict(noise=noise, given=given)
    check_same_device("weights[0]", weights[0], **indexed("weights", weights), **others)
    ref = weights[-1]
    images = ref.new_empty(shape, dtype=torch.int64)
    batch, *rest = shape
    return images, ref.new_empty((batch, n_levels, *rest) if return_logits else (0,))


def call_sampler(
    op: Callable[..., tuple[Tensor, Tensor]],
    weights: Sequence[Tensor],
    noise: Tensor | None,
    generator: torch.Generator | None,
    given: Tensor | None,
    shape_args: tuple,
    temperature: float,
    return_logits: bool,
) -> tuple[Tensor, Tensor | None]:
    """``op(weights, noise, seed, given, *shape_args, temperature, return_logits)``, with a seed
    drawn from ``generator`` when there is no noise; the logits None unless asked."""
    if not weights:
        raise ValueError("weights must hold the exported model's tensors, got none")
    seed = draw_seed(weights[-1].device, generator) if noise is None else None
    images, logits = op(
        list(weights), noise, seed, given, *shape_args, float(temperature), return_logits
    )
    return images, (logits if return_logits else None)
