"""Every GAN objective by name: the loss zoo of ``pygen.losses.gan`` and the IPM GANs of
``pygen.losses.ipm``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pygen.losses.gan import (
    F_DIVERGENCES,
    FGANLoss,
    GANLoss,
    HingeLoss,
    LeastSquaresLoss,
    MinimaxLoss,
    MMDLoss,
    NonSaturatingLoss,
    WassersteinGPLoss,
    WassersteinLoss,
)
from pygen.losses.ipm import MMDGANLoss, SinkhornLoss

_REGISTRY: dict[str, Callable[..., GANLoss]] = {
    "minimax": MinimaxLoss,
    "non_saturating": NonSaturatingLoss,
    "lsgan": LeastSquaresLoss,
    "hinge": HingeLoss,
    "wgan": WassersteinLoss,
    "wgan_gp": WassersteinGPLoss,
    **{
        f"fgan_{name}": (lambda name=name, **kw: FGANLoss(name, **kw))  # bind name now
        for name in F_DIVERGENCES
    },
    "mmd": MMDLoss,
    "mmd_gan": MMDGANLoss,
    "sinkhorn": SinkhornLoss,
}
GAN_LOSSES: tuple[str, ...] = tuple(_REGISTRY)


def get_gan_loss(name: str, **kwargs: Any) -> GANLoss:
    """The loss registered as ``name`` (see ``GAN_LOSSES``), built with ``kwargs``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown GAN loss {name!r}; known: {', '.join(GAN_LOSSES)}")
    return _REGISTRY[name](**kwargs)
