"""Nearest training neighbours: a memorization check for generated samples."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor

from pygen.metrics.mmd import median, squared_distances


class Neighbours(NamedTuple):
    """Distance ``(N,)`` from each query to its nearest reference and that reference's index."""

    distances: Tensor
    indices: Tensor


def flat_float64(x: Tensor) -> Tensor:
    """Samples ``(N, ...)`` as float64 feature vectors ``(N, D)``."""
    return x.reshape(len(x), -1).double()


def squared_distance_chunks(
    queries: Tensor, reference: Tensor, chunk: int
) -> Iterator[tuple[slice, Tensor]]:
    """``(rows, block)`` for each ``chunk`` of the feature vectors ``queries`` ``(N, D)``:
    ``block[i, j]`` is the squared distance from ``queries[rows][i]`` to ``reference[j]``
    ``(M, D)``, a ``(chunk, M)`` block at a time to bound memory.

    The blocks come from the matrix product ``|q|^2 + |r|^2 - 2 q.r``, which loses digits to
    cancellation: in float32, at pixel scale (0..255), more than the gap between an exact copy
    and a near-duplicate. Pass float64 (error ~1e-16 ``|q|^2``) and take the distances that
    decide something again with :func:`exact_squared_distances`.
    """
    for start in range(0, len(queries), chunk):
        rows = slice(start, start + chunk)
        yield rows, squared_distances(queries[rows], reference)


def exact_squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """``|a_i - b_i|^2`` for each row pair of ``a``, ``b`` ``(P, D)``, from the differences: an
    exact copy lands at 0 and equal pairs give equal values (the matrix product gives neither)."""
    return (a - b).square().sum(1)


class Samples(NamedTuple):
    """Flattened float64 samples ``x`` ``(N, D)``, their squared norms and their ``ids``: equal
    for identical samples, in either set."""

    x: Tensor
    norms: Tensor
    ids: Tensor


def samples_with_ids(first: Tensor, second: Tensor) -> tuple[Samples, Samples]:
    """Two sets of feature vectors as ``Samples`` (``second`` moved to ``first``'s device), with
    ids shared across both sets."""
    second = second.to(first.device)
    # A set of identical samples (mode collapse) ties everywhere: the ids put its pairs at exactly
    # 0 without taking each one again.
    ids = torch.unique(torch.cat([first, second]), dim=0, return_inverse=True)[1]
    return (
        Samples(first, first.square().sum(1), ids[: len(first)]),
        Samples(second, second.square().sum(1), ids[len(first) :]),
    )


def rounding_bound(queries: Samples, rows: slice, reference: Samples) -> Tensor:
    """``(rows, 1)``: how far a float64 product-form squared distance from ``queries[rows]`` to
    any reference sample can be from :func:`exact_squared_distances`. Both forms sum ``D``
    products, each sum within ``D`` units of roundoff of ``|q|^2 + |r|^2`` (Higham, Accuracy
    and Stability of Numerical Algorithms, 2002, section 3.1); the constant covers both."""
    scale = queries.norms[rows, None] + reference.norms.max()
    return (2 * queries.x.shape[1] + 4) * torch.finfo(torch.float64).eps * scale


def retake_exactly(
    block: Tensor, where: Tensor, queries: Samples, rows: slice, reference: Samples
) -> None:
    """Overwrite ``block[i, j]`` where ``where`` holds with the exact squared distance from
    ``queries[rows][i]`` to ``reference[j]``: 0 for identical samples, from the differences for
    the others, ``len(reference)`` pairs at a time."""
    copies = queries.ids[rows, None] == reference.ids
    block.masked_fill_(where & copies, 0.0)
    pair_rows, pair_cols = (where & ~copies).nonzero(as_tuple=True)
    chunk = len(reference.x)
    for r, c in zip(pair_rows.split(chunk), pair_cols.split(chunk), strict=True):
        block[r, c] = exact_squared_distances(queries.x[rows][r], reference.x[c])


@torch.no_grad()
def nearest_neighbours(queries: Tensor, reference: Tensor, chunk: int = 1024) -> Neighbours:
    """Euclidean nearest neighbour in ``reference`` ``(M, ...)`` of each query ``(N, ...)``,
    computed ``chunk`` queries at a time to bound memory, in float64 (distances float64)."""
    if queries.shape[1:] != reference.shape[1:]:
        raise ValueError(
            f"queries and reference differ in shape: {queries.shape[1:]} vs {reference.shape[1:]}"
        )
    ref, query = samples_with_ids(flat_float64(reference), flat_float64(queries))
    distances, indices = [], []
    for rows, block in squared_distance_chunks(query.x, ref.x, chunk):
        # Every reference within rounding of the product form's nearest is taken again exactly:
        # an exact copy then wins over a near-duplicate.
        bound = rounding_bound(query, rows, ref)
        candidates = block <= block.min(dim=1, keepdim=True).values + 2 * bound
        block.masked_fill_(~candidates, torch.inf)
        retake_exactly(block, candidates, query, rows, ref)
        nearest, index = block.min(dim=1)
        distances.append(nearest.sqrt())
        indices.append(index)
    return Neighbours(torch.cat(distances), torch.cat(indices))


def memorization_ratio(samples: Tensor, train: Tensor, heldout: Tensor) -> float:
    """Median nearest-training distance of generated samples over that of held-out data (for an
    even count the mean of the two middle distances).

    Held-out data shows how close fresh samples of the true distribution come to the training set;
    a ratio well below 1 means the generator copies training images.
    """
    generated = median(nearest_neighbours(samples, train).distances)
    fresh = median(nearest_neighbours(heldout, train).distances)
    return (generated / fresh.clamp_min(1e-12)).item()


def neighbour_pairs(samples: Tensor, train: Tensor) -> Tensor:
    """Each sample followed by its nearest training image, ``(2N, ...)``: the picture of the
    memorization check (pass to ``pygen.utils.save_image_grid`` with an even ``nrow``)."""
    idx = nearest_neighbours(samples, train).indices
    nearest = train[idx.to(train.device)].to(samples.device, samples.dtype)
    return torch.stack([samples, nearest], dim=1).flatten(0, 1)
