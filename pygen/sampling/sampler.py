"""The PixelCNN sampling front end: one contract, three implementations (fused, cached, naive)."""

from __future__ import annotations

import math
import numbers
from typing import Literal, cast, overload

import torch
from torch import Tensor

from pygen import ops
from pygen.sampling.cached import sample_cached
from pygen.sampling.naive import sample_naive
from pygen.sampling.weights import GatedPixelCNN, export_weights

METHODS = ("fused", "cached", "naive")


def check_sample_args(method: str, methods: tuple[str, ...], n: int, temperature: float) -> None:
    """Raise a clear error unless ``method`` is one of ``methods``, ``n >= 1`` and the
    temperature is finite and at least float32's smallest normal number (the draws divide by it
    in float32, where a smaller one could round to 0)."""
    if method not in methods:
        raise ValueError(f"method must be one of {methods}, got {method!r}")
    if not (math.isfinite(temperature) and temperature >= torch.finfo(torch.float32).tiny):
        raise ValueError(
            "temperature must be finite and at least 1.2e-38 (float32's smallest normal "
            f"number), got {temperature}"
        )
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")


def uniform_noise(
    noise: Tensor | None,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The given ``noise`` checked (uniforms in [0, 1) of ``shape`` on ``device``) and cast to
    ``dtype``, or, without it, fresh uniforms from ``generator`` (torch's default if None), in
    float32 for a 16-bit ``dtype`` (as the fused kernels' own): bfloat16 uniforms end at
    1 - 2^-8, and a level with less mass than that at the top of the CDF would never be drawn."""
    if noise is None:
        wide = torch.promote_types(dtype, torch.float32)
        return torch.rand(shape, generator=generator, dtype=wide, device=device)
    if not noise.is_floating_point():
        raise TypeError(f"noise must be a floating tensor of uniforms in [0, 1), got {noise.dtype}")
    if tuple(noise.shape) != shape:
        raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
    if noise.device != device:
        raise RuntimeError(f"noise is on {noise.device} but the model is on {device}")
    if noise.numel() and not ((noise >= 0) & (noise < 1)).all():
        raise ValueError("noise must hold uniforms in [0, 1)")
    # Uniforms near 1 round to 1.0 in a narrower dtype (bfloat16: from 0.998), which every draw
    # reads as past all levels but the last: they keep the largest value below 1 instead.
    return noise.to(dtype).clamp_max(1 - torch.finfo(dtype).eps / 2)


def check_given(given: Tensor | None, shape: tuple[int, ...], n_levels: int, device) -> None:
    """Raise a clear error unless ``given`` is None or int64 levels of ``shape`` on ``device`` in
    ``[0, n_levels)`` or ``-1`` (drawn). The PyTorch samplers' check; the fused operators check
    their own arguments in C++, with the same exceptions (dtype: TypeError, shape and values:
    ValueError, device: RuntimeError, as torch raises for a device mix)."""
    if given is None:
        return
    if given.dtype != torch.int64:
        raise TypeError(f"given must be int64 levels, got {given.dtype}")
    if tuple(given.shape) != shape:
        raise ValueError(f"given must have shape {shape}, got {tuple(given.shape)}")
    if given.device != device:
        raise RuntimeError(f"given is on {given.device} but the model is on {device}")
    if given.numel() and not ((given >= -1) & (given < n_levels)).all():
        raise ValueError(f"given must hold levels in [0, {n_levels}) or -1 (drawn)")


def sampler_noise(
    method: str,
    noise: Tensor | None,
    given: Tensor | None,
    shape: tuple[int, ...],
    n_levels: int,
    weight: Tensor,
    generator: torch.Generator | None,
) -> Tensor | None:
    """The uniforms sampler ``method`` reads, for a model whose output weight is ``weight``:
    ``noise`` checked and cast, fresh ``torch.rand`` ones for the PyTorch samplers, or None for
    the fused kernel, which draws its own from ``generator``. Checks ``given`` for the PyTorch
    samplers too (the fused operators check theirs in C++)."""
    # A numpy array or a list, say: one clear error for every method.
    kinds: dict[str, tuple[object, type]] = {
        "noise": (noise, Tensor),
        "given": (given, Tensor),
        "generator": (generator, torch.Generator),
    }
    for name, (value, kind) in kinds.items():
        if value is not None and not isinstance(value, kind):
            raise TypeError(f"{name} must be a {kind.__name__} or None, got {type(value).__name__}")
    if method == "fused" and noise is None:
        return None
    if method != "fused":
        check_given(given, shape, n_levels, weight.device)
    return uniform_noise(noise, shape, weight.dtype, weight.device, generator)


@overload
def sample(
    model: GatedPixelCNN,
    n: int,
    *,
    y: Tensor | None = ...,
    method: str = ...,
    noise: Tensor | None = ...,
    temperature: float = ...,
    generator: torch.Generator | None = ...,
    given: Tensor | None = ...,
    return_logits: Literal[False] = ...,
) -> Tensor: ...


@overload
def sample(
    model: GatedPixelCNN,
    n: int,
    *,
    y: Tensor | None = ...,
    method: str = ...,
    noise: Tensor | None = ...,
    temperature: float = ...,
    generator: torch.Generator | None = ...,
    given: Tensor | None = ...,
    return_logits: Literal[True],
) -> tuple[Tensor, Tensor]: ...


@overload
def sample(
    model: GatedPixelCNN,
    n: int,
    *,
    y: Tensor | None = ...,
    method: str = ...,
    noise: Tensor | None = ...,
    temperature: float = ...,
    generator: torch.Generator | None = ...,
    given: Tensor | None = ...,
    return_logits: bool,
) -> Tensor | tuple[Tensor, Tensor]: ...


@torch.no_grad()
def sample(
    model: GatedPixelCNN,
    n: int,
    *,
    y: Tensor | None = None,
    method: str = "fused",
    noise: Tensor | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    given: Tensor | None = None,
    return_logits: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """``n`` images ``(n, C, H, W)`` (int64 levels) from ``model`` in raster and channel order.

    Each value is the inverse-CDF draw (``pygen.sampling.draw``) of softmax(logits / temperature)
    with one uniform of ``noise`` ``(n, C, H, W)``; given the same noise, the three methods give
    the same images (up to rounding on the CDF boundaries). Without noise, ``fused`` draws its
    uniforms inside the kernel (Philox, seeded from ``generator`` or torch's default generator)
    and the others with ``torch.rand``; ``torch.manual_seed`` makes either reproducible.

    Args:
        model: a Gated PixelCNN (``pygen.models.PixelCNN``); computes in its dtype and device.
        n: number of images.
        y: labels ``(n,)`` of a class-conditional model (checked by the model).
        method: ``"fused"`` (C++ kernel on CPU, CUDA kernels on a GPU), ``"cached"`` (its
            PyTorch twin) or ``"naive"``.
        noise: uniforms in ``[0, 1)``, cast to the model's dtype.
        temperature: softmax temperature (> 0).
        generator: torch generator of the noise.
        given: int64 levels ``(n, C, H, W)`` to keep, ``-1`` where a value is drawn: completions
            of the given values. Each drawn value is conditioned on every value before it in
            raster and channel order, given or drawn: given top rows (a raster prefix) give exact
            samples of the rest of the image given them; a value given after a drawn one is kept
            but does not condition it.
        return_logits: also return the logits ``(n, L, C, H, W)`` each value was drawn from
            (the network's, before the temperature).
    """
    check_sample_args(method, METHODS, n, temperature)
    weight = model.head_out.weight
    height, width = model.image_size
    shape = (n, model.in_channels, height, width)
    noise = sampler_noise(method, noise, given, shape, model.n_levels, weight, generator)
    if method == "naive":
        # sampler_noise returns None for the fused kernel only: the PyTorch samplers' uniforms.
        images, logits = sample_naive(
            model, cast(Tensor, noise), y, temperature, return_logits, given
        )
    elif method == "cached":
        images, logits = sample_cached(
            export_weights(model, y, n),
            cast(Tensor, noise),
            n_levels=model.n_levels,
            kernel_size=model.kernel_size,
            temperature=temperature,
            return_logits=return_logits,
            given=given,
        )
    else:
        images, logits = ops.pixelcnn_sample(
            export_weights(model, y, n),
            batch=n,
            channels=model.in_channels,
            height=height,
            width=width,
            n_levels=model.n_levels,
            kernel_size=model.kernel_size,
            noise=noise,
            temperature=temperature,
            generator=generator,
            given=given,
            return_logits=return_logits,
        )
    return images if logits is None else (images, logits)
