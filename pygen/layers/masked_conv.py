"""PixelCNN's masked convolutions: MaskedConv2d (masks A/B, RGB colour groups) and the Gated
PixelCNN block GatedMaskedConv2d (van den Oord et al. 2016)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def channel_groups(n_channels: int, groups: int) -> Tensor:
    """Colour group of each of ``n_channels`` channels: ``groups`` contiguous blocks."""
    return torch.arange(n_channels) * groups // n_channels


def causal_mask(
    out_channels: int,
    in_channels: int,
    kernel_size: tuple[int, int],
    mask_type: str,
    color_groups: int,
) -> Tensor:
    """Mask ``(out, in, kh, kw)`` of a raster-order causal convolution.

    Rows above the centre and the centre row left of the centre are kept. At the centre, output
    group g sees input groups < g (mask A) or <= g (mask B); with one group, A drops the centre and
    B keeps it.
    """
    kh, kw = kernel_size
    mask = torch.zeros(out_channels, in_channels, kh, kw)
    mask[:, :, : kh // 2, :] = 1
    mask[:, :, kh // 2, : kw // 2] = 1
    g_out = channel_groups(out_channels, color_groups)[:, None]
    g_in = channel_groups(in_channels, color_groups)[None, :]
    centre = g_in < g_out if mask_type == "A" else g_in <= g_out
    mask[:, :, kh // 2, kw // 2] = centre.float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """nn.Conv2d whose weight is masked so that the output at a pixel sees only earlier pixels.

    Args:
        in_channels, out_channels: channel counts, both divisible by ``color_groups``.
        kernel_size: odd int or ``(kh, kw)`` pair of odd ints; "same" padding.
        mask_type: ``"A"`` (excludes the centre: first layer) or ``"B"`` (includes it).
        color_groups: 1, or the number of image channels generated in order within a pixel (3 for
            RGB): channels form that many contiguous groups, and group g at the centre sees the
            groups before it (A) or up to itself (B).
        bias: add a learnt bias.
        dilation: spacing of the kernel's taps (int or pair); the padding keeps the size.

    Every call convolves with ``weight * mask`` (the framework convolution, so gradients of masked
    entries are zero); inside ``frozen_masked_weights`` (the samplers) the product is taken once.
    """

    mask: Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        mask_type: str = "A",
        color_groups: int = 1,
        bias: bool = True,
        dilation: int | tuple[int, int] = 1,
    ) -> None:
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
        if dh < 1 or dw < 1:
            raise ValueError(f"dilation must be positive, got {dilation}")
        if kh % 2 == 0 or kw % 2 == 0 or kh < 1 or kw < 1:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        if color_groups < 1 or in_channels % color_groups or out_channels % color_groups:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible "
                f"by color_groups ({color_groups})"
            )
        # Zero padding only: another mode would bring later rows into the border a pixel sees.
        padding = (dh * (kh // 2), dw * (kw // 2))
        super().__init__(
            in_channels, out_channels, (kh, kw), padding=padding, dilation=(dh, dw), bias=bias
        )
        self.mask_type = mask_type
        self.color_groups = color_groups
        mask = causal_mask(out_channels, in_channels, (kh, kw), mask_type, color_groups)
        self.register_buffer("mask", mask, persistent=False)  # derived from the arguments
        with torch.no_grad():
            self.weight.mul_(mask)
        self._frozen_weight: Tensor | None = None

    def masked_weight(self) -> Tensor:
        """``weight * mask``; inside ``frozen_masked_weights``, the product taken on entry."""
        if self._frozen_weight is not None:
            return self._frozen_weight
        return self.weight * self.mask

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.masked_weight(), self.bias)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, mask_type={self.mask_type}, color_groups={self.color_groups}"
        )


class HasModules(Protocol):
    """What ``frozen_masked_weights`` reads: an ``nn.Module``, or the samplers' view of one."""

    def modules(self) -> Iterator[nn.Module]: ...


@contextmanager
def frozen_masked_weights(module: HasModules) -> Iterator[None]:
    """Within the block, every ``MaskedConv2d`` of ``module`` uses ``weight * mask`` taken once on
    entry, detached, instead of once per forward: for the samplers, which run the network many
    times under no_grad with fixed weights. (A product cached across calls would miss weights
    changed in place without a version bump: through ``.data``, or by a fused optimizer.)"""
    convs = [m for m in module.modules() if isinstance(m, MaskedConv2d)]
    for conv in convs:
        conv._frozen_weight = (conv.weight * conv.mask).detach()
    try:
        yield
    finally:
        for conv in convs:
            conv._frozen_weight = None


def gate(pre: Tensor, color_groups: int) -> Tensor:
    """tanh(a) * sigmoid(b) of ``pre`` ``(B, 2h, ...)`` laid out as ``(groups, [a, b], h/groups)``.

    Interleaving a and b per colour group keeps both halves of a gate unit in the same group.
    """
    b, two_h = pre.shape[:2]
    halves = pre.view(b, color_groups, 2, two_h // (2 * color_groups), *pre.shape[2:])
    a, g = halves.unbind(2)
    return (torch.tanh(a) * torch.sigmoid(g)).flatten(1, 2)


def gate_channel_order(hidden: int, color_groups: int) -> Tensor:
    """Permutation of the ``2 * hidden`` gate channels into ``[all a, all b]`` (see ``gate``)."""
    return torch.arange(2 * hidden).view(color_groups, 2, -1).transpose(0, 1).reshape(-1)


class GatedMaskedConv2d(nn.Module):
    """One Gated PixelCNN layer: a vertical and a horizontal stack, no blind spot.

    The vertical stack convolves ``(k//2 + 1) x k`` windows ending at the current row of its input;
    the network feeds it the image shifted down one row, so it only sees rows above. The
    horizontal stack convolves ``1 x k`` masked windows of the current row (mask A or B at the
    centre) and adds a 1x1 projection of the vertical pre-activations. Both are gated
    (tanh * sigmoid); the horizontal output goes through a masked 1x1 conv and, for mask B layers,
    a residual connection. With ``n_classes``, learnt per-class biases enter both gates.

    Args:
        in_channels: input channels of both stacks (the image channels for the first layer).
        hidden: output channels of both stacks (divisible by ``color_groups``).
        kernel_size: odd window width k.
        mask_type: ``"A"`` (first layer: no residual) or ``"B"`` (needs in_channels == hidden).
        color_groups: image channels generated in order within a pixel (see MaskedConv2d).
        n_classes: number of labels of a class-conditional model, or None.
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        kernel_size: int,
        mask_type: str = "B",
        color_groups: int = 1,
        n_classes: int | None = None,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        if mask_type == "B" and in_channels != hidden:
            raise ValueError(f"a mask B layer needs in_channels == hidden, got {in_channels}")
        self.kernel_size = kernel_size
        self.color_groups = color_groups
        self.residual = mask_type == "B"
        two_h = 2 * hidden
        self.v_conv = nn.Conv2d(in_channels, two_h, (kernel_size // 2 + 1, kernel_size))
        self.h_conv = MaskedConv2d(in_channels, two_h, (1, kernel_size), mask_type, color_groups)
        self.link = nn.Conv2d(two_h, two_h, 1)
        self.h_out = MaskedConv2d(hidden, hidden, 1, "B", color_groups)
        self.v_cond: nn.Embedding | None = None
        self.h_cond: nn.Embedding | None = None
        if n_classes:
            # Class biases start at the scale of the convolution biases they add to (an N(0, 1)
            # embedding would saturate the gates of a fresh model).
            bound = 1.0 / math.sqrt(in_channels * (kernel_size // 2 + 1) * kernel_size)
            self.v_cond = nn.Embedding(n_classes, two_h)
            self.h_cond = nn.Embedding(n_classes, two_h)
            for emb in (self.v_cond, self.h_cond):
                nn.init.uniform_(emb.weight, -bound, bound)

    def forward(self, v: Tensor, h: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(v, h) -> (v', h')``; ``y`` are the labels ``(B,)`` of a conditional layer."""
        if (y is None) != (self.v_cond is None):
            n_classes = None if self.v_cond is None else self.v_cond.num_embeddings
            raise ValueError(
                "y (labels) must be given exactly when the layer has n_classes: got "
                f"{'no labels' if y is None else 'labels'} with n_classes={n_classes}"
            )
        pad = self.kernel_size // 2
        v_pre = self.v_conv(F.pad(v, (pad, pad, pad, 0)))  # rows i - k//2 .. i of v
        if self.v_cond is not None:
            v_pre = v_pre + self.v_cond(y)[:, :, None, None]
        h_pre = self.h_conv(h) + self.link(v_pre)
        if self.h_cond is not None:
            h_pre = h_pre + self.h_cond(y)[:, :, None, None]
        h_new = self.h_out(gate(h_pre, self.color_groups))
        if self.residual:
            h_new = h_new + h
        return gate(v_pre, self.color_groups), h_new
