"""pygen: fused C++/CUDA kernels and models for deep generative modelling."""

from pygen import data, layers, losses, metrics, models, ops, sampling, train, utils
from pygen._extension import build_info

__version__ = "0.1.0"
__all__ = [
    "build_info",
    "data",
    "layers",
    "losses",
    "metrics",
    "models",
    "ops",
    "sampling",
    "train",
    "utils",
]
