"""The flow-layer protocol and its two combinators.

Every flow layer maps ``forward(x) -> (z, logdet)`` and ``inverse(z) -> (x, logdet)``, where
``logdet`` has shape ``(N,)`` and is ``log|det dz/dx|`` for forward and ``log|det dx/dz|`` for
inverse, so that the two sum to zero on a round trip. ``logdet`` is float32 for 16-bit inputs
(``pygen.ops.logdet_dtype``), as the fused ops return it.
"""

from __future__ import annotations

from typing import Protocol, cast

from torch import Tensor, nn

from pygen.ops import logdet_dtype


class FlowLayer(Protocol):
    """A flow layer as the module docstring describes it (``nn.Module`` does not declare
    ``inverse``)."""

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]: ...

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]: ...


class FlowSequential(nn.Sequential):
    """Flow layers applied in order (forward) and in reverse order (inverse); log-dets add up."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(x.shape[0], dtype=logdet_dtype(x.dtype))
        for layer in self:
            x, step = layer(x)
            logdet = logdet + step
        return x, logdet

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        logdet = z.new_zeros(z.shape[0], dtype=logdet_dtype(z.dtype))
        for layer in reversed(self):
            z, step = cast(FlowLayer, layer).inverse(z)
            logdet = logdet + step
        return z, logdet


class Inverse(nn.Module):
    """A flow layer run backwards: ``forward`` is the wrapped layer's ``inverse`` and vice versa."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return cast(FlowLayer, self.layer).inverse(x)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self.layer(z)
