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

from collections.abc import Iterable, Iterator
from typing import Protocol, cast

import torch
from torch import Tensor, nn

from pygen.layers import GatedMaskedConv2d, MaskedConv2d
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

    def modules(self) -> Iterator[nn.Module]: ...


def conv_bias(conv: nn.Conv1d | nn.Conv2d) -> Tensor:
    """The bias of a convolution the samplers read: every one of the models' has a bias."""
    if conv.bias is None:
        raise ValueError(f"the samplers read convolutions with a bias, got {conv}")
    return conv.bias


def _matrix(conv: MaskedConv2d) -> Tensor:
    """A masked 1x1 conv as an (in, out) matrix."""
    return conv.masked_weight()[:, :, 0, 0].t().contiguous()


def _columns(x: Tensor, order: Tensor | None) -> Tensor:
    """``x`` with its last dimension permuted by ``order`` (None: kept), contiguous: one pass."""
    return x.contiguous() if order is None else x.index_select(-1, order)


def _im2col(w: Tensor, order: Tensor | None) -> Tensor:
    """A conv weight ``(out, in, kh, kw)`` as ``(kh * kw * in, out)`` rows in the im2col order
    (row, column, channel), the output columns permuted by ``order``."""
    return _columns(w.permute(2, 3, 1, 0), order).reshape(-1, w.shape[0])


def _per_sample(
    bias: Tensor, cond: nn.Embedding | None, y: Tensor | None, batch: int, order: Tensor | None
) -> Tensor:
    rows = bias.expand(batch, -1)
    return _columns(rows + cond(y) if cond is not None else rows, order)


@torch.no_grad()
def export_weights(model: GatedPixelCNN, y: Tensor | None, batch: int) -> list[Tensor]:
    """The flat weights of ``model`` for ``batch`` samples with labels ``y`` (see module doc)."""
    flat: list[Tensor] = []
    order = None  # one colour group: the gate channels are already [all a, all b]
    if model.in_channels > 1:
        order = gate_channel_order(model.hidden, model.in_channels).to(model.head_out.weight.device)
    kw = model.kernel_size // 2 + 1
    for layer in cast(Iterable[GatedMaskedConv2d], model.layers):  # a PixelCNN's gated layers
        link = _im2col(layer.link.weight, order)
        flat += [
            _im2col(layer.v_conv.weight, order),
            _per_sample(conv_bias(layer.v_conv), layer.v_cond, y, batch, order),
            _im2col(layer.h_conv.masked_weight()[:, :, :1, :kw], order),
            _per_sample(
                conv_bias(layer.h_conv) + conv_bias(layer.link), layer.h_cond, y, batch, order
            ),
            link if order is None else link.index_select(0, order),
            _matrix(layer.h_out),
            conv_bias(layer.h_out).contiguous(),
        ]
    flat += [
        _matrix(model.head_hidden),
        conv_bias(model.head_hidden).contiguous(),
        _matrix(model.head_out),
        conv_bias(model.head_out).contiguous(),
    ]
    return [t.detach() for t in flat]  # a contiguous parameter comes back as itself
