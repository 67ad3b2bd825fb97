"""The device's copy bandwidth and matrix throughput: the ceilings every memory-bound and
compute-bound op is measured against.

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


# The GPU's matrix units in float32 (TF32 off) and bf16; the CPU's in float32 (BLAS).
MATMUL_DTYPES = [torch.float32, torch.bfloat16] if DEVICE.type == "cuda" else [torch.float32]


@pytest.mark.parametrize("dtype", MATMUL_DTYPES, ids=str)
def test_matmul(benchmark, record, quick, dtype):
    """The device's matrix throughput on random square products (8192^3 on a GPU, 2048^3 on a
    CPU): the ceiling compute-bound kernels (the PixelCNN sampler) are measured against."""
    n = 8192 if DEVICE.type == "cuda" else 2048
    a, b = (torch.randn(n, n, device=DEVICE, dtype=dtype) for _ in range(2))
    out = torch.empty(n, n, device=DEVICE, dtype=dtype)
    timing = measure(benchmark, lambda: torch.mm(a, b, out=out), DEVICE, quick, rounds=10)
    r = row("matmul", "torch", "mm", (n, n, n), dtype, DEVICE, timing, 3 * n * n * a.element_size())
    record(r | {"tflops": 2 * n**3 / (timing["median_ms"] * 1e-3) / 1e12})
