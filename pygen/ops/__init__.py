"""Fused ops (torch custom ops over pygen._C); their twins live in ``pygen.ops.reference``."""

from pygen.ops import reference
from pygen.ops.reparam_kl import reparameterize_kl

__all__ = ["reference", "reparameterize_kl"]
