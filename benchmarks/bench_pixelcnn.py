"""PixelCNN sampling throughput: fused C++ sampler vs its PyTorch twin (cached) vs naive, plus the
model's forward pass (the floor of any sampler: the same FLOPs) and its training step.

The naive sampler runs the full network once per value (784 forward passes per 28x28 image); on
a CPU that is minutes per batch, so for the 28x28 model it is timed over ``NAIVE_STEPS`` steps and
extrapolated to the whole image (every step costs the same full forward pass): such rows carry
``extrapolated_from_steps``. Every row has ``images_per_s``; ``gbps`` is 0 (compute-bound).
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.common import device_under_test, measure, row
from pygen.models import PixelCNN
from pygen.sampling import inverse_cdf_draw

OP = "pixelcnn"
DEVICE = device_under_test()
MODELS = {
    "mnist28": {},  # the defaults: 7 layers, 64 channels, 7x7, 256 levels, 28x28
    "digits8": {"n_levels": 17, "n_layers": 4, "hidden": 32, "kernel_size": 5, "image_size": 8},
}
SAMPLE_CASES = [("mnist28", 1), ("mnist28", 16), ("digits8", 16)]
NAIVE_STEPS = 2  # per timed round, for the 28x28 model
_models: dict[str, PixelCNN] = {}


def get_model(name: str) -> PixelCNN:
    if name not in _models:
        torch.manual_seed(0)
        _models[name] = PixelCNN(**MODELS[name]).to(DEVICE).eval()
    return _models[name]


def shape_of(model: PixelCNN, batch: int) -> tuple[int, ...]:
    return (batch, model.in_channels, *model.image_size)


def naive_steps(model: PixelCNN, batch: int, steps: int):
    """The naive sampler's first ``steps`` steps: the full network, one draw each."""
    images = torch.zeros(shape_of(model, batch), dtype=torch.int64, device=DEVICE)
    noise = torch.rand(images.shape, device=DEVICE)
    width = model.image_size[1]

    @torch.no_grad()
    def run():
        for s in range(steps):
            i, j = divmod(s, width)
            logits = model(images)[:, :, 0, i, j]
            images[:, 0, i, j] = inverse_cdf_draw(logits, noise[:, 0, i, j])

    return run


def record_row(record, provider, mode, model_name, batch, timing, extra=None):
    model = get_model(model_name)
    shape = shape_of(model, batch)
    r = row(OP, provider, mode, shape, torch.float32, DEVICE, timing, 0)
    record(
        r
        | {"model": model_name, "images_per_s": batch / (timing["median_ms"] * 1e-3)}
        | (extra or {})
    )


@pytest.mark.parametrize("provider", ["fused", "cached", "naive"])
@pytest.mark.parametrize(("model_name", "batch"), SAMPLE_CASES, ids=str)
def test_pixelcnn_sample(benchmark, record, quick, model_name, batch, provider):
    model = get_model(model_name)
    gen = torch.Generator(DEVICE)
    if provider == "naive" and model_name == "mnist28":
        steps = model.in_channels * model.image_size[0] * model.image_size[1]
        timing = measure(benchmark, naive_steps(model, batch, NAIVE_STEPS), DEVICE, quick)
        scale = steps / NAIVE_STEPS
        timing = {k: v * scale if k != "rounds" else v for k, v in timing.items()}
        record_row(
            record,
            provider,
            "sample",
            model_name,
            batch,
            timing,
            {"extrapolated_from_steps": NAIVE_STEPS},
        )
        return
    timing = measure(
        benchmark,
        lambda: model.sample(batch, method=provider, generator=gen.manual_seed(0)),
        DEVICE,
        quick,
    )
    record_row(record, provider, "sample", model_name, batch, timing)


@pytest.mark.parametrize(("model_name", "batch"), [("mnist28", 16), ("digits8", 16)], ids=str)
def test_pixelcnn_forward(benchmark, record, quick, model_name, batch):
    model = get_model(model_name)
    x = torch.randint(0, model.n_levels, shape_of(model, batch), device=DEVICE)

    @torch.no_grad()
    def forward():
        return model(x)

    record_row(
        record, "pytorch", "forward", model_name, batch, measure(benchmark, forward, DEVICE, quick)
    )


@pytest.mark.parametrize(("model_name", "batch"), [("mnist28", 16), ("digits8", 64)], ids=str)
def test_pixelcnn_train_step(benchmark, record, quick, model_name, batch):
    torch.manual_seed(0)
    model = PixelCNN(**MODELS[model_name]).to(DEVICE)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randint(0, model.n_levels, shape_of(model, batch), device=DEVICE)

    def step():
        opt.zero_grad()
        model.bits_per_dim(x).mean().backward()
        opt.step()

    timing = measure(benchmark, step, DEVICE, quick)
    record_row(record, "pytorch", "train_step", model_name, batch, timing)
