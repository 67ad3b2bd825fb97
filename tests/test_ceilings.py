"""The cluster exchange (pygen.ops.ceilings), the benchmark suite's measure of one dependent step
across a thread-block cluster: its result against its twin on a GPU, its argument errors here."""

from __future__ import annotations

import pytest
import torch

from pygen.ops.ceilings import cluster_exchange, cluster_exchange_expected

requires_sm90 = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9,
    reason="needs a CUDA GPU of sm_90 or newer",
)


def test_twin_sums_every_block_each_step():
    assert cluster_exchange_expected(4, 1) == 1 + 2 + 3 + 4
    assert cluster_exchange_expected(4, 3) == 10 * 4 * 4
    assert cluster_exchange_expected(16, 40) == (136 * 16**39) % 2**32


@requires_sm90
@pytest.mark.parametrize("blocks", [2, 4, 8, 16])
@pytest.mark.parametrize("steps", [1, 2, 37, 4096])
def test_cluster_exchange_equals_its_twin(blocks, steps):
    out = torch.full((1,), -1, dtype=torch.int64, device="cuda")
    cluster_exchange(out, blocks, steps)
    assert out.item() == cluster_exchange_expected(blocks, steps)


@requires_sm90
def test_cluster_exchange_opcheck():
    out = torch.zeros(1, dtype=torch.int64, device="cuda")
    torch.library.opcheck(torch.ops.pygen._cluster_exchange, (out, 8, 5))


@pytest.mark.parametrize(
    ("out", "blocks", "steps", "error", "match"),
    [
        (torch.zeros(1), 8, 5, TypeError, "out must be int64"),
        (torch.zeros(0, dtype=torch.int64), 8, 5, ValueError, "at least one value"),
        (torch.zeros(1, dtype=torch.int64), 3, 5, ValueError, "blocks must be 2, 4, 8 or 16"),
        (torch.zeros(1, dtype=torch.int64), 8, 0, ValueError, r"steps must be in \[1"),
        (torch.zeros(1, dtype=torch.int64), 8, 5, RuntimeError, "runs on CUDA"),
    ],
)
def test_cluster_exchange_bad_arguments_raise(out, blocks, steps, error, match):
    with pytest.raises(error, match=match):
        cluster_exchange(out, blocks, steps)
