"""Tuning run of the CUDA PixelCNN sampler (GPU only): time per call of each variant of the row
kernels (the block kernel at each samples-per-block, the cluster kernel at each cluster size, its
weight rows resident in shared memory or streamed from L2), a case's variants timed side by side
(``benchmarks.common.measure_side_by_side``: the ratios that pick the default come from the same
minutes), and where the time goes (CUDA time per kernel, from the profiler).

Usage: ``python -m benchmarks.tune_pixelcnn``. Prints tables and writes each variant's row
(op ``pixelcnn_tuning``, provider = the variant) to benchmarks/results; findings go to
benchmarks/NOTES.md. A variant whose logits differ from the forward pass at the images it drew
(``benchmarks.common.check_sampler``, before it is timed) is reported wrong and gets no row.
"""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from collections.abc import Callable, Iterator

import torch

from benchmarks.bench_pixelcnn import MODELS, dependent_steps, gflop_per_image
from benchmarks.common import (
    check_sampler,
    measure_side_by_side,
    past_deadline,
    set_cases_left,
    write_results,
)
from benchmarks.common import row as bench_row
from pygen.models import PixelCNN

OP = "pixelcnn_tuning"  # its rows in benchmarks/results, apart from the suite's "pixelcnn"
# (model, batch, weights' dtype): the bfloat16 case times the 16-bit tensor-core tiles at b256.
CASES = [
    ("mnist28", 1, torch.float32),
    ("mnist28", 16, torch.float32),
    ("mnist28", 64, torch.float32),
    ("mnist28", 256, torch.float32),
    ("mnist28", 256, torch.bfloat16),
    ("rgb32", 1, torch.float32),
    ("rgb32", 256, torch.float32),
]
KNOBS = (
    "PYGEN_PIXELCNN_FUSED_LINK",
    "PYGEN_PIXELCNN_SAMPLES_PER_BLOCK",
    "PYGEN_PIXELCNN_CLUSTER",
    "PYGEN_PIXELCNN_CLUSTER_SAMPLES",
    "PYGEN_PIXELCNN_CLUSTER_RESIDENT",
    "PYGEN_PIXELCNN_FOLDED",
    "PYGEN_PIXELCNN_TENSOR_CORES",
)


def variants(batch: int) -> Iterator[tuple[str, dict[str, str]]]:
    """(label, environment) of each kernel variant worth timing at this batch: the sampler's own
    choice, then with the link kernel forced off and on, and its rivals; each cluster shape also
    folded (PYGEN_PIXELCNN_FOLDED=1). The H200 run of 2026-11-27 left out the clear losers:
    clusters of 2 and 4 blocks at small batches (1.6-3x slower than 8) and 8 samples per block.
    At large batches it timed clusters of 4 to 16 blocks 2.4x or more slower than the block
    kernel; two of those shapes come back, timed again since the products' loads and reductions
    changed (benchmarks/NOTES.md)."""
    yield "auto", {}
    yield "auto+separate-link", {"PYGEN_PIXELCNN_FUSED_LINK": "0"}
    yield "auto+fused-link", {"PYGEN_PIXELCNN_FUSED_LINK": "1"}
    block = {"PYGEN_PIXELCNN_CLUSTER": "1"}
    if 16 < batch <= 64:
        # Groups of 4 in clusters of 8: 16 clusters at b64, one wave if the card runs 16 at once
        # (the block kernel uses 64 of the multiprocessors there).
        cluster = {"PYGEN_PIXELCNN_CLUSTER": "8", "PYGEN_PIXELCNN_CLUSTER_SAMPLES": "4"}
        yield "cluster-8x4", cluster
        yield "cluster-8x4+folded", {**cluster, "PYGEN_PIXELCNN_FOLDED": "1"}
        # Groups of 8 in clusters of 16: 8 clusters, the weight slices resident (62 KB a block).
        cluster = {"PYGEN_PIXELCNN_CLUSTER": "16", "PYGEN_PIXELCNN_CLUSTER_SAMPLES": "8"}
        yield "cluster-16x8", cluster
        return
    if batch > 64:
        for samples in ("1", "4"):  # auto takes 2 per block here
            yield f"block-{samples}", {**block, "PYGEN_PIXELCNN_SAMPLES_PER_BLOCK": samples}
        # Pairs of blocks, each reading half of every weight for 4 samples: the block kernel's
        # L2 traffic halved, one wave at b256, a cluster barrier per product.
        cluster = {"PYGEN_PIXELCNN_CLUSTER": "2", "PYGEN_PIXELCNN_CLUSTER_SAMPLES": "4"}
        yield "cluster-2x4", cluster
        yield "cluster-2x4+folded", {**cluster, "PYGEN_PIXELCNN_FOLDED": "1"}
        # Groups of 16 in clusters of 8 (16 clusters at b256, weights streamed) and of 8 in
        # clusters of 4: each weight row read once per 16 or 8 samples, products reduced by
        # halving exchanges (reduce_items).
        for blocks, samples in (("8", "16"), ("4", "8")):
            cluster = {"PYGEN_PIXELCNN_CLUSTER": blocks, "PYGEN_PIXELCNN_CLUSTER_SAMPLES": samples}
            yield f"cluster-{blocks}x{samples}", cluster
            yield f"cluster-{blocks}x{samples}+folded", {**cluster, "PYGEN_PIXELCNN_FOLDED": "1"}
        # The groups of 16 with their products on tensor cores (mma.sync: three TF32 products in
        # float32, one bf16 or f16 product for 16-bit weights).
        cluster = {
            "PYGEN_PIXELCNN_CLUSTER": "8",
            "PYGEN_PIXELCNN_CLUSTER_SAMPLES": "16",
            "PYGEN_PIXELCNN_TENSOR_CORES": "1",
        }
        yield "cluster-8x16+tensor-cores", cluster
        yield "cluster-8x16+folded+tensor-cores", {**cluster, "PYGEN_PIXELCNN_FOLDED": "1"}
        return
    yield "block", block
    for blocks in ("8", "16"):
        cluster = {"PYGEN_PIXELCNN_CLUSTER": blocks}
        yield f"cluster-{blocks}", cluster
        yield f"cluster-{blocks}+folded", {**cluster, "PYGEN_PIXELCNN_FOLDED": "1"}
    yield (
        "cluster-16-streamed",
        {"PYGEN_PIXELCNN_CLUSTER": "16", "PYGEN_PIXELCNN_CLUSTER_RESIDENT": "0"},
    )


@contextlib.contextmanager
def environment(settings: dict[str, str]) -> Iterator[None]:
    """The sampler's knobs set as given (the others unset), restored afterwards."""
    saved = {k: os.environ.pop(k) for k in KNOBS if k in os.environ}
    os.environ.update(settings)
    try:
        yield
    finally:
        for k in KNOBS:
            os.environ.pop(k, None)
        os.environ.update(saved)


def in_environment(fn: Callable[[], object], settings: dict[str, str]) -> Callable[[], object]:
    """fn, called with the sampler's knobs as given (read by the sampler at each call)."""

    def call() -> object:
        with environment(settings):
            return fn()

    return call


def kernel_breakdown(fn) -> list[tuple[str, float]]:
    """CUDA milliseconds per kernel family over one call."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    totals: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            name = event.name
            for family in (
                "cluster_row_kernel",
                "row_kernel",
                "im2col",
                "bias_gate_link",
                "bias_gate",
                "image_row",
                "gemm",
                "Kernel2",
            ):
                if family in name:
                    name = family
                    break
            totals[name[:60]] += event.device_time_total / 1e3
    return sorted(totals.items(), key=lambda kv: -kv[1])[:8]


def tune(name: str, batch: int, dtype: torch.dtype, device: torch.device) -> list[dict]:
    """One case: every variant checked, then the variants that pass timed side by side; prints
    their times and the CUDA time per kernel of the fastest. Returns their rows."""
    torch.manual_seed(0)
    model = PixelCNN(**MODELS[name]).to(device, dtype).eval()
    gflop = gflop_per_image(model) * batch

    def sample():
        return model.sample(batch)

    lines, steps, settings_of = [], {}, {}
    for label, settings in variants(batch):
        with environment(settings):
            try:
                check_sampler(model, batch)
            except AssertionError as error:
                lines.append(f"{label}: WRONG, not timed ({str(error).splitlines()[0][:80]})")
                continue
            except (RuntimeError, ValueError) as error:
                if "PYGEN_PIXELCNN_CLUSTER" not in str(error):
                    raise  # a fault, not the plan's refusal: the context may be unusable
                lines.append(f"{label}: refused ({str(error).splitlines()[0][:80]})")
                continue
        steps[label], settings_of[label] = in_environment(sample, settings), settings
    # One warm-up call and 5 rounds each (a round of rgb32 at b256 takes ~0.3 s).
    timings = measure_side_by_side(steps, device, quick=True, rounds=5) if steps else {}
    shape = (batch, model.in_channels, *model.image_size)
    rows = []
    for label, timed in timings.items():
        ms = timed["median_ms"]
        lines.append(f"{label}: {ms:.1f} ms ({gflop / ms:.2f} TFLOP/s)")
        work = {"images_per_s": batch / ms * 1e3, "tflops": gflop / ms}
        work |= {"gflop_per_image": gflop / batch, "dependent_steps": dependent_steps(model)}
        rows.append(
            bench_row(OP, label, "sample", shape, dtype, device, timed, 0) | {"model": name} | work
        )
    print(f"{name} b{batch} {str(dtype)[6:]}:\n    " + "\n    ".join(lines))
    if timings and device.type == "cuda":
        fastest = min(timings, key=lambda label: timings[label]["median_ms"])
        print(f"  kernels of {fastest}:")
        with environment(settings_of[fastest]):
            for kernel, ms in kernel_breakdown(sample):
                print(f"    {ms:9.2f} ms  {kernel}")
    return rows


def main() -> None:
    assert torch.cuda.is_available(), "a GPU run"
    device = torch.device("cuda")
    rows = []
    for i, (name, batch, dtype) in enumerate(CASES):
        if past_deadline():
            print(f"the deadline has passed: {len(CASES) - i} cases not timed")
            break
        set_cases_left(len(CASES) - i)
        rows += tune(name, batch, dtype, device)
        write_results(rows, device)  # case by case: a deadline keeps the cases timed


if __name__ == "__main__":
    main()
