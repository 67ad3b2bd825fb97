"""A Gated PixelCNN's weights in the flat layout of the cached samplers (kernel and twin).

Per gated layer, 7 tensors (``Cin``: the layer's input channels, ``h``: hidden, ``k``: kernel
width, ``kh = kw = k // 2 + 1``, gate channels ordered ``[all a, all b]``):

- ``v_w`` ``(kh * k * Cin, 2h)``: vertical conv, rows of the im2col order (row, column, channel);
- ``v_b`` ``(B, 2h)``: vertical bias plus the class bias of each sample;
- ``h_w`` ``(kw * Cin, 2h)``: masked horizontal conv, left half and centre (column, channel);
- ``h_b`` ``(B, 2h)``: horizontal bias plus the link bias plus the class bias;
- ``link_w`` ``(2h, 2h)``: vertical-to-horizontal 1x1 conv (in, out);
- ``out_w`` ``(h, h)``, ``out_b`` ``(h,)``: masked 1x1 conv of the horizontal stack (in, out).

Then the head: ``w1`` ``(h, h)``, ``b1`` ``(h,)``, ``w2`` ``(h, C * L)``, ``b2`` ``(C * L,)``
(masked, (in, out), output columns ordered (channel, level)).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from pygen.layers import MaskedConv2d
from pygen.layers.masked_conv import gate_channel_order

PER_LAYER = 7
HEAD = 4


class GatedPixelCNN(Protocol):
    """What the samplers read from a model (``pygen.models.PixelCNN``)."""

    in_channels: int
    n_levels: int
    hidden: int
    kernel_size: int
    image_size: tuple[int, int]
    layers: nn.ModuleList
    head_hidden: MaskedConv2d
    head_out: MaskedConv2d

    def __call__(self, x: Tensor, y: Tensor | None = None) -> Tensor: ...


def _matrix(conv: MaskedConv2d) -> Tensor:
    """A masked 1x1 conv as an (in, out) matrix."""
    return conv.masked_weight()[:, :, 0, 0].t().contiguous()


def _per_sample(bias: Tensor, cond: nn.Embedding | None, y: Tensor | None, batch: int) -> Tensor:
    rows = bias.expand(batch, -1)
    return (rows + cond(y) if cond is not None else rows).contiguous()


@torch.no_grad()
def export_weights(model: GatedPixelCNN, y: Tensor | None, batch: int) -> list[Tensor]:
    """The flat weights of ``model`` for ``batch`` samples with labels ``y`` (see module doc)."""
    flat: list[Tensor] = []
    order = gate_channel_order(model.hidden, model.in_channels).to(model.head_out.weight.device)
    kw = model.kernel_size // 2 + 1
    for layer in model.layers:
        v_w = layer.v_conv.weight[order]
        h_w = layer.h_conv.masked_weight()[order][:, :, 0, :kw]
        flat += [
            v_w.permute(2, 3, 1, 0).reshape(-1, v_w.shape[0]).contiguous(),
            _per_sample(layer.v_conv.bias, layer.v_cond, y, batch)[:, order].contiguous(),
            h_w.permute(2, 1, 0).reshape(-1, h_w.shape[0]).contiguous(),
            _per_sample(layer.h_conv.bias + layer.link.bias, layer.h_cond, y, batch)[
                :, order
            ].contiguous(),
            layer.link.weight[order][:, order, 0, 0].t().contiguous(),
            _matrix(layer.h_out),
            layer.h_out.bias.contiguous(),
        ]
    flat += [
        _matrix(model.head_hidden),
        model.head_hidden.bias.contiguous(),
        _matrix(model.head_out),
        model.head_out.bias.contiguous(),
    ]
    return flat
