"""Gradients switched off for a while."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """The parameters of ``modules`` without gradients inside (a discriminator during its
    generator's step, whose gradients would be wasted work); after, each parameter's own
    ``requires_grad`` again, so that a layer its user froze stays frozen."""
    params = [p for module in modules for p in module.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
