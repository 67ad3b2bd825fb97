"""PixelRNN sampling and training throughput: the fused sampler (C++ or CUDA) vs its PyTorch twin
(cached; on a GPU also captured in one CUDA graph, ``cached_graph``) vs naive, the forward pass and
the training step, for both kinds (Row LSTM, Diagonal BiLSTM).

Models: ``digits8`` (8x8, 17 levels, 2 layers of 16) and ``mnist28`` (28x28, 256 levels, 7 layers
of 16 as in van den Oord et al. 2016's MNIST model). Naive (the full network once per value: H
rows or H + W - 1 diagonals of recurrence per layer) runs on ``digits8`` only: at 28x28 it takes
minutes. Sample rows carry the cached algorithm's arithmetic (``gflop_per_image``) and the rate it
reached (``tflops``); the forward pass of the same batch does the same arithmetic, so it is what a
sampler is measured against (its eager form is overhead-bound: many small recurrent steps).
Every row has ``images_per_s``; ``gbps`` is None (compute-bound). Before the fused sampler is
timed, its logits are checked against the full forward pass at the images it drew
(``benchmarks.common.check_sampler``).
"""

from __future__ import annotations

from typing import cast

import pytest
import torch

from benchmarks.common import (
    adam_step,
    check_sampler,
    device_under_test,
    in_cuda_graph,
    measure,
    measure_side_by_side,
    row,
)
from pygen.layers import RowLSTM
from pygen.models import PixelRNN
from pygen.sampling import sample_pixelrnn_cached

OP = "pixelrnn"
DEVICE = device_under_test()
ON_CUDA = DEVICE.type == "cuda"
MODELS = {
    "digits8": {"n_levels": 17, "n_layers": 2, "hidden": 16, "kernel_size": 5, "image_size": 8},
    "mnist28": {"n_levels": 256, "n_layers": 7, "hidden": 16, "kernel_size": 7, "image_size": 28},
}
KINDS = ("row", "diagonal")
# (model, batch, providers); on a GPU also a batch that fills it, and at 28x28 the cached sampler
# captured in one CUDA graph (the strongest pure-PyTorch baseline, as for the PixelCNN).
GRAPH = ("cached_graph",) if ON_CUDA else ()
SAMPLE_CASES = [
    ("digits8", 16, ("fused", "cached", "naive")),
    ("mnist28", 1, ("fused", "cached", *GRAPH)),
    ("mnist28", 16, ("fused", "cached", *GRAPH)),
    *([("mnist28", 256, ("fused", "cached", *GRAPH))] if ON_CUDA else []),
]
SLOW_ROUNDS = 3  # the cached sampler at 28x28 takes seconds per call
GRAPH_ROUNDS = 10  # its graph a fraction of that: rounds for a steady baseline
_models: dict[tuple[str, str], PixelRNN] = {}


def get_model(name: str, kind: str) -> PixelRNN:
    if (name, kind) not in _models:
        torch.manual_seed(0)
        _models[name, kind] = PixelRNN(**MODELS[name], kind=kind).to(DEVICE).eval()
    return _models[name, kind]


def shape_of(model: PixelRNN, batch: int) -> tuple[int, ...]:
    return (batch, model.in_channels, *model.image_size)


def gflop_per_image(model: PixelRNN) -> float:
    """Arithmetic of the cached algorithm per image (2 flops per multiply-add). Per value: the
    input convolution (k//2+1 x k), each layer's step at that pixel (Row LSTM: the input-to-state
    taps up to the centre; Diagonal BiLSTM: input-to-state and the state to the left) and output,
    the head's logits of that channel. Per pixel, once per row: Row LSTM, the 3 taps of the row
    above; Diagonal BiLSTM, the state above and the whole right-to-left step."""
    c, h, levels, k = model.in_channels, model.hidden, model.n_levels, model.kernel_size
    height, width = model.image_size
    layers = len(model.layers)
    if model.kind == "row":
        first = cast(RowLSTM, model.layers[0])  # the "row" kind's layers
        kw = first.input_to_state.kernel_size[1] // 2 + 1
        per_value, per_pixel = layers * (kw * h * 4 * h + h * h), layers * 3 * h * 4 * h
    else:
        per_value = layers * (2 * h * 4 * h + h * h)
        per_pixel = layers * (h * 4 * h + (3 * h + c) * 4 * h)
    per_value += (k // 2 + 1) * k * c * h + h * h + h * levels
    return 2 * height * width * (c * per_value + per_pixel) / 1e9


def record_row(record, provider, mode, name, kind, batch, timing, extra=None):
    model = get_model(name, kind)
    r = row(OP, provider, mode, shape_of(model, batch), torch.float32, DEVICE, timing, 0)
    per_s = batch / (timing["median_ms"] * 1e-3)
    work = {"images_per_s": per_s}
    if mode == "sample":
        work["gflop_per_image"] = gflop_per_image(model)
        work["tflops"] = per_s * work["gflop_per_image"] / 1e3
    record(r | {"model": f"{kind}-{name}"} | work | (extra or {}))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("name", "batch", "providers"), SAMPLE_CASES, ids=str)
def test_pixelrnn_sample(record, quick, name, batch, providers, kind):
    """The case's samplers side by side (``benchmarks.common.measure_side_by_side``); the fused
    one checked first."""
    model = get_model(name, kind)
    check_sampler(model, batch)
    gen = torch.Generator(DEVICE)

    def sample(method):
        if method == "cached_graph":
            noise = torch.rand(shape_of(model, batch), device=DEVICE)
            replay, capture_s = in_cuda_graph(lambda: sample_pixelrnn_cached(model, noise))
            extra[method] = {"capture_s": capture_s}
            return replay
        return lambda: model.sample(batch, method=method, generator=gen.manual_seed(0))

    extra: dict[str, dict] = {}
    steps = {provider: sample(provider) for provider in providers}
    rounds = {p: SLOW_ROUNDS if name == "mnist28" and p == "cached" else 0 for p in providers}
    if "cached_graph" in providers:
        rounds["cached_graph"] = GRAPH_ROUNDS
    for provider, timing in measure_side_by_side(steps, DEVICE, quick, rounds).items():
        record_row(record, provider, "sample", name, kind, batch, timing, extra.get(provider))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("name", "batch"), [("digits8", 16), ("mnist28", 16)], ids=str)
def test_pixelrnn_forward(record, quick, name, batch, kind):
    model = get_model(name, kind)
    x = torch.randint(0, model.n_levels, shape_of(model, batch), device=DEVICE)

    @torch.no_grad()
    def forward():
        return model(x)

    timing = measure(forward, DEVICE, quick)
    record_row(record, "pytorch", "forward", name, kind, batch, timing)


@pytest.mark.parametrize("kind", KINDS)
def test_pixelrnn_train_step(record, quick, kind):
    torch.manual_seed(0)
    model = PixelRNN(**MODELS["digits8"], kind=kind).to(DEVICE)
    batch = 64
    x = torch.randint(0, model.n_levels, shape_of(model, batch), device=DEVICE)
    step = adam_step(model, lambda: model.bits_per_dim(x).mean())
    timing = measure(step, DEVICE, quick)
    record_row(record, "pytorch", "train_step", "digits8", kind, batch, timing)
