"""pygen.ops.affine_coupling / affine_coupling_stacked / additive_coupling against their reference
twins: values, gradients, gradcheck, opcheck, torch.compile, mask detection and errors."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import FLOAT_DTYPES, assert_close, nested_derivatives, requires_cuda

from pygen.ops import (
    MaskKind,
    additive_coupling,
    affine_coupling,
    affine_coupling_stacked,
    channel_mask,
    checkerboard_mask,
    detect_mask_kind,
    reference,
)

SCALE_FNS = ["exp", "tanh", "atan", "sigmoid", "additive"]
MASKS = ["checkerboard0", "checkerboard1", "channel0", "channel1", "random", "per_sample"]
# vectors, images, images with odd sizes (checkerboard lines not a multiple of the vector width);
# 4-wide lines in rows of 32: one 8-element CUDA group (16-bit) spans two lines; the CPU kernel
# runs checkerboards of even width as element pairs (270 pairs a sample in the last shape: more
# than one 256-pair chunk of logs) and of odd width (5, 7, 17) as a read pattern
SHAPES = [(3, 8), (2, 4, 6, 8), (2, 2, 4, 4), (2, 3, 5, 7), (2, 2, 3, 17), (2, 3, 10, 18)]
fused = torch.ops.pygen.affine_coupling


def make_mask(name: str, shape, device) -> torch.Tensor:
    sample = shape[1:]
    gen = torch.Generator().manual_seed(5)
    if name.startswith("checkerboard"):
        return checkerboard_mask(sample, int(name[-1]), device=device)
    if name.startswith("channel"):
        return channel_mask(sample, int(name[-1]), device=device)
    if name == "random":  # a shared (1, ...) mask of no known pattern, as bool
        return (torch.rand((1, *sample), generator=gen) < 0.5).to(device)
    return (torch.rand(shape, generator=gen) < 0.5).float().to(device)  # one mask per sample


def make_inputs(shape, dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    log_scale = torch.randn(shape, generator=gen, dtype=torch.float64)
    shift = torch.randn(shape, generator=gen, dtype=torch.float64)
    return [t.to(device=device, dtype=dtype) for t in (x, log_scale, shift)]


def run(ops, scale_fn, x, log_scale, shift, mask, reverse):
    if scale_fn == "additive":
        return ops.additive_coupling(x, shift, mask, reverse=reverse)
    return ops.affine_coupling(x, log_scale, shift, mask, scale_fn=scale_fn, reverse=reverse)


class Fused:  # the public fused ops under the names the reference module uses
    affine_coupling = staticmethod(affine_coupling)
    additive_coupling = staticmethod(additive_coupling)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("mask_name", MASKS)
@pytest.mark.parametrize("scale_fn", SCALE_FNS)
@pytest.mark.parametrize("shape", SHAPES)
def test_values_match_reference(device, shape, scale_fn, mask_name, dtype, reverse):
    x, log_scale, shift = make_inputs(shape, dtype, device)
    mask = make_mask(mask_name, shape, device)
    y, logdet = run(Fused, scale_fn, x, log_scale, shift, mask, reverse)
    y_ref, logdet_ref = run(
        reference, scale_fn, x.double(), log_scale.double(), shift.double(), mask, reverse
    )
    assert y.dtype == dtype and y.shape == x.shape
    assert logdet.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert_close(y, y_ref, dtype, scale=4.0)  # |y| reaches ~e^3 with scale_fn "exp"
    row_len = x[0].numel()
    assert_close(logdet, logdet_ref, logdet.dtype, scale=row_len**0.5)  # float32 for 16-bit x
    kept = mask.expand(shape).bool()
    assert torch.equal(y[kept], x[kept])  # pass-through is exact


@pytest.mark.parametrize("used", ["both", "y", "logdet"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("mask_name", ["checkerboard1", "channel0", "per_sample"])
@pytest.mark.parametrize("scale_fn", SCALE_FNS)
# width 17: a read pattern; 6: pairs
@pytest.mark.parametrize("shape", [(3, 8), (2, 3, 5, 7), (2, 2, 3, 17), (2, 3, 4, 6)])
def test_gradients_match_reference(device, shape, scale_fn, mask_name, dtype, reverse, used):
    if scale_fn == "additive" and used != "y":
        pytest.skip("the additive coupling's logdet is a constant")
    x, log_scale, shift = make_inputs(shape, dtype, device)
    mask = make_mask(mask_name, shape, device)
    gen = torch.Generator().manual_seed(1)
    grad_y = torch.randn(shape, generator=gen, dtype=torch.float64).to(device)
    grad_logdet = torch.randn(shape[0], generator=gen, dtype=torch.float64).to(device)

    def grads(ops, x, log_scale, shift):
        inputs = [t.detach().requires_grad_() for t in (x, log_scale, shift)]
        y, logdet = run(ops, scale_fn, *inputs, mask, reverse)
        outputs = {"both": (y, logdet), "y": (y,), "logdet": (logdet,)}[used]
        seeds = {"both": (grad_y, grad_logdet), "y": (grad_y,), "logdet": (grad_logdet,)}[used]
        seeds = tuple(g.to(o.dtype) for g, o in zip(seeds, outputs, strict=True))
        return torch.autograd.grad(outputs, inputs, seeds, allow_unused=True)

    got = grads(Fused, x, log_scale, shift)
    want = grads(reference, x.double(), log_scale.double(), shift.double())
    for g, w in zip(got, want, strict=True):
        if w is None:
            assert g is None or not g.any()
        else:
            assert_close(g, w, dtype, scale=8.0)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mask_name", ["checkerboard0", "channel1", "per_sample"])
@pytest.mark.parametrize("scale_fn", SCALE_FNS)
def test_gradcheck_float64(device, scale_fn, mask_name, reverse):
    shape = (2, 2, 3, 3)
    x, log_scale, shift = (t.requires_grad_() for t in make_inputs(shape, torch.float64, device))
    mask = make_mask(mask_name, shape, device)
    if scale_fn == "additive":
        fn = lambda x, s: additive_coupling(x, s, mask, reverse=reverse)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, shift))
    else:
        fn = lambda x, ls, s: affine_coupling(x, ls, s, mask, scale_fn=scale_fn, reverse=reverse)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, log_scale, shift))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("scale_fn", SCALE_FNS)
def test_gradgradcheck_float64(device, scale_fn, reverse):
    # Second derivatives come from the twin's arithmetic (pygen/ops/_higher_order.py).
    shape = (2, 2, 3, 3)
    x, log_scale, shift = (t.requires_grad_() for t in make_inputs(shape, torch.float64, device))
    mask = make_mask("checkerboard1", shape, device)

    def fn(*args):  # (x, shift) or (x, log_scale, shift)
        log_scale = args[1] if len(args) == 3 else None
        return run(Fused, scale_fn, args[0], log_scale, args[-1], mask, reverse)

    inputs = (x, shift) if scale_fn == "additive" else (x, log_scale, shift)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_a_mask_that_requires_grad_gets_none_at_any_order(device):
    # "The mask receives no gradient": not at first order, nor through a gradient penalty.
    shape = (2, 6)
    x, log_scale, shift = (t.requires_grad_() for t in make_inputs(shape, torch.float64, device))
    mask = make_mask("checkerboard1", shape, device).to(torch.float64).requires_grad_()
    y, logdet = affine_coupling(x, log_scale, shift, mask, scale_fn="tanh")
    assert torch.autograd.grad(y.sum(), mask, allow_unused=True, retain_graph=True)[0] is None
    loss = y.square().sum() + logdet.sum()
    grad_x, grad_log_scale = torch.autograd.grad(loss, (x, log_scale), create_graph=True)
    penalty = grad_x.square().sum() + grad_log_scale.square().sum()
    assert torch.autograd.grad(penalty, mask, allow_unused=True)[0] is None


@pytest.mark.parametrize("scale_fn", ["tanh", "additive"])
def test_derivatives_to_third_order_match_the_twin(device, scale_fn):
    """A coupling layer's arguments derive from its input (log_scale and shift from the masked
    x), and the cotangents depend on the inputs: each order must be the partial derivatives,
    chained as the twin's are."""
    shape = (2, 6)
    x, w, _ = make_inputs(shape, torch.float64, device)
    mask = make_mask("checkerboard0", shape, device)

    def run_twice(ops):
        def fn(x, w):
            held = x * mask
            log_scale, shift = (held.roll(1, -1) * w).tanh(), held.flip(-1) * w
            return run(ops, scale_fn, x, log_scale, shift, mask, False)

        return nested_derivatives(fn, [t.detach().requires_grad_() for t in (x, w)])

    for got, want in zip(run_twice(Fused), run_twice(reference), strict=True):
        for g, expected in zip(got, want, strict=True):
            torch.testing.assert_close(g, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("scale_fn", ["sigmoid", "additive"])
def test_torch_func_transforms_run_the_twin(device, scale_fn):
    """jacrev, and per-sample gradients by vmap of grad (which cannot run the C++ autograd) give
    what autograd gives through the fused op."""
    shape = (3, 2, 2, 3)
    x, log_scale, shift = make_inputs(shape, torch.float64, device)
    mask = make_mask("checkerboard1", shape, device)

    def loss(x, log_scale, shift):  # of one sample
        y, logdet = run(Fused, scale_fn, x[None], log_scale[None], shift[None], mask, False)
        return logdet.sum() + (y**2).sum()

    per_sample = torch.func.vmap(torch.func.grad(loss, argnums=(0, 1, 2)))(x, log_scale, shift)
    leaves = [t.detach().requires_grad_() for t in (x, log_scale, shift)]
    y, logdet = run(Fused, scale_fn, *leaves, mask, False)
    expected = torch.autograd.grad(
        logdet.sum() + (y**2).sum(), leaves, allow_unused=True, materialize_grads=True
    )
    for got, want in zip(per_sample, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)

    def y_of(x):
        return run(Fused, scale_fn, x, log_scale, shift, mask, False)[0]

    jacobian = torch.func.jacrev(y_of)(x)
    torch.testing.assert_close(jacobian, torch.autograd.functional.jacobian(y_of, x))


def test_torch_func_transforms_run_the_stacked_twin(device):
    shape = (3, 2, 2, 3)
    x, log_scale, shift = make_inputs(shape, torch.float64, device)
    params = torch.cat([log_scale, shift], dim=1)
    mask = make_mask("checkerboard1", shape, device)

    def loss(x, params):  # of one sample
        y, logdet = affine_coupling_stacked(x[None], params[None], mask, scale_fn="tanh")
        return logdet.sum() + (y**2).sum()

    per_sample = torch.func.vmap(torch.func.grad(loss, argnums=(0, 1)))(x, params)
    leaves = [t.detach().requires_grad_() for t in (x, params)]
    y, logdet = affine_coupling_stacked(*leaves, mask, scale_fn="tanh")
    expected = torch.autograd.grad(logdet.sum() + (y**2).sum(), leaves)
    for got, want in zip(per_sample, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_autocast_promotes_to_the_widest_dtype(device):
    """In an autocast region the bfloat16 conditioner outputs meet a float32 x: the op runs in
    float32 (as the twin's type promotion would), and all-bfloat16 arguments stay bfloat16."""
    shape = (2, 2, 3, 4)
    x, log_scale, shift = make_inputs(shape, torch.float32, device)
    mask = make_mask("checkerboard0", shape, device)
    half = [t.bfloat16().requires_grad_() for t in (log_scale, shift)]
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        y, logdet = affine_coupling(x, *half, mask, scale_fn="tanh")
        y16, _ = affine_coupling(x.bfloat16(), *half, mask, scale_fn="tanh")
        z, _ = additive_coupling(x, half[1], mask)
    expected = affine_coupling(x, *(t.float() for t in half), mask, scale_fn="tanh")
    assert y.dtype == torch.float32 and y16.dtype == torch.bfloat16
    torch.testing.assert_close((y, logdet), expected, rtol=0, atol=0)
    torch.testing.assert_close(y16, affine_coupling(x.bfloat16(), *half, mask, scale_fn="tanh")[0])
    torch.testing.assert_close(z, additive_coupling(x, half[1].float(), mask)[0], rtol=0, atol=0)
    (y.sum() + logdet.sum()).backward()
    assert all(t.grad is not None and t.grad.dtype == torch.bfloat16 for t in half)
    params = torch.cat(half, dim=1).detach().requires_grad_()
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        y, logdet = affine_coupling_stacked(x, params, mask, scale_fn="tanh")
    torch.testing.assert_close((y, logdet), expected, rtol=0, atol=0)
    (y.sum() + logdet.sum()).backward()
    assert params.grad is not None and params.grad.dtype == torch.bfloat16


def sample_inputs(device):
    shape = (3, 4, 2, 4)
    for kind, mask in [
        (MaskKind.CHECKERBOARD_ODD, checkerboard_mask(shape[1:], 1, device=device)),
        (MaskKind.CHANNEL_FIRST, channel_mask(shape[1:], 0, device=device)),
        (MaskKind.READ, make_mask("per_sample", shape, device)),
    ]:
        for grad in (False, True):
            x, log_scale, shift = make_inputs(shape, torch.float32, device)
            for t in (x, log_scale, shift):
                t.requires_grad_(grad)
            yield (x, log_scale, shift, mask, int(kind), "tanh", 1.5, False)
            yield (x, log_scale, shift, mask, int(kind), "sigmoid", None, True)
            yield (x, None, shift, mask, int(kind), "exp", None, False)


def test_opcheck(device):
    for args in sample_inputs(device):
        torch.library.opcheck(fused, args)
    x, log_scale, shift = make_inputs((3, 8), torch.float32, device)
    mask = channel_mask((8,), 1, device=device)
    grad_y, grad_logdet = torch.randn_like(x), torch.randn(3, device=device)
    backward = torch.ops.pygen.affine_coupling_backward
    torch.library.opcheck(
        backward, (grad_y, grad_logdet, x, log_scale, shift, mask, 4, "atan", 3.0, True)
    )
    torch.library.opcheck(
        backward, (None, grad_logdet, x, None, shift, mask, 0, "exp", None, False)
    )
    # log_scale and shift read in place (chunks of one tensor): the gradients stay contiguous.
    log_scale, shift = torch.randn(3, 16, device=device).chunk(2, dim=1)
    torch.library.opcheck(fused, (x, log_scale, shift, mask, 4, "tanh", None, False))
    torch.library.opcheck(
        backward, (grad_y, grad_logdet, x, log_scale, shift, mask, 4, "tanh", None, False)
    )
    # A channels-last x: y and the gradients channels-last, as the fakes say.
    x, log_scale, shift = (
        t.contiguous(memory_format=torch.channels_last)
        for t in make_inputs((2, 3, 4, 5), torch.float32, device)
    )
    mask, grad_y = checkerboard_mask((3, 4, 5), device=device), torch.randn_like(x)
    torch.library.opcheck(fused, (x, log_scale, shift, mask, 1, "exp", None, False))
    torch.library.opcheck(
        backward, (grad_y, grad_logdet[:2], x, log_scale, shift, mask, 0, "exp", None, True)
    )
    torch.library.opcheck(backward, (grad_y, None, x, None, shift, mask, 0, "exp", None, False))


def test_opcheck_stacked(device):
    stacked, stacked_backward = (
        torch.ops.pygen.affine_coupling_stacked,
        torch.ops.pygen.affine_coupling_stacked_backward,
    )
    for x, log_scale, shift, mask, kind, scale_fn, clamp, reverse in sample_inputs(device):
        if log_scale is None:
            continue
        params = torch.cat([log_scale, shift], dim=1).detach().requires_grad_(x.requires_grad)
        torch.library.opcheck(stacked, (x, params, mask, kind, scale_fn, clamp, reverse))
    x = torch.randn(3, 8, device=device)
    params = torch.randn(3, 24, device=device)[:, :16]  # rows apart: read in place
    mask, grad_y, grad_logdet = channel_mask((8,), 1, device=device), torch.randn_like(x), None
    torch.library.opcheck(stacked, (x, params, mask, 4, "atan", 3.0, True))
    torch.library.opcheck(
        stacked_backward, (grad_y, grad_logdet, x, params, mask, 4, "atan", 3.0, True)
    )
    # A channels-last x: y and the gradients channels-last, as the fakes say.
    cl = torch.channels_last
    x = torch.randn(2, 3, 4, 5, device=device).contiguous(memory_format=cl).requires_grad_()
    params = torch.randn(2, 6, 4, 5, device=device).contiguous(memory_format=cl).requires_grad_()
    mask, grad_logdet = checkerboard_mask((3, 4, 5), device=device), torch.randn(2, device=device)
    torch.library.opcheck(stacked, (x, params, mask, 0, "exp", None, False))
    torch.library.opcheck(
        stacked_backward, (None, grad_logdet, x, params, mask, 1, "exp", None, False)
    )


@pytest.mark.parametrize(
    "layout", ["contiguous", "channels_last", "chunks", "stacked", "stacked_channels_last"]
)
def test_torch_compile_matches_eager(device, layout):
    # log_scale and shift from one stacked tensor: copied apart, or read in place as chunks;
    # channels-last inputs run on NHWC views (a stacked params as runs): the compiled graph keeps
    # the eager layouts.
    shape = (8, 4, 6, 6)
    x, log_scale, shift = make_inputs(shape, torch.float32, device)
    form = torch.channels_last if layout.endswith("channels_last") else torch.contiguous_format
    x = x.contiguous(memory_format=form)
    params = torch.cat([log_scale, shift], dim=1).contiguous(memory_format=form).requires_grad_()
    mask = checkerboard_mask(shape[1:], 0, device=device)
    kind = detect_mask_kind(mask, shape)

    def coupling(x, params, reverse):
        settings = {"scale_fn": "tanh", "reverse": reverse, "mask_kind": kind}
        if layout.startswith("stacked"):
            return affine_coupling_stacked(x, params, mask, **settings)
        log_scale, shift = params.chunk(2, dim=1)
        if layout != "chunks":
            log_scale, shift = (t.contiguous(memory_format=form) for t in (log_scale, shift))
        return affine_coupling(x, log_scale, shift, mask, **settings)

    def loss(x, params):
        y, logdet = coupling(x, params, False)
        back, back_logdet = coupling(y, params, True)
        value = y.square().mean() - logdet.mean() + (back - x).abs().sum() + back_logdet.mean()
        return value, y

    compiled = torch.compile(loss, fullgraph=True)
    eager_value, eager_y = loss(x, params)
    compiled_value, compiled_y = compiled(x, params)
    torch.testing.assert_close(compiled_value, eager_value)
    assert compiled_y.stride() == eager_y.stride()
    assert eager_y.is_contiguous(memory_format=form)
    torch.testing.assert_close(
        torch.autograd.grad(compiled_value, params)[0],
        torch.autograd.grad(eager_value, params)[0],
    )


@pytest.mark.parametrize("shape", [(5, 6), (2, 4, 6, 6), (2, 3, 5, 7)])
def test_detect_mask_kind(shape):
    sample = shape[1:]
    for parity in (0, 1):
        checker, channel = checkerboard_mask(sample, parity), channel_mask(sample, parity)
        assert detect_mask_kind(checker, shape) == MaskKind.CHECKERBOARD_EVEN + parity
        assert detect_mask_kind(channel[None].bool(), shape) == MaskKind.CHANNEL_FIRST + parity
    assert detect_mask_kind(torch.ones(sample), shape) == MaskKind.READ
    assert detect_mask_kind(checkerboard_mask(sample, 0).expand(shape), shape) == MaskKind.READ
    if len(shape) == 4:  # a (C, 1, 1) channel mask broadcasts
        assert detect_mask_kind(channel[:, :1, :1], shape) == MaskKind.CHANNEL_SECOND


def test_detected_and_read_masks_agree(device):
    """Computing a mask from indices equals reading the same mask."""
    shape = (3, 4, 5, 6)
    x, log_scale, shift = make_inputs(shape, torch.float32, device)
    for mask in (
        checkerboard_mask(shape[1:], 1, device=device),
        channel_mask(shape[1:], 0, device=device),
    ):
        kind = detect_mask_kind(mask, shape)
        assert kind != MaskKind.READ
        a = affine_coupling(x, log_scale, shift, mask, scale_fn="atan", mask_kind=kind)
        b = affine_coupling(x, log_scale, shift, mask, scale_fn="atan", mask_kind=MaskKind.READ)
        assert torch.equal(a[0], b[0])
        torch.testing.assert_close(a[1], b[1])  # the logdet sums run in another order


def test_non_contiguous_inputs(device):
    x, log_scale, shift = make_inputs((6, 4, 8, 5), torch.float32, device)
    mask = checkerboard_mask((4, 5, 8), 0, device=device)
    args = [t.transpose(2, 3) for t in (x, log_scale, shift)]
    y, logdet = affine_coupling(*args, mask, scale_fn="tanh")
    y_ref, logdet_ref = reference.affine_coupling(*args, mask, scale_fn="tanh")
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(logdet, logdet_ref)


def rows_apart(t: torch.Tensor, layout: str) -> torch.Tensor:
    """t's values with its samples laid out as ``layout`` says."""
    if layout == "chunk":  # the second half of a stacked conditioner output, as chunk() gives it
        return torch.cat([torch.full_like(t, float("nan")), t], dim=1).chunk(2, dim=1)[1]
    if layout == "batch_slice":  # every other sample of a batch twice as long
        return torch.stack([t, torch.full_like(t, float("nan"))], dim=1).flatten(0, 1)[::2]
    if layout == "expanded":  # one sample read by every row (stride 0)
        return t[:1].expand_as(t)
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)  # samples not contiguous: copied


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("scale_fn", ["tanh", "additive"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["chunk", "batch_slice", "expanded", "transposed"])
def test_log_scale_and_shift_rows_apart(device, layout, dtype, scale_fn, reverse):
    # The kernels read log_scale and shift rows where they lie: the contiguous inputs' results.
    shape = (3, 4, 6, 8)
    x, log_scale, shift = make_inputs(shape, dtype, device)
    if layout == "expanded":
        log_scale, shift = log_scale[:1].expand(shape), shift[:1].expand(shape)
    mask = make_mask("checkerboard1", shape, device)
    grad_y = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    results = []
    for apart in (False, True):
        inputs = [x.clone(), log_scale.contiguous(), shift.contiguous()]
        if apart:
            inputs[1:] = [rows_apart(t, layout) for t in inputs[1:]]
        inputs = [t.requires_grad_() for t in inputs]
        y, logdet = run(Fused, scale_fn, *inputs, mask, reverse)
        used = inputs[::2] if scale_fn == "additive" else inputs
        outputs = (y,) if scale_fn == "additive" else (y, logdet)
        grad_outputs = (grad_y, torch.ones_like(logdet))[: len(outputs)]
        results.append((y, logdet, *torch.autograd.grad(outputs, used, grad_outputs)))
    for got, want in zip(*results, strict=True):
        assert_close(got, want, want.dtype)


@pytest.mark.parametrize("scale_fn", ["tanh", "additive"])
def test_chunks_of_a_stacked_conditioner_output_are_not_copied(scale_fn):
    x, params = torch.randn(4, 3, 6, 8), torch.randn(4, 6, 6, 8, requires_grad=True)
    log_scale, shift = params.chunk(2, dim=1)
    mask, kind = checkerboard_mask((3, 6, 8)), MaskKind.CHECKERBOARD_EVEN
    grad_y, grad_logdet = torch.randn_like(x), torch.randn(4)
    with torch.profiler.profile() as prof:
        if scale_fn == "additive":
            y, _ = additive_coupling(x, shift, mask, mask_kind=kind)
            torch.autograd.backward(y, grad_y)
        else:
            y, logdet = affine_coupling(x, log_scale, shift, mask, mask_kind=kind)
            torch.autograd.backward((y, logdet), (grad_y, grad_logdet))
    ops = {event.name for event in prof.events()}
    assert "pygen::affine_coupling_backward" in ops
    assert not ops & {"aten::contiguous", "aten::clone", "aten::copy_"}


def stacked_layout(params: torch.Tensor, layout: str) -> torch.Tensor:
    """params' values laid out as ``layout`` says (a slice of a wider tensor: rows apart)."""
    if layout == "slice":  # params then NaN along dim 1, as a conditioner's first outputs
        return torch.cat([params, torch.full_like(params, float("nan"))], dim=1)[
            :, : params.shape[1]
        ]
    if layout == "transposed":  # samples not contiguous: copied
        return params.transpose(-1, -2).contiguous().transpose(-1, -2)
    return params


@pytest.mark.parametrize("layout", ["contiguous", "slice", "transposed"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("mask_name", ["checkerboard1", "channel0", "random", "per_sample"])
@pytest.mark.parametrize("scale_fn", ["exp", "tanh", "sigmoid"])
@pytest.mark.parametrize("shape", [(3, 8), (2, 3, 5, 7), (2, 3, 10, 18)])
def test_stacked_params_give_the_chunks_results(
    device, shape, scale_fn, mask_name, dtype, reverse, layout
):
    # The same kernels read the halves of params in place: the chunks' values and gradients,
    # bit for bit (one gradient of params written as two halves), and the twin's within rounding.
    x, log_scale, shift = make_inputs(shape, dtype, device)
    params = stacked_layout(torch.cat([log_scale, shift], dim=1), layout).requires_grad_()
    x.requires_grad_()
    mask = make_mask(mask_name, shape, device)
    settings = {"scale_fn": scale_fn, "reverse": reverse}
    gen = torch.Generator().manual_seed(1)
    grad_y = torch.randn(shape, generator=gen).to(device, dtype)
    grad_logdet = torch.randn(shape[0], generator=gen).to(device, reference.logdet_dtype(dtype))

    def results(fn, x, params):
        y, logdet = fn(x, params)
        return (y, logdet, *torch.autograd.grad((y, logdet), (x, params), (grad_y, grad_logdet)))

    got = results(lambda x, p: affine_coupling_stacked(x, p, mask, **settings), x, params)
    chunks = results(
        lambda x, p: affine_coupling(x, *p.chunk(2, dim=1), mask, **settings), x, params
    )
    twin = results(
        lambda x, p: reference.affine_coupling_stacked(x, p, mask, **settings),
        x.detach().double().requires_grad_(),
        params.detach().double().requires_grad_(),
    )
    assert got[3].is_contiguous()
    for g, c, w in zip(got, chunks, twin, strict=True):
        assert torch.equal(g, c)
        assert_close(g, w, dtype, scale=8.0)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("scale_fn", ["exp", "atan"])
def test_stacked_gradcheck_and_gradgradcheck_float64(device, scale_fn, reverse):
    shape = (2, 2, 3, 3)
    x, log_scale, shift = make_inputs(shape, torch.float64, device)
    x, params = x.requires_grad_(), torch.cat([log_scale, shift], dim=1).requires_grad_()
    mask = make_mask("per_sample", shape, device)

    def fn(x, params):
        return affine_coupling_stacked(x, params, mask, scale_fn=scale_fn, reverse=reverse)

    assert torch.autograd.gradcheck(fn, (x, params))
    assert torch.autograd.gradgradcheck(fn, (x, params))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_stacked_params_gradient_is_written_once_without_copies(layout):
    # The gradient of params is one kernel output: no cat of two halves (as after chunk, the
    # baseline, which shows the profiler would see one), no copy of a batch's tensor; channels-last
    # tensors too (whose mask, one sample's, is read: made uint8 in NHWC order).
    x, grad_y = (torch.randn(4, 3, 6, 8).contiguous(memory_format=layout) for _ in range(2))
    grad_logdet = torch.randn(4)
    mask, kind = checkerboard_mask((3, 6, 8)), MaskKind.CHECKERBOARD_EVEN

    def ops_run(coupling) -> dict[str, int]:
        """The ops run, each with the most elements it copied."""
        params = torch.randn(4, 6, 6, 8).contiguous(memory_format=layout).requires_grad_()
        with torch.profiler.profile(record_shapes=True) as prof:
            y, logdet = coupling(params)
            torch.autograd.backward((y, logdet), (grad_y, grad_logdet))
        assert params.grad is not None and params.grad.shape == params.shape
        assert params.grad.is_contiguous(memory_format=layout)
        ops: dict[str, int] = {}
        for event in prof.events():
            numel = math.prod(event.input_shapes[0]) if event.input_shapes else 0
            ops[event.name] = max(ops.get(event.name, 0), numel)
        return ops

    chunks = ops_run(lambda p: affine_coupling(x, *p.chunk(2, dim=1), mask, mask_kind=kind))
    assert "aten::cat" in chunks
    ops = ops_run(lambda p: affine_coupling_stacked(x, p, mask, mask_kind=kind))
    assert "pygen::affine_coupling_stacked_backward" in ops
    assert "aten::cat" not in ops
    copies = {"aten::contiguous", "aten::clone", "aten::copy_"}
    largest = 0 if layout == torch.contiguous_format else x[0].numel()
    assert all(ops[name] <= largest for name in copies & ops.keys())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mask_name", [*MASKS, "plane"])
@pytest.mark.parametrize("scale_fn", ["tanh", "additive"])
def test_channels_last_inputs_keep_their_layout(device, scale_fn, mask_name, dtype):
    # They run on their NHWC views with the permuted mask read: y, logdet and the gradients as
    # the contiguous inputs give them, in the inputs' layout.
    shape = (2, 3, 5, 6)
    x, log_scale, shift = make_inputs(shape, dtype, device)
    if mask_name == "plane":  # an (H, W) mask
        mask = checkerboard_mask(shape[2:], 1, device=device)
    else:
        mask = make_mask(mask_name, shape, device)
    grad_y = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        inputs = [
            t.contiguous(memory_format=layout).requires_grad_() for t in (x, log_scale, shift)
        ]
        y, logdet = run(Fused, scale_fn, *inputs, mask, False)
        used = inputs[::2] if scale_fn == "additive" else inputs  # additive: no log_scale
        outputs = (y,) if scale_fn == "additive" else (y, logdet)
        grad_outputs = (grad_y.contiguous(memory_format=layout), torch.ones_like(logdet))
        grads = torch.autograd.grad(outputs, used, grad_outputs[: len(outputs)])
        results.append((y, logdet, grads))
    (y, logdet, grads), (y_cl, logdet_cl, grads_cl) = results
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    assert all(g.is_contiguous(memory_format=torch.channels_last) for g in grads_cl)
    assert_close(y_cl, y, dtype)
    assert_close(
        logdet_cl, logdet, logdet.dtype, scale=x[0].numel() ** 0.5
    )  # summed in another order
    for got, want in zip(grads_cl, grads, strict=True):
        assert_close(got, want, dtype)


@pytest.mark.parametrize("params_layout", ["channels_last", "contiguous"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("mask_name", ["checkerboard1", "channel0", "per_sample"])
@pytest.mark.parametrize("shape", [(2, 3, 5, 6), (2, 5, 12, 13), (3, 4, 6, 10)])
def test_stacked_params_of_a_channels_last_x(
    device, shape, mask_name, dtype, reverse, params_layout
):
    # The kernels read each pixel's C log_scales then C shifts in place as runs (of 5: across the
    # CPU's chunks of 512 elements in the second shape; of 4: the CUDA vector path in the third),
    # params of another layout made channels-last first. y and the gradients are the contiguous
    # inputs' in x's layout (params' gradient too), and the twin's within rounding.
    x, log_scale, shift = make_inputs(shape, dtype, device)
    params = torch.cat([log_scale, shift], dim=1)
    mask = make_mask(mask_name, shape, device)
    settings = {"scale_fn": "tanh", "reverse": reverse}
    gen = torch.Generator().manual_seed(1)
    grad_y = torch.randn(shape, generator=gen).to(device, dtype)
    grad_logdet = torch.randn(shape[0], generator=gen).to(device, reference.logdet_dtype(dtype))

    def results(fn, x, params):
        x, params = x.requires_grad_(), params.requires_grad_()
        y, logdet = fn(x, params, mask, **settings)
        grad_y_like_y = torch.empty_like(y).copy_(grad_y)  # in y's layout, as a next layer's
        grads = torch.autograd.grad((y, logdet), (x, params), (grad_y_like_y, grad_logdet))
        return y, logdet, *grads

    cl = torch.channels_last
    params_form = cl if params_layout == "channels_last" else torch.contiguous_format
    got = results(
        affine_coupling_stacked,
        x.contiguous(memory_format=cl),
        params.contiguous(memory_format=params_form),
    )
    want = results(affine_coupling_stacked, x.clone(), params.clone())
    twin = results(reference.affine_coupling_stacked, x.double(), params.double())
    y, _, grad_x, grad_params = got
    assert all(t.is_contiguous(memory_format=cl) for t in (y, grad_x, grad_params))
    for g, w, t in zip(got, want, twin, strict=True):
        scale = 4.0 if g.dim() == 1 else 1.0  # logdet: summed in another order
        assert_close(g, w.to(g.dtype), dtype, scale=scale)
        assert_close(g, t, dtype, scale=8.0)


def test_a_channels_last_x_keeps_its_layout_beside_other_layouts(device):
    shape = (2, 3, 5, 6)
    x, log_scale, shift = make_inputs(shape, torch.float64, device)
    mask = make_mask("checkerboard0", shape, device)
    want = reference.affine_coupling(x, log_scale, shift, mask)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    stacked = torch.cat([log_scale, shift], dim=1)  # NCHW chunks
    for others in ((log_scale, shift), stacked.chunk(2, dim=1)):
        y, logdet = affine_coupling(x_cl, *others, mask)
        assert y.is_contiguous(memory_format=torch.channels_last)
        assert_close(y, want[0], torch.float64)
        assert_close(logdet, want[1], torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_inputs_at_an_odd_element_offset_give_the_same_bits(device, dtype):
    # the CPU kernel loads checkerboard pairs as words: here off their natural alignment
    shape = (3, 2, 4, 6)
    gen = torch.Generator().manual_seed(0)
    offset = [
        torch.randn(1 + 144, generator=gen).to(device, dtype)[1:].view(shape) for _ in range(4)
    ]
    aligned = [t.clone() for t in offset]
    assert offset[0].data_ptr() % (2 * offset[0].element_size()) != 0
    kind = int(MaskKind.CHECKERBOARD_ODD)
    mask = checkerboard_mask(shape[1:], 1, device=device)
    ones = torch.ones(3, device=device)
    results = []
    for x, log_scale, shift, grad_y in (offset, aligned):
        y, logdet = fused(x, log_scale, shift, mask, kind, "tanh", None, False)
        grads = torch.ops.pygen.affine_coupling_backward(
            grad_y, ones, x, log_scale, shift, mask, kind, "tanh", None, False
        )
        results.append((y, logdet, *grads))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_empty_batch(device):
    x = torch.zeros(0, 6, device=device, requires_grad=True)
    mask = checkerboard_mask((6,), device=device)
    params = torch.zeros(0, 12, device=device, requires_grad=True)
    for y, logdet in (affine_coupling(x, x, x, mask), affine_coupling_stacked(x, params, mask)):
        assert y.shape == (0, 6) and logdet.shape == (0,)
        (y.sum() + logdet.sum()).backward()
    assert x.grad.shape == (0, 6) and params.grad.shape == (0, 12)


# exp(+-s) overflows: with the gradient of logdet alone, y's terms (zero gradient times an infinite
# factor) must vanish, as autograd leaves them out of the twin's gradients.
@pytest.mark.parametrize(
    ("scale_fn", "value", "reverse"),
    [("exp", 90.0, False), ("exp", -90.0, True), ("sigmoid", -95.0, True)],
)
def test_overflowing_scale_leaves_the_unused_output_out_of_the_gradients(
    device, scale_fn, value, reverse
):
    x = torch.ones(2, 4, device=device, requires_grad=True)
    log_scale = torch.full((2, 4), value, device=device, requires_grad=True)
    mask = checkerboard_mask((4,), device=device)
    grads = []
    for ops in (Fused, reference):
        _, logdet = ops.affine_coupling(
            x, log_scale, torch.zeros_like(x), mask, scale_fn=scale_fn, reverse=reverse
        )
        grads.append(torch.autograd.grad(logdet.sum(), (x, log_scale), materialize_grads=True))
    for got, want in zip(*grads, strict=True):
        assert torch.equal(got, want)


def test_exp_scale_is_finite_up_to_the_float32_limit(device):
    x = torch.ones(1, 3, device=device)
    # exp(88.7228) is the last finite float32 exponential
    log_scale = torch.tensor([[-87.0, 88.71, 88.73]], device=device)
    mask = torch.zeros(3, device=device)
    y, _ = affine_coupling(x, log_scale, torch.zeros_like(x), mask, scale_fn="exp")
    y_ref, _ = reference.affine_coupling(x, log_scale, torch.zeros_like(x), mask, scale_fn="exp")
    torch.testing.assert_close(y, y_ref)
    assert y[0, 1].isfinite() and y[0, 2].isinf()


def test_tanh_scale_is_accurate_over_the_whole_range(device):
    # s = tanh(log_scale) (clamp 1) through y = exp(s) (x = 1, no shift), against float64: the CPU
    # tanh is a rational approximation on a clamped argument (within 6.2 ulp), CUDA's tanhf.
    log_scale = torch.cat([torch.linspace(-30, 30, 60001), torch.logspace(-30, 1, 301)])[None]
    x, shift, mask = torch.ones_like(log_scale), torch.zeros_like(log_scale), torch.zeros(1)
    args = [t.to(device) for t in (x, log_scale, shift, mask)]
    y, _ = affine_coupling(*args, scale_fn="tanh", clamp=1.0)
    want = torch.tanh(log_scale.double()).exp()
    torch.testing.assert_close(y.cpu().double(), want, rtol=1e-6, atol=0)
    assert y.max() <= math.e and y.min() >= 1 / math.e  # |tanh| <= 1 everywhere


def test_round_trip_is_exact_on_kept_positions_and_close_elsewhere(device):
    x, log_scale, shift = make_inputs((4, 3, 8, 8), torch.float32, device)
    mask = checkerboard_mask((3, 8, 8), device=device)
    y, logdet = affine_coupling(x, log_scale, shift, mask, scale_fn="atan")
    back, back_logdet = affine_coupling(y, log_scale, shift, mask, scale_fn="atan", reverse=True)
    torch.testing.assert_close(back, x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logdet + back_logdet, torch.zeros_like(logdet))


def bad(**changes):
    args = {
        "x": torch.zeros(3, 4),
        "log_scale": torch.zeros(3, 4),
        "shift": torch.zeros(3, 4),
        "mask": torch.tensor([1.0, 0.0, 1.0, 0.0]),
        "scale_fn": "exp",
        "clamp": None,
    }
    args.update(changes)
    x, log_scale, shift, mask = (args.pop(k) for k in ("x", "log_scale", "shift", "mask"))
    return lambda: affine_coupling(x, log_scale, shift, mask, **args)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (bad(log_scale=torch.zeros(3, 5)), ValueError, "log_scale must have shape"),
        (bad(shift=torch.zeros(4, 4)), ValueError, "shift must have shape"),
        (bad(x=torch.zeros(3, 4, dtype=torch.int64)), TypeError, "x must be float"),
        (bad(shift=torch.zeros(3, 4, dtype=torch.float64)), TypeError, "shift has dtype"),
        (bad(mask=torch.ones(3)), ValueError, "does not broadcast"),
        (bad(mask=torch.ones(2, 3, 4)), ValueError, "does not broadcast"),
        (
            bad(x=torch.zeros(4), log_scale=torch.zeros(4), shift=torch.zeros(4)),
            ValueError,
            "batch",
        ),
        (bad(scale_fn="softplus"), ValueError, "unknown scale_fn 'softplus'"),
        (bad(scale_fn="tanh", clamp=float("inf")), ValueError, r"clamp must be in \[1e-30, 1e30\]"),
        (bad(scale_fn="atan", clamp=float("nan")), ValueError, "clamp must be in"),
        (bad(scale_fn="tanh", clamp=-1.0), ValueError, "clamp must be in"),
        (bad(scale_fn="tanh", clamp=1e-40), ValueError, "clamp must be in"),
        (bad(scale_fn="atan", clamp=1e39), ValueError, "clamp must be in"),
        (bad(clamp=1.0), ValueError, "clamp applies only"),
        (bad(mask_kind=7), ValueError, "mask_kind"),
    ],
)
def test_bad_inputs_raise(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("fn", [affine_coupling_stacked, reference.affine_coupling_stacked])
@pytest.mark.parametrize(
    ("x", "params", "error", "match"),
    [
        (torch.zeros(3, 4), torch.zeros(3, 4), ValueError, "params must have"),
        (torch.zeros(3, 4), torch.zeros(3, 9), ValueError, "params must have"),
        (torch.zeros(3, 2, 5), torch.zeros(3, 2, 10), ValueError, "params must have"),
        (torch.zeros(4), torch.zeros(8), ValueError, "batch"),
    ],
)
def test_stacked_bad_shapes_raise(fn, x, params, error, match):
    with pytest.raises(error, match=match):
        fn(x, params, torch.ones(x.shape[-1]))


def test_stacked_bad_dtype_and_device_raise():
    x, mask = torch.zeros(3, 4), checkerboard_mask((4,))
    with pytest.raises(TypeError, match="params has dtype"):
        affine_coupling_stacked(x, torch.zeros(3, 8, dtype=torch.float64), mask)
    with pytest.raises(RuntimeError, match="params is on meta but x is on cpu"):
        affine_coupling_stacked(x, torch.zeros(3, 8, device="meta"), mask)
    meta = {"device": "meta"}
    y, logdet = affine_coupling_stacked(
        x.to("meta"), torch.zeros(3, 8, **meta), mask.to("meta"), mask_kind=MaskKind.READ
    )
    assert y.is_meta and y.shape == (3, 4) and logdet.shape == (3,)
    with pytest.raises(ValueError, match="params must have"):  # the fake checks the shape too
        affine_coupling_stacked(
            x.to("meta"), torch.zeros(3, 6, **meta), mask.to("meta"), mask_kind=MaskKind.READ
        )


def test_reference_rejects_what_the_op_rejects():
    x = torch.zeros(2, 4)
    mask = checkerboard_mask((4,))
    with pytest.raises(ValueError, match="unknown scale_fn"):
        reference.affine_coupling(x, x, x, mask, scale_fn="relu")
    with pytest.raises(ValueError, match="clamp applies only"):
        reference.affine_coupling(x, x, x, mask, clamp=3.0)
    for clamp in (0.0, float("nan"), 1e39):
        with pytest.raises(ValueError, match="clamp must be in"):
            reference.affine_coupling(x, x, x, mask, scale_fn="tanh", clamp=clamp)


def test_meta_mix_raises_and_all_meta_gives_the_shapes():
    # A meta tensor among real ones dispatches to the fake implementation, which must check the
    # devices as the kernel does (it returned uninitialized CPU tensors before).
    x, meta = torch.zeros(3, 4), torch.zeros(3, 4, device="meta")
    mask = checkerboard_mask((4,))
    with pytest.raises(RuntimeError, match="shift is on meta but x is on cpu"):
        affine_coupling(x, x, meta, mask)
    with pytest.raises(RuntimeError, match="log_scale is on cpu but x is on meta"):
        affine_coupling(meta, x, meta, mask.to("meta"), mask_kind=MaskKind.READ)
    with pytest.raises(RuntimeError, match="mask is on meta but x is on cpu"):
        affine_coupling(x, x, x, mask.to("meta"), mask_kind=MaskKind.READ)
    y, logdet = affine_coupling(meta, meta, meta, mask.to("meta"), mask_kind=MaskKind.READ)
    assert y.is_meta and y.shape == (3, 4) and logdet.is_meta and logdet.shape == (3,)


@requires_cuda
def test_cpu_cuda_mix_raises():
    x = torch.zeros(3, 4, device="cuda")
    mask = checkerboard_mask((4,), device="cuda")
    with pytest.raises(RuntimeError, match="shift is on"):
        affine_coupling(x, x, torch.zeros(3, 4), mask)
    with pytest.raises(RuntimeError, match="mask is on"):
        affine_coupling(x, x, x, checkerboard_mask((4,)), mask_kind=MaskKind.READ)


@requires_cuda
@pytest.mark.parametrize("shape", [(256, 48, 16, 16), (1000, 258), (7, 3, 5, 7)])
def test_cuda_matches_cpu_on_large_inputs(shape):
    """Samples spanning several warp segments and unaligned sizes."""
    x, log_scale, shift = make_inputs(shape, torch.float32, "cpu")
    for mask in (checkerboard_mask(shape[1:], 1), channel_mask(shape[1:], 0)):
        cpu = affine_coupling(x, log_scale, shift, mask, scale_fn="sigmoid")
        gpu = affine_coupling(
            *(t.cuda() for t in (x, log_scale, shift)), mask.cuda(), scale_fn="sigmoid"
        )
        for a, b in zip(cpu, gpu, strict=True):
            torch.testing.assert_close(b.cpu(), a, rtol=1e-5, atol=1e-4)
    # stacked: the gradients of log_scale and shift written as the halves of one; for images
    # also channels-last, params read and its gradient written as runs of each pixel's channels
    params, grad_y = torch.cat([log_scale, shift], dim=1), torch.randn(shape)
    mask = checkerboard_mask(shape[1:], 0)
    forms = [torch.contiguous_format] + [torch.channels_last] * (len(shape) == 4)
    for form in forms:

        def on(device: str, t: torch.Tensor, form=form) -> torch.Tensor:
            return t.to(device).contiguous(memory_format=form)

        grads = [
            torch.ops.pygen.affine_coupling_stacked_backward(
                on(device, grad_y),
                None,
                on(device, x),
                on(device, params),
                mask.to(device),
                1,
                "tanh",
                None,
                False,
            )
            for device in ("cpu", "cuda")
        ]
        for a, b in zip(*grads, strict=True):
            assert b.is_contiguous(memory_format=form)
            torch.testing.assert_close(b.cpu(), a, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cpu_16_bit_values_widen_and_round_like_torch(dtype):
    # Every 16-bit pattern through y = x * exp(0) + 0: the kernel's own conversions (written for
    # its vector loops) give torch's float32 arithmetic rounded once.
    x = torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16).view(dtype)
    x = x.view(16, -1)
    zero = torch.zeros_like(x)
    y, _ = affine_coupling(
        x, zero, zero, torch.zeros(x.shape[1]), scale_fn="exp", mask_kind=MaskKind.READ
    )
    expected = (x.float() * 1.0 + 0.0).to(dtype)
    same = (y.view(torch.int16) == expected.view(torch.int16)) | (y.isnan() & expected.isnan())
    assert same.all()


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_gradients_batched_over_cotangents(layout):
    # autograd.grad(..., is_grads_batched=True) runs the backward op under the legacy vmap (its
    # loop fallback): the results of a loop over the cotangents.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 4, 4, generator=gen).contiguous(memory_format=layout)
    params = torch.randn(3, 4, 4, 4, generator=gen).contiguous(memory_format=layout)
    x, params = x.requires_grad_(), params.requires_grad_()
    y, logdet = affine_coupling_stacked(x, params, checkerboard_mask((2, 4, 4)), scale_fn="tanh")
    grad_y, grad_logdet = torch.randn(4, *y.shape, generator=gen), torch.randn(4, 3, generator=gen)
    batched = torch.autograd.grad(
        (y, logdet), (x, params), (grad_y, grad_logdet), is_grads_batched=True, retain_graph=True
    )
    for i in range(4):
        one = torch.autograd.grad(
            (y, logdet), (x, params), (grad_y[i], grad_logdet[i]), retain_graph=True
        )
        for got, want in zip(batched, one, strict=True):
            torch.testing.assert_close(got[i], want, rtol=0, atol=0)
