"""Drop-in nn.Modules built on pygen.ops."""

from pygen.layers.masked_conv import GatedMaskedConv2d, MaskedConv2d
from pygen.layers.reparameterize import GaussianReparameterize

__all__ = ["GatedMaskedConv2d", "GaussianReparameterize", "MaskedConv2d"]
