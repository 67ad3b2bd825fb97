"""Continuous normalizing flow (FFJORD-style) on vectors: one ``ContinuousFlow`` layer and a
standard normal prior, so that ``log p(x) = log N(z(1)) + integral of tr(dg/dz) dt``."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn

from pygen.layers import ContinuousFlow, FlowSequential, LogitTransform
from pygen.models.flows import FlowModel


class CNF(FlowModel):
    """``dz/dt = g(z, t)`` from data (t = 0) to latent (t = 1), solved with torchdiffeq.

    Args:
        dim: D.
        hidden, n_hidden: the vector field's MLP width and depth.
        levels: pixel levels of flattened image data (logit pre-processing first, enables
            ``bits_per_dim``), None for continuous data.
        **solver: ``trace`` (``"auto"``, ``"exact"``, ``"hutchinson"``), ``probe``
            (``"rademacher"``, ``"gaussian"``), ``exact_max_dim``, ``method``, ``rtol``,
            ``atol``, ``adjoint``, ``euler_steps``: see ``pygen.layers.ContinuousFlow``.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 64,
        n_hidden: int = 2,
        levels: int | None = None,
        **solver: Any,
    ) -> None:
        layers: list[nn.Module] = [LogitTransform()] if levels is not None else []
        layers.append(ContinuousFlow(dim, hidden, n_hidden, **solver))
        super().__init__(FlowSequential(*layers), (dim,), levels)

    @torch.no_grad()
    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """As ``FlowModel.sample``, solved without the trace (sampling discards the
        log-determinant): the same generator seed gives the same samples, and torch's global
        random stream is left alone (the Hutchinson probe was drawn from it)."""
        with self.ode.without_logdet():
            return super().sample(n, temperature, generator)

    @property
    def ode(self) -> ContinuousFlow:
        """The flow layer (its solver settings can be changed in place)."""
        return cast(ContinuousFlow, self.flow[-1])  # the last layer __init__ builds
