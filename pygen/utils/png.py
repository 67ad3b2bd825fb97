"""A tiny PNG writer (zlib + struct, no imaging library): 8-bit grey or RGB image grids."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import torch
from torch import Tensor

_PAD = 2  # pixels of black between grid cells


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def save_image_grid(images: Tensor, path, nrow: int = 8) -> Path:
    """Write ``images`` ``(N, C, H, W)`` with values in ``[0, 1]`` as one PNG grid.

    ``C`` is 1 (grey) or 3 (RGB); values are clamped to ``[0, 1]`` and rounded to 8 bits. Images
    fill rows of ``nrow`` cells left to right. Returns the path written.
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W), got shape {tuple(images.shape)}")
    if nrow < 1 or len(images) == 0:
        raise ValueError(f"need nrow >= 1 and at least one image, got nrow={nrow}, N={len(images)}")
    n, c, h, w = images.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    grid = torch.zeros(c, rows * (h + _PAD) + _PAD, cols * (w + _PAD) + _PAD, dtype=torch.uint8)
    pixels = (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    for i, image in enumerate(pixels):
        top, left = _PAD + (i // cols) * (h + _PAD), _PAD + (i % cols) * (w + _PAD)
        grid[:, top : top + h, left : left + w] = image
    height, width = grid.shape[1:]
    scanlines = grid.permute(1, 2, 0).reshape(height, width * c)
    # Filter type 0 (none) before every scanline.
    raw = torch.cat([torch.zeros(height, 1, dtype=torch.uint8), scanlines], dim=1)
    colour_type = 0 if c == 1 else 2
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw.numpy().tobytes(), 6))
        + _chunk(b"IEND", b"")
    )
    return path
