"""reparameterize + KL: fused kernel vs eager reference vs torch.compile(reference).

All providers draw their own noise (the kernel with Philox, the references with torch's
generator), as a training step does. Bytes: forward reads mu, logvar and writes z, kl (3 tensor
passes); forward+backward adds reading grad_z, mu, logvar and writing grad_mu, grad_logvar (8).
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.common import device_under_test, measure, row
from pygen.ops import reference, reparameterize_kl

OP = "reparam_kl"
DEVICE = device_under_test()
CASES = (
    [((65536, 1024), torch.float32), ((65536, 1024), torch.bfloat16)]
    if DEVICE.type == "cuda"
    else [((4096, 1024), torch.float32), ((4096, 1024), torch.bfloat16), ((256, 64), torch.float32)]
)
_compiled = {}


def provider_fn(provider: str):
    if provider == "pygen":
        return reparameterize_kl
    if provider == "eager":
        return reference.reparameterize_kl
    if "fn" not in _compiled:
        _compiled["fn"] = torch.compile(reference.reparameterize_kl, dynamic=False)
    return _compiled["fn"]


def floor_bytes(shape, dtype, mode: str) -> int:
    rows, dim = shape
    item = torch.empty((), dtype=dtype).element_size()
    passes, small = (3, 1) if mode == "fwd" else (8, 3)
    return (passes * rows * dim + small * rows) * item


def make_inputs(shape, dtype, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar) of the benchmark case on DEVICE."""
    mu = torch.randn(shape, device=DEVICE, generator=gen).to(dtype)
    logvar = (0.5 * torch.randn(shape, device=DEVICE, generator=gen)).to(dtype)
    return mu, logvar


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("provider", ["pygen", "eager", "compile"])
@pytest.mark.parametrize(("shape", "dtype"), CASES, ids=lambda c: str(c))
def test_reparam_kl(benchmark, record, quick, shape, dtype, provider, mode):
    gen = torch.Generator(DEVICE).manual_seed(0)
    mu, logvar = make_inputs(shape, dtype, gen)
    fn = provider_fn(provider)
    if mode == "fwd":

        def step():
            with torch.no_grad():
                return fn(mu, logvar)

    else:
        mu.requires_grad_()
        logvar.requires_grad_()
        grad_z = torch.randn(shape, device=DEVICE, generator=gen).to(dtype)
        grad_kl = torch.randn(shape[:-1], device=DEVICE, generator=gen).to(dtype)

        def step():
            z, kl = fn(mu, logvar)
            return torch.autograd.grad((z, kl), (mu, logvar), (grad_z, grad_kl))

    timing = measure(benchmark, step, DEVICE, quick)
    record(row(OP, provider, mode, shape, dtype, DEVICE, timing, floor_bytes(shape, dtype, mode)))
