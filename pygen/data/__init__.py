"""Datasets. The bundled default is scikit-learn's 8x8 handwritten digits (no download)."""

from pygen.data.digits import DIGIT_LEVELS, load_digits
from pygen.data.toy import gaussian_ring, ring_modes

__all__ = ["DIGIT_LEVELS", "gaussian_ring", "load_digits", "ring_modes"]
