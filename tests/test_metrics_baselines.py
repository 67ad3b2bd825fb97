"""The independent-pixel baseline."""

import math

import pytest
import torch

from pygen.metrics import independent_pixel_bits


def test_independent_pixel_bits_by_hand():
    train = torch.tensor([[0, 1], [0, 1], [1, 1]])  # position 0: counts (2, 1); position 1: (0, 3)
    test = torch.tensor([[0, 1]])
    # add-one smoothing: p0(0) = 3/5, p1(1) = 4/5
    expected = -(math.log2(3 / 5) + math.log2(4 / 5)) / 2
    assert math.isclose(independent_pixel_bits(train, test, 2), expected, rel_tol=1e-12)
    uniform = independent_pixel_bits(
        torch.zeros(0, 4, dtype=torch.long), torch.zeros(3, 4, dtype=torch.long), 8
    )
    assert math.isclose(uniform, 3.0)  # no data: add-one gives the uniform 3 bits
    with pytest.raises(TypeError, match="integer levels"):  # pixels in [0, 1] truncated to 0
        independent_pixel_bits(torch.rand(4, 3), torch.rand(2, 3), 2)
