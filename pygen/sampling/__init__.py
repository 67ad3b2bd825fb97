"""PixelCNN sampling: the front end, the naive and cached PyTorch samplers and the shared draw."""

from pygen.sampling.cached import sample_cached
from pygen.sampling.draw import inverse_cdf_draw
from pygen.sampling.naive import sample_naive
from pygen.sampling.sampler import METHODS, sample
from pygen.sampling.weights import export_weights

__all__ = [
    "METHODS",
    "export_weights",
    "inverse_cdf_draw",
    "sample",
    "sample_cached",
    "sample_naive",
]
