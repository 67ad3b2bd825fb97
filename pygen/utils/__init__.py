"""Small generic helpers with no model knowledge (image grids written as PNG, no matplotlib)."""

from pygen.utils.png import image_grid, read_png, save_image_grid, write_png

__all__ = ["image_grid", "read_png", "save_image_grid", "write_png"]
