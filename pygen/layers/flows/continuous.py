"""A continuous-time flow layer (Neural ODE / FFJORD, Chen et al. 2018, Grathwohl et al. 2019).

``dz/dt = g(z, t)`` from t = 0 (data) to t = 1 (latent) with the instantaneous change of
variables ``d log p(z(t)) / dt = -tr(dg/dz)``, so ``log|det dz(1)/dz(0)| = integral of tr(dg/dz)``.
The solve is torchdiffeq's (adaptive solvers, tolerances, adjoint backprop as an option). With
``euler_steps=K`` it is the fixed-step Euler solve ``z_{k+1} = z_k + g(z_k, t_k) / K``: a K-layer
residual network. Its reported log-determinant is the Euler sum of the traces,
``sum_k tr(J_k) / K``, a first-order estimate of the network's own ``sum_k log det(I + J_k / K)``
(off by O(1/K)), so ``log_prob`` is a normalized density only as K grows; likewise the inverse,
the Euler solve backwards in time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from pygen.ops import logdet_dtype


class TimeMLP(nn.Module):
    """The vector field ``g(z, t)``: an MLP on ``[z, t]`` with smooth (tanh) activations, as the
    ODE solvers and the trace's second derivatives want."""

    def __init__(self, dim: int, hidden: int = 64, n_hidden: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = dim + 1
        for _ in range(n_hidden):
            layers += [nn.Linear(width, hidden), nn.Tanh()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, dim))

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        return self.net(torch.cat([z, t.expand(len(z), 1).to(z.dtype)], dim=1))


def exact_trace(dz: Tensor, z: Tensor, create_graph: bool) -> Tensor:
    """``tr(d dz / dz)`` per sample from D vector-Jacobian products (one per dimension)."""
    trace = torch.zeros_like(dz[:, 0])
    for i in range(z.shape[1]):
        row = torch.autograd.grad(dz[:, i].sum(), z, retain_graph=True, create_graph=create_graph)
        trace = trace + row[0][:, i]
    return trace


def hutchinson_trace(dz: Tensor, z: Tensor, probe: Tensor, create_graph: bool) -> Tensor:
    """The unbiased estimate ``e^T (d dz / dz) e`` per sample, for a probe e with E[e e^T] = I."""
    vjp = torch.autograd.grad(dz, z, probe, create_graph=create_graph)[0]
    return (vjp * probe).sum(1)


class _Dynamics(nn.Module):
    """The augmented ODE ``(z, logdet)`` -> ``(g(z, t), tr(dg/dz))`` that torchdiffeq solves (a
    module, so that the adjoint finds its parameters)."""

    def __init__(self, field: nn.Module) -> None:
        super().__init__()
        self.field = field
        self.probe: Tensor | None = None  # Hutchinson probe, fixed for one solve; None: exact
        self.with_trace = True  # False: the trace is 0 (solves whose log-det nobody reads)

    def forward(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        z = state[0]
        if not self.with_trace:
            return self.field(z, t), z.new_zeros(len(z))
        # The trace must be differentiable when the loss is (direct backprop or the adjoint).
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_()
            dz = self.field(z, t)
            if self.probe is None:
                trace = exact_trace(dz, z, create_graph)
            else:
                trace = hutchinson_trace(dz, z, self.probe, create_graph)
        if not create_graph:
            dz = dz.detach()
        return dz, trace


class ContinuousFlow(nn.Module):
    """A continuous-time flow layer on ``(N, D)`` vectors with a ``TimeMLP`` field.

    Args:
        dim: D.
        hidden, n_hidden: the field's width and depth.
        trace: ``"exact"`` (D backward passes per evaluation), ``"hutchinson"`` (one, with a probe
            drawn per solve), or ``"auto"``: exact up to ``exact_max_dim`` dimensions.
        probe: the Hutchinson probe distribution, ``"rademacher"`` or ``"gaussian"``.
        exact_max_dim: the largest D that ``"auto"`` computes exactly.
        method, rtol, atol: the torchdiffeq solver and its tolerances.
        adjoint: backpropagate with the adjoint method (memory constant in the number of steps).
        euler_steps: solve with K fixed Euler steps instead (the residual-flow view, its
            log-determinant and inverse exact only as K grows; see above); None: the adaptive
            ``method``.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 64,
        n_hidden: int = 2,
        *,
        trace: str = "auto",
        probe: str = "rademacher",
        exact_max_dim: int = 8,
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        adjoint: bool = False,
        euler_steps: int | None = None,
    ) -> None:
        super().__init__()
        if trace not in ("auto", "exact", "hutchinson"):
            raise ValueError(f"trace must be 'auto', 'exact' or 'hutchinson', got {trace!r}")
        if probe not in ("rademacher", "gaussian"):
            raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {probe!r}")
        if euler_steps is not None and adjoint:
            raise ValueError(
                "adjoint is for the adaptive solve; euler_steps backpropagates its steps"
            )
        self.dim = dim
        self.dynamics = _Dynamics(TimeMLP(dim, hidden, n_hidden))
        self.exact = trace == "exact" or (trace == "auto" and dim <= exact_max_dim)
        self.probe = probe
        self.method, self.rtol, self.atol = method, rtol, atol
        self.adjoint = adjoint
        self.euler_steps = euler_steps

    @contextlib.contextmanager
    def without_logdet(self) -> Iterator[None]:
        """Solves inside it skip the trace and return a log-determinant of 0: for sampling, which
        discards it. Cheaper, and no Hutchinson probe is drawn from torch's global stream (its
        draw steered the adaptive steps through the log-det, so that samples from one generator
        seed differed between calls)."""
        previous = self.dynamics.with_trace
        self.dynamics.with_trace = False
        try:
            yield
        finally:
            self.dynamics.with_trace = previous

    def _draw_probe(self, z: Tensor) -> Tensor | None:
        if self.exact or not self.dynamics.with_trace:
            return None
        if self.probe == "gaussian":
            return torch.randn_like(z)
        return torch.randint(0, 2, z.shape, device=z.device).to(z.dtype) * 2 - 1

    def _solve(self, z: Tensor, t0: float, t1: float) -> tuple[Tensor, Tensor]:
        """``(z(t1), integral from t0 to t1 of tr(dg/dz))`` from ``z(t0) = z``."""
        if len(z) == 0:  # nothing to solve (torchdiffeq's step-size search fails on no values)
            return z.clone(), z.new_zeros(0, dtype=logdet_dtype(z.dtype))
        if torch.is_inference_mode_enabled():
            # The trace takes autograd, which inference mode turns off: solve outside it, without
            # a graph (the results are ordinary tensors).
            with torch.inference_mode(False), torch.no_grad():
                return self._solve(z.clone(), t0, t1)
        self.dynamics.probe = self._draw_probe(z)
        times = torch.tensor([t0, t1], dtype=z.dtype, device=z.device)
        state = (z, z.new_zeros(len(z)))
        if self.euler_steps is not None:
            options = {"step_size": abs(t1 - t0) / self.euler_steps}
            solution = odeint(self.dynamics, state, times, method="euler", options=options)
        else:
            solve = odeint_adjoint if self.adjoint else odeint
            solution = solve(
                self.dynamics, state, times, rtol=self.rtol, atol=self.atol, method=self.method
            )
        # The solver integrates the trace in z's dtype (one state); returned as the layers' logdet.
        return solution[0][-1], solution[1][-1].to(logdet_dtype(z.dtype))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._solve(x, 0.0, 1.0)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        # Integrating backwards in time accumulates -integral of the trace: log|det dx/dz|.
        return self._solve(z, 1.0, 0.0)

    def extra_repr(self) -> str:
        trace = "exact" if self.exact else f"hutchinson({self.probe})"
        solver = self.method if self.euler_steps is None else f"euler x{self.euler_steps}"
        return f"dim={self.dim}, trace={trace}, solver={solver}, adjoint={self.adjoint}"
