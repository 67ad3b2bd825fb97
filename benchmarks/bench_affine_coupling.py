"""Affine coupling: fused kernel vs eager reference vs torch.compile(reference), and a whole
RealNVP training step with fused vs reference couplings.

Inputs are images with a checkerboard mask (computed from indices by the kernel, read by the
references) and the RealNVP scale function ``tanh``; also with a channel mask (modes "... (channel
mask)"), and on inputs stored channels-last (modes "... (channels-last)": the kernels run on their
NHWC views, reading the permuted mask, and y stays channels-last, as the references keep it), and
with log_scale and shift the halves of one conditioner output (mode "fwd+bwd (stacked)", and
"fwd+bwd (stacked, channels-last)" with every tensor stored channels-last: the kernels read each
pixel's C log_scales then C shifts in place, as runs).
On the CPU the channel mask runs as two spans (one kept, one transformed) and the checkerboard
as element pairs, both computing the scale function for the transformed half only (NOTES.md:
"checkerboard pairs as words"). The CUDA kernel tests each element's mask in one loop
for both, so there the channel mask's forward (pygen and compile only) is a diagnostic: the same
loop without the checkerboard's two integer divisions per group, and without the kept half's
log_scale and shift loads (NOTES.md: the bf16 kernel at ~50 % of copy).
Bytes (benchmarks/floors.py): forward and reverse read x, log_scale, shift and write y (4 tensor
passes); forward+backward adds reading grad_y, x, log_scale and writing the three gradients (10);
a channel mask skips the kept half's log_scale and shift (forward) and x and log_scale
(backward): 3 and 8. Before timing, pygen and compile are checked against the float32 reference;
then a case's providers are timed side by side (``benchmarks.common.measure_side_by_side``),
with a copy of the case's floor bytes (provider ``copy``): its own ceiling.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from benchmarks import floors
from benchmarks.common import (
    adam_step,
    check_close,
    compile_reference,
    copy_of,
    device_under_test,
    flow_nll,
    measure_side_by_side,
    row,
)
from pygen.models import RealNVP
from pygen.ops import (
    affine_coupling,
    affine_coupling_stacked,
    channel_mask,
    checkerboard_mask,
    detect_mask_kind,
    reference,
)

OP = "affine_coupling"
DEVICE = device_under_test()
CASES = (
    [((256, 48, 64, 64), torch.float32), ((256, 48, 64, 64), torch.bfloat16)]
    if DEVICE.type == "cuda"
    else [
        ((256, 12, 32, 32), torch.float32),
        ((256, 12, 32, 32), torch.bfloat16),
        ((4096, 1024), torch.float32),
    ]
)
# RealNVP training step: (batch, C, H, W) images, conditioner width.
STEP_CASE = ((256, 3, 32, 32), 64) if DEVICE.type == "cuda" else ((64, 3, 16, 16), 16)
SCALE_FN = "tanh"
MASKS = {"checkerboard": checkerboard_mask, "channel": channel_mask}
_compiled: dict[str, Callable] = {}


def provider_fn(provider: str):
    if provider == "pygen":
        return affine_coupling
    if provider == "eager":
        return reference.affine_coupling
    if "fn" not in _compiled:
        _compiled["fn"] = compile_reference(reference.affine_coupling)
    return _compiled["fn"]


def floor_bytes(shape, dtype, mode: str, mask_name: str = "checkerboard") -> int:
    """Bytes the op must move (benchmarks.floors.affine_coupling_bytes)."""
    return floors.affine_coupling_bytes(shape, str(dtype).removeprefix("torch."), mode, mask_name)


def expected(x, log_scale, shift, mask, mode, grad_y=None, grad_logdet=None):
    """The reference's result of the timed step in float32: (y, logdet), or the gradients of
    (x, log_scale, shift)."""
    wide = [t.detach().float().requires_grad_(mode == "fwd+bwd") for t in (x, log_scale, shift)]
    wide_x, wide_log_scale, wide_shift = wide
    with torch.set_grad_enabled(mode == "fwd+bwd"):
        y, logdet = reference.affine_coupling(
            wide_x, wide_log_scale, wide_shift, mask, scale_fn=SCALE_FN, reverse=mode == "reverse"
        )
        if mode != "fwd+bwd":
            return y, logdet
        return torch.autograd.grad((y, logdet), wide, (grad_y.float(), grad_logdet.float()))


def make_inputs(shape, dtype, gen: torch.Generator, mask_name: str = "checkerboard"):
    """(x, log_scale, shift, mask, mask kind) of the benchmark case on DEVICE."""
    x, log_scale, shift = (
        torch.randn(shape, device=DEVICE, generator=gen).to(dtype) for _ in range(3)
    )
    mask = MASKS[mask_name](shape[1:], device=DEVICE)
    return x, log_scale, shift, mask, detect_mask_kind(mask, shape)


PROVIDERS = ("pygen", "eager", "compile")


@pytest.mark.parametrize("variant", ["checkerboard", "channel mask", "channels-last"])
@pytest.mark.parametrize("mode", ["fwd", "reverse", "fwd+bwd"])
@pytest.mark.parametrize(("shape", "dtype"), CASES, ids=lambda c: str(c))
def test_affine_coupling(record, quick, shape, dtype, mode, variant):
    if variant != "checkerboard" and mode == "reverse":
        pytest.skip("channel masks and channels-last: forward and backward")
    if variant == "channels-last" and len(shape) != 4:
        pytest.skip("channels-last: images")
    providers: tuple[str, ...] = PROVIDERS
    if variant == "channel mask" and DEVICE.type == "cuda":
        if mode != "fwd":
            pytest.skip("channel masks on a GPU: the forward's diagnostic rows only")
        providers = ("pygen", "compile")
    mask_name = "channel" if variant == "channel mask" else "checkerboard"
    layout = torch.channels_last if variant == "channels-last" else torch.contiguous_format
    gen = torch.Generator(DEVICE).manual_seed(0)
    x, log_scale, shift, mask, kind = make_inputs(shape, dtype, gen, mask_name)
    x, log_scale, shift = (t.contiguous(memory_format=layout) for t in (x, log_scale, shift))
    grads: tuple[torch.Tensor, ...] = ()
    if mode == "fwd+bwd":
        x.requires_grad_()
        log_scale.requires_grad_()
        shift.requires_grad_()
        grad_y = torch.randn(shape, device=DEVICE, generator=gen).to(dtype)
        grads = (
            grad_y.contiguous(memory_format=layout),
            torch.randn(shape[0], device=DEVICE, generator=gen),
        )

    def step_of(fn):
        def call(reverse=False):
            return fn(x, log_scale, shift, mask, scale_fn=SCALE_FN, reverse=reverse, mask_kind=kind)

        def forward():
            with torch.no_grad():
                return call(reverse=mode == "reverse")

        def forward_backward():
            y, logdet = call()
            return torch.autograd.grad((y, logdet), (x, log_scale, shift), grads)

        return forward if mode != "fwd+bwd" else forward_backward

    label = mode if variant == "checkerboard" else f"{mode} ({variant})"
    steps = {provider: step_of(provider_fn(provider)) for provider in providers}
    names = ("grad_x", "grad_log_scale", "grad_shift") if grads else ("y", "logdet")
    want = expected(x, log_scale, shift, mask, mode, *grads)
    for provider, step in steps.items():
        if provider != "eager":  # eager is the reference itself
            for name, got, ref in zip(names, step(), want, strict=True):
                check_close(f"{provider} {label} {name}", got, ref, dtype)
    nbytes = floor_bytes(shape, dtype, mode, mask_name)
    steps["copy"] = copy_of(nbytes, DEVICE)
    for provider, timing in measure_side_by_side(steps, DEVICE, quick).items():
        record(row(OP, provider, label, shape, dtype, DEVICE, timing, nbytes))


@pytest.mark.parametrize("layout", ["contiguous", "channels-last"])
@pytest.mark.parametrize(("shape", "dtype"), CASES, ids=lambda c: str(c))
def test_affine_coupling_stacked(record, quick, shape, dtype, layout):
    """Mode "fwd+bwd (stacked)": log_scale and shift as a conditioner gives them, the halves of
    one tensor ``params`` along dim 1, and the gradient of params. ``pygen`` runs
    ``affine_coupling_stacked`` (one gradient written by the kernels), ``pygen (chunks)``
    ``affine_coupling`` on ``params.chunk(2, dim=1)`` (autograd concatenates the two halves'
    gradients), eager and compile the reference on the chunks. "fwd+bwd (stacked,
    channels-last)": x, params and grad_y stored channels-last, as a channels-last model's
    conditioner gives them (the chunks are then copied, not read in place). Same floor as
    fwd+bwd."""
    if layout == "channels-last" and len(shape) != 4:
        pytest.skip("channels-last: images")
    form = torch.channels_last if layout == "channels-last" else torch.contiguous_format
    gen = torch.Generator(DEVICE).manual_seed(0)
    x, log_scale, shift, mask, kind = make_inputs(shape, dtype, gen)
    params = torch.cat([log_scale, shift], dim=1).contiguous(memory_format=form).requires_grad_()
    x = x.contiguous(memory_format=form).requires_grad_()
    grads = (
        torch.randn(shape, device=DEVICE, generator=gen).to(dtype).contiguous(memory_format=form),
        torch.randn(shape[0], device=DEVICE, generator=gen),
    )
    settings = {"scale_fn": SCALE_FN, "mask_kind": kind}

    def step_of(coupling):
        def step():
            y, logdet = coupling(x, params)
            return torch.autograd.grad((y, logdet), (x, params), grads)

        return step

    def on_chunks(fn):
        return lambda x, params: fn(x, *params.chunk(2, dim=1), mask, **settings)

    steps = {
        "pygen": step_of(lambda x, params: affine_coupling_stacked(x, params, mask, **settings)),
        "pygen (chunks)": step_of(on_chunks(affine_coupling)),
        **{
            provider: step_of(on_chunks(provider_fn(provider))) for provider in ("eager", "compile")
        },
    }
    grad_x, grad_log_scale, grad_shift = expected(x, log_scale, shift, mask, "fwd+bwd", *grads)
    want = (grad_x, torch.cat([grad_log_scale, grad_shift], dim=1))
    label = "fwd+bwd" + (floors.STACKED if layout == "contiguous" else floors.STACKED_CHANNELS_LAST)
    for provider, step in steps.items():
        if provider != "eager":
            for name, got, ref in zip(("grad_x", "grad_params"), step(), want, strict=True):
                check_close(f"{provider} {label} {name}", got, ref, dtype)
    nbytes = floor_bytes(shape, dtype, "fwd+bwd")
    steps["copy"] = copy_of(nbytes, DEVICE)
    for provider, timing in measure_side_by_side(steps, DEVICE, quick).items():
        record(row(OP, provider, label, shape, dtype, DEVICE, timing, nbytes))


def test_realnvp_train_step(record, quick):
    """One Adam step of a multi-scale RealNVP: ``pygen`` with the fused couplings, ``eager`` with
    the reference couplings. Checked first: the fused model's log-density equals the reference
    model's (same weights)."""
    (batch, *image), hidden = STEP_CASE

    def realnvp(reference: bool) -> RealNVP:
        torch.manual_seed(0)
        model = RealNVP(image, n_scales=2, hidden=hidden, n_blocks=1, reference=reference)
        return model.to(DEVICE)

    x = torch.rand((batch, *image), device=DEVICE)
    models = {"pygen": realnvp(False), "eager": realnvp(True)}
    with torch.no_grad():
        want = models["eager"].log_prob(x)
        check_close("RealNVP log_prob", models["pygen"].log_prob(x), want, torch.float32)
    steps = {
        provider: adam_step(model, flow_nll(model, x), lr=1e-4)
        for provider, model in models.items()
    }
    shape = (batch, *image)
    for provider, timing in measure_side_by_side(steps, DEVICE, quick).items():
        record(row(OP, provider, "realnvp_train_step", shape, torch.float32, DEVICE, timing, 0))
