"""``pygen demo`` / ``make demo``: the first thing a new user runs.

Trains a small Gated PixelCNN on the bundled 8x8 digits for a time budget (keeping the weights
that did best on a held-out validation tenth of the training split), reports held-out
bits/dim next to an independent-pixel baseline, samples a grid with the fused C++ sampler,
completes test digits from their top rows, and times the fused, cached and naive samplers side by
side in the same run.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from pygen.data import DIGIT_LEVELS, load_digits
from pygen.metrics import independent_pixel_bits
from pygen.models import PixelCNN
from pygen.recipes import RECIPES, SampleOptions, autoregressive_loss
from pygen.train import TrainConfig, save_checkpoint, train
from pygen.utils.png import save_image_grid

MODEL_CONFIG = {
    "in_channels": 1,
    "n_levels": DIGIT_LEVELS,
    "n_layers": 5,
    "hidden": 32,
    "kernel_size": 5,
    "image_size": 8,
}
BATCH = 64
VALIDATION = 144  # digits held out of training for early stopping
EVAL_EVERY = 100
COMPLETE_ROWS = 4  # completions: the top half of each test digit given


def time_sampler(model: PixelCNN, method: str, n: int, device: torch.device) -> float:
    """Seconds to sample n images (one warm-up call first, then the best of two)."""
    model.sample(n, method=method)
    best = math.inf
    for _ in range(2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        tic = time.perf_counter()
        model.sample(n, method=method)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - tic)
    return best


def run_demo(out: Path, *, minutes: float = 2.0, device: torch.device | None = None) -> int:
    device = device or torch.device("cpu")
    out.mkdir(parents=True, exist_ok=True)
    train_all, _ = load_digits("train")
    test_x, _ = load_digits("test")
    # 1438 digits overfit a PixelCNN within minutes: hold out a validation tenth of the training
    # split, evaluate it every EVAL_EVERY steps and keep the best weights (early stopping).
    val_x, train_x = train_all[:VALIDATION], train_all[VALIDATION:]
    torch.manual_seed(0)
    model = PixelCNN(**MODEL_CONFIG).to(device)

    # Calibrate the number of steps that fits the time budget on this machine.
    probe = torch.optim.Adam(model.parameters(), lr=0.0)
    tic = time.perf_counter()
    for _ in range(5):
        probe.zero_grad()
        autoregressive_loss(model, train_x[:BATCH].to(device), None).backward()
    steps = max(50, int(minutes * 60 / ((time.perf_counter() - tic) / 5)))
    print(
        f"training a Gated PixelCNN ({sum(p.numel() for p in model.parameters())} parameters) "
        f"on {len(train_x)} digits for {steps} steps (~{minutes:g} min)"
    )
    best: dict[str, Any] = {"bits": math.inf, "step": 0, "state": None}

    def validate(step: int) -> None:
        model.eval()
        with torch.no_grad():
            bits = model.bits_per_dim(val_x.to(device)).mean().item()
        if bits < best["bits"]:
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best.update(bits=bits, step=step, state=state)

    config = TrainConfig(steps=steps, batch_size=BATCH, lr=3e-3, log_every=50, checkpoint_every=0)
    train(
        model,
        autoregressive_loss,
        train_x,
        None,
        config,
        out / "run",
        model_name="pixelcnn",
        model_config=MODEL_CONFIG,
        hooks=[(EVAL_EVERY, validate)],
    )
    validate(steps)
    model.load_state_dict(best["state"])
    # `latest` then names the kept weights: `pygen sample demo_out/run/checkpoints` uses them.
    save_checkpoint(
        out / "run" / "checkpoints",
        model,
        model_name="pixelcnn",
        config=MODEL_CONFIG,
        step=best["step"],
    )
    model.eval()
    with torch.no_grad():
        bits = model.bits_per_dim(test_x.to(device)).mean().item()
    baseline = independent_pixel_bits(train_x, test_x, DIGIT_LEVELS)

    with torch.no_grad():
        samples = model.sample(64, method="fused")
    grid = save_image_grid(
        samples.float() / (DIGIT_LEVELS - 1), out / "samples.png", nrow=8, scale=4
    )
    # 16 test digits completed from their top half: triplets of kept rows, completion, real.
    options = SampleOptions(
        generator=torch.Generator(device).manual_seed(0),
        inputs=test_x,
        complete_rows=COMPLETE_ROWS,
    )
    with torch.no_grad():
        triplets = RECIPES["pixelcnn"].sample(model, 16, options)
    completions = save_image_grid(triplets, out / "completions.png", nrow=12, scale=4)
    speeds = {}
    for method in ("fused", "cached", "naive"):
        seconds = time_sampler(model, method, 16, device)
        speeds[method] = {"seconds": seconds, "images_per_s": 16 / seconds}
    fastest = min(s["seconds"] for s in speeds.values())
    table = ["| sampler | batch 16, s | images/s | slower than fastest |", "|---|---:|---:|---:|"]
    for method, s in speeds.items():
        table.append(
            f"| {method} | {s['seconds']:.4f} | {s['images_per_s']:.1f} "
            f"| {s['seconds'] / fastest:.1f}x |"
        )
    (out / "sampling_speed.md").write_text("\n".join(table) + "\n")
    summary = {
        "test_bits_per_dim": bits,
        "independent_pixel_bits_per_dim": baseline,
        "best_step": best["step"],
        "samples": str(grid),
        "completions": str(completions),
        "sampling": speeds,
        "run": str(out / "run"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(
        f"\nheld-out bits/dim: {bits:.3f} at step {best['step']} of {steps}, the best on "
        f"validation (independent pixels: {baseline:.3f})"
    )
    print("\n".join(table))
    print(
        f"\nsamples:        {grid}\ncompletions:    {completions} (top {COMPLETE_ROWS} rows "
        "given; each: kept rows, completion, real digit)\n"
        f"sampling table: {out / 'sampling_speed.md'}\n"
        f"summary:        {out / 'summary.json'}\ntraining run:   {out / 'run'} "
        "(metrics.jsonl, curves.png, checkpoints/)"
    )
    return 0
