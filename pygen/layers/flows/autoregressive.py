"""Autoregressive affine flows: MAF (Papamakarios et al. 2017) and IAF (Kingma et al. 2016).

Both are the elementwise affine map ``x = u * exp(s) + t`` with ``(log_scale, t)`` from a MADE,
computed by the fused ``pygen.ops.affine_coupling`` with nothing passed through (an all-zero mask).
They differ in which side the MADE reads, which decides the cost of each direction:

- MAF reads the data side: the density (x -> z) is one pass, sampling (z -> x) is D passes.
- IAF reads the latent side: sampling is one pass, the density of given data is D passes.

The D-pass direction solves the triangular system by fixed-point iteration: after pass k the first
k coordinates in the MADE's order are exact, because each depends only on earlier ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pygen import ops
from pygen.layers.made import MADE


class Permutation(nn.Module):
    """``z = x[:, perm]`` on ``(N, D)`` vectors (logdet 0): reorders the features between
    autoregressive layers so that each layer's first inputs differ."""

    def __init__(self, perm: Sequence[int]) -> None:
        super().__init__()
        perm_t = torch.as_tensor(list(perm))
        self.register_buffer("perm", perm_t)
        self.register_buffer("inverse_perm", torch.argsort(perm_t))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x[:, self.perm], x.new_zeros(len(x))

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return z[:, self.inverse_perm], z.new_zeros(len(z))


class _AutoregressiveAffine(nn.Module):
    """The MADE, the all-zero mask and the two ways to apply the affine map."""

    def __init__(
        self,
        dim: int,
        hidden: int = 64,
        n_hidden: int = 2,
        order: Sequence[int] | str | None = None,
        seed: int = 0,
        scale_fn: str = "tanh",
        clamp: float | None = None,
        reference: bool = False,
    ) -> None:
        super().__init__()
        self.made = MADE(dim, hidden, n_hidden, n_outputs=2, order=order, seed=seed)
        # Every position is transformed: a zero mask that the kernel reads.
        self.register_buffer("mask", torch.zeros(dim))
        self.scale_fn, self.clamp, self.reference = scale_fn, clamp, reference

    def _affine(self, u: Tensor, condition: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
        """``u * exp(s) + t`` (``(u - t) * exp(-s)`` for reverse) with s, t = MADE(condition)."""
        log_scale, shift = self.made(condition).unbind(1)
        impl = ops.reference if self.reference else ops
        y, logdet = impl.affine_coupling(
            u,
            log_scale,
            shift,
            self.mask,
            scale_fn=self.scale_fn,
            clamp=self.clamp,
            reverse=reverse,
            mask_kind=ops.MaskKind.READ,
        )
        return y, logdet.to(u.dtype)

    def _solve(self, target: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
        """The ``y`` with ``y = affine(target, condition=y)``: D passes, the k-th fixes the k-th
        coordinate in the order."""
        y = torch.zeros_like(target)
        for _ in range(self.made.dim):
            y, logdet = self._affine(target, y, reverse)
        return y, logdet

    def extra_repr(self) -> str:
        return f"scale_fn={self.scale_fn!r}, reference={self.reference}"


class MAFLayer(_AutoregressiveAffine):
    """One MAF layer on ``(N, D)``: ``z = x * exp(s(x)) + t(x)`` with s_d, t_d functions of the
    x before d in the MADE's order. forward (density) is one pass, inverse (sampling) D passes.

    Args:
        dim: D.
        hidden, n_hidden: the MADE's width and depth.
        order: the MADE's order (see ``pygen.layers.MADE``); seed: the seed of a random one.
        scale_fn, clamp: as in ``pygen.ops.affine_coupling`` (default ``"tanh"`` with clamp 2).
        reference: use the pure-PyTorch op instead of the fused kernel (for comparisons).
    """

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._affine(x, x, reverse=False)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self._solve(z, reverse=True)


class IAFLayer(_AutoregressiveAffine):
    """One IAF layer on ``(N, D)``: sampling ``x = z * exp(s(z)) + t(z)`` with s_d, t_d functions
    of the z before d in the MADE's order, one pass (``inverse``); the density of given x
    (``forward``) takes D passes. Arguments as for ``MAFLayer``."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._solve(x, reverse=True)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self._affine(z, z, reverse=False)
