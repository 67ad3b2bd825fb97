"""k-nearest-neighbour manifold metrics: improved precision and recall, density and coverage.

Each set of samples estimates its manifold as a union of balls, one around each sample with the
radius to that sample's k-th nearest neighbour in its own set. Precision and density measure how
much of the generated set lies on the real manifold (fidelity), recall and coverage how much of
the real set the generated one reaches (diversity).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from pygen.metrics.neighbours import (
    Samples,
    flat_float64,
    retake_exactly,
    rounding_bound,
    samples_with_ids,
    squared_distance_chunks,
)


class ManifoldMetrics(NamedTuple):
    """Result of :func:`precision_recall_density_coverage`: precision, recall and coverage are
    fractions in [0, 1]; density is >= 0, about 1 for two samples of one distribution."""

    precision: float
    recall: float
    density: float
    coverage: float


@torch.no_grad()
def precision_recall_density_coverage(
    real: Tensor, fake: Tensor, k: int = 5, batch_size: int = 256
) -> ManifoldMetrics:
    """k-NN precision, recall, density and coverage of ``fake`` ``(M, ...)`` against ``real``
    ``(N, ...)``.

    The ball of a sample has as radius the Euclidean distance to its ``k``-th nearest other sample
    of the same set (the sample itself is left out by index, so a duplicate of it is a neighbour at
    distance 0). Improved precision and recall (Kynkäänniemi et al., "Improved Precision and
    Recall Metric for Assessing Generative Models", NeurIPS 2019): precision is the fraction of
    fake samples inside at least one real ball, recall the fraction of real samples inside at
    least one fake ball. Density and coverage (Naeem et al., "Reliable Fidelity and Diversity
    Metrics for Generative Models", ICML 2020): density is the number of (fake sample, real ball
    holding it) pairs over ``k M``, which real outliers with large balls barely move; coverage is
    the fraction of real samples whose own ball holds at least one fake sample. A point on a ball's
    boundary is inside (``<=``, as in Kynkäänniemi et al.'s code; Naeem et al.'s code uses ``<``,
    which differs only on exact ties and puts nothing inside a ball of radius 0).

    Samples of any shape are flattened to feature vectors. On raw pixels the metrics measure
    manifolds in pixel space, where Euclidean distance follows perceived similarity poorly; the
    papers use features of a pretrained classifier (VGG-16, Inception), which this package does
    not download: for numbers comparable to theirs, pass the features of your own extractor.

    Distances are computed in float64, ``batch_size`` samples against a whole set at a time:
    besides float64 copies of both sets, memory stays within a few ``batch_size * max(N, M)``
    float64 blocks (~100 MB each for 50k samples and the default). Distances that decide a
    comparison within the rounding error of the fast matrix-product form are taken again from
    the differences, so copies lie at distance 0 and ties are exact.
    """
    _check(real, fake, k, batch_size)
    reals, fakes = samples_with_ids(flat_float64(real), flat_float64(fake))
    real_radii = _kth_neighbour_squared_distances(reals, k, batch_size)
    fake_radii = _kth_neighbour_squared_distances(fakes, k, batch_size)
    real_balls_holding = torch.empty(len(fakes.x), dtype=torch.long, device=reals.x.device)
    covered = torch.zeros(len(reals.x), dtype=torch.bool, device=reals.x.device)
    recalled = torch.zeros_like(covered)
    for rows, block in squared_distance_chunks(fakes.x, reals.x, batch_size):
        # block[i, j]: squared distance from fake sample i to real sample j
        bound = rounding_bound(fakes, rows, reals)
        near_radius = ((block - real_radii).abs() <= bound) | (
            (block - fake_radii[rows, None]).abs() <= bound
        )
        retake_exactly(block, near_radius, fakes, rows, reals)
        in_real_ball = block <= real_radii
        real_balls_holding[rows] = in_real_ball.sum(1)
        covered |= in_real_ball.any(0)
        recalled |= (block <= fake_radii[rows, None]).any(0)
    return ManifoldMetrics(
        precision=(real_balls_holding > 0).double().mean().item(),
        recall=recalled.double().mean().item(),
        density=real_balls_holding.sum().item() / (k * len(fakes.x)),
        coverage=covered.double().mean().item(),
    )


def _check(real: Tensor, fake: Tensor, k: int, batch_size: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for name, x in (("real", real), ("fake", fake)):
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
        if x.dim() == 0 or len(x) < 2:
            raise ValueError(f"{name} needs at least 2 samples (N, ...), got {tuple(x.shape)}")
        if k >= len(x):
            raise ValueError(
                f"k={k} needs more than k samples in {name}, which has {len(x)}: each sample's "
                "ball reaches its k-th nearest other sample"
            )
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or inf")
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(
            f"real and fake samples differ in shape: {tuple(real.shape[1:])} vs "
            f"{tuple(fake.shape[1:])}"
        )


def _kth_neighbour_squared_distances(samples: Samples, k: int, batch_size: int) -> Tensor:
    """Squared distance from each sample to its ``k``-th nearest other sample, exactly."""
    radii = []
    for rows, block in squared_distance_chunks(samples.x, samples.x, batch_size):
        own = torch.arange(rows.start, rows.start + len(block), device=block.device)
        block[torch.arange(len(block), device=block.device), own] = torch.inf
        # The product form's k-th value is within `bound` of the exact one, so every sample among
        # the k nearest lies at most 2 bounds above it: take those again exactly, drop the rest.
        bound = rounding_bound(samples, rows, samples)
        kth = block.topk(k, dim=1, largest=False).values[:, -1:]
        candidates = block <= kth + 2 * bound
        block.masked_fill_(~candidates, torch.inf)
        retake_exactly(block, candidates, samples, rows, samples)
        radii.append(block.topk(k, dim=1, largest=False).values[:, -1])
    return torch.cat(radii)
