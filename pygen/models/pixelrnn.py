"""PixelRNN (van den Oord et al. 2016): Row LSTM or Diagonal BiLSTM layers over integer levels."""

from __future__ import annotations

from typing import Literal, cast, overload

import torch
from torch import Tensor, nn

from pygen import ops, sampling
from pygen.layers import DiagonalBiLSTM, MaskedConv2d, RowLSTM
from pygen.models.autoregressive import AutoregressiveImageModel, output_head

KINDS = ("row", "diagonal")
METHODS = ("fused", "cached", "naive")


class PixelRNN(AutoregressiveImageModel):
    """PixelRNN over images of integer levels in ``[0, n_levels)``, same contract as PixelCNN.

    A mask A ``k x k`` MaskedConv2d maps the scaled image to ``hidden`` channels, then
    ``n_layers`` recurrent layers with residual connections (``RowLSTM`` or ``DiagonalBiLSTM``),
    then PixelCNN's head (ReLU -> masked 1x1 -> ReLU -> masked 1x1 to ``n_levels`` logits per
    channel). Channels of a pixel are generated in order (RGB colour groups), pixels in raster
    order. The Diagonal BiLSTM sees every earlier value (its right-to-left direction also reads
    the image, see ``DiagonalBiLSTM``); the Row LSTM a triangle above the pixel (see ``RowLSTM``).

    Args:
        in_channels: image channels (1 grey, 3 RGB); ``hidden`` must be divisible by it.
        n_levels: levels per channel value (256 for 8-bit images, 17 for the bundled digits).
        n_layers: recurrent layers (>= 1).
        hidden: channels of the features and the LSTM states.
        kind: ``"row"`` (Row LSTM) or ``"diagonal"`` (Diagonal BiLSTM).
        kernel_size: odd width of the mask A input convolution.
        image_size: ``H`` or ``(H, W)`` of the images it models (what ``sample`` generates).
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_levels: int = 256,
        n_layers: int = 2,
        hidden: int = 32,
        kind: str = "row",
        kernel_size: int = 7,
        image_size: int | tuple[int, int] = 28,
    ) -> None:
        super().__init__()
        self.check_config(in_channels, n_levels, hidden, n_layers, image_size)
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.kernel_size = kernel_size
        groups = in_channels
        self.input_conv = MaskedConv2d(in_channels, hidden, kernel_size, "A", groups)
        self.layers = nn.ModuleList(
            RowLSTM(hidden, groups) if kind == "row" else DiagonalBiLSTM(hidden, groups, groups)
            for _ in range(n_layers)
        )
        self.head_hidden, self.head_out = output_head(hidden, in_channels, n_levels)

    def forward_scaled(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits ``(B, n_levels, C, H, W)`` of scaled float images (differentiable in ``x``)."""
        h = self.input_conv(x)
        for layer in self.layers:
            h = layer(h) if self.kind == "row" else layer(h, x)
        return self.head(h)

    @overload
    def sample(
        self,
        n: int,
        *,
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
        method: str = "fused",
        noise: Tensor | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        given: Tensor | None = None,
        return_logits: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Draw ``n`` images ``(n, C, H, W)`` (int64 levels) in raster and channel order.

        Each value is the inverse-CDF draw (``pygen.sampling.inverse_cdf_draw``) of
        softmax(logits / temperature) with one uniform of ``noise`` ``(n, C, H, W)`` in [0, 1);
        the same noise gives the same images with every method. Without noise, ``"fused"`` draws
        its uniforms inside the kernel (Philox, seeded from ``generator`` or torch's default
        generator) and the others with ``torch.rand``; ``torch.manual_seed`` makes either
        reproducible. ``method``: ``"fused"`` (the kernel ``pygen.ops.pixelrnn_sample``, C++ or
        CUDA), ``"cached"`` (its PyTorch twin ``pygen.sampling.sample_pixelrnn_cached``: the
        recurrent states carried along) or ``"naive"`` (the full network per value); the default
        is ``"fused"``. ``given``: int64 levels ``(n, C, H, W)`` to keep, ``-1`` where drawn:
        completions (given top rows give exact samples of the rest of the image given them; a
        value given after a drawn one is kept but does not condition it: no inpainting).
        ``return_logits``: also return the logits ``(n, n_levels, C, H, W)`` each value was drawn
        from.
        """
        weight = self.head_out.weight
        sampling.check_sample_args(method, METHODS, n, temperature)
        shape = (n, self.in_channels, *self.image_size)
        noise = sampling.sampler_noise(
            method, noise, given, shape, self.n_levels, weight, generator
        )
        if method == "fused":
            images, logits = ops.pixelrnn_sample(
                sampling.export_pixelrnn_weights(self),
                kind=self.kind,
                batch=n,
                channels=self.in_channels,
                height=shape[2],
                width=shape[3],
                n_levels=self.n_levels,
                kernel_size=self.kernel_size,
                noise=noise,
                temperature=temperature,
                generator=generator,
                given=given,
                return_logits=return_logits,
            )
        elif method == "naive":
            # sampler_noise returns None for the fused kernel only: the PyTorch samplers' uniforms.
            images, logits = sampling.sample_naive(
                self, cast(Tensor, noise), None, temperature, return_logits, given
            )
        else:
            images, logits = sampling.sample_pixelrnn_cached(
                self, cast(Tensor, noise), temperature, return_logits, given
            )
        return images if logits is None else (images, logits)
