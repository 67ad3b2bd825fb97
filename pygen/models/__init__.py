"""Thin model classes built on pygen.layers."""

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

__all__ = [
    "DCGAN",
    "GAN",
    "MLPGAN",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "MLPDiscriminator",
    "MLPGenerator",
    "arithmetic_grid",
    "interpolate",
    "interpolation_grid",
    "latent_arithmetic",
    "lerp",
    "slerp",
    "spectral_norm_",
]
