"""PixelRNN sampling and training throughput on 8x8 digits-sized images (17 levels).

Both kinds have two samplers: naive (the full network once per value: H rows or H + W - 1
diagonals of recurrence per layer) and cached (the states carried along: one LSTM step per layer
and value, and for the Diagonal BiLSTM its right-to-left direction once per row). The forward
pass of the same batch is the floor of any sampler (the same FLOPs) and the training step is
timed too. Every row has ``images_per_s``; ``gbps`` is 0 (compute-bound).
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.common import adam_step, device_under_test, measure, row
from pygen.models import PixelRNN

OP = "pixelrnn"
DEVICE = device_under_test()
CONFIG = {"n_levels": 17, "n_layers": 2, "hidden": 16, "kernel_size": 5, "image_size": 8}
BATCH = 16
_models: dict[str, PixelRNN] = {}


def get_model(kind: str) -> PixelRNN:
    if kind not in _models:
        torch.manual_seed(0)
        _models[kind] = PixelRNN(**CONFIG, kind=kind).to(DEVICE).eval()
    return _models[kind]


def shape_of(model: PixelRNN, batch: int) -> tuple[int, ...]:
    return (batch, model.in_channels, *model.image_size)


def record_row(record, provider, mode, kind, batch, timing):
    shape = shape_of(get_model(kind), batch)
    r = row(OP, provider, mode, shape, torch.float32, DEVICE, timing, 0)
    record(r | {"model": f"{kind}-digits8", "images_per_s": batch / (timing["median_ms"] * 1e-3)})


@pytest.mark.parametrize(
    ("kind", "provider"),
    [("row", "cached"), ("row", "naive"), ("diagonal", "cached"), ("diagonal", "naive")],
)
def test_pixelrnn_sample(benchmark, record, quick, kind, provider):
    model = get_model(kind)
    gen = torch.Generator(DEVICE)
    timing = measure(
        benchmark,
        lambda: model.sample(BATCH, method=provider, generator=gen.manual_seed(0)),
        DEVICE,
        quick,
    )
    record_row(record, provider, "sample", kind, BATCH, timing)


@pytest.mark.parametrize("kind", ["row", "diagonal"])
def test_pixelrnn_forward(benchmark, record, quick, kind):
    model = get_model(kind)
    x = torch.randint(0, model.n_levels, shape_of(model, BATCH), device=DEVICE)

    @torch.no_grad()
    def forward():
        return model(x)

    timing = measure(benchmark, forward, DEVICE, quick)
    record_row(record, "pytorch", "forward", kind, BATCH, timing)


@pytest.mark.parametrize("kind", ["row", "diagonal"])
def test_pixelrnn_train_step(benchmark, record, quick, kind):
    torch.manual_seed(0)
    model = PixelRNN(**CONFIG, kind=kind).to(DEVICE)
    batch = 64
    x = torch.randint(0, model.n_levels, shape_of(model, batch), device=DEVICE)
    step = adam_step(model, lambda: model.bits_per_dim(x).mean())
    timing = measure(benchmark, step, DEVICE, quick)
    record_row(record, "pytorch", "train_step", kind, batch, timing)
