"""Thin model classes built on pygen.layers."""

from pygen.models.autoregressive import AutoregressiveImageModel
from pygen.models.autoregressive_flows import IAF, MAF
from pygen.models.cnf import CNF
from pygen.models.flows import NICE, FlowModel, Glow, GlowStep, RealNVP
from pygen.models.gan import (
    DCGAN,
    GAN,
    MLPGAN,
    DCGANDiscriminator,
    DCGANGenerator,
    MLPDiscriminator,
    MLPGenerator,
    arithmetic_grid,
    interpolate,
    interpolation_grid,
    latent_arithmetic,
    lerp,
    slerp,
    spectral_norm_,
)
from pygen.models.likelihoods import (
    BernoulliLikelihood,
    CategoricalLikelihood,
    GaussianLikelihood,
    Likelihood,
)
from pygen.models.pixelcnn import PixelCNN
from pygen.models.pixelrnn import PixelRNN
from pygen.models.vae import VAE, ELBOTerms

__all__ = [
    "CNF",
    "DCGAN",
    "GAN",
    "IAF",
    "MAF",
    "MLPGAN",
    "NICE",
    "VAE",
    "AutoregressiveImageModel",
    "BernoulliLikelihood",
    "CategoricalLikelihood",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "ELBOTerms",
    "FlowModel",
    "GaussianLikelihood",
    "Glow",
    "GlowStep",
    "Likelihood",
    "MLPDiscriminator",
    "MLPGenerator",
    "PixelCNN",
    "PixelRNN",
    "RealNVP",
    "arithmetic_grid",
    "interpolate",
    "interpolation_grid",
    "latent_arithmetic",
    "lerp",
    "slerp",
    "spectral_norm_",
]
