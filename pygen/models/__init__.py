"""Thin model classes built on pygen.layers."""

from pygen.models.bigan import BiGAN, JointDiscriminator
from pygen.models.cyclegan import (
    CycleGAN,
    ImagePool,
    PatchDiscriminator,
    Pix2Pix,
    ResnetBlock,
    ResnetGenerator,
    UNetGenerator,
    patch_layers,
)
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
    "CycleGAN",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "ELBOTerms",
    "FlowModel",
    "GaussianLikelihood",
    "Glow",
    "GlowStep",
    "ImagePool",
    "JointDiscriminator",
    "Likelihood",
    "MLPDiscriminator",
    "MLPGenerator",
    "PatchDiscriminator",
    "Pix2Pix",
    "PixelCNN",
    "RealNVP",
    "ResnetBlock",
    "ResnetGenerator",
    "UNetGenerator",
    "arithmetic_grid",
    "interpolate",
    "interpolation_grid",
    "latent_arithmetic",
    "lerp",
    "patch_layers",
    "slerp",
    "spectral_norm_",
]
