"""Reference likelihoods a generative model of discrete images must beat."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def independent_pixel_bits(train: Tensor, test: Tensor, n_levels: int) -> float:
    """Held-out bits/dim of the best model that ignores neighbours: one level histogram per
    position (add-one smoothed) fitted on ``train``, scored on ``test`` (integer levels, any
    shape ``(N, ...)``)."""
    for name, x in (("train", train), ("test", test)):
        if x.is_floating_point() or x.is_complex():  # pixels in [0, 1] would truncate to 0
            raise TypeError(f"{name} must hold integer levels, got {x.dtype}")
    flat_train, flat_test = train.flatten(1).long(), test.flatten(1).long()
    counts = torch.ones(n_levels, flat_train.shape[1], dtype=torch.float64)
    counts.scatter_add_(0, flat_train, torch.ones_like(flat_train, dtype=torch.float64))
    log_p = (counts / counts.sum(0, keepdim=True)).log()
    return (-log_p.gather(0, flat_test).mean() / math.log(2.0)).item()
