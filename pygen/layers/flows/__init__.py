"""Normalizing-flow layers: ``forward(x) -> (z, logdet)`` and ``inverse(z) -> (x, logdet)``."""

from pygen.layers.flows.actnorm import ActNorm
from pygen.layers.flows.autoregressive import IAFLayer, MAFLayer, Permutation
from pygen.layers.flows.base import FlowSequential, Inverse
from pygen.layers.flows.conditioners import MLP, ResidualCNN
from pygen.layers.flows.continuous import ContinuousFlow, TimeMLP
from pygen.layers.flows.coupling import AdditiveCoupling, AffineCoupling, coupling_mask
from pygen.layers.flows.invconv import Invertible1x1Conv
from pygen.layers.flows.logit import LogitTransform
from pygen.layers.flows.reshape import MultiScaleSplit, Squeeze
from pygen.ops import channel_mask, checkerboard_mask

__all__ = [
    "MLP",
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "ContinuousFlow",
    "FlowSequential",
    "IAFLayer",
    "Inverse",
    "Invertible1x1Conv",
    "LogitTransform",
    "MAFLayer",
    "MultiScaleSplit",
    "Permutation",
    "ResidualCNN",
    "Squeeze",
    "TimeMLP",
    "channel_mask",
    "checkerboard_mask",
    "coupling_mask",
]
