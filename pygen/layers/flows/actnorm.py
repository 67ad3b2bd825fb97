"""ActNorm (Glow): a per-channel affine map initialized from the first batch it sees."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pygen.ops import logdet_dtype


def _sum_over_ranks(t: Tensor) -> Tensor:
    """``t`` summed over the processes of a distributed run (``t`` itself in one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


def _read_loaded_flag(module: ActNorm, incompatible_keys) -> None:
    """A loaded ``initialized`` buffer sets the flag that forward reads."""
    module._initialized = bool(module.initialized)


class ActNorm(nn.Module):
    """``z = (x + bias) * exp(log_scale)`` per channel (dimension 1) of ``(N, C)`` or
    ``(N, C, H, W)`` inputs. The first forward pass in training mode sets bias and log_scale so
    that the batch's output has zero mean and unit variance per channel (data-dependent init); that
    batch needs at least two values per channel. Under DistributedDataParallel the statistics are
    those of the global batch (every rank's), so the ranks start alike.

    Whether it has run is the buffer ``initialized`` (saved with the state dict) and a Python flag
    that forward reads, kept equal to it (also by ``load_state_dict``): reading the buffer would
    synchronize with a GPU and break a ``torch.compile`` graph at every step.

    Args:
        num_features: C, the size of dimension 1 (features of vectors, channels of images).
        eps: added to each channel's standard deviation in the data-dependent init,
            ``log_scale = -log(std + eps)``, so that a constant channel gets a finite scale.
    """

    initialized: Tensor

    def __init__(self, num_features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.log_scale = nn.Parameter(torch.zeros(num_features))
        self.eps = eps
        self.register_buffer("initialized", torch.tensor(False))
        self._initialized = False
        self.register_load_state_dict_post_hook(_read_loaded_flag)

    def _view(self, p: Tensor, x: Tensor) -> Tensor:
        return p.view(1, -1, *[1] * (x.dim() - 2))

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        values = x.numel() // x.shape[1] if x.dim() >= 2 and x.shape[1] else 0
        if values < 2:
            raise ValueError(
                "ActNorm initializes from its first training batch, which needs at least two "
                f"values per channel, got x of shape {tuple(x.shape)}"
            )
        # Mean and (unbiased) std of the global batch: under DistributedDataParallel each rank
        # sees its own slice, and a rank initialized from it alone would keep other weights.
        dims = [d for d in range(x.dim()) if d != 1]
        x64 = x.double()
        count = _sum_over_ranks(torch.tensor(float(values), dtype=torch.float64, device=x.device))
        mean = _sum_over_ranks(x64.sum(dims)) / count
        squares = _sum_over_ranks((x64 - self._view(mean, x64)).square().sum(dims))
        std = (squares / (count - 1)).sqrt()
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(True)
        self._initialized = True

    def _logdet(self, x: Tensor) -> Tensor:
        positions = math.prod(x.shape[2:])  # H * W for images, 1 for vectors
        return (self.log_scale.to(logdet_dtype(x.dtype)).sum() * positions).expand(x.shape[0])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and not self._initialized:
            self._initialize(x)
        z = (x + self._view(self.bias, x)) * self._view(self.log_scale, x).exp()
        return z, self._logdet(x)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x = z * self._view(-self.log_scale, z).exp() - self._view(self.bias, z)
        return x, -self._logdet(z)
