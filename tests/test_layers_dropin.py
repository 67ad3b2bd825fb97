"""The layers dropped into a user's model: torch.compile, 16-bit dtypes, empty batches,
checkpoints and clear errors for misuse."""

from __future__ import annotations

import threading

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from pygen import ops
from pygen.layers import (
    MADE,
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    ContinuousFlow,
    DiagonalBiLSTM,
    FlowSequential,
    GatedMaskedConv2d,
    IAFLayer,
    Invertible1x1Conv,
    LogitTransform,
    MAFLayer,
    MultiScaleSplit,
    Permutation,
    Squeeze,
)
from pygen.models import MAF

pytestmark = pytest.mark.usefixtures("one_thread")


def perturb(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter moved off its initial value (zero last layers make fresh flows the
    identity, which would test nothing)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module


def randn(*shape, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# (name, layer factory, per-sample shape); every flow layer of pygen.layers but the continuous one
FLOWS = [
    ("affine-vec", lambda: AffineCoupling((4,), hidden=8), (4,)),
    ("affine-img", lambda: AffineCoupling((2, 2, 2), "channel", hidden=4, n_blocks=1), (2, 2, 2)),
    ("additive", lambda: AdditiveCoupling((4,), hidden=8), (4,)),
    ("actnorm-vec", lambda: ActNorm(3), (3,)),
    ("actnorm-img", lambda: ActNorm(2), (2, 2, 2)),
    ("invconv-vec", lambda: Invertible1x1Conv(3), (3,)),
    ("invconv-img", lambda: Invertible1x1Conv(2), (2, 2, 2)),
    ("maf", lambda: MAFLayer(3, hidden=8), (3,)),
    ("iaf", lambda: IAFLayer(3, hidden=8, order=[2, 0, 1]), (3,)),
    ("permutation", lambda: Permutation([2, 0, 1]), (3,)),
    ("squeeze", Squeeze, (1, 2, 2)),
    ("logit", LogitTransform, (3,)),
    ("split", lambda: MultiScaleSplit(AffineCoupling((1, 2, 2), hidden=4)), (2, 2, 2)),
    ("sequential", lambda: FlowSequential(ActNorm(3), Invertible1x1Conv(3)), (3,)),
]
FLOW_IDS = [case[0] for case in FLOWS]


def ready(make, shape, dtype=torch.float32):
    """A perturbed layer, initialized (ActNorm) on a batch of 4, in ``dtype``, and that batch."""
    torch.manual_seed(0)
    layer = perturb(make())
    x = torch.rand(4, *shape) * 0.8 + 0.1 if isinstance(layer, LogitTransform) else randn(4, *shape)
    layer(x)
    return layer.to(dtype), x.to(dtype)


@pytest.mark.parametrize(("name", "make", "shape"), FLOWS, ids=FLOW_IDS)
def test_empty_batch_both_directions_and_backward(name, make, shape):
    layer, _ = ready(make, shape)
    x = torch.zeros(0, *shape, requires_grad=True)
    z, logdet = layer(x)
    back, back_logdet = layer.inverse(z)
    assert logdet.shape == back_logdet.shape == (0,) and back.shape == x.shape
    (back.sum() + logdet.sum() + back_logdet.sum()).backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize(("name", "make", "shape"), FLOWS, ids=FLOW_IDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_logdet_is_float32_for_16_bit_inputs(name, make, shape, dtype):
    # As the fused ops' (logdet_dtype): a 16-bit sum of many terms, or a layer's hundreds of
    # nats, rounded to 16 bits would lose whole nats.
    layer, x = ready(make, shape, dtype)
    want = torch.float64 if dtype == torch.float64 else torch.float32
    assert ops.logdet_dtype(dtype) == want
    z, logdet = layer(x)
    assert z.dtype == dtype and logdet.dtype == want and layer.inverse(z)[1].dtype == want


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_continuous_flow_logdet_is_float32_for_16_bit_inputs(dtype):
    torch.manual_seed(0)
    layer = ContinuousFlow(3, hidden=8, euler_steps=2).to(dtype)
    want = ops.logdet_dtype(dtype)
    for x in (torch.randn(2, 3, dtype=dtype), torch.zeros(0, 3, dtype=dtype)):
        z, logdet = layer(x)
        assert z.dtype == dtype and logdet.dtype == want and layer.inverse(z)[1].dtype == want


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3,), (3, 2, 2)], ids=["vec", "img"])
def test_invertible_1x1_conv_inverts_in_16_bit(dtype, shape):
    layer, x = ready(lambda: Invertible1x1Conv(3), shape, dtype)
    z, logdet = layer(x)
    back, back_logdet = layer.inverse(z)
    assert back.dtype == dtype and back_logdet.dtype == torch.float32
    torch.testing.assert_close(back.float(), x.float(), rtol=0, atol=0.05)
    torch.testing.assert_close((logdet + back_logdet).float(), torch.zeros(4), rtol=0, atol=0)


def test_actnorm_init_needs_two_values_per_channel():
    for x in (torch.zeros(1, 3), torch.zeros(0, 3, 2, 2)):
        layer = ActNorm(3)
        with pytest.raises(ValueError, match="at least two values per channel"):
            layer(x)
        assert not layer.initialized
    layer = ActNorm(3)
    z, _ = layer(randn(1, 3, 2, 2))  # one image: four values per channel
    assert layer.initialized and torch.isfinite(z).all()


def test_actnorm_compiles_whole_in_training_and_initializes_once():
    x = randn(4, 3, 2, 2) * 3 + 1
    eager = ActNorm(3)
    z_eager, logdet_eager = eager(x)
    torch._dynamo.reset()
    layer = ActNorm(3)
    compiled = torch.compile(layer, fullgraph=True)
    z, logdet = compiled(x)
    torch.testing.assert_close(z, z_eager)
    torch.testing.assert_close(logdet, logdet_eager)
    assert layer.initialized
    torch.testing.assert_close(layer.bias, eager.bias)
    x2 = randn(4, 3, 2, 2, seed=2)
    torch.testing.assert_close(compiled(x2)[0], eager(x2)[0])  # the first batch's init kept
    # A loaded initialized state is not initialized again; a loaded fresh one is.
    restored = ActNorm(3)
    restored.load_state_dict(layer.state_dict())
    torch.testing.assert_close(restored(x2)[0], eager(x2)[0])
    restored.load_state_dict(ActNorm(3).state_dict())
    restored(x2)
    torch.testing.assert_close(restored(x2)[0].mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("make", "direction"),
    [(lambda: MAFLayer(4, hidden=8, order="random"), "inverse"), (lambda: IAFLayer(4), "forward")],
    ids=["maf-sampling", "iaf-density"],
)
def test_autoregressive_d_step_direction_compiles_whole(make, direction):
    torch.manual_seed(0)
    layer = perturb(make())
    run = getattr(layer, direction)
    z = randn(5, 4)
    torch._dynamo.reset()
    assert torch._dynamo.explain(run)(z).graph_break_count == 0

    def loss(out):
        return out[0].square().sum() + out[1].sum()

    z_eager = z.clone().requires_grad_()
    out_eager = run(z_eager)
    loss(out_eager).backward()
    grads_eager = [z_eager.grad] + [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(run, fullgraph=True)
    z_compiled = z.clone().requires_grad_()
    out = compiled(z_compiled)
    loss(out).backward()
    torch.testing.assert_close(out, out_eager)
    grads = [z_compiled.grad] + [p.grad for p in layer.parameters()]
    torch.testing.assert_close(grads, grads_eager)
    for n in (3, 6, 7):  # one more graph, with a dynamic batch size
        torch.testing.assert_close(compiled(randn(n, 4)), run(randn(n, 4)))
    assert counters["stats"]["unique_graphs"] == 2


def test_made_order_follows_a_loaded_state_dict():
    torch.manual_seed(0)
    source = perturb(MAFLayer(5, hidden=8, order="random", seed=1))
    target = MAFLayer(5, hidden=8, order="random", seed=2)
    assert target.made.order_list != source.made.order_list
    target.load_state_dict(source.state_dict())
    assert target.made.order_list == source.made.order.tolist()
    x = randn(3, 5)
    z, _ = target(x)
    torch.testing.assert_close(target.inverse(z)[0], x)


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_continuous_flow_runs_under_inference_mode(trace):
    torch.manual_seed(0)
    layer = ContinuousFlow(3, hidden=8, trace=trace, euler_steps=3)
    x = randn(4, 3)
    for direction in ("forward", "inverse"):
        torch.manual_seed(1)
        with torch.no_grad():
            expected = getattr(layer, direction)(x)
        torch.manual_seed(1)
        with torch.inference_mode():
            out = getattr(layer, direction)(x)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: Squeeze()(torch.zeros(2, 4, 4)), r"\(N, C, H, W\)"),
        (lambda: Squeeze()(torch.zeros(1, 1, 3, 4)), "even"),
        (lambda: Squeeze().inverse(torch.zeros(1, 3, 2, 2)), "multiple of 4"),
        (lambda: Permutation([1, 1, 0]), "permutation of range"),
        (lambda: AffineCoupling((4,), "channel", scale_fn="nope"), "unknown scale_fn"),
        (lambda: AffineCoupling((4,), scale_fn="exp", clamp=3.0), "clamp applies only"),
        (lambda: MAFLayer(4, clamp=0.0), r"clamp must be in \[1e-30"),
        (lambda: AffineCoupling((4,), "checkerboard", 2), "parity must be 0 or 1"),
        (lambda: AdditiveCoupling((4,), "channel", -1), "parity must be 0 or 1"),
        (lambda: AffineCoupling((2, 2, 2), torch.ones(3, 1, 1)), "does not broadcast"),
        (lambda: GatedMaskedConv2d(2, 2, 3, n_classes=3)(*[torch.zeros(1, 2, 3, 3)] * 2), "y"),
        (
            lambda: GatedMaskedConv2d(2, 2, 3)(*[torch.zeros(1, 2, 3, 3)] * 2, torch.tensor([0])),
            "n_classes=None",
        ),
        (lambda: DiagonalBiLSTM(2, image_channels=1)(torch.zeros(1, 2, 3, 3)), "image"),
        (
            lambda: DiagonalBiLSTM(2)(torch.zeros(1, 2, 3, 3), torch.zeros(1, 1, 3, 3)),
            "image_channels",
        ),
        (
            lambda: AffineCoupling((2, 4, 4), net=torch.nn.Conv2d(2, 2, 3, padding=1))(
                torch.zeros(1, 2, 4, 4)
            ),
            r"shape \(1, 4, 4, 4\); it returned \(1, 2, 4, 4\)",
        ),
    ],
    ids=[
        "squeeze-3d",
        "squeeze-odd",
        "unsqueeze-channels",
        "permutation",
        "coupling-scale-fn",
        "coupling-clamp-without-bound",
        "maf-clamp-zero",
        "checkerboard-parity",
        "channel-parity",
        "coupling-mask",
        "gated-no-labels",
        "gated-unexpected-labels",
        "bilstm-no-image",
        "bilstm-unexpected-image",
        "coupling-net-output",
    ],
)
def test_misuse_raises_a_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("layer_type", [AffineCoupling, AdditiveCoupling])
def test_coupling_with_a_conditioner_of_ones_own(layer_type):
    # A user's network in place of the built-in conditioner: the layer is the fused op over its
    # outputs, inverts, trains the network and round-trips through its state dict.
    outputs = 2 if layer_type is AffineCoupling else 1
    net = perturb(torch.nn.Conv2d(3, outputs * 3, 3, padding=1))
    layer = layer_type((3, 4, 4), "checkerboard", net=net)
    assert layer.net is net
    x = randn(5, 3, 4, 4)
    y, logdet = layer(x)
    params = net(x * layer.mask).chunk(outputs, dim=1)
    if layer_type is AffineCoupling:
        want = ops.affine_coupling(x, *params, layer.mask, scale_fn="tanh")
    else:
        want = ops.additive_coupling(x, *params, layer.mask)
    torch.testing.assert_close((y, logdet), want)
    x_back, inverse_logdet = layer.inverse(y)
    torch.testing.assert_close(x_back, x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(inverse_logdet, -logdet)
    (y.square().sum() + logdet.sum()).backward()
    assert net.weight.grad is not None and net.weight.grad.abs().sum() > 0
    other = layer_type((3, 4, 4), "checkerboard", net=torch.nn.Conv2d(3, outputs * 3, 3, padding=1))
    other.load_state_dict(layer.state_dict())
    torch.testing.assert_close(other(x), (y, logdet))


def test_made_builds_on_the_meta_device():
    with torch.device("meta"):
        layer = MAFLayer(5, hidden=8, order="random", seed=1)
    built = MAFLayer(5, hidden=8, order="random", seed=1)
    assert layer.made.order.is_meta and layer.made.order_list == built.made.order.tolist()
    assert layer.made.bounds == built.made.bounds
    with torch.device("meta"):  # layers with a permutation between them
        model = MAF(5, n_layers=3, hidden=8)
    assert all(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert [type(m) for m in model.modules()] == [type(m) for m in MAF(5, 3, 8).modules()]


def test_a_dual_level_in_another_thread_leaves_the_kernels_in_place():
    # forward_ad's level counter is process-wide: only a tangent on the op's own arguments sends
    # it to the twin (whose own noise is torch.randn, not the kernel's Philox stream).
    mu, logvar = torch.zeros(2, 4), torch.zeros(2, 4)

    def draw() -> torch.Tensor:
        return ops.reparameterize_kl(mu, logvar, generator=torch.Generator().manual_seed(0))[0]

    alone = draw()
    opened, done = threading.Event(), threading.Event()

    def hold_a_level() -> None:
        with torch.autograd.forward_ad.dual_level():
            opened.set()
            done.wait(timeout=60)

    holder = threading.Thread(target=hold_a_level)
    holder.start()
    try:
        assert opened.wait(timeout=60)
        assert torch.equal(draw(), alone)
    finally:
        done.set()
        holder.join()


def _made_solve(target):
    made = MADE(4, 6, 1, order="random", seed=2).double()
    weights, biases, units, bounds = made.solve_weights(target)
    mask = torch.zeros(4, dtype=target.dtype)
    return ops.made_affine_solve(target, weights, biases, units, bounds, made.order_list, mask)


FORWARD_AD_CASES = {
    "affine_coupling": (
        lambda x, s: ops.affine_coupling(
            x, s, x.flip(1), ops.checkerboard_mask((4,)), scale_fn="tanh"
        ),
        lambda: ((3, 4), (3, 4)),
    ),
    "made_affine_solve": (_made_solve, lambda: ((3, 4),)),
    "reparameterize_kl": (
        lambda mu, logvar: ops.reparameterize_kl(mu, logvar, torch.ones(3, 4, dtype=mu.dtype)),
        lambda: ((3, 4), (3, 4)),
    ),
    "reparameterize_kl_stacked": (
        lambda stats: ops.reparameterize_kl_stacked(stats, torch.ones(3, 4, dtype=stats.dtype)),
        lambda: ((3, 8),),
    ),
}


@pytest.mark.parametrize("name", sorted(FORWARD_AD_CASES))
def test_ops_run_their_twin_under_forward_mode_ad(name):
    # The C++ autograd functions have no forward-mode derivative: under forward_ad the ops run
    # their twins, whose tangents equal the directional derivatives of the kernels' backward.
    fn, shapes = FORWARD_AD_CASES[name]
    gen = torch.Generator().manual_seed(0)
    primals = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes()]
    tangents = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes()]
    with torch.autograd.forward_ad.dual_level():
        duals = [
            torch.autograd.forward_ad.make_dual(p, t)
            for p, t in zip(primals, tangents, strict=True)
        ]
        outputs = [torch.autograd.forward_ad.unpack_dual(o) for o in fn(*duals)]
    _, expected = torch.autograd.functional.jvp(fn, tuple(primals), tuple(tangents))
    for (_, tangent), reference in zip(outputs, expected, strict=True):
        torch.testing.assert_close(tangent, reference)
