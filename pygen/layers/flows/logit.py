"""The logit pre-processing of image flows (Dinh et al. 2017, section 4.1)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pygen.ops import logdet_dtype


class LogitTransform(nn.Module):
    """``z = logit(alpha + (1 - 2 alpha) x)`` for x in [0, 1]: maps dequantized pixels to the real
    line, away from the boundary. logdet counts it so that densities stay those of x.

    Its domain, where ``y = alpha + (1 - 2 alpha) x`` lies in the open (0, 1), is [0, 1] widened by
    ``alpha / (1 - 2 alpha)`` on each side (the open (0, 1) for alpha = 0): the support of the
    density of a flow that starts with it. ``outside`` flags the samples with a value beyond it;
    ``forward`` maps such values to z = 0 so that the layers after it stay finite, and
    ``FlowModel.log_prob`` gives those samples -inf."""

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__()
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"alpha must be in [0, 0.5), got {alpha}")
        self.alpha = alpha

    def _scaled(self, x: Tensor) -> Tensor:
        return self.alpha + (1 - 2 * self.alpha) * x

    def _logdet(self, z: Tensor) -> Tensor:
        # log|dz/dx| = log(1 - 2 alpha) - log y - log(1 - y), with y = sigmoid(z)
        z = z.to(logdet_dtype(z.dtype))
        per_element = math.log1p(-2 * self.alpha) - F.logsigmoid(z) - F.logsigmoid(-z)
        return per_element.flatten(1).sum(1)

    def outside(self, x: Tensor) -> Tensor:
        """Per sample ``(N,)``: whether any value of ``x`` lies outside the domain (a NaN does
        not: it propagates as NaN)."""
        y = self._scaled(x)
        return ((y <= 0) | (y >= 1)).flatten(1).any(1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self._scaled(x)
        # Outside the domain the logit is NaN, whose gradient would poison the whole batch's:
        # y = 1/2 there (z = 0) keeps everything finite, with a zero gradient to x.
        y = torch.where((y <= 0) | (y >= 1), 0.5, y)
        z = y.log() - (-y).log1p()
        return z, self._logdet(z)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x = (z.sigmoid() - self.alpha) / (1 - 2 * self.alpha)
        return x, -self._logdet(z)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"
