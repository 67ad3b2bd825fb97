"""Training objectives: the GAN loss zoo and its penalties."""

from pygen.losses.gan import (
    F_DIVERGENCES,
    GAN_LOSSES,
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
    get_gan_loss,
    gradient_penalty,
    r1_penalty,
)

__all__ = [
    "F_DIVERGENCES",
    "GAN_LOSSES",
    "FDivergence",
    "FGANLoss",
    "GANLoss",
    "HingeLoss",
    "LeastSquaresLoss",
    "MMDLoss",
    "MinimaxLoss",
    "NonSaturatingLoss",
    "WassersteinGPLoss",
    "WassersteinLoss",
    "get_gan_loss",
    "gradient_penalty",
    "r1_penalty",
]
