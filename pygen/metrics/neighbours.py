"""Nearest training neighbours: a memorization check for generated samples."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Neighbours(NamedTuple):
    """Distance ``(N,)`` from each query to its nearest reference and that reference's index."""

    distances: Tensor
    indices: Tensor


@torch.no_grad()
def nearest_neighbours(queries: Tensor, reference: Tensor, chunk: int = 1024) -> Neighbours:
    """Euclidean nearest neighbour in ``reference`` ``(M, ...)`` of each query ``(N, ...)``,
    computed ``chunk`` queries at a time to bound memory, in float64 (distances float64)."""
    if queries.shape[1:] != reference.shape[1:]:
        raise ValueError(
            f"queries and reference differ in shape: {queries.shape[1:]} vs {reference.shape[1:]}"
        )
    ref = reference.reshape(len(reference), -1).double()
    distances, indices = [], []
    for q in queries.split(chunk):
        q = q.reshape(len(q), -1).double().to(ref.device)
        # cdist's matrix-product form |q|^2 + |r|^2 - 2 q.r loses digits to cancellation: in
        # float32, at pixel scale (0..255), more than the gap between an exact copy and a
        # near-duplicate, so it chose the wrong one. float64 keeps the error ~1e-16 |q|^2; the
        # distance to the chosen one is then taken directly (an exact copy lands at 0).
        index = torch.cdist(q, ref).argmin(dim=1)
        distances.append((q - ref[index]).norm(dim=1))
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
