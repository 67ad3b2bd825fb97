"""Invertible 1x1 convolution (Glow), LU-parametrized so that its log-determinant is a sum."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pygen.ops import logdet_dtype


class Invertible1x1Conv(nn.Module):
    """``z = W x`` over the channels (dimension 1) of ``(N, C)`` or ``(N, C, H, W)`` inputs with
    ``W = P L (U + diag(sign * exp(log_s)))``: P a fixed permutation, L unit lower and U strictly
    upper triangular. ``log|det W| = sum(log_s)`` per position. Starts at a random orthogonal
    matrix (the Q of a Gaussian matrix: a rotation or a reflection).

    Args:
        num_features: C, the size of dimension 1 (features of vectors, channels of images).
        generator: draws the Gaussian matrix of the initial W (on torch's default device, the
            CPU unless set otherwise); None: torch's global generator.
    """

    permutation: Tensor
    sign: Tensor
    lower_mask: Tensor

    def __init__(self, num_features: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(num_features, num_features, generator=generator))
        p, lower, upper = torch.linalg.lu(q)
        diag = upper.diagonal()
        self.register_buffer("permutation", p)
        self.register_buffer("sign", diag.sign())
        self.register_buffer("lower_mask", torch.tril(torch.ones_like(q), -1))
        self.lower = nn.Parameter(lower * self.lower_mask)
        self.upper = nn.Parameter(upper.triu(1))
        self.log_s = nn.Parameter(diag.abs().log())

    def weight(self) -> Tensor:
        eye = torch.eye(self.lower.shape[0], dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign * self.log_s.exp())
        return self.permutation @ lower @ upper

    def _mix(self, x: Tensor, w: Tensor) -> Tensor:
        if x.dim() == 2:
            return x @ w.T
        return nn.functional.conv2d(x, w[:, :, None, None])

    def _logdet(self, x: Tensor) -> Tensor:
        positions = math.prod(x.shape[2:])  # H * W for images, 1 for vectors
        return (self.log_s.to(logdet_dtype(x.dtype)).sum() * positions).expand(x.shape[0])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._mix(x, self.weight()), self._logdet(x)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        # torch inverts no 16-bit matrix: invert a float32 copy of a 16-bit weight.
        w = self.weight()
        w_inv = torch.linalg.inv(w.to(torch.promote_types(w.dtype, torch.float32))).to(w.dtype)
        return self._mix(z, w_inv), -self._logdet(z)
