"""Thin model classes built on pygen.layers."""

from pygen.models.pixelcnn import PixelCNN

__all__ = ["PixelCNN"]
