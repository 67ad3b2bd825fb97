"""The dependency-free PNG grid writer (and its reader)."""

import struct
import zlib

import pytest
import torch

from pygen.utils import read_png, save_image_grid, write_png


@pytest.mark.parametrize("channels", [1, 3])
def test_grid_pixels_round_trip(tmp_path, channels):
    images = torch.rand(3, channels, 4, 5, generator=torch.Generator().manual_seed(0))
    pixels = read_png(save_image_grid(images, tmp_path / "g.png", nrow=2))
    assert pixels.shape == (channels, 2 * 5 + 1, 2 * 6 + 1)  # 1-pixel padding around cells
    expected = (images * 255).round().to(torch.uint8)
    assert torch.equal(pixels[:, 1:5, 1:6], expected[0])
    assert torch.equal(pixels[:, 1:5, 7:12], expected[1])
    assert torch.equal(pixels[:, 6:10, 1:6], expected[2])
    assert (pixels[:, 6:10, 7:12] == 255).all()  # the empty cell keeps the padding value
    scaled = read_png(save_image_grid(images, tmp_path / "s.png", nrow=3, scale=2))
    assert scaled.shape == (channels, 2 * (4 + 2), 2 * (3 * 6 + 1))


def test_bad_images_and_files(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        save_image_grid(torch.rand(2, 2, 4, 4), tmp_path / "bad.png")
    with pytest.raises(ValueError, match="scale"):
        save_image_grid(torch.rand(2, 1, 4, 4), tmp_path / "bad.png", scale=0)
    with pytest.raises(ValueError, match="uint8"):
        write_png(tmp_path / "bad.png", torch.zeros(4, 4))
    (tmp_path / "not.png").write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a PNG"):
        read_png(tmp_path / "not.png")
    with pytest.raises(ValueError, match="N >= 1"):
        save_image_grid(torch.rand(0, 1, 4, 4), tmp_path / "bad.png")
    with pytest.raises(ValueError, match="NaN"):
        save_image_grid(torch.full((1, 1, 2, 2), float("nan")), tmp_path / "bad.png")


def _png(ihdr: bytes, raw: bytes) -> bytes:
    def chunk(kind, body):
        crc = struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        return struct.pack(">I", len(body)) + kind + body + crc

    idat = zlib.compress(raw)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_files_the_reader_does_not_take_are_a_value_error(tmp_path):
    """An interlaced 1-pixel-wide image has the bytes of a plain one, in another row order: it was
    read with its rows shuffled. Truncated files, trailing bytes and bad CRCs too."""
    rows = b"".join(b"\0" + bytes([v]) for v in (10, 30, 20, 40))  # Adam7's pass order
    interlaced = _png(struct.pack(">IIBBBBB", 1, 4, 8, 0, 0, 0, 1), rows)
    plain = _png(struct.pack(">IIBBBBB", 1, 4, 8, 0, 0, 0, 0), rows)
    cases = {
        "interlaced": (interlaced, "not interlaced"),
        "truncated": (plain[:-12], "truncated"),
        "bad crc": (plain[:29] + bytes([plain[29] ^ 1]) + plain[30:], "CRC"),
        "short data": (_png(struct.pack(">IIBBBBB", 2, 4, 8, 0, 0, 0, 0), rows), "bytes for 2x4"),
    }
    for name, (data, match) in cases.items():
        (tmp_path / f"{name}.png").write_bytes(data)
        with pytest.raises(ValueError, match=match):
            read_png(tmp_path / f"{name}.png")
    (tmp_path / "plain.png").write_bytes(plain + b"junk after IEND")
    assert read_png(tmp_path / "plain.png").flatten().tolist() == [10, 30, 20, 40]
