"""Normalizing-flow models: NICE, RealNVP (vectors and multi-scale images) and Glow-style blocks.

A model is a flow (``pygen.layers.FlowSequential``) and a standard normal prior on its output:
``log p(x) = log N(f(x); 0, I) + log|det df/dx|``. Image models take pixels scaled to [0, 1]
(``log_prob``, ``sample``) and integer pixels (``bits_per_dim``, uniform dequantization), and
start with the logit pre-processing of Dinh et al. (2017).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pygen.layers import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    FlowSequential,
    Inverse,
    Invertible1x1Conv,
    LogitTransform,
    MultiScaleSplit,
    Squeeze,
)
from pygen.utils.random import standard_normal


class FlowModel(nn.Module):
    """A flow on samples of ``shape`` with a standard normal prior.

    Args:
        flow: the layers, data -> latent.
        shape: per-sample shape.
        levels: number of discrete pixel levels for image models (enables ``bits_per_dim``), None
            for continuous data.
    """

    def __init__(
        self, flow: FlowSequential, shape: Sequence[int], levels: int | None = None
    ) -> None:
        super().__init__()
        self.flow = flow
        self.shape = tuple(shape)
        self.levels = levels

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(z, logdet)`` of the flow."""
        return self.flow(x)

    def _check_batch(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != self.shape:
            dims = ", ".join(map(str, self.shape))
            raise ValueError(f"expected a batch of shape (N, {dims}), got {tuple(x.shape)}")

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` per sample (nats) of a batch ``(N, *shape)``.

        Image models (those that start with a ``LogitTransform``) expect x in [0, 1]; their
        density's support is the logit pre-processing's domain, [0, 1] widened by
        ``alpha / (1 - 2 alpha)`` (0.0556 for the default alpha 0.05) on each side. A sample with
        any value outside it gets -inf (+inf bits per dimension) and a zero gradient; the other
        samples of the batch keep their values and gradients. No host sync, so it compiles
        whole. Models without the logit (NICE, vector models) have a density on all of R^D."""
        self._check_batch(x)
        z, logdet = self.flow(x)
        z = z.to(logdet.dtype)  # a 16-bit model sums in float32, as its layers (logdet_dtype)
        prior = -0.5 * (z.square() + math.log(2 * math.pi)).flatten(1).sum(1)
        log_prob = prior + logdet
        preprocessing = next(iter(self.flow), None)
        if isinstance(preprocessing, LogitTransform):
            log_prob = torch.where(preprocessing.outside(x), -math.inf, log_prob)
        return log_prob

    @torch.no_grad()
    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """``n`` samples ``(n, *shape)``; the prior's standard deviation is scaled by
        ``temperature``, and ``generator`` (None: torch's global CPU one) draws its noise. Models
        with ``levels`` return values clamped to [0, 1] (image models: pixels)."""
        device = next(self.parameters()).device
        dtype = next(self.parameters()).dtype
        z = standard_normal((n, *self.shape), generator, device=device, dtype=dtype)
        x, _ = self.flow.inverse(temperature * z)
        return x.clamp(0.0, 1.0) if self.levels is not None else x

    def bits_per_dim(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Per-sample bits per dimension of integer pixels ``x`` in ``[0, levels)``: uniform
        dequantization ``(x + u) / levels`` and the change of variables to the discrete scale,
        ``-(log p((x + u) / levels) - D log levels) / (D log 2)`` (an upper bound in
        expectation)."""
        if self.levels is None:
            raise ValueError("bits_per_dim needs an image model (levels set)")
        if len(self.shape) == 1 and x.dim() > 1 and x[0].numel() == self.shape[0]:
            x = x.reshape(len(x), *self.shape)  # flattened images for vector models (NICE)
        self._check_batch(x)
        if x.numel() and (
            x.min() < 0
            or x.max() > self.levels - 1
            or (x.is_floating_point() and (x != x.round()).any())
        ):
            raise ValueError(
                f"bits_per_dim takes integer pixel levels in [0, {self.levels - 1}], got values in "
                f"[{x.min().item()}, {x.max().item()}] ({x.dtype}); log_prob takes pixels in [0, 1]"
            )
        noise = torch.rand(x.shape, generator=generator, dtype=torch.float32).to(x.device)
        dtype = next(self.parameters()).dtype
        # Summed in float64 (in float32, 255 + u rounds to 256 for u within 2^-17 of 1), and
        # kept below the bin's top where rounding to the model's dtype would reach it.
        x = x.to(torch.float64)
        scaled = ((x + noise) / self.levels).to(dtype)
        top = ((x + 1) / self.levels).to(dtype)
        scaled = torch.minimum(scaled, torch.nextafter(top, torch.zeros_like(top)))
        dims = math.prod(self.shape)
        log_likelihood = self.log_prob(scaled) - dims * math.log(self.levels)
        return -log_likelihood / (dims * math.log(2))


def _check_scales(model: str, shape: tuple[int, ...], n_scales: int, squeezes: int) -> None:
    """A clear error for a multi-scale image model that ``shape`` cannot hold: ``n_scales`` >= 1
    and H, W divisible by ``2^squeezes`` (the squeezes the scales take)."""
    if n_scales < 1:
        raise ValueError(f"{model} needs n_scales >= 1, got {n_scales}")
    factor = 2**squeezes
    if shape[1] % factor or shape[2] % factor:
        raise ValueError(
            f"{model} with n_scales={n_scales} needs H and W divisible by {factor}, got the "
            f"image shape {shape}"
        )


def _alternating(n: int, make) -> list[nn.Module]:
    return [make(i % 2) for i in range(n)]


class NICE(FlowModel):
    """NICE (Dinh et al. 2015) for vectors ``(N, dim)``: additive couplings on alternating halves
    (odd/even features) and a final diagonal scaling (an ``ActNorm``). The prior is a standard
    normal (the paper also uses a logistic one). ``levels`` makes it a model of flattened
    discrete images (``bits_per_dim`` of ``(N, C, H, W)`` levels with ``C*H*W == dim``).

    Args:
        dim: D, the number of features.
        n_couplings: additive couplings, alternating which half passes through (the paper: 4).
        hidden, n_blocks: width and number of hidden ReLU layers of each coupling's MLP (the
            paper's MNIST model: 5 hidden layers of 1000 units).
        levels: pixel levels of flattened image data (enables ``bits_per_dim`` of the integer
            levels; ``log_prob`` takes pixels scaled to [0, 1] and ``sample`` clamps to [0, 1]),
            None for continuous data. No logit pre-processing: the density is on all of R^D.
    """

    def __init__(
        self,
        dim: int,
        n_couplings: int = 4,
        hidden: int = 256,
        n_blocks: int = 4,
        levels: int | None = None,
    ) -> None:
        couplings = _alternating(
            n_couplings,
            lambda parity: AdditiveCoupling(
                (dim,), "checkerboard", parity, hidden=hidden, n_blocks=n_blocks
            ),
        )
        super().__init__(FlowSequential(*couplings, ActNorm(dim)), (dim,), levels)


def _realnvp_scale(
    shape: tuple[int, int, int], n_scales: int, hidden: int, n_blocks: int, **coupling
) -> FlowSequential:
    """One scale of the multi-scale RealNVP: 3 checkerboard couplings, squeeze, 3 channel
    couplings, then half the channels go on to the next scale (the last scale: 4 checkerboard
    couplings)."""
    c, h, w = shape

    def couple(s, mask, parity):
        return AffineCoupling(s, mask, parity, hidden=hidden, n_blocks=n_blocks, **coupling)

    if n_scales == 1:
        return FlowSequential(*_alternating(4, lambda p: couple(shape, "checkerboard", p)))
    squeezed = (4 * c, h // 2, w // 2)
    return FlowSequential(
        *_alternating(3, lambda p: couple(shape, "checkerboard", p)),
        Squeeze(),
        *_alternating(3, lambda p: couple(squeezed, "channel", p)),
        MultiScaleSplit(
            _realnvp_scale((2 * c, h // 2, w // 2), n_scales - 1, hidden, n_blocks, **coupling)
        ),
        Inverse(Squeeze()),
    )


class RealNVP(FlowModel):
    """RealNVP (Dinh et al. 2017) with the fused affine coupling.

    Vectors (``shape = (D,)``): ``n_couplings`` affine couplings with MLP conditioners on
    alternating halves (odd/even features). Images (``shape = (C, H, W)``): the multi-scale
    architecture (per scale 3 checkerboard couplings, squeeze, 3 channel couplings, factor out half
    the channels; 4 checkerboard couplings at the last scale) with residual-CNN conditioners, after
    the logit pre-processing of pixels in [0, 1].

    Args:
        shape: per-sample shape.
        n_couplings: couplings of the vector model.
        n_scales: scales of the image model (H and W divisible by 2^(n_scales-1)).
        hidden, n_blocks: conditioner width and depth.
        levels: pixel levels of image data (for ``bits_per_dim``), default 256.
        scale_fn: the coupling's scale function (default ``"tanh"``, clamp 2).
        reference: use the pure-PyTorch coupling instead of the fused kernel (for comparisons).
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        n_couplings: int = 6,
        n_scales: int = 2,
        hidden: int = 64,
        n_blocks: int = 2,
        levels: int = 256,
        scale_fn: str = "tanh",
        reference: bool = False,
    ) -> None:
        shape = tuple(shape)
        coupling: dict[str, Any] = {"scale_fn": scale_fn, "reference": reference}
        if len(shape) == 1:
            layers = _alternating(
                n_couplings,
                lambda p: AffineCoupling(
                    shape, "checkerboard", p, hidden=hidden, n_blocks=n_blocks, **coupling
                ),
            )
            super().__init__(FlowSequential(*layers), shape)
        elif len(shape) == 3:
            _check_scales("RealNVP", shape, n_scales, n_scales - 1)
            flow = _realnvp_scale(shape, n_scales, hidden, n_blocks, **coupling)
            super().__init__(FlowSequential(LogitTransform(), *flow), shape, levels)
        else:
            raise ValueError(f"shape must be (D,) or (C, H, W), got {shape}")


class GlowStep(FlowSequential):
    """One step of flow of Glow (Kingma & Dhariwal 2018): ActNorm, invertible 1x1 convolution and
    an affine channel coupling with the sigmoid scale.

    Args:
        shape: per-sample shape ``(C, H, W)``.
        hidden, n_blocks: the coupling's residual CNN conditioner.
        coupling: further ``AffineCoupling`` arguments (``parity``, ``clamp``, ``reference``,
            ``net``); the mask is ``"channel"`` and the scale function ``"sigmoid"``.
    """

    def __init__(
        self, shape: Sequence[int], hidden: int = 64, n_blocks: int = 1, **coupling: Any
    ) -> None:
        shape = tuple(shape)
        super().__init__(
            ActNorm(shape[0]),
            Invertible1x1Conv(shape[0]),
            AffineCoupling(
                shape, "channel", hidden=hidden, n_blocks=n_blocks, scale_fn="sigmoid", **coupling
            ),
        )


def _glow_scale(shape, n_scales: int, steps: int, hidden: int) -> FlowSequential:
    c, h, w = shape
    squeezed = (4 * c, h // 2, w // 2)
    layers: list[nn.Module] = [Squeeze(), *[GlowStep(squeezed, hidden) for _ in range(steps)]]
    if n_scales > 1:
        layers.append(
            MultiScaleSplit(_glow_scale((2 * c, h // 2, w // 2), n_scales - 1, steps, hidden))
        )
    layers.append(Inverse(Squeeze()))
    return FlowSequential(*layers)


class Glow(FlowModel):
    """A small multi-scale Glow for images ``(C, H, W)`` in [0, 1]: per scale a squeeze,
    ``steps`` ``GlowStep``s and a split; logit pre-processing first. H and W must be divisible by
    ``2^n_scales`` (every scale squeezes).

    Args:
        shape: per-sample shape ``(C, H, W)``.
        n_scales: scales (the paper's L; 3 for CIFAR-10). Every scale squeezes; every one but
            the last factors out half of its channels.
        steps: ``GlowStep``s per scale (the paper's K; 32 for CIFAR-10).
        hidden: channels of each coupling's residual CNN conditioner (one residual block; the
            paper's conditioner has 512).
        levels: pixel levels of the image data (for ``bits_per_dim``), default 256.
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        n_scales: int = 2,
        steps: int = 4,
        hidden: int = 64,
        levels: int = 256,
    ) -> None:
        shape = tuple(shape)
        if len(shape) != 3:
            raise ValueError(f"Glow needs an image shape (C, H, W), got {shape}")
        _check_scales("Glow", shape, n_scales, n_scales)
        flow = _glow_scale(shape, n_scales, steps, hidden)
        super().__init__(FlowSequential(LogitTransform(), *flow), shape, levels)
