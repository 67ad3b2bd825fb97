"""scikit-learn's 8x8 digits (1797 images, 17 grey levels 0..16, 10 classes), split by seed."""

from __future__ import annotations

import torch
from torch import Tensor

from pygen.data.split import split_indices

DIGIT_LEVELS = 17  # pixel values are the integers 0..16


def load_digits(
    split: str = "train", *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Images ``(N, 1, 8, 8)`` int64 in ``[0, 16]`` and labels ``(N,)`` of one split.

    The train/test split is ``pygen.data.split.split_indices`` (a permutation drawn from ``seed``);
    ``split="all"`` returns every image in the original order.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    chosen = split_indices(1797, split, test_fraction=test_fraction, seed=seed)
    bunch = sklearn_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.int64).unsqueeze(1)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    return images[chosen], labels[chosen]
