"""PixelRNN's recurrent layers (van den Oord et al. 2016): Row LSTM and Diagonal BiLSTM.

Both take and return ``(B, hidden, H, W)`` features in raster order and colour groups like
MaskedConv2d: the input-to-state convolutions are masked (mask B), the state-to-state ones see
only pixels generated before the whole current row or diagonal, and the layer output is
``x + masked 1x1 conv(h)`` (a residual connection).

Gate channels of a ``4 * hidden`` pre-activation are laid out ``(groups, [i, f, o, g], hidden /
groups)`` so that a hidden unit's four gates sit in its own colour group.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pygen.layers.masked_conv import MaskedConv2d


def lstm_cell(pre: Tensor, c: Tensor, color_groups: int) -> tuple[Tensor, Tensor]:
    """One LSTM update: gate pre-activations ``(B, 4h, ...)`` and cell ``(B, h, ...)`` to the
    new ``(h, c)``."""
    b, four_h = pre.shape[:2]
    size = four_h // (4 * color_groups)
    i, f, o, g = pre.view(b, color_groups, 4, size, *pre.shape[2:]).unbind(2)
    c = torch.sigmoid(f) * c.reshape(b, color_groups, size, *c.shape[2:])
    c = c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h.flatten(1, 2), c.flatten(1, 2)


def skew(x: Tensor) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, C, H, W + H - 1)``: row i shifted right by i (zeros elsewhere),
    so that the diagonals of ``x`` become columns."""
    b, c, height, width = x.shape
    flat = F.pad(x, (0, height)).flatten(2)[:, :, : height * (width + height - 1)]
    return flat.view(b, c, height, width + height - 1)


def unskew(x: Tensor) -> Tensor:
    """Inverse of ``skew``: ``(B, C, H, W + H - 1)`` -> ``(B, C, H, W)``."""
    b, c, height, skewed_width = x.shape
    width = skewed_width - height + 1
    return F.pad(x.flatten(2), (0, height)).view(b, c, height, width + height)[..., :width]


class RowLSTM(nn.Module):
    """Row LSTM: the state of row i is computed from row i's input (a masked ``1 x k``
    convolution along the row) and row i-1's hidden states (a width-3 convolution), one row at a
    time for the whole row at once. Its receptive field is a triangle: row ``i - m`` (m >= 1)
    reaches at most ``m`` columns right of the current one.

    Args:
        hidden: channels of the input, the state and the output (divisible by ``color_groups``).
        color_groups: image channels generated in order within a pixel (see MaskedConv2d).
        kernel_size: odd width k of the input-to-state convolution.
    """

    def __init__(self, hidden: int, color_groups: int = 1, kernel_size: int = 3) -> None:
        super().__init__()
        self.hidden = hidden
        self.color_groups = color_groups
        self.input_to_state = MaskedConv2d(hidden, 4 * hidden, (1, kernel_size), "B", color_groups)
        # Row i-1 is complete when row i is generated: no mask.
        self.state_to_state = nn.Conv1d(hidden, 4 * hidden, 3, padding=1)
        self.out = MaskedConv2d(hidden, hidden, 1, "B", color_groups)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.input_to_state(x)
        h = c = x.new_zeros(x.shape[0], self.hidden, x.shape[3])  # the states before row 0
        rows = []
        for i in range(x.shape[2]):
            h, c = lstm_cell(pre[:, :, i] + self.state_to_state(h), c, self.color_groups)
            rows.append(h)
        return x + self.out(torch.stack(rows, 2))


class DiagonalLSTM(nn.Module):
    """One direction of the Diagonal BiLSTM: left to right along the diagonals.

    The map is skewed so that diagonals become columns; column t's states come from its input
    (a 1x1 masked convolution) and column t-1's states at rows i-1 and i (a 2x1 convolution),
    which are the pixel above and the pixel to the left. The state at (i, j) thus sees every
    input at rows <= i and columns <= j. ``extra`` inputs (``extra_channels``) enter the gates
    through an unmasked 1x1 convolution.
    """

    def __init__(self, hidden: int, color_groups: int = 1, extra_channels: int = 0) -> None:
        super().__init__()
        self.hidden = hidden
        self.color_groups = color_groups
        self.input_to_state = MaskedConv2d(hidden, 4 * hidden, 1, "B", color_groups)
        self.extra_to_state = nn.Conv2d(extra_channels, 4 * hidden, 1) if extra_channels else None
        # The pixel above and the pixel to the left are complete: no mask.
        self.state_to_state = nn.Conv1d(hidden, 4 * hidden, 2)

    def forward(self, x: Tensor, extra: Tensor | None = None) -> Tensor:
        """States ``(B, hidden, H, W)`` of inputs ``x`` ``(B, hidden, H, W)``."""
        if (extra is None) != (self.extra_to_state is None):
            channels = 0 if self.extra_to_state is None else self.extra_to_state.in_channels
            raise ValueError(
                "extra (a DiagonalBiLSTM's image) must be given exactly when extra_channels "
                f"(image_channels) > 0: got {'no' if extra is None else 'a'} tensor with {channels}"
            )
        pre = self.input_to_state(x)
        if self.extra_to_state is not None:
            pre = pre + self.extra_to_state(extra)
        pre = skew(pre)
        h = c = x.new_zeros(x.shape[0], self.hidden, x.shape[2])
        columns = []
        for t in range(pre.shape[3]):
            h, c = lstm_cell(
                pre[..., t] + self.state_to_state(F.pad(h, (1, 0))), c, self.color_groups
            )
            columns.append(h)
        return unskew(torch.stack(columns, 3))


class DiagonalBiLSTM(nn.Module):
    """Diagonal BiLSTM: a left-to-right and a right-to-left DiagonalLSTM, the latter run on the
    width-flipped map and shifted down one row so that it sees only complete rows above.

    Row i-1's right-to-left state at column j sees row i-1 from column j to the end, but the
    first layer's mask A features of row i-1 never contain row i-1's last pixel (nor do deeper
    layers' features there: it is the last one generated). To leave no blind spot the
    right-to-left direction also reads the scaled ``image`` (``image_channels``), which is
    complete at every row it is used for.

    Args:
        hidden: channels of the input, the states and the output (divisible by
            ``color_groups``).
        color_groups: image channels generated in order within a pixel (see MaskedConv2d).
        image_channels: channels of the image the right-to-left direction reads (0: none).
    """

    def __init__(self, hidden: int, color_groups: int = 1, image_channels: int = 0) -> None:
        super().__init__()
        self.left_to_right = DiagonalLSTM(hidden, color_groups)
        self.right_to_left = DiagonalLSTM(hidden, color_groups, image_channels)
        self.out = MaskedConv2d(hidden, hidden, 1, "B", color_groups)

    def forward(self, x: Tensor, image: Tensor | None = None) -> Tensor:
        """``x + out(h)`` of features ``x`` ``(B, hidden, H, W)`` and the scaled ``image``
        ``(B, image_channels, H, W)`` (when the layer reads one)."""
        flipped = image.flip(3) if image is not None else None
        backward = self.right_to_left(x.flip(3), flipped).flip(3)
        h = self.left_to_right(x) + F.pad(backward, (0, 0, 1, 0))[:, :, :-1]
        return x + self.out(h)
