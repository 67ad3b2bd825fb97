"""Pure-PyTorch twins of every pygen op: the oracle of the tests and the baseline of the benchmarks.

Each function has the signature of its fused op and depends on torch only.
"""

from __future__ import annotations

import math

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


def _coupling_scale(log_scale: Tensor, scale_fn: str, clamp: float | None) -> Tensor:
    """s = scale_fn(log_scale) as documented in ``pygen.ops.affine_coupling``."""
    if scale_fn not in ("exp", "tanh", "atan", "sigmoid"):
        raise ValueError(
            f"unknown scale_fn {scale_fn!r}: expected 'exp', 'tanh', 'atan' or 'sigmoid'"
        )
    if clamp is not None and scale_fn not in ("tanh", "atan"):
        raise ValueError("clamp applies only to scale_fn 'tanh' and 'atan'")
    c = 2.0 if clamp is None else clamp
    if scale_fn == "exp":
        return log_scale
    if scale_fn == "tanh":
        return c * torch.tanh(log_scale / c)
    if scale_fn == "atan":
        return c * (2.0 / math.pi) * torch.atan(log_scale / c)
    return torch.nn.functional.logsigmoid(log_scale + 2.0)


def _row_sum(t: Tensor) -> Tensor:
    """Per-sample sum, accumulated (and returned) in float32 for 16-bit inputs."""
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    return t.flatten(1).sum(1, dtype=dtype)


def affine_coupling(
    x: Tensor,
    log_scale: Tensor,
    shift: Tensor,
    mask: Tensor,
    *,
    scale_fn: str = "exp",
    clamp: float | None = None,
    reverse: bool = False,
    mask_kind: int | None = None,
) -> tuple[Tensor, Tensor]:
    """y = mask*x + (1-mask)*(x*exp(s) + shift) and logdet = sum over the transformed positions of
    s (the inverse and -sum s for reverse). mask_kind is accepted for the fused op's signature and
    ignored: the reference always reads the mask."""
    mask = mask.to(x.dtype)
    s = _coupling_scale(log_scale, scale_fn, clamp)
    if reverse:
        out, sign = (x - shift) * torch.exp(-s), -1.0
    else:
        out, sign = x * torch.exp(s) + shift, 1.0
    y = mask * x + (1 - mask) * out
    return y, sign * _row_sum((1 - mask) * s)


def additive_coupling(
    x: Tensor,
    shift: Tensor,
    mask: Tensor,
    *,
    reverse: bool = False,
    mask_kind: int | None = None,
) -> tuple[Tensor, Tensor]:
    """y = x + (1-mask)*shift (minus for reverse); logdet 0. mask_kind is ignored."""
    step = (1 - mask.to(x.dtype)) * shift
    y = x - step if reverse else x + step
    return y, _row_sum(torch.zeros_like(x[:, :1]))
