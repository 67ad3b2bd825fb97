"""Drop-in nn.Modules built on pygen.ops."""

from pygen.layers.flows import (
    MLP,
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    FlowSequential,
    Inverse,
    Invertible1x1Conv,
    LogitTransform,
    MultiScaleSplit,
    ResidualCNN,
    Squeeze,
    channel_mask,
    checkerboard_mask,
    coupling_mask,
)
from pygen.layers.masked_conv import GatedMaskedConv2d, MaskedConv2d
from pygen.layers.pixelrnn import DiagonalBiLSTM, DiagonalLSTM, RowLSTM, lstm_cell, skew, unskew
from pygen.layers.reparameterize import GaussianReparameterize

__all__ = [
    "MLP",
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "DiagonalBiLSTM",
    "DiagonalLSTM",
    "FlowSequential",
    "GatedMaskedConv2d",
    "GaussianReparameterize",
    "Inverse",
    "Invertible1x1Conv",
    "LogitTransform",
    "MaskedConv2d",
    "MultiScaleSplit",
    "ResidualCNN",
    "RowLSTM",
    "Squeeze",
    "channel_mask",
    "checkerboard_mask",
    "coupling_mask",
    "lstm_cell",
    "skew",
    "unskew",
]
