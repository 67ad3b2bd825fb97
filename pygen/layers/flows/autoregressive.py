"""Autoregressive affine flows: MAF (Papamakarios et al. 2017) and IAF (Kingma et al. 2016).

Both are the elementwise affine map ``x = u * exp(s) + t`` with ``(log_scale, t)`` from a MADE,
computed by the fused ``pygen.ops.affine_coupling`` with nothing passed through (an all-zero mask).
They differ in which side the MADE reads, which decides the cost of each direction:

- MAF reads the data side: the density (x -> z) is one pass, sampling (z -> x) is D steps.
- IAF reads the latent side: sampling is one pass, the density of given data is D steps.

The other direction solves the triangular system one coordinate at a time in the MADE's order.
``solver="cached"`` (the default) fills coordinate d from the MADE's cached activations
(``MADE.solve``: the arithmetic of one pass for all D coordinates); ``solver="naive"`` re-runs the
whole MADE D times (fixed-point iteration: after pass k the first k coordinates are exact), the
reference the cached solve is tested and benchmarked against.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pygen import ops
from pygen.layers.made import MADE
from pygen.ops import logdet_dtype

SOLVERS = ("cached", "naive")


class Permutation(nn.Module):
    """``z = x[:, perm]`` on ``(N, D)`` vectors (logdet 0): reorders the features between
    autoregressive layers so that each layer's first inputs differ."""

    perm: Tensor
    inverse_perm: Tensor

    def __init__(self, perm: Sequence[int]) -> None:
        super().__init__()
        values = [
            int(i) for i in perm
        ]  # checked here: a buffer built on the meta device holds none
        size = len(values)
        if sorted(values) != list(range(size)):
            raise ValueError(f"perm must be a permutation of range({size}), got {values}")
        perm_t = torch.tensor(values)
        self.register_buffer("perm", perm_t)
        self.register_buffer("inverse_perm", torch.argsort(perm_t))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x[:, self.perm], x.new_zeros(len(x), dtype=logdet_dtype(x.dtype))

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return z[:, self.inverse_perm], z.new_zeros(len(z), dtype=logdet_dtype(z.dtype))


class _AutoregressiveAffine(nn.Module):
    """The MADE, the all-zero mask and the two ways to apply the affine map."""

    mask: Tensor

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
        solver: str = "cached",
    ) -> None:
        super().__init__()
        ops.reference.check_scale_fn(scale_fn, clamp)
        self.made = MADE(dim, hidden, n_hidden, n_outputs=2, order=order, seed=seed)
        # Every position is transformed: a zero mask that the kernel reads.
        self.register_buffer("mask", torch.zeros(dim))
        self.scale_fn, self.clamp, self.reference = scale_fn, clamp, reference
        self.solver = solver

    @property
    def solver(self) -> str:
        """How the D-step direction runs, ``"cached"`` or ``"naive"``."""
        return self._solver

    @solver.setter
    def solver(self, value: str) -> None:
        if value not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {value!r}")
        self._solver = value

    def _affine(
        self, u: Tensor, params: Tensor, reverse: bool, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``u * exp(s) + t`` (``(u - t) * exp(-s)`` for reverse) with ``s, t = params.unbind(1)``
        (the MADE's two outputs, stacked as the op takes them: one gradient, no cat)."""
        impl = ops.reference if self.reference else ops
        y, logdet = impl.affine_coupling_stacked(
            u,
            params.flatten(1),
            mask,
            scale_fn=self.scale_fn,
            clamp=self.clamp,
            reverse=reverse,
            mask_kind=ops.MaskKind.READ,
        )
        return y, logdet

    def _one_pass(self, u: Tensor, condition: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
        """The affine map of u with its parameters from ``MADE(condition)``."""
        return self._affine(u, self.made(condition), reverse, self.mask)

    def _solve(self, target: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
        """The ``y`` with ``y = affine(target, params=MADE(y))``, one coordinate at a time."""
        if self.solver == "naive":  # D passes, the k-th fixes the k-th coordinate in the order
            y = torch.zeros_like(target)
            for _ in range(self.made.dim):
                y, logdet = self._one_pass(target, y, reverse)
            return y, logdet

        # One operator (fused kernels on the CPU, the same loop issued from C++ elsewhere), or
        # its twin: the loop in Python, each step's map the pure-PyTorch one.
        impl = ops.reference if self.reference else ops
        weights, biases, units, bounds = self.made.solve_weights(target)
        _, params = impl.made_affine_solve(
            target,
            weights,
            biases,
            units,
            bounds,
            self.made.order_list,
            self.mask,
            scale_fn=self.scale_fn,
            clamp=self.clamp,
            reverse=reverse,
        )
        return self._affine(target, params, reverse, self.mask)

    def extra_repr(self) -> str:
        return f"scale_fn={self.scale_fn!r}, reference={self.reference}, solver={self.solver!r}"


class MAFLayer(_AutoregressiveAffine):
    """One MAF layer on ``(N, D)``: ``z = x * exp(s(x)) + t(x)`` with s_d, t_d functions of the
    x before d in the MADE's order. forward (density) is one pass, inverse (sampling) D steps.

    Args:
        dim: D.
        hidden, n_hidden: the MADE's width and depth.
        order: the MADE's order (see ``pygen.layers.MADE``); seed: the seed of a random one.
        scale_fn, clamp: as in ``pygen.ops.affine_coupling`` (default ``"tanh"`` with clamp 2).
        reference: use the pure-PyTorch op instead of the fused kernel (for comparisons).
        solver: how the D-step direction runs: ``"cached"`` (one pass of arithmetic) or
            ``"naive"`` (D passes); an attribute, which may be changed after construction.
    """

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._one_pass(x, x, reverse=False)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self._solve(z, reverse=True)


class IAFLayer(_AutoregressiveAffine):
    """One IAF layer on ``(N, D)``: sampling ``x = z * exp(s(z)) + t(z)`` with s_d, t_d functions
    of the z before d in the MADE's order, one pass (``inverse``); the density of given x
    (``forward``) takes D steps. Arguments as for ``MAFLayer``."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._solve(x, reverse=True)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self._one_pass(z, z, reverse=False)
