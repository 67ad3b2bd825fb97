"""Nearest training neighbours: a memorization check for generated samples."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor

from pygen.metrics.mmd import squared_distances


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


@torch.no_grad()
def nearest_neighbours(queries: Tensor, reference: Tensor, chunk: int = 1024) -> Neighbours:
    """Euclidean nearest neighbour in ``reference`` ``(M, ...)`` of each query ``(N, ...)``,
    computed ``chunk`` queries at a time to bound memory, in float64 (distances float64)."""
    if queries.shape[1:] != reference.shape[1:]:
        raise ValueError(
            f"queries and reference differ in shape: {queries.shape[1:]} vs {reference.shape[1:]}"
        )
    ref = flat_float64(reference)
    queries = flat_float64(queries).to(ref.device)
    distances, indices = [], []
    for rows, block in squared_distance_chunks(queries, ref, chunk):
        index = block.argmin(dim=1)
        distances.append(exact_squared_distances(queries[rows], ref[index]).sqrt())
        indices.append(index)
    return Neighbours(torch.cat(distances), torch.cat(indices))


def memorization_ratio(samples: Tensor, train: Tensor, heldout: Tensor) -> float:
    """Median nearest-training distance of generated samples over that of held-out data.

    Held-out data shows how close fresh samples of the true distribution come to the training set;
    a ratio well below 1 means the generator copies training images.
    """
    generated = nearest_neighbours(samples, train).distances.median()
    fresh = nearest_neighbours(heldout, train).distances.median()
    return (generated / fresh.clamp_min(1e-12)).item()


def neighbour_pairs(samples: Tensor, train: Tensor) -> Tensor:
    """Each sample followed by its nearest training image, ``(2N, ...)``: the picture of the
    memorization check (pass to ``pygen.utils.save_image_grid`` with an even ``nrow``)."""
    idx = nearest_neighbours(samples, train).indices
    nearest = train[idx.to(train.device)].to(samples.device, samples.dtype)
    return torch.stack([samples, nearest], dim=1).flatten(0, 1)
