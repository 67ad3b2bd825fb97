"""Thin model classes built on pygen.layers."""

from pygen.models.autoregressive import AutoregressiveImageModel
from pygen.models.autoregressive_flows import IAF, MAF
from pygen.models.bigan import BiGAN, BiGANTrainer, JointDiscriminator
from pygen.models.cnf import CNF
from pygen.models.cyclegan import (
    CycleGAN,
    CycleGANTrainer,
    ImagePool,
    PatchDiscriminator,
    Pix2Pix,
    Pix2PixTrainer,
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
    AutoencoderCritic,
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
    "AutoencoderCritic",
    "AutoregressiveImageModel",
    "BernoulliLikelihood",
    "BiGAN",
    "BiGANTrainer",
    "CategoricalLikelihood",
    "CycleGAN",
    "CycleGANTrainer",
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
    "Pix2PixTrainer",
    "PixelCNN",
    "PixelRNN",
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
