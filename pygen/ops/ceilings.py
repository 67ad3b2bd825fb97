"""A ceiling of the device that no PyTorch op measures, for the benchmark suite
(benchmarks/bench_copy.py): the latency of one dependent step across a thread-block cluster,
``pygen::_cluster_exchange``, against which the CUDA PixelCNN sampler's chain of steps is
measured (benchmarks/report.py)."""

from __future__ import annotations

import torch
from torch import Tensor

from pygen._extension import _C  # noqa: F401  (registers the pygen:: operators)


@torch.library.register_fake("pygen::_cluster_exchange")
def _(out, blocks, steps):
    return None


def cluster_exchange(out: Tensor, blocks: int = 8, steps: int = 4096) -> None:
    """Runs ``steps`` dependent exchanges across one cluster of ``blocks`` thread blocks (2, 4, 8
    or 16; CUDA, sm_90 or newer) in one launch: per step each block writes a value into every
    block's shared memory, the cluster waits at its barrier, and each block sums what it received,
    the least a step of the cluster PixelCNN kernel does. ``out`` (int64, CUDA) gets in ``out[0]``
    the last sum, as :func:`cluster_exchange_expected` computes it."""
    torch.ops.pygen._cluster_exchange(out, blocks, steps)


def cluster_exchange_expected(blocks: int, steps: int) -> int:
    """The twin of :func:`cluster_exchange`: block r starts at r + 1; each step every block takes
    the sum of all blocks' values, in 32-bit unsigned arithmetic."""
    values = [rank + 1 for rank in range(blocks)]
    for _ in range(steps):
        values = [sum(values) % 2**32] * blocks
    return values[0]
