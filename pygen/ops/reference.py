"""Pure-PyTorch twins of every pygen op: the oracle of the tests and the baseline of the benchmarks.

Each function has the signature of its fused op and depends on torch only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def logdet_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of a log-determinant (or any per-row sum of log-densities) of inputs of
    ``dtype``: float32 for 16-bit inputs (a sum of thousands of values, or hundreds of nats,
    rounded to 16 bits would lose whole nats), else ``dtype``. The ops' logdet, every flow
    layer's (``pygen.layers``) and the KL of ``reparameterize_kl`` have it (``pygen.ops``
    exports it)."""
    return torch.promote_types(dtype, torch.float32)


def reparameterize_kl(
    mu: Tensor,
    logvar: Tensor,
    noise: Tensor | None = None,
    *,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """z = mu + exp(logvar / 2) * noise and KL(N(mu, exp(logvar)) || N(0, I)) per row (float32
    for 16-bit inputs)."""
    z_shape = mu.shape if n_samples == 1 else (n_samples, *mu.shape)
    if noise is None:
        noise = torch.randn(z_shape, dtype=mu.dtype, device=mu.device, generator=generator)
    z = mu + torch.exp(0.5 * logvar) * noise
    m, lv = mu.to(logdet_dtype(mu.dtype)), logvar.to(logdet_dtype(mu.dtype))  # as the fused op
    kl = 0.5 * (m.square() + lv.exp() - 1.0 - lv).sum(-1)
    return z, kl


def stats_halves(stats: Tensor) -> tuple[Tensor, Tensor]:
    """``(mu, logvar)``, the halves of ``stats`` ``(..., 2D)`` over its last dimension (views);
    the fused op's ValueError for a last dimension that is odd or empty."""
    if stats.dim() == 0 or stats.shape[-1] == 0 or stats.shape[-1] % 2:
        raise ValueError(
            "stats must have an even, non-empty last dimension (mu, then logvar), got shape "
            f"{list(stats.shape)}"
        )
    mu, logvar = stats.chunk(2, dim=-1)
    return mu, logvar


def reparameterize_kl_stacked(
    stats: Tensor,
    noise: Tensor | None = None,
    *,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """``reparameterize_kl`` of the halves of ``stats`` ``(..., 2D)``: mu, then logvar."""
    mu, logvar = stats_halves(stats)
    return reparameterize_kl(mu, logvar, noise, n_samples=n_samples, generator=generator)


def check_scale_fn(scale_fn: str, clamp: float | None) -> None:
    """The errors of ``pygen.ops.affine_coupling`` (its kernels check the same) for a
    ``scale_fn`` and ``clamp`` it does not take; layers check them when they are built."""
    if scale_fn not in ("exp", "tanh", "atan", "sigmoid"):
        raise ValueError(
            f"unknown scale_fn {scale_fn!r}: expected 'exp', 'tanh', 'atan' or 'sigmoid'"
        )
    if clamp is not None and scale_fn not in ("tanh", "atan"):
        raise ValueError("clamp applies only to scale_fn 'tanh' and 'atan'")
    if clamp is not None and not 1e-30 <= clamp <= 1e30:
        raise ValueError(f"clamp must be in [1e-30, 1e30], got {clamp}")


def _coupling_scale(log_scale: Tensor, scale_fn: str, clamp: float | None) -> Tensor:
    """s = scale_fn(log_scale) as documented in ``pygen.ops.affine_coupling``."""
    check_scale_fn(scale_fn, clamp)
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
    return t.flatten(1).sum(1, dtype=logdet_dtype(t.dtype))


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


def params_halves(x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
    """``(log_scale, shift)``, the halves of dim 1 of ``params`` (views); the fused op's
    ValueError for a params of another shape than x's with twice its channels."""
    if x.dim() < 2:
        raise ValueError(
            f"x must have a batch dimension and at least one more, got shape {tuple(x.shape)}"
        )
    want = (x.shape[0], 2 * x.shape[1], *x.shape[2:])
    if params.shape != want:
        raise ValueError(
            f"params must have x's shape with twice its channels (dim 1), {want}, got shape "
            f"{tuple(params.shape)}"
        )
    log_scale, shift = params.chunk(2, dim=1)
    return log_scale, shift


def affine_coupling_stacked(
    x: Tensor,
    params: Tensor,
    mask: Tensor,
    *,
    scale_fn: str = "exp",
    clamp: float | None = None,
    reverse: bool = False,
    mask_kind: int | None = None,
) -> tuple[Tensor, Tensor]:
    """``affine_coupling`` with log_scale and shift the halves of dim 1 of ``params``, x's shape
    with twice its channels."""
    log_scale, shift = params_halves(x, params)
    return affine_coupling(
        x, log_scale, shift, mask, scale_fn=scale_fn, clamp=clamp, reverse=reverse
    )


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


def made_solve(
    value: Callable[[int, Tensor], Tensor],
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    units: Tensor,
    bounds: Sequence[int],
    order: Sequence[int],
    like: Tensor,
) -> tuple[Tensor, Tensor]:
    """Fill ``x`` one input at a time in ``order``: ``x[:, d] = value(d, out_d)``, where ``out_d``
    ``(N, n_outputs)`` are the MADE's outputs for input d, which depend only on the inputs filled
    before it. The MADE is given as ``MADE.solve_weights`` gives it (see
    ``pygen.ops.made_affine_solve``); ``like`` ``(N, ...)`` gives the batch size and the dtype of
    x and out; the sums are in ``promote_types(like.dtype, float32)``.

    Returns ``x`` ``(N, D)`` and ``out`` ``(N, n_outputs, D)``, the MADE at x up to rounding.
    Cached: a hidden unit is computed once, at the step that fills the last input it sees, and
    added into the next layer's pre-activations at once, so the D steps together do the arithmetic
    of one forward pass (re-running the network per input costs D passes). Differentiable.
    """
    dim = len(order)
    acc = torch.promote_types(like.dtype, torch.float32)  # as the fused op sums
    # Hidden units sorted by degree (a degree's units are one block), each weight transposed to
    # (in, out) so that an input's (unit's) weights are one row.
    weights_t = []
    for i, weight in enumerate(w.to(acc) for w in weights):
        if i < len(weights) - 1:
            weight = weight.index_select(0, units)  # this layer's units
        if i > 0:
            weight = weight.index_select(1, units)  # the units below
        weights_t.append(weight.T)
    biases = [b.index_select(0, units) for b in biases[:-1]] + [biases[-1]]
    # Pre-activations of each layer (the hidden ones, then the output), from the biases up,
    # updated in place (no product's backward reads them); made from `like`, so that under
    # vmap they are batched as the columns added into them are.
    zeros = torch.zeros_like(like.flatten(1)[:, :1], dtype=acc)
    pre = [zeros + bias.to(acc) for bias in biases]
    columns: dict[int, Tensor] = {}
    outs: dict[int, Tensor] = {}
    for step, d in enumerate(order):
        if step > 0:
            # The input filled last step (degree `step`) completes the units of degree `step`.
            filled = order[step - 1]
            pre[0].addr_(columns[filled].to(acc), weights_t[0][filled])
            block = slice(bounds[step - 1], bounds[step])
            if block.stop > block.start:  # a degree may have no units
                for i in range(1, len(weights_t)):
                    pre[i].addmm_(torch.relu(pre[i - 1][:, block]), weights_t[i][block])
        # Output k of input d is column k * D + d, copied before the next update.
        outs[d] = pre[-1][:, d::dim].to(like.dtype, copy=True)
        columns[d] = value(d, outs[d])
    dims = range(dim)
    return torch.stack([columns[d] for d in dims], 1), torch.stack([outs[d] for d in dims], 2)


def made_affine_solve(
    target: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    units: Tensor,
    bounds: Sequence[int],
    order: Sequence[int],
    mask: Tensor,
    *,
    scale_fn: str = "tanh",
    clamp: float | None = None,
    reverse: bool = True,
) -> tuple[Tensor, Tensor]:
    """``made_solve`` with step d the affine map of ``target[:, d]`` (``affine_coupling`` of that
    column, ``mask[d]`` passing it through) by the MADE's two outputs for input d."""

    def fill(d: int, params: Tensor) -> Tensor:
        column = slice(d, d + 1)
        y, _ = affine_coupling(
            target[:, column],
            params[:, 0:1],
            params[:, 1:2],
            mask[column],
            scale_fn=scale_fn,
            clamp=clamp,
            reverse=reverse,
        )
        return y[:, 0]

    return made_solve(fill, weights, biases, units, bounds, order, target)


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
