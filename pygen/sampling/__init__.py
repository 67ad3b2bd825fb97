"""Autoregressive image sampling: the PixelCNN front end, the naive and cached PyTorch samplers
(PixelCNN; PixelRNN, Row LSTM and Diagonal BiLSTM) and the shared draw."""

from pygen.sampling.cached import sample_cached
from pygen.sampling.draw import draw_or_keep, inverse_cdf_draw
from pygen.sampling.naive import sample_naive
from pygen.sampling.pixelrnn import export_pixelrnn_weights, sample_pixelrnn_cached
from pygen.sampling.sampler import METHODS, check_sample_args, sample, sampler_noise
from pygen.sampling.weights import export_weights

__all__ = [
    "METHODS",
    "check_sample_args",
    "draw_or_keep",
    "export_pixelrnn_weights",
    "export_weights",
    "inverse_cdf_draw",
    "sample",
    "sample_cached",
    "sample_naive",
    "sample_pixelrnn_cached",
    "sampler_noise",
]
