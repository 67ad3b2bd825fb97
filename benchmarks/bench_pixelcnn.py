"""PixelCNN sampling throughput: fused sampler (C++ on CPU, CUDA on a GPU) vs its PyTorch twin
(cached; on a GPU also captured in one CUDA graph) vs naive, plus the model's forward pass (about
the floor of any sampler: the same FLOPs) and its training step. Sample rows carry the cached
algorithm's arithmetic (``gflop_per_image``) and the rate it reached (``tflops``).

The naive sampler runs the full network once per value (784 forward passes per 28x28 image); on
a CPU that is minutes per batch, so for the 28x28 model it is timed over ``NAIVE_STEPS`` steps and
extrapolated to the whole image (every step costs the same full forward pass): such rows carry
``extrapolated_from_steps``. Every row has ``images_per_s``; ``gbps`` is None (compute-bound).
Before the fused sampler is timed, its logits are checked against the full forward pass at the
images it drew (``benchmarks.common.check_sampler``).
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.common import (
    MATMUL_ROUNDS,
    adam_step,
    check_sampler,
    device_under_test,
    in_cuda_graph,
    matmul_of,
    measure,
    measure_side_by_side,
    row,
)
from pygen.layers import frozen_masked_weights
from pygen.models import PixelCNN
from pygen.sampling import export_weights, inverse_cdf_draw, sample_cached

OP = "pixelcnn"
DEVICE = device_under_test()
ON_CUDA = DEVICE.type == "cuda"
MODELS = {
    "mnist28": {},  # the defaults: 7 layers, 64 channels, 7x7, 256 levels, 28x28
    "digits8": {"n_levels": 17, "n_layers": 4, "hidden": 32, "kernel_size": 5, "image_size": 8},
    # 15 layers of width 132: the nearest width above 128 that the RGB channel masks accept.
    "rgb32": {"in_channels": 3, "n_layers": 15, "hidden": 132, "image_size": 32},
}
if ON_CUDA:
    SAMPLE_CASES = [(m, b) for m in ("mnist28", "rgb32") for b in (1, 16, 64, 256)]
else:
    SAMPLE_CASES = [("mnist28", 1), ("mnist28", 16), ("digits8", 16)]
# The pure-PyTorch cached sampler takes seconds per call on a GPU (one Python op per layer per
# value): timed at the smallest and largest batch only, with few rounds, to fit a GPU lease; so
# is every rgb32 case (about a second per call for each sampler).
SLOW_REFERENCE_BATCHES = (1, 256)
SLOW_ROUNDS = 3
# The graph baseline at mnist28 batches (0.1-0.4 s a call) gets more: its b16 median of 3 rounds
# stood apart from b1 and b64 (README), so that ratio needs a steadier baseline.
GRAPH_ROUNDS = 10
NAIVE_STEPS = 2  # per timed round, extrapolated to the whole image
_models: dict[str, PixelCNN] = {}


def get_model(name: str) -> PixelCNN:
    if name not in _models:
        torch.manual_seed(0)
        _models[name] = PixelCNN(**MODELS[name]).to(DEVICE).eval()
    return _models[name]


def shape_of(model: PixelCNN, batch: int) -> tuple[int, ...]:
    return (batch, model.in_channels, *model.image_size)


def gflop_per_image(model: PixelCNN) -> float:
    """Arithmetic of the cached algorithm per image (2 flops per multiply-add): per row, each
    layer's vertical stack (k//2+1 x k kernel) and link for every pixel; per value, each layer's
    horizontal stack (k//2+1 columns), gate output and the head's logits of that channel."""
    c, h, levels, k, n = model.in_channels, model.hidden, model.n_levels, model.kernel_size, 0
    height, width = model.image_size
    kh = k // 2 + 1
    for layer in range(len(model.layers)):
        cin = c if layer == 0 else h
        n += height * width * (kh * k * cin * 2 * h + 4 * h * h)
        n += height * width * c * (kh * cin * 2 * h + h * h)
    n += height * width * c * (h * h + h * levels)
    return 2 * n / 1e9


def dependent_steps(model: PixelCNN) -> int:
    """The chain of dependent steps in any cached sampler of the model, whatever the batch: per
    value, one gate product per layer (its nonlinearity stops a product from reaching past it;
    each output product can fold into the next gate's), the last layer's output product, the
    head's two products; per image row, each layer's vertical stack in turn."""
    height, width = model.image_size
    layers = len(model.layers)
    return height * width * model.in_channels * (layers + 3) + height * layers


def naive_steps(model: PixelCNN, batch: int, steps: int):
    """The naive sampler's first ``steps`` steps: the full network, one draw each."""
    images = torch.zeros(shape_of(model, batch), dtype=torch.int64, device=DEVICE)
    noise = torch.rand(images.shape, device=DEVICE)
    width = model.image_size[1]

    @torch.no_grad()
    def run():
        with frozen_masked_weights(model):  # as model.sample(method="naive"): masks applied once
            for s in range(steps):
                i, j = divmod(s, width)
                logits = model(images)[:, :, 0, i, j]
                images[:, 0, i, j] = inverse_cdf_draw(logits, noise[:, 0, i, j])

    return run


def cached_in_graph(model: PixelCNN, batch: int):
    """The pure-PyTorch cached sampler captured whole in one CUDA graph: no Python, no launch
    gaps (the strongest pure-PyTorch baseline). Returns the replay and the capture seconds."""
    weights = export_weights(model, None, batch)
    noise = torch.rand(shape_of(model, batch), device=DEVICE)
    return in_cuda_graph(
        lambda: sample_cached(
            weights, noise, n_levels=model.n_levels, kernel_size=model.kernel_size
        )
    )


def record_row(record, provider, mode, model_name, batch, timing, extra=None, dtype=torch.float32):
    model = get_model(model_name)
    shape = shape_of(model, batch)
    r = row(OP, provider, mode, shape, dtype, DEVICE, timing, 0)
    per_s = batch / (timing["median_ms"] * 1e-3)
    work = {"images_per_s": per_s}
    if mode == "sample":
        work["gflop_per_image"] = gflop_per_image(model)
        work["tflops"] = per_s * work["gflop_per_image"] / 1e3
        work["dependent_steps"] = dependent_steps(model)
    record(r | {"model": model_name} | work | (extra or {}))


def sample_providers(model_name: str, batch: int) -> tuple[str, ...]:
    """The samplers timed at a case: on a GPU the slow pure-PyTorch cached sampler at the
    smallest and largest batch only (the graph at every mnist28 batch)."""
    if not ON_CUDA:
        return ("fused", "cached", "naive")
    graph = batch in SLOW_REFERENCE_BATCHES or model_name == "mnist28"
    return (
        "fused",
        *(("cached",) if batch in SLOW_REFERENCE_BATCHES else ()),
        *(("cached_graph",) if graph else ()),
        "naive",
    )


@pytest.mark.parametrize(("model_name", "batch"), SAMPLE_CASES, ids=str)
def test_pixelcnn_sample(record, quick, model_name, batch):
    """The case's samplers side by side (``benchmarks.common.measure_side_by_side``); the fused
    one checked first."""
    model = get_model(model_name)
    gen = torch.Generator(DEVICE)
    steps, rounds, extra = {}, {}, {}
    for provider in sample_providers(model_name, batch):
        if provider == "naive" and (ON_CUDA or model_name == "mnist28"):
            steps[provider] = naive_steps(model, batch, NAIVE_STEPS)
            extra[provider] = {"extrapolated_from_steps": NAIVE_STEPS}
        elif provider == "cached_graph":
            steps[provider], capture_s = cached_in_graph(model, batch)
            extra[provider] = {"capture_s": capture_s}
        else:
            if provider == "fused":
                check_sampler(model, batch)

            def sample(method=provider):
                return model.sample(batch, method=method, generator=gen.manual_seed(0))

            steps[provider] = sample
        slow = provider in ("cached", "cached_graph") or model_name == "rgb32"
        rounds[provider] = SLOW_ROUNDS if ON_CUDA and slow and provider != "naive" else 0
        if ON_CUDA and provider == "cached_graph" and model_name == "mnist28":
            rounds[provider] = GRAPH_ROUNDS
    # The floor's matrix throughput, timed beside the samplers (a VM's speed swings over minutes).
    steps["matmul"], n = matmul_of(DEVICE, torch.float32)
    rounds["matmul"] = MATMUL_ROUNDS
    timings = measure_side_by_side(steps, DEVICE, quick, rounds)
    beside = {"matmul_tflops_beside": 2 * n**3 / (timings.pop("matmul")["median_ms"] * 1e-3) / 1e12}
    image_steps = model.in_channels * model.image_size[0] * model.image_size[1]
    for provider, timing in timings.items():
        if "extrapolated_from_steps" in extra.get(provider, {}):
            scale = image_steps / NAIVE_STEPS
            timing = timing | {k: timing[k] * scale for k in ("median_ms", "p20", "p80")}
        row_extra = extra.get(provider, {}) | beside
        record_row(record, provider, "sample", model_name, batch, timing, row_extra)


COMPLETE_CASES = [("mnist28", 16), ("mnist28", 256)] if ON_CUDA else [("mnist28", 16)]


@pytest.mark.parametrize(("model_name", "batch"), COMPLETE_CASES, ids=str)
def test_pixelcnn_complete(record, quick, model_name, batch):
    """Completions of the bottom half from given top rows (``sample(given=...)``): the fused
    kernels skip the horizontal stack of rows given whole, the cached twin draws nothing there but
    still runs it. Compare with the same run's ``sample`` rows of the same model and batch."""
    model = get_model(model_name)
    providers: tuple[str, ...] = ("fused", "cached")
    if ON_CUDA and batch not in SLOW_REFERENCE_BATCHES:
        providers = ("fused",)  # slow reference: timed at the smallest and largest batch
    shape = shape_of(model, batch)
    given = torch.full(shape, -1, dtype=torch.int64, device=DEVICE)
    top = model.image_size[0] // 2
    gen = torch.Generator(DEVICE).manual_seed(1)
    given[:, :, :top] = torch.randint(
        model.n_levels, given[:, :, :top].shape, generator=gen, device=DEVICE
    )
    check_sampler(model, batch, given=given)

    def complete(method):
        return lambda: model.sample(batch, method=method, given=given, generator=gen.manual_seed(0))

    steps = {provider: complete(provider) for provider in providers}
    rounds = {"cached": SLOW_ROUNDS if ON_CUDA else 0}
    for provider, timing in measure_side_by_side(steps, DEVICE, quick, rounds).items():
        record_row(record, provider, "complete (top half given)", model_name, batch, timing)


@pytest.mark.skipif(not ON_CUDA, reason="16-bit weights: the CUDA sampler")
@pytest.mark.parametrize(
    ("model_name", "batch"), [("mnist28", 1), ("mnist28", 256), ("rgb32", 256)]
)
def test_pixelcnn_sample_bf16(record, quick, model_name, batch):
    torch.manual_seed(0)
    model = PixelCNN(**MODELS[model_name]).to(DEVICE, torch.bfloat16).eval()
    check_sampler(model, batch)
    gen = torch.Generator(DEVICE)
    timing = measure(lambda: model.sample(batch, generator=gen.manual_seed(0)), DEVICE, quick)
    record_row(record, "fused", "sample", model_name, batch, timing, dtype=torch.bfloat16)


FORWARD_CASES = SAMPLE_CASES if ON_CUDA else [("mnist28", 16), ("digits8", 16)]


@pytest.mark.parametrize(("model_name", "batch"), FORWARD_CASES, ids=str)
def test_pixelcnn_forward(record, quick, model_name, batch):
    model = get_model(model_name)
    x = torch.randint(0, model.n_levels, shape_of(model, batch), device=DEVICE)

    @torch.no_grad()
    def forward():
        return model(x)

    record_row(record, "pytorch", "forward", model_name, batch, measure(forward, DEVICE, quick))


@pytest.mark.parametrize(("model_name", "batch"), [("mnist28", 16), ("digits8", 64)], ids=str)
def test_pixelcnn_train_step(record, quick, model_name, batch):
    torch.manual_seed(0)
    model = PixelCNN(**MODELS[model_name]).to(DEVICE)
    x = torch.randint(0, model.n_levels, shape_of(model, batch), device=DEVICE)
    step = adam_step(model, lambda: model.bits_per_dim(x).mean())
    timing = measure(step, DEVICE, quick)
    record_row(record, "pytorch", "train_step", model_name, batch, timing)
