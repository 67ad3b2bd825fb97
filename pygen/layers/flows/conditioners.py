"""Conditioner networks of the coupling layers: they read the pass-through half and produce the
log-scale and shift of the transformed half. The last layer starts at zero, so a fresh coupling is
the identity (up to the scale function's value at 0)."""

from __future__ import annotations

from torch import Tensor, nn


def _zero_init(layer: nn.Module) -> nn.Module:
    for parameter in layer.parameters():  # the weight and the bias
        nn.init.zeros_(parameter)
    return layer


class MLP(nn.Sequential):
    """``in_features -> hidden (ReLU) x n_hidden -> out_features``, last layer zero-initialized."""

    def __init__(self, in_features: int, out_features: int, hidden: int, n_hidden: int = 2) -> None:
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(n_hidden):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        super().__init__(*layers, _zero_init(nn.Linear(width, out_features)))


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResidualCNN(nn.Sequential):
    """3x3 conv to ``hidden`` channels, ``n_blocks`` residual blocks, zero-initialized 3x3 conv
    out."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, n_blocks: int = 2) -> None:
        super().__init__(
            nn.Conv2d(in_channels, hidden, 3, padding=1),
            *[_ResidualBlock(hidden) for _ in range(n_blocks)],
            nn.ReLU(),
            _zero_init(nn.Conv2d(hidden, out_channels, 3, padding=1)),
        )
