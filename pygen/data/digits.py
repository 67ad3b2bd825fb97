"""scikit-learn's 8x8 digits (1797 images, 17 grey levels 0..16, 10 classes), split by seed."""

from __future__ import annotations

import torch
from torch import Tensor

DIGIT_LEVELS = 17  # pixel values are the integers 0..16


def load_digits(
    split: str = "train", *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Images ``(N, 1, 8, 8)`` int64 in ``[0, 16]`` and labels ``(N,)`` of one split.

    The train/test split is a fixed permutation drawn from ``seed``; ``split="all"`` returns every
    image in the original order.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    bunch = sklearn_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.int64).unsqueeze(1)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    if split == "all":
        return images, labels
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    n_test = round(test_fraction * len(images))
    chosen = order[:n_test] if split == "test" else order[n_test:]
    return images[chosen], labels[chosen]
