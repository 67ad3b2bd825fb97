"""Cached incremental PixelCNN sampling in PyTorch ops: the readable twin of the fused kernel.

Ramachandran et al. 2017: every layer's inputs are kept, and each step computes only the outputs
the next value needs. The vertical stack sees rows above only, so it runs once per row for the
whole row (a convolution of the rows its kernel reaches); the horizontal stack and the head run
once per value, at that pixel only, from the current row's cached layer inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, overload

import torch
from torch import Tensor

from pygen.sampling.draw import draw_or_keep
from pygen.sampling.weights import HEAD, PER_LAYER


def _gate(pre: Tensor) -> Tensor:
    a, b = pre.chunk(2, -1)
    return torch.tanh(a) * torch.sigmoid(b)


@overload
def sample_cached(
    weights: Sequence[Tensor],
    noise: Tensor,
    *,
    n_levels: int,
    kernel_size: int,
    temperature: float = ...,
    return_logits: Literal[False] = ...,
    given: Tensor | None = ...,
) -> tuple[Tensor, None]: ...


@overload
def sample_cached(
    weights: Sequence[Tensor],
    noise: Tensor,
    *,
    n_levels: int,
    kernel_size: int,
    temperature: float = ...,
    return_logits: Literal[True],
    given: Tensor | None = ...,
) -> tuple[Tensor, Tensor]: ...


@overload
def sample_cached(
    weights: Sequence[Tensor],
    noise: Tensor,
    *,
    n_levels: int,
    kernel_size: int,
    temperature: float = ...,
    return_logits: bool,
    given: Tensor | None = ...,
) -> tuple[Tensor, Tensor | None]: ...


@torch.no_grad()
def sample_cached(
    weights: Sequence[Tensor],
    noise: Tensor,
    *,
    n_levels: int,
    kernel_size: int,
    temperature: float = 1.0,
    return_logits: bool = False,
    given: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Images ``(B, C, H, W)`` from the flat ``weights`` (``pygen.sampling.weights``) and
    uniforms ``noise`` ``(B, C, H, W)``, keeping the levels of ``given`` (``-1``: drawn; None:
    every value drawn); logits ``(B, L, C, H, W)`` too with ``return_logits``.
    """
    batch, channels, height, width = noise.shape
    levels, pad = n_levels, kernel_size // 2
    kh = kw = pad + 1
    n_layers = (len(weights) - HEAD) // PER_LAYER
    layers = [weights[PER_LAYER * n : PER_LAYER * (n + 1)] for n in range(n_layers)]
    w1, b1, w2, b2 = weights[-HEAD:]
    in_channels = [channels] + [w1.shape[0]] * (n_layers - 1)
    scale = 2.0 / (levels - 1)
    new = noise.new_zeros
    images = torch.zeros(noise.shape, dtype=torch.int64, device=noise.device)
    used = new(batch, levels, channels, height, width) if return_logits else None
    # Vertical stack inputs, channels last, zero-padded (k//2 rows above, k//2 columns each side).
    v_in = [new(batch, height + pad, width + 2 * pad, cin) for cin in in_channels]
    for i in range(height):
        if i > 0:  # layer 0's vertical input is the image shifted down one row
            v_in[0][:, i + pad, pad : pad + width] = (
                images[:, :, i - 1].mT.to(noise.dtype) * scale - 1.0
            )
        links = []
        for n, (v_w, v_b, _, _, link_w, _, _) in enumerate(layers):
            window = v_in[n][:, i : i + kh].unfold(2, kernel_size, 1)  # (B, kh, W, Cin, k)
            cols = window.permute(0, 2, 1, 4, 3).reshape(batch, width, -1)
            v_pre = cols @ v_w + v_b[:, None]
            links.append(v_pre @ link_w)
            if n + 1 < n_layers:
                v_in[n + 1][:, i + pad, pad : pad + width] = _gate(v_pre)
        # Horizontal stack inputs of the current row, zero-padded k//2 columns on the left.
        h_in = [new(batch, width + pad, cin) for cin in in_channels]
        for j in range(width):
            for c in range(channels):
                for n, (_, _, h_w, h_b, _, out_w, out_b) in enumerate(layers):
                    h_pre = h_in[n][:, j : j + kw].flatten(1) @ h_w + h_b + links[n][:, j]
                    out = _gate(h_pre) @ out_w + out_b
                    if n > 0:
                        out = out + h_in[n][:, j + pad]
                    if n + 1 < n_layers:
                        h_in[n + 1][:, j + pad] = out
                hid = torch.relu(torch.relu(out) @ w1 + b1)
                channel = slice(c * levels, (c + 1) * levels)
                logits = hid @ w2[:, channel] + b2[channel]
                kept = None if given is None else given[:, c, i, j]
                level = draw_or_keep(logits, noise[:, c, i, j], temperature, kept)
                images[:, c, i, j] = level
                h_in[0][:, j + pad, c] = level.to(noise.dtype) * scale - 1.0
                if used is not None:
                    used[:, :, c, i, j] = logits
    return images, used
