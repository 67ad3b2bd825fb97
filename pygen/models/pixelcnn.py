"""Gated PixelCNN (van den Oord et al. 2016): p(x) = prod_i p(x_i | x_<i) over integer levels."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pygen import sampling
from pygen.layers import GatedMaskedConv2d, MaskedConv2d


class PixelCNN(nn.Module):
    """Gated PixelCNN over images of integer levels in ``[0, n_levels)``.

    Channels of a pixel are generated in order (R before G before B for RGB), pixels in raster
    order. The first layer has mask A, the others mask B; the head is ReLU -> masked 1x1 conv ->
    ReLU -> masked 1x1 conv to ``n_levels`` logits per channel.

    Args:
        in_channels: image channels (1 grey, 3 RGB); ``hidden`` must be divisible by it.
        n_levels: levels per channel value (256 for 8-bit images, 17 for the bundled digits).
        n_layers: gated layers (>= 1).
        hidden: channels of both stacks.
        kernel_size: odd window width of the stacks.
        n_classes: number of labels of a class-conditional model (None: unconditional).
        image_size: ``H`` or ``(H, W)`` of the images it models (what ``sample`` generates).
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_levels: int = 256,
        n_layers: int = 7,
        hidden: int = 64,
        kernel_size: int = 7,
        n_classes: int | None = None,
        image_size: int | tuple[int, int] = 28,
    ) -> None:
        super().__init__()
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
        self.kernel_size = kernel_size
        self.n_classes = n_classes
        self.image_size: tuple[int, int] = size
        groups = in_channels
        self.layers = nn.ModuleList(
            GatedMaskedConv2d(
                in_channels if i == 0 else hidden,
                hidden,
                kernel_size,
                "A" if i == 0 else "B",
                groups,
                n_classes,
            )
            for i in range(n_layers)
        )
        self.head_hidden = MaskedConv2d(hidden, hidden, 1, "B", groups)
        # Output channels ordered (channel, level): channel c's logits are colour group c.
        self.head_out = MaskedConv2d(hidden, in_channels * n_levels, 1, "B", groups)

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
        if y.is_floating_point() or y.dtype == torch.bool:
            raise TypeError(f"y must hold integer labels, got {y.dtype}")
        if tuple(y.shape) != (batch,):
            raise ValueError(f"y must have shape ({batch},), got {tuple(y.shape)}")
        if batch and (y.min() < 0 or y.max() >= self.n_classes):
            raise ValueError(f"y must hold labels in [0, {self.n_classes}), got {y.tolist()}")

    def scale(self, x: Tensor) -> Tensor:
        """Levels ``[0, n_levels)`` to floats in ``[-1, 1]`` of the model's dtype."""
        dtype = self.head_out.weight.dtype
        return x.to(dtype) * (2.0 / (self.n_levels - 1)) - 1.0

    def forward_scaled(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits ``(B, n_levels, C, H, W)`` of scaled float images (differentiable in ``x``)."""
        v = F.pad(x, (0, 0, 1, 0))[:, :, :-1]  # shifted down: the vertical stack sees rows above
        h = x
        for layer in self.layers:
            v, h = layer(v, h, y)
        out = self.head_out(F.relu(self.head_hidden(F.relu(h))))
        b, _, height, width = out.shape
        return out.view(b, self.in_channels, self.n_levels, height, width).transpose(1, 2)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits ``(B, n_levels, C, H, W)`` of p(x[c, i, j] | earlier values) for levels ``x``."""
        self.check_images(x)
        self.check_labels(y, x.shape[0])
        return self.forward_scaled(self.scale(x), y)

    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """log p(x) in nats, one value per image ``(B,)``."""
        nll = F.cross_entropy(self(x, y), x, reduction="none")
        return -nll.flatten(1).sum(1)

    def bits_per_dim(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """-log2 p(x) / (C * H * W), one value per image ``(B,)``."""
        return -self.log_prob(x, y) / (x[0].numel() * math.log(2.0))

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        y: Tensor | None = None,
        method: str = "fused",
        noise: Tensor | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        return_logits: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Draw ``n`` images ``(n, C, H, W)`` (int64 levels); see ``pygen.sampling.sample``.

        ``method``: ``"fused"`` (the C++ kernel), ``"cached"`` (its pure-PyTorch twin) or
        ``"naive"`` (the full network per value). ``noise``: uniforms ``(n, C, H, W)`` in
        ``[0, 1)`` driving the inverse-CDF draws (the same noise gives the same images with every
        method). ``return_logits``: also return the logits ``(n, n_levels, C, H, W)`` each value
        was drawn from.
        """
        self.check_labels(y, n)
        return sampling.sample(
            self,
            n,
            y=y,
            method=method,
            noise=noise,
            temperature=temperature,
            generator=generator,
            return_logits=return_logits,
        )
