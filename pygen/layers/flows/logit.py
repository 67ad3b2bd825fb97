"""The logit pre-processing of image flows (Dinh et al. 2017, section 4.1)."""

from __future__ import annotations

import math

from torch import Tensor, nn
from torch.nn import functional as F


class LogitTransform(nn.Module):
    """``z = logit(alpha + (1 - 2 alpha) x)`` for x in [0, 1]: maps dequantized pixels to the real
    line, away from the boundary. logdet counts it so that densities stay those of x."""

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__()
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"alpha must be in [0, 0.5), got {alpha}")
        self.alpha = alpha

    def _logdet(self, z: Tensor) -> Tensor:
        # log|dz/dx| = log(1 - 2 alpha) - log y - log(1 - y), with y = sigmoid(z)
        per_element = math.log1p(-2 * self.alpha) - F.logsigmoid(z) - F.logsigmoid(-z)
        return per_element.flatten(1).sum(1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self.alpha + (1 - 2 * self.alpha) * x
        z = y.log() - (-y).log1p()
        return z, self._logdet(z)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x = (z.sigmoid() - self.alpha) / (1 - 2 * self.alpha)
        return x, -self._logdet(z)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"
