"""Image grids written as PNG with zlib + struct only (matplotlib and PIL are not dependencies)."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import torch
from torch import Tensor


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def write_png(path: str | os.PathLike[str], pixels: Tensor) -> Path:
    """Write ``pixels`` (uint8, ``(H, W)`` grey or ``(H, W, 3)`` RGB) as an 8-bit PNG file."""
    if pixels.dtype != torch.uint8 or pixels.dim() not in (2, 3):
        raise ValueError(
            f"pixels must be uint8 of shape (H, W) or (H, W, 3), got {pixels.dtype} "
            f"{tuple(pixels.shape)}"
        )
    if pixels.dim() == 3 and pixels.shape[2] != 3:
        raise ValueError(f"colour pixels must have 3 channels, got {pixels.shape[2]}")
    height, width = pixels.shape[:2]
    colour_type = 2 if pixels.dim() == 3 else 0
    rows = pixels.cpu().contiguous().reshape(height, -1)
    # Each scanline starts with its filter type byte (0: none).
    raw = torch.cat([torch.zeros(height, 1, dtype=torch.uint8), rows], dim=1).numpy().tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )
    return path


def read_png(path: str | os.PathLike[str]) -> Tensor:
    """Pixels ``(C, H, W)`` uint8 of an 8-bit grey or RGB PNG as ``write_png`` writes it
    (unfiltered scanlines); other PNGs raise ValueError."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG file")
    pos = 8
    chunks: dict[bytes, bytes] = {}
    while b"IEND" not in chunks:
        if pos + 12 > len(data):
            raise ValueError(f"{path}: truncated (no IEND chunk)")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length].rjust(4, b"\0"))
        if len(body) != length or zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise ValueError(f"{path}: corrupt {kind!r} chunk (length or CRC)")
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    if len(chunks.get(b"IHDR", b"")) != 13 or b"IDAT" not in chunks:
        raise ValueError(f"{path}: no IHDR or IDAT chunk")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", chunks[b"IHDR"]
    )
    if depth != 8 or colour not in (0, 2) or (compression, filtering, interlace) != (0, 0, 0):
        raise ValueError(f"{path}: only 8-bit grey or RGB PNGs, not interlaced, are read")
    channels = 1 if colour == 0 else 3
    try:
        raw = zlib.decompress(chunks[b"IDAT"])
    except zlib.error as err:
        raise ValueError(f"{path}: corrupt image data ({err})") from err
    if len(raw) != height * (1 + width * channels):
        raise ValueError(f"{path}: image data of {len(raw)} bytes for {width}x{height}")
    rows = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(height, 1 + width * channels)
    if rows[:, 0].any():
        raise ValueError(f"{path}: filtered scanlines are not supported")
    return rows[:, 1:].reshape(height, width, channels).permute(2, 0, 1).contiguous()


def image_grid(images: Tensor, nrow: int = 8, padding: int = 1, pad_value: float = 1.0) -> Tensor:
    """Tile ``images`` ``(N, C, H, W)`` into one ``(C, H', W')`` image, ``nrow`` images per row."""
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    if nrow < 1 or padding < 0:
        raise ValueError(f"need nrow >= 1 and padding >= 0, got nrow={nrow}, padding={padding}")
    n, channels, height, width = images.shape
    ncol = min(nrow, n)
    nrows = -(-n // nrow)
    cell_h, cell_w = height + padding, width + padding
    grid = images.new_full(
        (channels, nrows * cell_h + padding, ncol * cell_w + padding), pad_value, dtype=torch.float
    )
    for i, image in enumerate(images.float()):
        top, left = (i // nrow) * cell_h + padding, (i % nrow) * cell_w + padding
        grid[:, top : top + height, left : left + width] = image
    return grid


def save_image_grid(
    images: Tensor, path: str | os.PathLike[str], nrow: int = 8, padding: int = 1, scale: int = 1
) -> Path:
    """Write ``images`` ``(N, C, H, W)`` with values in [0, 1] (clamped) as a PNG grid.

    ``C`` is 1 (grey) or 3 (RGB); ``scale`` enlarges every pixel to a ``scale x scale`` block
    (nearest neighbour), which makes tiny images such as 8x8 digits viewable.
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3) or not len(images):
        raise ValueError(
            f"images must have shape (N >= 1, 1 or 3, H, W), got {tuple(images.shape)}"
        )
    if images.is_floating_point() and torch.isnan(images).any():
        raise ValueError("images hold NaN, which no pixel value stands for")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    grid = image_grid(images.detach(), nrow, padding)
    grid = grid.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    pixels = (grid.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu()
    pixels = pixels[0] if pixels.shape[0] == 1 else pixels.permute(1, 2, 0)
    return write_png(path, pixels)
