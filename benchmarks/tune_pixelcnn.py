"""Tuning run of the CUDA PixelCNN sampler (GPU only): images/s of each samples-per-block variant
of the row kernel, and where the time goes (CUDA time per kernel, from the profiler).

Usage: ``python -m benchmarks.tune_pixelcnn``. Prints tables; findings go to benchmarks/NOTES.md.
"""

from __future__ import annotations

import os
import statistics
from collections import defaultdict

import torch

from benchmarks.bench_pixelcnn import MODELS, gflop_per_image
from pygen.models import PixelCNN

VARIANTS = [None, "1", "2", "4", "8"]  # None: the kernel's own choice
CASES = [("mnist28", 1), ("mnist28", 256), ("rgb32", 1), ("rgb32", 256)]


def median_ms(fn, rounds: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def kernel_breakdown(fn) -> list[tuple[str, float]]:
    """CUDA milliseconds per kernel family over one call."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    totals: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            name = event.name
            for family in ("row_kernel", "im2col", "bias_gate", "image_row", "gemm", "Kernel2"):
                if family in name:
                    name = family
                    break
            totals[name[:60]] += event.device_time_total / 1e3
    return sorted(totals.items(), key=lambda kv: -kv[1])[:8]


def main() -> None:
    assert torch.cuda.is_available(), "a GPU run"
    for name, batch in CASES:
        torch.manual_seed(0)
        model = PixelCNN(**MODELS[name]).cuda().eval()
        gflop = gflop_per_image(model) * batch

        def sample(model=model, batch=batch):
            return model.sample(batch)

        row = []
        for variant in VARIANTS if batch > 1 else [None]:
            if variant is None:
                os.environ.pop("PYGEN_PIXELCNN_SAMPLES_PER_BLOCK", None)
            else:
                os.environ["PYGEN_PIXELCNN_SAMPLES_PER_BLOCK"] = variant
            ms = median_ms(sample)
            row.append(f"{variant or 'auto'}: {ms:.1f} ms ({gflop / ms:.2f} TFLOP/s)")
        os.environ.pop("PYGEN_PIXELCNN_SAMPLES_PER_BLOCK", None)
        print(f"{name} b{batch}: " + " | ".join(row))
        for kernel, ms in kernel_breakdown(sample):
            print(f"    {ms:9.2f} ms  {kernel}")


if __name__ == "__main__":
    main()
