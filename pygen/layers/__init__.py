"""Drop-in nn.Modules built on pygen.ops."""

from pygen.layers.flows import (
    MLP,
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    ContinuousFlow,
    FlowSequential,
    IAFLayer,
    Inverse,
    Invertible1x1Conv,
    LogitTransform,
    MAFLayer,
    MultiScaleSplit,
    Permutation,
    ResidualCNN,
    Squeeze,
    TimeMLP,
    channel_mask,
    checkerboard_mask,
    coupling_mask,
)
from pygen.layers.made import MADE, MaskedLinear
from pygen.layers.masked_conv import GatedMaskedConv2d, MaskedConv2d
from pygen.layers.reparameterize import GaussianReparameterize

__all__ = [
    "MADE",
    "MLP",
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "ContinuousFlow",
    "FlowSequential",
    "GatedMaskedConv2d",
    "GaussianReparameterize",
    "IAFLayer",
    "Inverse",
    "Invertible1x1Conv",
    "LogitTransform",
    "MAFLayer",
    "MaskedConv2d",
    "MaskedLinear",
    "MultiScaleSplit",
    "Permutation",
    "ResidualCNN",
    "Squeeze",
    "TimeMLP",
    "channel_mask",
    "checkerboard_mask",
    "coupling_mask",
]
