"""Datasets. The bundled default is scikit-learn's 8x8 handwritten digits (no download)."""

from pygen.data.digits import DIGIT_LEVELS, load_digits

__all__ = ["DIGIT_LEVELS", "load_digits"]
