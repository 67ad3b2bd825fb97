"""The device's copy bandwidth, matrix throughput and (sm_90 GPUs) the latency of one dependent
step across a thread-block cluster: the ceilings every memory-bound and compute-bound op, and the
CUDA PixelCNN sampler's chain of steps, are measured against.

GB/s counts bytes read plus bytes written, as the other benchmarks do.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.common import MATMUL_ROUNDS, device_under_test, matmul_of, measure, row
from pygen.ops.ceilings import cluster_exchange

DEVICE = device_under_test()
NUMEL = 256 * 2**20 if DEVICE.type == "cuda" else 16 * 2**20  # 1 GiB / 64 MiB of float32


def test_copy(record, quick):
    src = torch.randn(NUMEL, device=DEVICE)
    dst = torch.empty_like(src)
    timing = measure(lambda: dst.copy_(src), DEVICE, quick)
    record(row("copy", "torch", "copy", (NUMEL,), torch.float32, DEVICE, timing, 2 * 4 * NUMEL))


# The GPU's matrix units in float32 (TF32 off) and bf16; the CPU's in float32 (BLAS).
MATMUL_DTYPES = [torch.float32, torch.bfloat16] if DEVICE.type == "cuda" else [torch.float32]


@pytest.mark.parametrize("dtype", MATMUL_DTYPES, ids=str)
def test_matmul(record, quick, dtype):
    """The device's matrix throughput on random square products (8192^3 on a GPU, 2048^3 on a
    CPU): the ceiling compute-bound kernels (the PixelCNN sampler) are measured against."""
    product, n = matmul_of(DEVICE, dtype)
    timing = measure(product, DEVICE, quick, rounds=MATMUL_ROUNDS)
    nbytes = 3 * n * n * dtype.itemsize
    r = row("matmul", "torch", "mm", (n, n, n), dtype, DEVICE, timing, nbytes)
    record(r | {"tflops": 2 * n**3 / (timing["median_ms"] * 1e-3) / 1e12})


EXCHANGE_STEPS = 4096


@pytest.mark.skipif(
    DEVICE.type != "cuda" or torch.cuda.get_device_capability(DEVICE)[0] < 9,
    reason="thread-block clusters: sm_90 GPUs",
)
@pytest.mark.parametrize("blocks", [8, 16])
def test_cluster_step(record, quick, blocks):
    """One dependent step across a cluster of 8 or 16 blocks (the PixelCNN cluster kernel's
    sizes): each block writes into every block's shared memory, then the cluster barrier
    (pygen.ops.ceilings.cluster_exchange, EXCHANGE_STEPS steps per launch)."""
    out = torch.zeros(1, dtype=torch.int64, device=DEVICE)

    def run():
        cluster_exchange(out, blocks, EXCHANGE_STEPS)

    timing = measure(run, DEVICE, quick)
    shape = (blocks, EXCHANGE_STEPS)
    r = row("cluster_step", "pygen", "exchange", shape, torch.int64, DEVICE, timing, 0)
    record(r | {"us_per_step": timing["median_ms"] * 1e3 / EXCHANGE_STEPS})
