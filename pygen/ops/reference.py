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


# The kernels' own noise (csrc/common/philox.h): Philox4x32-10 (Salmon et al. 2011). Number g of
# the stream of a seed is word g % 4 of block g // 4: the block's counter is (g // 4 as two 32-bit
# words, 0, 0), its key the seed's two 32-bit halves. Words are int64 tensors of 32-bit values.
_WORD = 0xFFFFFFFF
_PHILOX_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
_PHILOX_KEY_STEPS = (0x9E3779B9, 0xBB67AE85)


def _mul_hi_lo(a: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """The high and low 32-bit words of a * m for 32-bit words a and m (in 48-bit halves: an
    int64 holds neither the product nor its overflow)."""
    low, high = (a & 0xFFFF) * m, (a >> 16) * m
    return (high + (low >> 16)) >> 16, (((high & 0xFFFF) << 16) + low) & _WORD


def philox4x32_10(
    counter: tuple[Tensor, Tensor, Tensor, Tensor], key: tuple[int, int]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The four output words of Philox4x32-10 for counter words ``counter`` (int64 tensors of
    32-bit values, one block per element) under the 32-bit key words ``key``."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(10):
        hi0, lo0 = _mul_hi_lo(c0, _PHILOX_MULTIPLIERS[0])
        hi1, lo1 = _mul_hi_lo(c2, _PHILOX_MULTIPLIERS[1])
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + _PHILOX_KEY_STEPS[0]) & _WORD
        k1 = (k1 + _PHILOX_KEY_STEPS[1]) & _WORD
    return c0, c1, c2, c3


def _philox_words(seed: int, count: int, device: torch.device | str | None) -> Tensor:
    """Words 0, ..., count - 1 of the stream of ``seed`` (an int64 seed, as the kernels read it)."""
    blocks = torch.arange((count + 3) // 4, dtype=torch.int64, device=device)
    zero = torch.zeros_like(blocks)
    key = seed & 0xFFFFFFFFFFFFFFFF
    words = philox4x32_10((blocks & _WORD, blocks >> 32, zero, zero), (key & _WORD, key >> 32))
    return torch.stack(words, dim=1).flatten()[:count]


def philox_uniform(seed: int, count: int, device: torch.device | str | None = None) -> Tensor:
    """Uniforms 0, ..., count - 1 in [0, 1) (float32) of the stream of ``seed``: the top 24 bits
    of each word times 2^-24. Exactly the fused samplers' uniforms when they draw their own
    (value ``((b * C + c) * H + i) * W + j`` of the stream of the seed they drew)."""
    return (_philox_words(seed, count, device) >> 8).to(torch.float32) * 2.0**-24


def philox_normal(seed: int, count: int, device: torch.device | str | None = None) -> Tensor:
    """Standard normals 0, ..., count - 1 (float32) of the stream of ``seed``: Box-Muller on the
    word pairs (2i, 2i + 1), u1 = (top 24 bits + 1) 2^-24 in (0, 1] and u2 = top 24 bits 2^-24,
    giving sqrt(-2 log u1) (cos, sin)(2 pi u2). The noise of ``reparameterize_kl`` when it draws
    its own (normal ``(s * N + n) * D + d`` for z ``(S, N, D)``), computed here in float64: the
    kernels' float32 polynomials agree within ~1e-6."""
    words = _philox_words(seed, count + count % 2, device).view(-1, 2)
    u1 = ((words[:, 0] >> 8) + 1).double() * 2.0**-24
    u2 = (words[:, 1] >> 8).double() * 2.0**-24
    radius, angle = torch.sqrt(-2.0 * torch.log(u1)), 2.0 * math.pi * u2
    normals = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    return normals.flatten()[:count].float()
