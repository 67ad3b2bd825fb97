"""Kernel maximum mean discrepancy (Gretton et al. 2012), Gaussian or rational-quadratic kernels.

One implementation serves the differentiable MMD loss (``pygen.losses``) and the two-sample
permutation test: the unbiased MMD^2 is computed from the kernel matrix of the pooled samples and
a 0/1 membership vector, so that a permutation only changes the membership vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor


def _flat(x: Tensor) -> Tensor:
    return x.reshape(len(x), -1)


def median(values: Tensor) -> Tensor:
    """The median of a 1-D tensor as ``numpy.median`` takes it: for an even count the mean of the
    two middle values (``torch.median`` gives the lower one)."""
    count = len(values)
    return 0.5 * (values.kthvalue((count + 1) // 2).values + values.kthvalue(count // 2 + 1).values)


def median_bandwidth(pooled: Tensor) -> float:
    """The median heuristic: median pairwise distance of the pooled samples ``(N, ...)``, over
    the ``N (N - 1) / 2`` distinct pairs (``median``)."""
    flat = _flat(pooled.detach()).double()
    pairs = torch.ones(len(flat), len(flat), dtype=torch.bool, device=flat.device).triu(1)
    return max(median(torch.cdist(flat, flat)[pairs]).item(), 1e-12)


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """``|x_i - y_j|^2`` as an ``(N, M)`` matrix from ``|x|^2 + |y|^2 - 2 x.y`` (cdist's own
    method for large inputs). Twice differentiable: gradient penalties differentiate through the
    kernel again, and torch 2.11 has no double backward for cdist."""
    x, y = _flat(x), _flat(y)
    cross = x @ y.T
    return (x.square().sum(1, keepdim=True) + y.square().sum(1) - 2 * cross).clamp_min(0)


def gaussian_kernel(x: Tensor, y: Tensor, bandwidths: Sequence[float]) -> Tensor:
    """``sum_s exp(-|x_i - y_j|^2 / (2 s^2))`` over the bandwidths ``s``: an ``(N, M)`` matrix."""
    sq = squared_distances(x, y)
    return sum((torch.exp(-sq / (2.0 * s * s)) for s in bandwidths), torch.zeros_like(sq))


# Binkowski et al. 2018's rational-quadratic mixture (MMD GAN): heavy tails keep gradients alive
# where far-apart Gaussian kernels vanish.
RQ_ALPHAS = (0.2, 0.5, 1.0, 2.0, 5.0)
KERNELS = ("gaussian", "rational_quadratic")


def rational_quadratic_kernel(x: Tensor, y: Tensor, alphas: Sequence[float] = RQ_ALPHAS) -> Tensor:
    """``sum_a (1 + |x_i - y_j|^2 / (2 a))^(-a)`` over the shapes ``a``: an ``(N, M)`` matrix."""
    sq = squared_distances(x, y)
    return sum(((1.0 + sq / (2.0 * a)).pow(-a) for a in alphas), torch.zeros_like(sq))


def kernel_matrix(
    x: Tensor, y: Tensor, kernel: str, scales: float | Sequence[float] | None = None
) -> Tensor:
    """``(N, M)`` matrix of ``kernel`` ("gaussian": ``scales`` are bandwidths, None picks the
    median heuristic on the pooled samples; "rational_quadratic": ``scales`` are the shapes
    ``a``, None uses ``RQ_ALPHAS``)."""
    if kernel == "gaussian":
        pooled = torch.cat([_flat(x), _flat(y)])
        return gaussian_kernel(x, y, _bandwidths(pooled, scales))
    if kernel == "rational_quadratic":
        return rational_quadratic_kernel(x, y, RQ_ALPHAS if scales is None else _positive(scales))
    raise ValueError(f"unknown kernel {kernel!r}; known: {', '.join(KERNELS)}")


def _mmd2_from_kernel(kernel: Tensor, in_x: Tensor) -> Tensor:
    """Unbiased MMD^2 for each row of ``in_x`` ``(P, N)`` (1 = sample of x, 0 = of y).

    ``kernel`` is the ``(N, N)`` kernel matrix of the pooled samples; its diagonal is excluded (the
    i != j sums of the unbiased estimator).
    """
    k = kernel - torch.diag_embed(torch.diagonal(kernel))
    a = in_x.to(k.dtype)
    b = 1.0 - a
    n, m = a.sum(1), b.sum(1)
    ka, kb = a @ k, b @ k
    xx = (ka * a).sum(1) / (n * (n - 1))
    yy = (kb * b).sum(1) / (m * (m - 1))
    xy = (ka * b).sum(1) / (n * m)
    return xx + yy - 2.0 * xy


def _positive(scales: float | Sequence[float]) -> list[float]:
    values = [float(scales)] if isinstance(scales, int | float) else list(scales)
    if not values or min(values) <= 0:
        raise ValueError(f"kernel scales (bandwidths, shapes) must be positive, got {scales}")
    return values


def _bandwidths(pooled: Tensor, bandwidths: float | Sequence[float] | None) -> list[float]:
    if bandwidths is None:
        return [median_bandwidth(pooled)]
    return _positive(bandwidths)


def _pooled_kernel(x: Tensor, y: Tensor, bandwidths, kernel: str) -> tuple[Tensor, Tensor]:
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"need at least 2 samples on each side, got {len(x)} and {len(y)}")
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(f"x and y samples differ in shape: {x.shape[1:]} vs {y.shape[1:]}")
    pooled = torch.cat([_flat(x), _flat(y)])
    if kernel == "gaussian":  # the median heuristic on the pooled samples, not on two copies
        bandwidths = _bandwidths(pooled, bandwidths)
    matrix = kernel_matrix(pooled, pooled, kernel, bandwidths)
    in_x = torch.zeros(len(pooled), device=pooled.device)
    in_x[: len(x)] = 1.0
    return matrix, in_x


def mmd2(
    x: Tensor,
    y: Tensor,
    bandwidths: float | Sequence[float] | None = None,
    kernel: str = "gaussian",
) -> Tensor:
    """Unbiased estimate of MMD^2 between samples ``x`` ``(N, ...)`` and ``y`` ``(M, ...)``.

    The default kernel is a sum of Gaussians with the given bandwidths (standard deviations);
    None picks one bandwidth by the median heuristic on the pooled samples (not differentiated
    through). ``kernel="rational_quadratic"`` sums rational-quadratic kernels whose shapes are
    ``bandwidths`` (None: ``RQ_ALPHAS``). Differentiable in ``x`` and ``y``. The unbiased
    estimate can be slightly negative.
    """
    matrix, in_x = _pooled_kernel(x, y, bandwidths, kernel)
    return _mmd2_from_kernel(matrix, in_x[None])[0]


class MMDTest(NamedTuple):
    """Result of :func:`mmd_permutation_test`."""

    mmd2: float
    p_value: float


@torch.no_grad()
def mmd_permutation_test(
    x: Tensor,
    y: Tensor,
    n_permutations: int = 500,
    bandwidths: float | Sequence[float] | None = None,
    generator: torch.Generator | None = None,
    kernel: str = "gaussian",
) -> MMDTest:
    """Two-sample test of ``x ~ P``, ``y ~ Q`` for ``P = Q`` with the unbiased MMD^2 statistic.

    The null distribution comes from random relabellings of the pooled samples; the p-value is
    ``(1 + #{permuted >= observed}) / (1 + n_permutations)``, which is valid (never 0). A
    relabelling whose statistic equals the observed one in exact arithmetic (a swap within a
    sample, or of the two samples when they are as large) counts as ``>=`` even when rounding
    puts it a few ulps below.

    Args:
        x, y: samples ``(N, ...)`` and ``(M, ...)`` of one per-sample shape, N and M >= 2
            (flattened per sample; computed in float64).
        n_permutations: random relabellings behind the null distribution (>= 1); the smallest
            p-value is ``1 / (1 + n_permutations)``.
        bandwidths: as in ``mmd2``: Gaussian bandwidths (standard deviations), None for one by
            the median heuristic on the pooled samples; the shapes with
            ``kernel="rational_quadratic"`` (None: ``RQ_ALPHAS``). One kernel matrix serves the
            observed statistic and every relabelling.
        generator: a CPU generator for the relabellings (they are drawn on the CPU whatever the
            samples' device); None: torch's global CPU generator.
        kernel: ``"gaussian"`` or ``"rational_quadratic"`` (``KERNELS``).

    Returns:
        ``MMDTest(mmd2, p_value)``: the observed unbiased MMD^2 and the permutation p-value.
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    matrix, in_x = _pooled_kernel(x.double(), y.double(), bandwidths, kernel)
    observed = _mmd2_from_kernel(matrix, in_x[None])[0]
    keys = torch.rand(n_permutations, len(in_x), generator=generator).to(matrix.device)
    permuted = in_x[keys.argsort(dim=1)]  # each row: the membership vector shuffled
    null = _mmd2_from_kernel(matrix, permuted)
    # The statistics are averages of kernel values: their rounding errors stay far below 1e-10 of
    # the largest one. Distinct statistics closer than that count as ties (conservative).
    tolerance = 1e-10 * matrix.abs().max()
    p_value = (1 + (null >= observed - tolerance).sum().item()) / (1 + n_permutations)
    return MMDTest(observed.item(), p_value)
