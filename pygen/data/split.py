"""The one train/test split rule of pygen's datasets: a permutation drawn from a seed."""

from __future__ import annotations

import torch
from torch import Tensor


def split_indices(n: int, split: str, *, test_fraction: float = 0.2, seed: int = 0) -> Tensor:
    """Indices of ``split`` ("train", "test" or "all") among ``n`` examples.

    The first ``round(test_fraction * n)`` entries of a permutation drawn from ``seed`` are the
    test set, the rest the training set, each of at least one example (a train or test split
    needs ``n >= 2``); "all" is every index in order.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if split == "all":
        return torch.arange(n)
    if n < 2:
        raise ValueError(f"a train/test split needs at least 2 examples (one of each), got {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    # An empty side would train on nothing or evaluate to NaN.
    n_test = min(max(round(test_fraction * n), 1), n - 1)
    return order[:n_test] if split == "test" else order[n_test:]
