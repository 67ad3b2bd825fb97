"""Drop-in nn.Modules built on pygen.ops."""

from pygen.layers.reparameterize import GaussianReparameterize

__all__ = ["GaussianReparameterize"]
