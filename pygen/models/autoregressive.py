"""What PixelCNN and PixelRNN share: p(x) = prod_i p(x_i | x_<i) over images of integer levels.

``AutoregressiveImageModel`` checks images and labels, scales levels to [-1, 1], and turns the
logits of ``forward_scaled`` (the subclass's network) into ``log_prob`` and ``bits_per_dim``;
``output_head`` is the masked 1x1 head both networks end with.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pygen.layers import MaskedConv2d


def output_head(hidden: int, in_channels: int, n_levels: int) -> tuple[MaskedConv2d, MaskedConv2d]:
    """``(head_hidden, head_out)``: masked 1x1 convs ``hidden -> hidden -> in_channels * n_levels``.

    The output channels are ordered (channel, level), so channel c's logits are colour group c.
    """
    return (
        MaskedConv2d(hidden, hidden, 1, "B", in_channels),
        MaskedConv2d(hidden, in_channels * n_levels, 1, "B", in_channels),
    )


class AutoregressiveImageModel(nn.Module):
    """Base of the raster-order models over images of integer levels in ``[0, n_levels)``.

    Subclasses set ``in_channels``, ``n_levels``, ``n_classes``, ``image_size`` (through
    ``check_config``), build ``head_hidden``/``head_out`` with ``output_head`` and implement
    ``forward_scaled`` (logits of scaled float images, differentiable in the images).
    """

    in_channels: int
    n_levels: int
    n_classes: int | None
    image_size: tuple[int, int]
    head_hidden: MaskedConv2d
    head_out: MaskedConv2d

    def check_config(
        self,
        in_channels: int,
        n_levels: int,
        hidden: int,
        n_layers: int,
        image_size: int | tuple[int, int],
        n_classes: int | None = None,
    ) -> None:
        """Validate and store the arguments every such model has."""
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        if in_channels < 1 or hidden % in_channels:
            raise ValueError(f"hidden ({hidden}) must be divisible by in_channels ({in_channels})")
        if n_levels < 2:
            raise ValueError(f"n_levels must be >= 2, got {n_levels}")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if n_classes is not None and n_classes < 1:
            raise ValueError(f"n_classes must be >= 1 or None, got {n_classes}")
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"image_size must be positive H or (H, W), got {image_size}")
        self.in_channels = in_channels
        self.n_levels = n_levels
        self.hidden = hidden
        self.n_classes = n_classes
        self.image_size = size

    def check_images(self, x: Tensor) -> None:
        """Raise a clear error unless ``x`` is a batch of this model's integer-level images."""
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise TypeError(
                f"x must hold integer levels in [0, {self.n_levels}) (an integer dtype), got "
                f"{x.dtype}; the model scales the levels itself"
            )
        expected = (self.in_channels, *self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"x must have shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}"
            )
        if x.numel() and (x.min() < 0 or x.max() >= self.n_levels):
            raise ValueError(
                f"x must hold levels in [0, {self.n_levels}), got values in "
                f"[{x.min().item()}, {x.max().item()}]"
            )

    def check_labels(self, y: Tensor | None, batch: int) -> None:
        """Raise a clear error unless ``y`` fits this model (labels iff it is conditional)."""
        if self.n_classes is None:
            if y is not None:
                raise ValueError("y was given but the model is unconditional (n_classes=None)")
            return
        if y is None:
            raise ValueError(
                f"the model is class-conditional: y (labels in [0, {self.n_classes})) is required"
            )
        if not isinstance(y, Tensor) or y.dtype not in (torch.int64, torch.int32):
            got = y.dtype if isinstance(y, Tensor) else type(y).__name__
            raise TypeError(f"y must be a tensor of int64 (or int32) labels, got {got}")
        if tuple(y.shape) != (batch,):
            raise ValueError(f"y must have shape ({batch},), got {tuple(y.shape)}")
        if batch and (y.min() < 0 or y.max() >= self.n_classes):
            raise ValueError(f"y must hold labels in [0, {self.n_classes}), got {y.tolist()}")

    def scale(self, x: Tensor) -> Tensor:
        """Levels ``[0, n_levels)`` to floats in ``[-1, 1]`` of the model's dtype."""
        dtype = self.head_out.weight.dtype
        return x.to(dtype) * (2.0 / (self.n_levels - 1)) - 1.0

    def head(self, h: Tensor) -> Tensor:
        """Features ``(B, hidden, H, W)`` to logits ``(B, n_levels, C, H, W)``."""
        out = self.head_out(F.relu(self.head_hidden(F.relu(h))))
        b, _, height, width = out.shape
        return out.view(b, self.in_channels, self.n_levels, height, width).transpose(1, 2)

    def forward_scaled(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits ``(B, n_levels, C, H, W)`` of scaled float images (differentiable in ``x``)."""
        raise NotImplementedError

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits ``(B, n_levels, C, H, W)`` of p(x[c, i, j] | earlier values) for levels ``x``."""
        self.check_images(x)
        self.check_labels(y, x.shape[0])
        return self.forward_scaled(self.scale(x), y)

    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """log p(x) in nats, one value per image ``(B,)``; a 16-bit model's in float32 (its
        logits' softmax and sum over thousands of values would round to 16 bits)."""
        logits = self(x, y)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        nll = F.cross_entropy(logits, x.long(), reduction="none")  # any integer dtype
        return -nll.flatten(1).sum(1)

    def bits_per_dim(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """-log2 p(x) / (C * H * W), one value per image ``(B,)``."""
        return -self.log_prob(x, y) / (x[0].numel() * math.log(2.0))
