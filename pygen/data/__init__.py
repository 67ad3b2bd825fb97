"""Datasets. The bundled default is scikit-learn's 8x8 handwritten digits (no download); users'
data loads from a path they give; 2-D toy densities for the GAN and flow tests."""

from pygen.data.digits import DIGIT_LEVELS, load_digits
from pygen.data.files import (
    SYNTHETIC_DOMAINS,
    ImageData,
    absolute_spec,
    load_array,
    load_dataset,
    load_image_folder,
    load_torchvision,
    load_translation_data,
    to_tanh_range,
)
from pygen.data.split import split_indices
from pygen.data.toy import gaussian_ring, ring_modes

__all__ = [
    "DIGIT_LEVELS",
    "SYNTHETIC_DOMAINS",
    "ImageData",
    "absolute_spec",
    "gaussian_ring",
    "load_array",
    "load_dataset",
    "load_digits",
    "load_image_folder",
    "load_torchvision",
    "load_translation_data",
    "ring_modes",
    "split_indices",
    "to_tanh_range",
]
