"""How the pygen command trains, evaluates and samples each model family: one Recipe per name.

A recipe turns the data and the user's options into the model's full constructor config (stored
in every checkpoint, so a checkpoint rebuilds its model with no other input), and knows the
model's training loss, its evaluation metrics and how it samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pygen.data import ImageData


@dataclass(frozen=True)
class SampleOptions:
    """What ``pygen sample`` passes to a recipe."""

    method: str | None = None
    temperature: float = 1.0
    label: int | None = None
    generator: torch.Generator | None = None


@dataclass(frozen=True)
class Recipe:
    """One model family as the pygen command sees it.

    ``config(data, options)`` returns the model's constructor arguments; ``loss(model, x, y)`` is
    the mean training loss of a batch of levels; ``evaluate(model, data)`` returns metrics on a
    dataset; ``sample(model, n, options)`` returns images in [0, 1] ``(n, C, H, W)``.
    """

    model: type[nn.Module]
    config: Callable[[ImageData, dict[str, Any]], dict[str, Any]]
    loss: Callable[[nn.Module, Tensor, Tensor | None], Tensor]
    evaluate: Callable[[nn.Module, ImageData], dict[str, float]]
    sample: Callable[[nn.Module, int, SampleOptions], Tensor]
    description: str = ""


RECIPES: dict[str, Recipe] = {}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(RECIPES)) or 'none'}")
    return RECIPES[name]


def build_model(name: str, config: dict[str, Any]) -> nn.Module:
    """The model of family ``name`` from its stored constructor config."""
    return get_recipe(name).model(**config)


def pixelcnn_loss(model: nn.Module, x: Tensor, y: Tensor | None) -> Tensor:
    """Mean bits/dim of a batch of levels (``model`` may be wrapped in DistributedDataParallel)."""
    return F.cross_entropy(model(x, y), x) / math.log(2.0)
