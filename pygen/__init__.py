"""pygen: fused C++/CUDA kernels and models for deep generative modelling."""

from pygen._extension import build_info
from pygen import layers, ops

__version__ = "0.1.0"
__all__ = ["build_info", "layers", "ops"]
