"""The dependency-free PNG grid writer (and its reader)."""

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
