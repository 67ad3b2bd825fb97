"""Thin model classes built on pygen.layers."""

from pygen.models.bigan import BiGAN, JointDiscriminator
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
from pygen.models.vae import VAE, ELBOTerms

__all__ = [
    "DCGAN",
    "GAN",
    "MLPGAN",
    "NICE",
    "VAE",
    "BernoulliLikelihood",
    "BiGAN",
    "CategoricalLikelihood",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "ELBOTerms",
    "FlowModel",
    "GaussianLikelihood",
    "Glow",
    "GlowStep",
    "JointDiscriminator",
    "Likelihood",
    "MLPDiscriminator",
    "MLPGenerator",
    "PixelCNN",
    "RealNVP",
    "arithmetic_grid",
    "interpolate",
    "interpolation_grid",
    "latent_arithmetic",
    "lerp",
    "slerp",
    "spectral_norm_",
]
