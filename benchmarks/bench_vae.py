"""Conv VAE with the fused reparameterize + KL op ("pygen") vs the reference op ("eager").

Modes: "train_step" (loss, backward and an Adam step on a batch of binary images), "iwae"
(``log_likelihood`` with k importance samples drawn through the op's n_samples) and "sample"
(generation from the prior: it does not touch the op, so both providers run the same code and
their ratio should be ~1). Rows carry ``samples_per_s`` (examples processed per second); the
GB/s column does not apply to a whole model and is left empty.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import torch

from benchmarks.common import adam_step, device_under_test, measure_side_by_side, row
from pygen.models import VAE

OP = "vae"
DEVICE = device_under_test()
# (batch, image shape, latent size, conv channels)
CASES = (
    [(256, (1, 28, 28), 32, 32), (1024, (1, 28, 28), 64, 64)]
    if DEVICE.type == "cuda"
    else [(128, (1, 8, 8), 16, 32)]
)
IWAE_K = 32


@pytest.mark.parametrize("mode", ["train_step", "iwae", "sample"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"b{c[0]}-{'x'.join(map(str, c[1]))}")
def test_vae(record, quick, case, mode):
    """pygen and eager side by side (``benchmarks.common.measure_side_by_side``)."""
    batch, data_shape, latent_dim, hidden = case
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, *data_shape, generator=gen) < 0.3).float().to(DEVICE)
    shape = [batch, *data_shape] if mode != "iwae" else [IWAE_K, batch, *data_shape]
    steps: dict[str, Callable[[], object]] = {}
    for provider in ("pygen", "eager"):
        torch.manual_seed(0)
        model = VAE(
            data_shape,
            latent_dim,
            architecture="conv",
            hidden=hidden,
            reference=provider == "eager",
        ).to(DEVICE)
        if mode == "train_step":
            steps[provider] = adam_step(model, functools.partial(model.loss, x))
        elif mode == "iwae":
            steps[provider] = functools.partial(model.log_likelihood, x, k=IWAE_K)
        else:
            steps[provider] = functools.partial(model.sample, batch)
    for provider, timing in measure_side_by_side(steps, DEVICE, quick).items():
        result = row(OP, provider, mode, shape, torch.float32, DEVICE, timing, nbytes=0)
        result["samples_per_s"] = batch / (timing["median_ms"] * 1e-3)
        record(result)
