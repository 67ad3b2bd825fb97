"""Gated PixelCNN (van den Oord et al. 2016): p(x) = prod_i p(x_i | x_<i) over integer levels."""

from __future__ import annotations

from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pygen import sampling
from pygen.layers import GatedMaskedConv2d
from pygen.models.autoregressive import AutoregressiveImageModel, output_head


class PixelCNN(AutoregressiveImageModel):
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
        self.check_config(in_channels, n_levels, hidden, n_layers, image_size, n_classes)
        self.kernel_size = kernel_size
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
        self.head_hidden, self.head_out = output_head(hidden, in_channels, n_levels)

    def forward_scaled(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits ``(B, n_levels, C, H, W)`` of scaled float images (differentiable in ``x``)."""
        v = F.pad(x, (0, 0, 1, 0))[:, :, :-1]  # shifted down: the vertical stack sees rows above
        h = x
        for layer in self.layers:
            v, h = layer(v, h, y)
        return self.head(h)

    @overload
    def sample(
        self,
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
        self,
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
        self,
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
        self,
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
        """Draw ``n`` images ``(n, C, H, W)`` (int64 levels); see ``pygen.sampling.sample``.

        ``method``: ``"fused"`` (the C++ kernel on a CPU, the CUDA kernels on a GPU),
        ``"cached"`` (its pure-PyTorch twin) or
        ``"naive"`` (the full network per value). ``noise``: uniforms ``(n, C, H, W)`` in
        ``[0, 1)`` driving the inverse-CDF draws (the same noise gives the same images with every
        method). ``given``: int64 levels ``(n, C, H, W)`` to keep, ``-1`` where drawn: completions
        (given top rows give exact samples of the rest of the image given them; a value given
        after a drawn one is kept but does not condition it: no inpainting).
        ``return_logits``: also return the logits ``(n, n_levels, C, H, W)`` each value
        was drawn from.
        """
        sampling.check_sample_args(method, sampling.METHODS, n, temperature)
        self.check_labels(y, n)
        return sampling.sample(
            self,
            n,
            y=y,
            method=method,
            noise=noise,
            temperature=temperature,
            generator=generator,
            given=given,
            return_logits=return_logits,
        )
