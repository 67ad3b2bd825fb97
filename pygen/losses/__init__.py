"""Training objectives: the GAN loss zoo, its penalties, and the IPM GANs (MMD, Sinkhorn)."""

from pygen.losses.gan import (
    F_DIVERGENCES,
    FDivergence,
    FGANLoss,
    GANLoss,
    HingeLoss,
    LeastSquaresLoss,
    MinimaxLoss,
    MMDLoss,
    NonSaturatingLoss,
    WassersteinGPLoss,
    WassersteinLoss,
    gradient_penalty,
    r1_penalty,
)
from pygen.losses.ipm import LI_BANDWIDTHS, MMDGANLoss, SinkhornLoss, sinkhorn_divergence
from pygen.losses.registry import GAN_LOSSES, get_gan_loss

__all__ = [
    "F_DIVERGENCES",
    "GAN_LOSSES",
    "LI_BANDWIDTHS",
    "FDivergence",
    "FGANLoss",
    "GANLoss",
    "HingeLoss",
    "LeastSquaresLoss",
    "MMDGANLoss",
    "MMDLoss",
    "MinimaxLoss",
    "NonSaturatingLoss",
    "SinkhornLoss",
    "WassersteinGPLoss",
    "WassersteinLoss",
    "get_gan_loss",
    "gradient_penalty",
    "r1_penalty",
    "sinkhorn_divergence",
]
