"""Thin model classes built on pygen.layers."""

from pygen.models.likelihoods import (
    BernoulliLikelihood,
    CategoricalLikelihood,
    GaussianLikelihood,
    Likelihood,
)
from pygen.models.vae import VAE, ELBOTerms

__all__ = [
    "VAE",
    "BernoulliLikelihood",
    "CategoricalLikelihood",
    "ELBOTerms",
    "GaussianLikelihood",
    "Likelihood",
]
