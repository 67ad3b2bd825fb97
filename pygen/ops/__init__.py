"""Fused ops (torch custom ops over pygen._C) and, in ``pygen.ops.reference``, their PyTorch twins."""

from pygen.ops import reference
from pygen.ops.reparam_kl import reparameterize_kl

__all__ = ["reference", "reparameterize_kl"]
