"""Drop-in nn.Modules built on pygen.ops."""

from pygen.layers.flows import (
    MLP,
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    FlowSequential,
    Invertible1x1Conv,
    Inverse,
    LogitTransform,
    MultiScaleSplit,
    ResidualCNN,
    Squeeze,
    channel_mask,
    checkerboard_mask,
    coupling_mask,
)
from pygen.layers.reparameterize import GaussianReparameterize

__all__ = [
    "MLP",
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "FlowSequential",
    "GaussianReparameterize",
    "Invertible1x1Conv",
    "Inverse",
    "LogitTransform",
    "MultiScaleSplit",
    "ResidualCNN",
    "Squeeze",
    "channel_mask",
    "checkerboard_mask",
    "coupling_mask",
]
