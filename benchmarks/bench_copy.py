"""The device's copy bandwidth: the floor every memory-bound op is measured against.

GB/s counts bytes read plus bytes written, as the other benchmarks do.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.common import device_under_test, measure, row

DEVICE = device_under_test()
NUMEL = 256 * 2**20 if DEVICE.type == "cuda" else 16 * 2**20  # 1 GiB / 64 MiB of float32


@pytest.mark.parametrize("provider", ["torch"])
def test_copy(benchmark, record, quick, provider):
    src = torch.randn(NUMEL, device=DEVICE)
    dst = torch.empty_like(src)
    timing = measure(benchmark, lambda: dst.copy_(src), DEVICE, quick)
    record(row("copy", provider, "copy", (NUMEL,), torch.float32, DEVICE, timing, 2 * 4 * NUMEL))
