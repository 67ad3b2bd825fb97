"""reparameterize + KL: fused kernel vs eager reference vs torch.compile(reference).

All providers draw their own noise (the kernel with Philox, the references with torch's
generator), as a training step does. Bytes (benchmarks/floors.py): forward reads mu, logvar and
writes z, kl (3 tensor passes); forward+backward adds reading grad_z, mu, logvar and writing
grad_mu, grad_logvar (8). Modes "(encoder halves)": mu and logvar are the halves of one
(rows, 2 * dim) tensor, as a VAE's encoder gives them (the kernel reads them in place; the
references' elementwise ops read any layout), and with a backward the gradient is that tensor's
(autograd concatenates the halves'). Mode "fwd+bwd (stacked)": that tensor whole to
``reparameterize_kl_stacked`` (the references: to ``reference.reparameterize_kl_stacked``), whose
backward writes the gradient's halves in place. Before timing, each provider other than eager is
checked against the float32 reference (``check``); then a case's providers are timed side by
side (``benchmarks.common.measure_side_by_side``), with a copy of the case's floor bytes
(provider ``copy``): its own ceiling.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from benchmarks import floors
from benchmarks.common import (
    check_close,
    compile_reference,
    copy_of,
    device_under_test,
    measure_side_by_side,
    row,
)
from pygen.ops import reference, reparameterize_kl, reparameterize_kl_stacked

OP = "reparam_kl"
DEVICE = device_under_test()
CASES = (
    [((65536, 1024), torch.float32), ((65536, 1024), torch.bfloat16)]
    if DEVICE.type == "cuda"
    else [((4096, 1024), torch.float32), ((4096, 1024), torch.bfloat16), ((256, 64), torch.float32)]
)
# "compile_eager_rng": inductor calls torch's own normal generator instead of generating the
# noise in its kernel (fallback_random), which on the CPU is several times faster than its own
# (an audit, 1024x1024: 24 against 76 ms, eager 45), so the best compiled reference is timed too.
PROVIDERS = ("pygen", "eager", "compile", "compile_eager_rng")
_compiled: dict[tuple[str, bool], Callable] = {}


MODES = [
    "fwd",
    "fwd+bwd",
    "fwd" + floors.ENCODER_HALVES,
    "fwd+bwd" + floors.ENCODER_HALVES,
    "fwd+bwd" + floors.STACKED,
]


def provider_fn(provider: str, stacked: bool = False):
    """The provider's function of (mu, logvar), or (``stacked``) of stats: mu, then logvar."""
    if provider == "pygen":
        return reparameterize_kl_stacked if stacked else reparameterize_kl
    twin = reference.reparameterize_kl_stacked if stacked else reference.reparameterize_kl
    if provider == "eager":
        return twin
    if (provider, stacked) not in _compiled:
        options = {"fallback_random": True} if provider == "compile_eager_rng" else {}
        _compiled[provider, stacked] = compile_reference(twin, **options)
    return _compiled[provider, stacked]


def of_halves(stacked_fn):
    """A function of stats as one of (mu, logvar), for ``check``."""
    return lambda mu, logvar, *noise: stacked_fn(torch.cat([mu, logvar], dim=-1), *noise)


def floor_bytes(shape, dtype, mode: str) -> int:
    """Bytes the op must move, as the report counts them (benchmarks.floors.floor_bytes: the
    modes of halves and stacked inputs move the plain mode's)."""
    row = {"op": OP, "mode": mode, "shape": list(shape), "dtype": str(dtype).removeprefix("torch.")}
    nbytes = floors.floor_bytes(row)
    assert nbytes is not None, f"no floor for mode {mode!r}"
    return nbytes


def check(provider, fn, mu, logvar, grad_z, grad_kl) -> None:
    """The provider's result against the float32 reference (benchmarks.common.check_close).
    pygen with given noise: z and kl. Each provider as timed (its own noise): kl; the noise its
    z implies, (z - mu) / exp(logvar / 2), standard normal in mean and spread; with a backward
    (grad_z given), grad_mu = grad_z + grad_kl mu and grad_logvar = grad_z (z - mu) / 2 +
    grad_kl (exp(logvar) - 1) / 2 at the same call's z (a backward must regenerate the
    forward's noise)."""
    if provider == "eager":
        return  # the reference itself
    dtype, (m, lv) = mu.dtype, (t.detach().float() for t in (mu, logvar))
    ref_kl = 0.5 * (m.square() + lv.exp() - 1.0 - lv).sum(-1)
    if provider == "pygen":
        noise = torch.randn(
            mu.shape, device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(1)
        )
        with torch.no_grad():
            z, kl = fn(mu, logvar, noise.to(dtype))
        check_close(
            "z with given noise", z, m + torch.exp(0.5 * lv) * noise.to(dtype).float(), dtype
        )
        check_close("kl with given noise", kl, ref_kl, dtype)
    leaves = [t.detach().requires_grad_(grad_z is not None) for t in (mu, logvar)]
    with torch.set_grad_enabled(grad_z is not None):
        z, kl = fn(*leaves)
        grads = grad_z is not None and torch.autograd.grad((z, kl), leaves, (grad_z, grad_kl))
    check_close("kl", kl, ref_kl, dtype)
    eps = (z.detach().float() - m) * torch.exp(-0.5 * lv)
    spread = (eps.mean().item(), eps.std().item())
    assert abs(spread[0]) < 0.05 and abs(spread[1] - 1) < 0.05, f"z's noise: mean, std {spread}"
    if grads:
        gz, gkl = grad_z.float(), grad_kl.float()[..., None]
        check_close("grad_mu", grads[0], gz + gkl * m, dtype)
        expected = 0.5 * gz * (z.detach().float() - m) + 0.5 * gkl * (lv.exp() - 1.0)
        check_close("grad_logvar", grads[1], expected, dtype)


def make_inputs(shape, dtype, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar) of the benchmark case on DEVICE."""
    mu = torch.randn(shape, device=DEVICE, generator=gen).to(dtype)
    logvar = (0.5 * torch.randn(shape, device=DEVICE, generator=gen)).to(dtype)
    return mu, logvar


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("shape", "dtype"), CASES, ids=lambda c: str(c))
def test_reparam_kl(record, quick, shape, dtype, mode):
    gen = torch.Generator(DEVICE).manual_seed(0)
    mu, logvar = make_inputs(shape, dtype, gen)
    stacked, halves = mode.endswith(floors.STACKED), mode.endswith(floors.ENCODER_HALVES)
    stats = torch.cat([mu, logvar], dim=-1)  # an encoder's output
    if halves:
        mu, logvar = stats.chunk(2, dim=-1)
    # The timed call's inputs, and what its gradients are taken of.
    leaves = (stats,) if stacked or halves else (mu, logvar)
    grad_z = grad_kl = None
    if mode.startswith("fwd+bwd"):
        for t in leaves:
            t.requires_grad_()
        grad_z = torch.randn(shape, device=DEVICE, generator=gen).to(dtype)
        grad_kl = torch.randn(shape[:-1], device=DEVICE, generator=gen).to(dtype)

    def inputs():
        if stacked:
            return (stats,)
        return stats.chunk(2, dim=-1) if halves else (mu, logvar)

    def step_of(fn):
        def forward():
            with torch.no_grad():
                return fn(*inputs())

        def forward_backward():
            z, kl = fn(*inputs())
            return torch.autograd.grad((z, kl), leaves, (grad_z, grad_kl))

        return forward if grad_z is None else forward_backward

    steps = {}
    for provider in PROVIDERS:
        fn = provider_fn(provider, stacked)
        check(provider, of_halves(fn) if stacked else fn, mu, logvar, grad_z, grad_kl)
        steps[provider] = step_of(fn)
    nbytes = floor_bytes(shape, dtype, mode)
    steps["copy"] = copy_of(nbytes, DEVICE)
    for provider, timing in measure_side_by_side(steps, DEVICE, quick).items():
        record(row(OP, provider, mode, shape, dtype, DEVICE, timing, nbytes))
