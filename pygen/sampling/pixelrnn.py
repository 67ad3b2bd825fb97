"""Cached PixelRNN sampling: the recurrent states carried along, one column per value.

Row LSTM: the states of row i depend on row i-1's states (all known once row i starts) and on
row i's inputs left of and at the column (a masked convolution along the row). So per row, each
layer's state-to-state convolution runs once, for the whole row, from the carried states of the
row above; per value, each layer computes only the column being drawn: the input convolution on
the window it reaches (the k//2 + 1 rows by k columns around the value), the input-to-state
convolution on the cached layer inputs of the row, the LSTM cell and the residual output, then
the head. That is O(1) columns per layer per value instead of the naive sampler's full network
(H rows of recurrence over W columns): about H * W times fewer FLOPs. The many tiny per-value
ops are overhead-bound, so the measured speed-up is smaller (benchmarks/bench_pixelrnn.py). The
per-value convolutions run as the matrix products they are (window times masked kernel), which
the framework's convolution would make ~10x dearer per call at these sizes.

Diagonal BiLSTM: the left-to-right state at (i, j) comes from the states at (i-1, j) and
(i, j-1), so per value each layer takes one LSTM step from the carried row above and the column
to its left. The right-to-left direction reads only complete rows (its output is shifted down
one row): when row i is complete, each layer runs it once along row i, right to left, for use in
row i + 1. Where the skewed map of ``DiagonalLSTM`` puts a pixel's left neighbour outside the
image, the state there is the recurrence run on zero inputs, the same for every image
(``_boundary_states``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal, Protocol, cast, overload

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pygen.layers import (
    DiagonalBiLSTM,
    DiagonalLSTM,
    MaskedConv2d,
    RowLSTM,
    frozen_masked_weights,
    lstm_cell,
)
from pygen.sampling.draw import draw_or_keep
from pygen.sampling.weights import conv_bias


class PixelRNNModel(Protocol):
    """What the samplers read from a model (``pygen.models.PixelRNN``)."""

    kind: str
    in_channels: int
    n_levels: int
    hidden: int
    kernel_size: int
    input_conv: MaskedConv2d
    layers: nn.ModuleList  # of pygen.layers.RowLSTM or DiagonalBiLSTM

    head_hidden: MaskedConv2d
    head_out: MaskedConv2d

    def scale(self, x: Tensor) -> Tensor: ...

    def modules(self) -> Iterator[nn.Module]: ...


# draw(u, c, i, j): the head's logits of channel c from features u at pixel (i, j), the draw.
Draw = Callable[[Tensor, int, int, int], None]


def _input_features(model: PixelRNNModel, images: Tensor, i: int, j: int) -> Tensor:
    """The mask A input convolution at (i, j), ``(B, hidden)``: its rows up to i of the scaled
    image (zeros outside it, the convolution's padding) times the kernel's rows up to the centre.
    Values not generated yet sit in the window, but the mask gives them zero weight."""
    pad, width = model.kernel_size // 2, images.shape[3]
    window = model.scale(images[:, :, max(0, i - pad) : i + 1, max(0, j - pad) : j + pad + 1])
    window = F.pad(window, (max(0, pad - j), max(0, j + pad + 1 - width), max(0, pad - i), 0))
    conv = model.input_conv
    return F.linear(window.flatten(1), conv.masked_weight()[:, :, : pad + 1].flatten(1), conv.bias)


def _row_input(conv: MaskedConv2d, row: Tensor, j: int) -> Tensor:
    """A masked ``1 x k`` convolution at column j of ``row`` ``(B, C, W)``: the columns up to j
    (zeros left of the row) times the kernel's taps up to the centre."""
    half = conv.kernel_size[1] // 2
    window = F.pad(row[:, :, max(0, j - half) : j + 1], (max(0, half - j), 0))
    return F.linear(
        window.flatten(1), conv.masked_weight()[:, :, 0, : half + 1].flatten(1), conv.bias
    )


def _pointwise(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """A 1x1 convolution (masked or not) of features ``(B, C)`` or rows of them ``(B, C, W)``."""
    weight = conv.masked_weight() if isinstance(conv, MaskedConv2d) else conv.weight
    weight = weight.flatten(1)
    if x.dim() == 2:
        return F.linear(x, weight, conv.bias)
    return F.linear(x.mT, weight, conv.bias).mT


def _logits(model: PixelRNNModel, u: Tensor, c: int) -> Tensor:
    """``model.head`` at one pixel: channel c's logits ``(B, n_levels)`` of features
    ``(B, hidden)``."""
    hidden = F.relu(_pointwise(model.head_hidden, F.relu(u)))
    logits = _pointwise(model.head_out, hidden)
    return logits.view(len(u), model.in_channels, model.n_levels)[:, c]


def _row_lstm(model: PixelRNNModel, noise: Tensor, images: Tensor, draw: Draw) -> None:
    """Every value of a Row LSTM PixelRNN, in order (see the module docstring)."""
    batch, channels, height, width = noise.shape
    layers = cast(list[RowLSTM], list(model.layers))  # model.kind == "row"
    zeros = [noise.new_zeros(batch, model.hidden, width) for _ in layers]
    h_above, c_above = zeros, zeros  # the states before row 0
    for i in range(height):
        from_above = [layer.state_to_state(h) for layer, h in zip(layers, h_above, strict=True)]
        inputs = [noise.new_zeros(batch, model.hidden, width) for _ in layers]
        h_row = [noise.new_zeros(batch, model.hidden, width) for _ in layers]
        c_row = [noise.new_zeros(batch, model.hidden, width) for _ in layers]
        for j in range(width):
            for c in range(channels):
                u = _input_features(model, images, i, j)
                for n, layer in enumerate(layers):
                    inputs[n][:, :, j] = u
                    pre = _row_input(layer.input_to_state, inputs[n], j)
                    h, cell = lstm_cell(
                        pre + from_above[n][:, :, j], c_above[n][:, :, j], layer.color_groups
                    )
                    h_row[n][:, :, j], c_row[n][:, :, j] = h, cell
                    u = u + _pointwise(layer.out, h)
                draw(u, c, i, j)
        # A pixel's last channel feeds none of the states at that pixel: the row's are final.
        h_above, c_above = h_row, c_row


def _boundary_states(lstm: DiagonalLSTM, steps: int, like: Tensor) -> list[tuple[Tensor, Tensor]]:
    """``(h, c)`` ``(B, hidden)`` (B = ``len(like)``) of ``lstm`` left of each row's first
    pixel: the skewed map's column t holds, at every row below t, the recurrence run on zero
    inputs from the zero states before column 0 (nothing from the image reaches it). Row i's left
    neighbour is column i - 1's; row 0's are the zero states themselves."""
    h = c = like.new_zeros(len(like), lstm.hidden)
    states = [(h, c)]
    for _ in range(steps - 1):
        h, c = lstm_cell(lstm.state_to_state(torch.stack([h, h], -1))[..., 0], c, lstm.color_groups)
        states.append((h, c))
    return states


def _step(lstm: DiagonalLSTM, pre: Tensor, left: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """One LSTM step of ``lstm`` at a pixel: ``pre`` holds its input and the state above (with
    the bias), ``left`` the ``(h, c)`` of the pixel before it in its direction."""
    h_left, c_left = left
    return lstm_cell(
        pre + F.linear(h_left, lstm.state_to_state.weight[..., 1]), c_left, lstm.color_groups
    )


def _from_above(lstm: DiagonalLSTM, h_above: Tensor) -> Tensor:
    """The state-to-state term of the row above, bias included, for a whole row ``(B, 4h, W)``."""
    conv = lstm.state_to_state
    return F.conv1d(h_above, conv.weight[..., :1], conv.bias)


def _diagonal_bilstm(model: PixelRNNModel, noise: Tensor, images: Tensor, draw: Draw) -> None:
    """Every value of a Diagonal BiLSTM PixelRNN, in order (see the module docstring)."""
    batch, channels, height, width = noise.shape
    layers = cast(list[DiagonalBiLSTM], list(model.layers))  # model.kind == "diagonal"

    def row_of_zeros() -> Tensor:
        return noise.new_zeros(batch, model.hidden, width)

    forward_edge = [_boundary_states(layer.left_to_right, height, noise) for layer in layers]
    backward_edge = [_boundary_states(layer.right_to_left, height, noise) for layer in layers]
    # Per layer, the rows above: each direction's hidden states (the right-to-left one is also
    # this row's shifted backward output).
    forward_above = [row_of_zeros() for _ in layers]
    backward_above = [row_of_zeros() for _ in layers]
    for i in range(height):
        from_above = [
            _from_above(layer.left_to_right, h)
            for layer, h in zip(layers, forward_above, strict=True)
        ]
        inputs = [row_of_zeros() for _ in layers]  # each layer's input features along the row
        h_row = [row_of_zeros() for _ in layers]
        c_row = [row_of_zeros() for _ in layers]
        for j in range(width):
            for c in range(channels):
                u = _input_features(model, images, i, j)
                for n, layer in enumerate(layers):
                    inputs[n][:, :, j] = u
                    lstm = layer.left_to_right
                    pre = _pointwise(lstm.input_to_state, u) + from_above[n][:, :, j]
                    left = (
                        (h_row[n][:, :, j - 1], c_row[n][:, :, j - 1]) if j else forward_edge[n][i]
                    )
                    h, cell = _step(lstm, pre, left)
                    h_row[n][:, :, j], c_row[n][:, :, j] = h, cell
                    u = u + _pointwise(layer.out, h + backward_above[n][:, :, j])
                draw(u, c, i, j)
        # Row i is complete: the right-to-left direction runs along it, right to left.
        image_row = model.scale(images[:, :, i])
        for n, layer in enumerate(layers):
            lstm = layer.right_to_left
            pre = (
                _pointwise(lstm.input_to_state, inputs[n])
                + _pointwise(_image_to_state(lstm), image_row)
                + _from_above(lstm, backward_above[n])
            )
            h_back, left = row_of_zeros(), backward_edge[n][i]
            for j in reversed(range(width)):
                left = _step(lstm, pre[:, :, j], left)
                h_back[:, :, j] = left[0]
            backward_above[n] = h_back
        forward_above = h_row


def _image_to_state(lstm: DiagonalLSTM) -> nn.Conv2d:
    """The image-to-state convolution of a right-to-left direction (a PixelRNN's reads the
    image)."""
    if lstm.extra_to_state is None:
        raise ValueError(
            "the samplers need Diagonal BiLSTMs that read the image (image_channels > 0)"
        )
    return lstm.extra_to_state


def _matrix(weight: Tensor) -> Tensor:
    """A convolution's weight ``(out, in, *taps)`` as an ``(taps * in, out)`` matrix, rows in the
    order (tap, channel)."""
    return weight.flatten(2).permute(2, 1, 0).reshape(-1, weight.shape[0]).contiguous()


def _direction(lstm: RowLSTM | DiagonalLSTM, taps: slice) -> list[Tensor]:
    """One recurrent direction: input-to-state (its ``taps``), bias, state-to-state, bias."""
    conv = lstm.input_to_state
    return [
        _matrix(conv.masked_weight()[..., taps]),
        conv_bias(conv).contiguous(),
        _matrix(lstm.state_to_state.weight),
        conv_bias(lstm.state_to_state).contiguous(),
    ]


@torch.no_grad()
def export_pixelrnn_weights(model: PixelRNNModel) -> list[Tensor]:
    """The flat weights of ``pygen.ops.pixelrnn_sample``: masks applied, every matrix
    ``(in, out)`` with rows in the order (tap, channel), the gate columns of a ``4 * hidden``
    pre-activation as in ``pygen.layers.lstm_cell``.

    - the mask A input convolution's rows up to the centre, ``(kh * k * C, hidden)`` (rows
      (row, column, channel), ``kh = k // 2 + 1``), and its bias;
    - per Row LSTM layer: input-to-state (the taps up to the centre, ``(kw * hidden, 4h)``), its
      bias, state-to-state (the 3 taps along the row above, ``(3 * hidden, 4h)``), its bias, then
      the output 1x1 ``(hidden, hidden)`` and its bias;
    - per Diagonal BiLSTM layer: the left-to-right direction (input-to-state ``(hidden, 4h)``, bias,
      state-to-state ``(2 * hidden, 4h)`` over the pixel above then the pixel to the left, bias),
      the right-to-left direction likewise followed by its image-to-state ``(C, 4h)`` and bias,
      then the output 1x1 and its bias;
    - the head: ``w1`` ``(hidden, hidden)``, ``b1``, ``w2`` ``(hidden, C * L)`` (columns
      (channel, level)), ``b2``.
    """
    pad = model.kernel_size // 2
    conv = model.input_conv
    flat = [_matrix(conv.masked_weight()[:, :, : pad + 1]), conv_bias(conv).contiguous()]
    for layer in model.layers:
        if model.kind == "row":
            row = cast(RowLSTM, layer)
            half = row.input_to_state.kernel_size[1] // 2
            flat += _direction(row, slice(0, half + 1))
            out = row.out
        else:
            bidirectional = cast(DiagonalBiLSTM, layer)
            rtl = bidirectional.right_to_left
            image = _image_to_state(rtl)
            flat += _direction(bidirectional.left_to_right, slice(None))
            flat += _direction(rtl, slice(None))
            flat += [_matrix(image.weight), conv_bias(image).contiguous()]
            out = bidirectional.out
        flat += [_matrix(out.masked_weight()), conv_bias(out).contiguous()]
    for head in (model.head_hidden, model.head_out):
        flat += [_matrix(head.masked_weight()), conv_bias(head).contiguous()]
    return [t.detach() for t in flat]  # a contiguous parameter comes back as itself


@overload
def sample_pixelrnn_cached(
    model: PixelRNNModel,
    noise: Tensor,
    temperature: float = ...,
    return_logits: Literal[False] = ...,
    given: Tensor | None = ...,
) -> tuple[Tensor, None]: ...


@overload
def sample_pixelrnn_cached(
    model: PixelRNNModel,
    noise: Tensor,
    temperature: float = ...,
    *,
    return_logits: Literal[True],
    given: Tensor | None = ...,
) -> tuple[Tensor, Tensor]: ...


@overload
def sample_pixelrnn_cached(
    model: PixelRNNModel,
    noise: Tensor,
    temperature: float = ...,
    return_logits: bool = ...,
    given: Tensor | None = ...,
) -> tuple[Tensor, Tensor | None]: ...


@torch.no_grad()
def sample_pixelrnn_cached(
    model: PixelRNNModel,
    noise: Tensor,
    temperature: float = 1.0,
    return_logits: bool = False,
    given: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Images ``(B, C, H, W)`` of a PixelRNN (either kind) drawn value by value with uniforms
    ``noise`` ``(B, C, H, W)``, the recurrent states carried along, keeping the levels of
    ``given`` (``-1``: drawn; None: every value drawn).

    Returns ``(images, logits)``; logits ``(B, L, C, H, W)`` only with ``return_logits``.
    """
    images = torch.zeros(noise.shape, dtype=torch.int64, device=noise.device)
    used = noise.new_empty(len(noise), model.n_levels, *noise.shape[1:]) if return_logits else None

    def draw(u: Tensor, c: int, i: int, j: int) -> None:
        logits = _logits(model, u, c)
        kept = None if given is None else given[:, c, i, j]
        images[:, c, i, j] = draw_or_keep(logits, noise[:, c, i, j], temperature, kept)
        if used is not None:
            used[:, :, c, i, j] = logits

    with frozen_masked_weights(model):
        (_row_lstm if model.kind == "row" else _diagonal_bilstm)(model, noise, images, draw)
    return images, used
