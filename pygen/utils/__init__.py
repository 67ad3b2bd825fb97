"""Small dependency-free helpers (PNG output)."""

from pygen.utils.png import save_image_grid

__all__ = ["save_image_grid"]
