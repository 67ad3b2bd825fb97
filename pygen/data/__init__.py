"""Datasets. The bundled default is scikit-learn's 8x8 handwritten digits (no download); users'
data loads from a path they give."""

from pygen.data.digits import DIGIT_LEVELS, load_digits
from pygen.data.files import (
    ImageData,
    load_array,
    load_dataset,
    load_image_folder,
    load_torchvision,
)
from pygen.data.split import split_indices

__all__ = [
    "DIGIT_LEVELS",
    "ImageData",
    "load_array",
    "load_dataset",
    "load_digits",
    "load_image_folder",
    "load_torchvision",
    "split_indices",
]
