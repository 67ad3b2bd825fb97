"""ActNorm (Glow): a per-channel affine map initialized from the first batch it sees."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ActNorm(nn.Module):
    """``z = (x + bias) * exp(log_scale)`` per channel (dimension 1) of ``(N, C)`` or
    ``(N, C, H, W)`` inputs. The first forward pass in training mode sets bias and log_scale so
    that the batch's output has zero mean and unit variance per channel (data-dependent init)."""

    def __init__(self, num_features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.log_scale = nn.Parameter(torch.zeros(num_features))
        self.eps = eps
        self.register_buffer("initialized", torch.tensor(False))

    def _view(self, p: Tensor, x: Tensor) -> Tensor:
        return p.view(1, -1, *[1] * (x.dim() - 2))

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        dims = [d for d in range(x.dim()) if d != 1]
        self.bias.copy_(-x.mean(dims))
        self.log_scale.copy_(-torch.log(x.std(dims) + self.eps))
        self.initialized.fill_(True)

    def _logdet(self, x: Tensor) -> Tensor:
        positions = x[0, 0].numel()  # H * W for images, 1 for vectors
        return (self.log_scale.sum() * positions).expand(x.shape[0])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and not self.initialized:
            self._initialize(x)
        z = (x + self._view(self.bias, x)) * self._view(self.log_scale, x).exp()
        return z, self._logdet(x)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x = z * self._view(-self.log_scale, z).exp() - self._view(self.bias, z)
        return x, -self._logdet(z)
