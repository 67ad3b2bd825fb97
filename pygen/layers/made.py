"""MADE (Germain et al. 2015): an MLP whose weight masks make output d depend only on the inputs
before d in a chosen order, so one pass gives every conditional of an autoregressive model."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pygen.ops.reference import made_solve


def _read_loaded_order(module: MADE, incompatible_keys) -> None:
    """A loaded ``order`` buffer sets ``order_list``."""
    module.order_list = module.order.tolist()


class MaskedLinear(nn.Linear):
    """``nn.Linear`` with a fixed 0/1 mask ``(out_features, in_features)`` on its weight."""

    mask: Tensor

    def __init__(self, in_features: int, out_features: int, mask: Tensor) -> None:
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation.

    Each input gets a degree, its 1-based position in ``order``; hidden units get degrees in
    ``[1, D-1]``. A unit sees the inputs and units of degree at most its own, and output ``d`` sees
    units of degree strictly below ``d``'s, so ``out[:, k, d]`` depends only on the inputs that
    come before ``d`` in the order.

    Args:
        dim: number of inputs D.
        hidden: width of the hidden layers.
        n_hidden: number of hidden layers (at least 1).
        n_outputs: outputs per input (for example 2: a log-scale and a shift).
        order: the inputs in autoregressive order (a permutation of ``range(dim)``), ``"random"``
            for one drawn with ``seed``, or None for ``0, 1, ..., D-1``.
        seed: the seed of a random order.
        zero_init: start the output layer at zero (a flow built on it starts as the identity).

    The order is the buffer ``order`` (saved with the state dict) and, as Python ints,
    ``order_list``, kept equal to it (also by ``load_state_dict``).
    """

    order: Tensor
    degrees: Tensor
    units: Tensor

    def __init__(
        self,
        dim: int,
        hidden: int = 64,
        n_hidden: int = 2,
        n_outputs: int = 2,
        order: Sequence[int] | str | None = None,
        seed: int = 0,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        if n_hidden < 1:
            raise ValueError(f"n_hidden must be at least 1, got {n_hidden}")
        # The order and the blocks of hidden units by degree as Python ints, which the solves read
        # (``torch.compile`` traces them without a graph break), computed without reading a
        # tensor (so that a model can be built on the meta device).
        if order is None:
            order_list = list(range(dim))
        elif isinstance(order, str):
            if order != "random":
                raise ValueError(f"order must be a sequence, 'random' or None, got {order!r}")
            generator = torch.Generator().manual_seed(seed)
            order_list = torch.randperm(dim, generator=generator, device="cpu").tolist()
        else:
            order_list = [operator.index(d) for d in order]
            if sorted(order_list) != list(range(dim)):
                raise ValueError(f"order must be a permutation of range({dim}), got {list(order)}")
        self.dim, self.n_outputs = dim, n_outputs
        self.order_list = order_list
        order_t = torch.tensor(order_list, dtype=torch.long)
        self.register_buffer("order", order_t)
        self.register_load_state_dict_post_hook(_read_loaded_order)
        degrees = torch.empty(dim, dtype=torch.long)
        degrees[order_t] = torch.arange(1, dim + 1)
        self.register_buffer("degrees", degrees)

        # Hidden degrees cycle through [1, D-1] so that every degree is present in every layer:
        # unit j has degree j % span + 1.
        span = max(dim - 1, 1)
        hidden_degrees = torch.arange(hidden) % span + 1
        # What ``solve`` reads (see ``solve_weights``): the hidden units sorted by degree, and the
        # bounds of each degree's block, D entries (degrees reach D - 1; at D = 1 the hidden units
        # have degree 1, and no use). The units of degree m are m - 1, m - 1 + span, ...
        self.register_buffer("units", torch.argsort(hidden_degrees, stable=True), persistent=False)
        counts = [len(range(m - 1, hidden, span)) for m in range(1, dim)]
        self.bounds = [0, *itertools.accumulate(counts)]
        layers: list[nn.Module] = []
        previous = degrees
        for _ in range(n_hidden):
            mask = hidden_degrees[:, None] >= previous[None, :]
            layers += [MaskedLinear(len(previous), hidden, mask), nn.ReLU()]
            previous = hidden_degrees
        # Output k of input d is row k * D + d; it sees hidden units of degree below d's.
        out_mask = (degrees[:, None] > previous[None, :]).repeat(n_outputs, 1)
        output = MaskedLinear(hidden, n_outputs * dim, out_mask)
        if zero_init:
            nn.init.zeros_(output.weight)
            nn.init.zeros_(output.bias)
        self.net = nn.Sequential(*layers, output)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, D) -> (N, n_outputs, D)``."""
        return self.net(x).view(len(x), self.n_outputs, self.dim)

    def solve(self, value: Callable[[int, Tensor], Tensor], like: Tensor) -> tuple[Tensor, Tensor]:
        """Fill ``x`` one input at a time in the order: ``x[:, d] = value(d, out_d)``, where
        ``out_d`` ``(N, n_outputs)`` are this MADE's outputs for input d, which depend only on the
        inputs filled before it. ``like`` ``(N, ...)`` gives the batch size.

        Returns ``x`` ``(N, D)`` and ``out`` ``(N, n_outputs, D)``, ``self(x)`` up to rounding,
        with the arithmetic of one forward pass (``pygen.ops.reference.made_solve``).
        Differentiable.
        """
        return made_solve(value, *self.solve_weights(like), self.order_list, like)

    def solve_weights(self, like: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor, list[int]]:
        """What ``solve`` (and ``pygen.ops.made_affine_solve``) read for inputs ``like``: each
        layer's masked weight ``(out, in)`` and its bias; ``units``, the hidden units sorted by
        degree (the layers share one set of degrees); and ``bounds``: the units of degree m are
        ``units[bounds[m - 1]:bounds[m]]``. The weights are in the dtype the solve sums in: float32
        for 16-bit inputs, as a matmul's sums are (rounded once per output, not once per step),
        else the inputs' own."""
        dtype = torch.promote_types(like.dtype, torch.float32)
        linears = [m for m in self.net if isinstance(m, MaskedLinear)]
        weights = [(layer.weight * layer.mask).to(dtype) for layer in linears]
        return weights, [layer.bias for layer in linears], self.units, self.bounds

    def extra_repr(self) -> str:
        return f"dim={self.dim}, n_outputs={self.n_outputs}, order={self.order_list}"
