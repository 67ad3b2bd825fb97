"""The fused cached PixelCNN sampler: ``pygen.ops.pixelcnn_sample``.

One call runs the whole generation loop in C++ (CPU) or on the GPU without a host round trip
per value (CUDA: cuDNN/cuBLAS for the vertical stack per row, one kernel per row for the
horizontal stack, the head and the draws). The operator ``pygen::pixelcnn_sample`` is
registered in C++ (csrc/pixelcnn/pixelcnn.cpp); this module adds its fake implementation and the
public function. Its PyTorch twin is ``pygen.sampling.sample_cached``, which takes the same flat
weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, overload

import torch
from torch import Tensor

from pygen._extension import _C  # noqa: F401  (registers the pygen:: operators)
from pygen.ops._sampler import call_sampler, empty_samples

_sample = torch.ops.pygen.pixelcnn_sample


@torch.library.register_fake("pygen::pixelcnn_sample")
def _(weights, noise, seed, given, batch, channels, height, width, n_levels, *rest):
    shape = (batch, channels, height, width)
    return empty_samples(weights, noise, given, shape, n_levels, return_logits=rest[-1])


@overload
def pixelcnn_sample(
    weights: Sequence[Tensor],
    *,
    batch: int,
    channels: int,
    height: int,
    width: int,
    n_levels: int,
    kernel_size: int,
    noise: Tensor | None = ...,
    temperature: float = ...,
    generator: torch.Generator | None = ...,
    given: Tensor | None = ...,
    return_logits: Literal[False] = ...,
) -> tuple[Tensor, None]: ...


@overload
def pixelcnn_sample(
    weights: Sequence[Tensor],
    *,
    batch: int,
    channels: int,
    height: int,
    width: int,
    n_levels: int,
    kernel_size: int,
    noise: Tensor | None = ...,
    temperature: float = ...,
    generator: torch.Generator | None = ...,
    given: Tensor | None = ...,
    return_logits: Literal[True],
) -> tuple[Tensor, Tensor]: ...


@overload
def pixelcnn_sample(
    weights: Sequence[Tensor],
    *,
    batch: int,
    channels: int,
    height: int,
    width: int,
    n_levels: int,
    kernel_size: int,
    noise: Tensor | None = ...,
    temperature: float = ...,
    generator: torch.Generator | None = ...,
    given: Tensor | None = ...,
    return_logits: bool,
) -> tuple[Tensor, Tensor | None]: ...


def pixelcnn_sample(
    weights: Sequence[Tensor],
    *,
    batch: int,
    channels: int,
    height: int,
    width: int,
    n_levels: int,
    kernel_size: int,
    noise: Tensor | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    given: Tensor | None = None,
    return_logits: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Sample ``batch`` images of a Gated PixelCNN in one C++ call.

    Args:
        weights: the flat list of ``pygen.sampling.export_weights``: float32, float64,
            float16 or bfloat16, with float32 math for the 16-bit ones (on the CPU every
            activation is float32; on CUDA those kept between kernels are 16-bit). On CUDA the
            vertical stack's convolutions follow ``torch.backends.cudnn.allow_tf32``, like the
            model's forward.
        batch, channels, height, width: the images ``(B, C, H, W)`` to generate.
        n_levels: levels per value; kernel_size: the model's odd kernel width.
        noise: uniforms ``(B, C, H, W)`` in ``[0, 1)`` of the weights' dtype; drawn inside the
            kernel when None (Philox uniform ``((b * C + c) * H + i) * W + j`` of a seed drawn
            from ``generator`` or torch's default generator).
        temperature: softmax temperature.
        given: int64 levels ``(B, C, H, W)`` to keep, ``-1`` where a value is drawn: a
            completion of the given values. Each drawn value is conditioned on the values before
            it in raster and channel order, given or drawn; so a given raster prefix (say the top
            rows) gives exact samples of the rest given it, while a value given after a drawn
            one is kept but does not condition it.
        return_logits: also return the logits ``(B, L, C, H, W)`` each value was drawn from.

    Returns:
        ``(images, logits)``: int64 levels ``(B, C, H, W)`` and the logits (None unless asked).
    """
    return call_sampler(
        _sample,
        weights,
        noise,
        generator,
        given,
        (batch, channels, height, width, n_levels, kernel_size),
        temperature,
        return_logits,
    )
