"""The inverse-CDF draw shared by every PixelCNN and PixelRNN sampler (the C++ and CUDA kernels do
the same)."""

from __future__ import annotations

import torch
from torch import Tensor


def inverse_cdf_draw(logits: Tensor, u: Tensor, temperature: float = 1.0) -> Tensor:
    """Level drawn from softmax(logits / temperature) over the last dimension with uniforms ``u``.

    With ``e = exp((logits - max logits) / temperature)`` (the maximum first: a tiny temperature
    cannot overflow the quotient) and its running sums ``cdf``, the level is the first index whose
    ``cdf`` exceeds ``u * cdf[-1]`` (the last level if rounding leaves none; level 0 where a NaN
    or +inf logit makes the sums NaN, in every sampler). ``u`` has the shape of
    ``logits`` without its last dimension; returns int64 levels of that shape. 16-bit logits and
    uniforms are drawn from in float32, as the kernels do: a bfloat16 CDF would skew the levels'
    probabilities by its rounding.
    """
    wide = torch.promote_types(logits.dtype, torch.float32)
    logits, u = logits.to(wide), u.to(wide)
    cdf = ((logits - logits.amax(-1, keepdim=True)) / temperature).exp().cumsum(-1)
    below = cdf <= u.unsqueeze(-1) * cdf[..., -1:]
    return below.sum(-1).clamp_(max=logits.shape[-1] - 1)


def draw_or_keep(
    logits: Tensor, u: Tensor, temperature: float = 1.0, given: Tensor | None = None
) -> Tensor:
    """``inverse_cdf_draw(logits, u, temperature)``, except where ``given`` (int64 levels of the
    shape of ``u``, ``-1`` where drawn; None: everywhere drawn) holds a level: that level."""
    level = inverse_cdf_draw(logits, u, temperature)
    return level if given is None else torch.where(given >= 0, given, level)
