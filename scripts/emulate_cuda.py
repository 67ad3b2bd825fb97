"""Run pygen's CUDA kernels on the CPU, without a GPU, under ThreadSanitizer.

The device code of every CUDA kernel of pygen (csrc/pixelcnn/cuda.cu: the block and cluster row
kernels, the two small kernels of the vertical stack; csrc/pixelrnn, made_solve, reparam_kl,
affine_coupling and ceilings) is compiled as host C++ with the CUDA built-ins of
emulate_cuda/shim.h: each CUDA thread is a std::thread, barriers and warp exchanges are real
synchronisation, a cluster's blocks run at once and see each other's shared memory. The samplers'
blocks are narrowed to 64 threads (2 warps: every loop of the kernels strides by the block size),
so that a cluster of 16 runs as 1024 threads. A driver per kernel file (emulate_cuda/*.cpp: the
host code's loop, with the PixelCNN vertical stack's convolution and link product as plain loops)
feeds them; the results are compared with the CPU kernel's (or the twin's) for the same inputs
and noise or seed. The samplers' 16-bit cases cannot be: the CUDA kernels round their activations
between kernels to 16 bits where the CPU kernel computes in float32, so their images part ways;
there, the logits must follow the float32 forward pass over the emulated images, and each value
the draw of its noise under them. Under ThreadSanitizer (the default) any two accesses of one
location that no barrier orders are reported; under AddressSanitizer (``--sanitizer address``) any
access outside an array, global or shared, as memcheck would.

What it cannot show: the launch (cluster attributes, shared-memory limits, occupancy), the GPU's
memory model beyond barrier ordering, and speed. Usage: ``python scripts/emulate_cuda.py``
(``--kernels pixelrnn``: one kernel file; ``--quick``: fewer PixelCNN kernel configurations;
``--sanitizer none``: a faster build without a sanitizer)."""

from __future__ import annotations

import argparse
import itertools
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.utils.cpp_extension as cpp_extension

from pygen.layers import MADE
from pygen.models import PixelCNN, PixelRNN
from pygen.ops import channel_mask, checkerboard_mask, logdet_dtype
from pygen.ops.ceilings import cluster_exchange_expected
from pygen.sampling import export_pixelrnn_weights, export_weights

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent / "emulate_cuda"
EMULATED_THREADS = 64
TEMPERATURE = 0.8
SEED = 1234
# The drivers' dtype codes (driver_io.h, with_dtype) and the outputs' tolerances against the CPU
# kernels' (relative), for the kernels that compute in the inputs' dtype (float32 for 16-bit).
DTYPE_CODES = {torch.float64: 8, torch.float32: 4, torch.bfloat16: 2, torch.float16: 1}
TOLERANCES = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.bfloat16: 1e-2,
    torch.float16: 2e-3,
}

# PixelCNN kernel configurations: (cluster blocks or 1 for the block kernel, samples per block or
# group, weights resident, the vertical stack's bias, gate and link product in one kernel, the
# cluster kernel folded, its products on tensor cores). Groups of 4 and 8 exist for float32 only,
# of 16 for float32 and the 16-bit types; batches of 3 leave the last group partial. Tensor cores
# take groups of 16 and the products whose K is a multiple of 8 (float32) or 16 (16-bit):
# "grey-16" has them all but layer 0's gate product, the other models mix them with the warps'
# products (rgb-conditional: the folded gate products, in float32 only).
CONFIGS = [
    (1, 1, 0, 0, 0, 0),
    (1, 2, 0, 1, 0, 0),
    (1, 4, 0, 0, 0, 0),
    (2, 1, 1, 1, 0, 0),
    (4, 2, 1, 0, 0, 0),
    (4, 2, 0, 1, 0, 0),
    (16, 2, 1, 0, 0, 0),
    (16, 1, 0, 1, 0, 0),
    (2, 4, 1, 0, 0, 0),
    (4, 8, 0, 1, 0, 0),
    (2, 1, 1, 1, 1, 0),
    (4, 2, 0, 0, 1, 0),
    (16, 2, 1, 1, 1, 0),
    (4, 8, 1, 0, 1, 0),
    (8, 16, 0, 0, 0, 0),
    (2, 16, 1, 1, 1, 0),
    (8, 16, 0, 0, 0, 1),
    (2, 16, 1, 1, 1, 1),
    (4, 16, 1, 0, 0, 1),
    (16, 16, 0, 0, 1, 1),
]
QUICK_CONFIGS = [
    (1, 2, 0, 1, 0, 0),
    (4, 2, 1, 0, 0, 0),
    (16, 2, 0, 1, 0, 0),
    (4, 2, 0, 1, 1, 0),
]
PIXELCNN_MODELS = {
    # 256 levels: the level scale 2 / 255 is inexact in float32 (a float64 model's kernels must
    # take it in double).
    "grey": {"in_channels": 1, "n_levels": 256, "n_layers": 3, "hidden": 6, "kernel_size": 3},
    # Hidden 16: gate and output products of K 32 (folded 48) and 16, on tensor cores when asked.
    "grey-16": {"in_channels": 1, "n_levels": 17, "n_layers": 3, "hidden": 16, "kernel_size": 3},
    # Hidden 30 and 17 levels over 4 or 16 blocks: slices partly past the end, and empty ones.
    "rgb-conditional": {
        "in_channels": 3,
        "n_levels": 17,
        "n_layers": 3,
        "hidden": 30,
        "kernel_size": 5,
        "n_classes": 2,
    },
}
PIXELCNN_SIZES = {"grey": (4, 3), "grey-16": (4, 3), "rgb-conditional": (2, 3)}
# PixelRNN cases: (kind, channels, kernel size); a 5x5 input convolution wider than the image.
PIXELRNN_CASES = [("row", 1, 3), ("row", 3, 5), ("diagonal", 1, 3), ("diagonal", 3, 5)]

# What each sampler's emulation compiles: the kernel file, where its device code ends, the block
# sizes narrowed, the headers before it and its driver.
SOURCES = {
    "pixelcnn": (
        "csrc/pixelcnn/cuda.cu",
        "template <typename T, int S>\nvoid launch_row(",
        ("kThreads", "kClusterThreads"),
        [
            "common/philox.h",
            "common/vector_io.cuh",
            "common/cuda_draw.cuh",
            "common/math.h",
            "pixelcnn/pixelcnn.h",
        ],
        "pixelcnn_rows.cpp",
    ),
    "pixelrnn": (
        "csrc/pixelrnn/cuda.cu",
        "template <typename T>\nvoid run(",
        ("kThreads",),
        ["common/math.h", "common/philox.h", "common/cuda_draw.cuh", "pixelrnn/pixelrnn.h"],
        "pixelrnn_sampler.cpp",
    ),
    "ceilings": (
        "csrc/ceilings/cuda.cu",
        "}  // namespace\n\nvoid cluster_exchange_cuda(",
        ("kThreads",),
        ["ceilings/ceilings.h"],
        "ceilings.cpp",
    ),
    "made_solve": (
        "csrc/made_solve/cuda.cu",
        "// What both kernels read beside their arguments",
        ("kThreads",),
        ["made_solve/made_solve.h"],
        "made_solve.cpp",
    ),
    "affine_coupling": (
        "csrc/affine_coupling/cuda.cu",
        "template <typename scalar_t>\nconst scalar_t* ptr_or_null(",
        (),
        ["common/vector_io.cuh", "affine_coupling/affine_coupling.h"],
        "affine_coupling.cpp",
    ),
    "reparam_kl": (
        "csrc/reparam_kl/cuda.cu",
        "template <typename scalar_t>\nconst scalar_t* ptr_or_null(",
        (),  # blocks of 8 warps as on the GPU
        ["common/philox.h", "common/vector_io.cuh", "reparam_kl/reparam_kl.h"],
        "reparam_kl.cpp",
    ),
}
# Static shared arrays, placed at the start of the emulated block's shared memory.
STATIC_SHARED = re.compile(r"__shared__ (\w+) (\w+)\[(\w+)\]\[(\w+)\];")


def kernel_source(kernel: str) -> str:
    """The kernel file's device code after shim.h, then the driver."""
    path, end_marker, block_sizes, headers, driver = SOURCES[kernel]
    text = (ROOT / path).read_text()
    code = text[text.index("namespace {") : text.index(end_marker)]
    if block_sizes:
        names = "|".join(block_sizes)
        code, n = re.subn(
            rf"constexpr int ({names}) = \d+;", rf"constexpr int \1 = {EMULATED_THREADS};", code
        )
        assert n == len(block_sizes), f"the block sizes of {path} moved"
    code, n = re.subn(
        r"extern __shared__ (__align__\(16\) )?unsigned char smem_raw\[\];",
        "unsigned char* smem_raw = emu::shared_memory();",
        code,
    )
    code, m = STATIC_SHARED.subn(
        r"auto& \2 = *reinterpret_cast<\1(*)[\3][\4]>(emu::shared_memory());", code
    )
    assert n + m >= 1 or "__shared__" not in code, f"the shared-memory declarations of {path} moved"
    code = code.replace("#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900", "#if 1")
    namespace = "pygen::" + kernel
    prelude = '#include "shim.h"\n#include <ATen/OpMathType.h>\n'
    prelude += "".join(f'#include "{h}"\n' for h in headers)
    return (
        f"{prelude}namespace {namespace} {{\n{code}}}  // namespace\n}}  // namespace {namespace}\n"
        + (HERE / driver).read_text()
    )


# Compiler flags per sanitizer: ThreadSanitizer reports accesses that no barrier orders;
# AddressSanitizer reads and writes outside an array (global or a block's shared memory), as
# compute-sanitizer's memcheck does on the GPU (std::vector's spare capacity included).
SANITIZER_FLAGS = {
    "thread": ["-fsanitize=thread", "-O1"],
    "address": [
        "-fsanitize=address",
        "-fno-omit-frame-pointer",
        "-D_GLIBCXX_SANITIZE_VECTOR",
        "-O1",
    ],
    "none": ["-O2"],
}


def build(workdir: Path, kernel: str, sanitizer: str = "none") -> Path:
    source = workdir / f"{kernel}_emulated.cpp"
    source.write_text(kernel_source(kernel))
    binary = workdir / kernel
    lib = Path(torch.__file__).parent / "lib"
    command = [
        "g++",
        "-std=c++20",
        "-g",
        *SANITIZER_FLAGS[sanitizer],
        "-Wno-unknown-pragmas",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        f"-I{ROOT / 'csrc'}",
        f"-I{HERE}",
        *(f"-I{p}" for p in cpp_extension.include_paths()),
        str(source),
        "-o",
        str(binary),
        f"-L{lib}",
        "-lc10",
        f"-Wl,-rpath,{lib}",
    ]
    subprocess.run(command, check=True)
    return binary


def run_driver(
    binary: Path, workdir: Path, header: list[int], arrays: list, value: float = TEMPERATURE
) -> bytes | str:
    """The driver's output for one problem (its header, one float64 `value`, the arrays), or the
    failure's message (a sanitizer's report among them)."""
    problem, result = workdir / "problem.bin", workdir / "result.bin"
    with problem.open("wb") as f:
        f.write(np.asarray(header, dtype=np.int64).tobytes())
        f.write(np.asarray([value], dtype=np.float64).tobytes())
        for t in arrays:
            values = t.detach().double().contiguous().numpy().ravel()
            f.write(np.asarray([values.size], dtype=np.int64).tobytes())
            f.write(values.tobytes())
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0"}  # c10's static state outlives main
    command = [str(binary), str(problem), str(result)]
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    if run.returncode != 0 or "Sanitizer" in run.stderr:
        report = max(0, run.stderr.find("Sanitizer") - 100)  # the report's head: what, where
        return f"exit {run.returncode}\n{run.stderr[report : report + 3000]}"
    return result.read_bytes()


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """The largest |got - want| relative to 1 + |want| (NaN where either holds one)."""
    return ((got - want).abs() / (1 + want.abs())).max().item()


def compare_values(raw: bytes | str, want, tol: float) -> str | None:
    """None when the driver's float64 values are the tensors ``want``, flattened one after the
    other, within ``tol`` relative to 1 + |value|, and NaN exactly where ``want`` is (a gap the
    kernel must leave untouched); else what differs (or the failure's message)."""
    if isinstance(raw, str):
        return raw
    got = torch.from_numpy(np.frombuffer(raw, dtype=np.float64).copy())
    want = torch.cat([t.double().flatten() for t in want])
    if got.shape != want.shape:
        return f"{got.numel()} values out, {want.numel()} expected"
    gaps = want.isnan()
    if not torch.equal(got.isnan(), gaps):
        return f"{(got.isnan() != gaps).sum().item()} values written in a gap or left NaN"
    err = relative_error(got[~gaps], want[~gaps])
    return None if err <= tol else f"values differ by {err:.2e} (relative)"


def sampled(raw: bytes, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A sampler driver's n images values (int64) and its logits (float64), flat."""
    images = torch.from_numpy(np.frombuffer(raw[: 8 * n], dtype=np.int64).copy())
    return images, torch.from_numpy(np.frombuffer(raw[8 * n :], dtype=np.float64).copy())


def compare(raw: bytes | str, images: torch.Tensor, logits: torch.Tensor, dtype) -> str | None:
    """None when the driver's images equal the CPU kernel's and its logits are within rounding."""
    if isinstance(raw, str):
        return raw
    got_images, got_logits = sampled(raw, images.numel())
    if not torch.equal(got_images, images.flatten()):
        return f"images differ at {(got_images != images.flatten()).sum().item()} values"
    # float32: every case came within 6e-8 (the warps' and the tensor cores' products alike); one
    # TF32 product instead of three is 1e-4 off.
    tol = 1e-9 if dtype == torch.float64 else 1e-6
    err = (got_logits - logits.double().flatten()).abs().max().item()
    return None if err <= tol else f"logits differ by {err:.2e}"


# 16-bit samplers against the float32 forward pass of the same rounded weights: logits within
# tol x (1 + |logit|) and each noise value within tol of its level's CDF interval. The cases'
# models give logits below 1, where the 16-bit activations' rounding came to at most 2.2e-3
# (bfloat16) and 3.4e-4 (float16): tol leaves ~3x of it.
HALF_TOL = {torch.float16: 1e-3, torch.bfloat16: 8e-3}
# The samplers' (dtype, use_noise) cases; 16-bit with noise only, as the seeded draws' Philox
# stream is the float32 kernels'.
SAMPLER_CASES = [
    *itertools.product((torch.float64, torch.float32), (True, False)),
    (torch.bfloat16, True),
    (torch.float16, True),
]


def compare_16_bit(raw: bytes | str, model, y, noise, shape, dtype) -> str | None:
    """None when a 16-bit driver's logits follow the float32 forward pass of the model (its
    weights already rounded to 16 bits) over the driver's own images, and each value is the draw
    of its noise under those logits. The CUDA samplers keep their activations between kernels in
    16 bits where the CPU kernel computes in float32, so the two draw different images: the
    sampler's contract is checked instead."""
    if isinstance(raw, str):
        return raw
    levels = model.n_levels
    images, logits = sampled(raw, math.prod(shape))
    if images.min() < 0 or images.max() >= levels:
        return f"images outside [0, {levels})"
    images, logits = images.view(shape), logits.view(shape[0], levels, *shape[1:])
    with torch.no_grad():
        want = model.float()(images, y).double()
    tol = HALF_TOL[dtype]
    err = relative_error(logits, want)
    if not err <= tol:  # NaN fails too
        return f"logits off the float32 forward pass by {err:.2e} (relative)"
    if noise is None:
        return None
    cdf = torch.softmax(logits.movedim(1, -1) / TEMPERATURE, -1).cumsum(-1)
    cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf], -1)
    low = cdf.gather(-1, images.unsqueeze(-1)).squeeze(-1)
    high = cdf.gather(-1, images.unsqueeze(-1) + 1).squeeze(-1)
    u = noise.double()
    off = ((u < low - tol) | (u > high + tol)).sum().item()
    return None if off == 0 else f"{off} values are not the draws of their noise"


def given_levels(shape: tuple[int, ...], levels: int, use_noise: bool) -> torch.Tensor | None:
    """The seeded cases' given levels: each sample's first row and, in sample 0, its last value
    (kept without conditioning what comes before); None in the cases with noise."""
    if use_noise:
        return None
    given = torch.full(shape, -1, dtype=torch.int64)
    given[:, :, 0] = torch.randint(levels, given[:, :, 0].shape)
    given[0, -1, -1, -1] = levels - 1
    return given


def run_case(binary: Path, workdir: Path, name: str, dtype, use_noise: bool, config) -> str | None:
    """A PixelCNN case: None when the emulated kernels draw the CPU kernel's images (16-bit: keep
    the sampler's contract, compare_16_bit)."""
    torch.manual_seed(0)
    spec = PIXELCNN_MODELS[name]
    batch, size = 3, PIXELCNN_SIZES[name]
    model = PixelCNN(image_size=size, **spec).eval().to(dtype)
    y = torch.tensor([1, 0, 1]) if spec.get("n_classes") else None
    weights = export_weights(model, y, batch)
    channels, levels = spec["in_channels"], spec["n_levels"]
    noise = torch.rand(batch, channels, *size, dtype=dtype) if use_noise else None
    given = given_levels((batch, channels, *size), levels, use_noise)
    dims = [batch, channels, *size, levels, spec["hidden"], spec["kernel_size"], spec["n_layers"]]
    header = [*dims, SEED, 1, *config, DTYPE_CODES[dtype]]
    noise_array = noise if use_noise else torch.empty(0)
    given_array = torch.empty(0) if given is None else given
    raw = run_driver(binary, workdir, header, [*weights, noise_array, given_array])
    if dtype.itemsize == 2:
        return compare_16_bit(raw, model, y, noise, (batch, channels, *size), dtype)
    seed = None if use_noise else torch.tensor([SEED])
    expected = torch.ops.pygen.pixelcnn_sample(
        weights, noise, seed, given, *dims[:5], spec["kernel_size"], TEMPERATURE, True
    )
    return compare(raw, *expected, dtype)


def run_pixelrnn_case(binary: Path, workdir: Path, case, dtype, use_noise: bool) -> str | None:
    """A PixelRNN case: None when the emulated kernel draws the CPU kernel's images (16-bit: keep
    the sampler's contract, compare_16_bit)."""
    kind, channels, kernel_size = case
    torch.manual_seed(0)
    batch, size, levels = 2, (3, 4), 5
    model = PixelRNN(
        in_channels=channels,
        n_levels=levels,
        n_layers=2,
        hidden=6 * channels,
        kind=kind,
        kernel_size=kernel_size,
        image_size=size,
    )
    weights = export_pixelrnn_weights(model.eval().to(dtype))
    noise = torch.rand(batch, channels, *size, dtype=dtype) if use_noise else None
    given = given_levels((batch, channels, *size), levels, use_noise)
    row_kernel = 1 if kind == "diagonal" else weights[2].shape[0] // (6 * channels)
    header = [batch, channels, *size, levels, 6 * channels, kernel_size, row_kernel, 2]
    header += [int(kind == "diagonal"), SEED, DTYPE_CODES[dtype], len(weights)]
    noise_array = noise if use_noise else torch.empty(0)
    given_array = torch.empty(0) if given is None else given
    raw = run_driver(binary, workdir, header, [*weights, noise_array, given_array])
    if dtype.itemsize == 2:
        return compare_16_bit(raw, model, None, noise, (batch, channels, *size), dtype)
    seed = None if use_noise else torch.tensor([SEED])
    expected = torch.ops.pygen.pixelrnn_sample(
        weights,
        noise,
        seed,
        given,
        kind,
        batch,
        channels,
        *size,
        levels,
        kernel_size,
        TEMPERATURE,
        True,
    )
    return compare(raw, *expected, dtype)


# MADE solve cases: (hidden, hidden layers, inputs, rows); hidden 3 over 5 degrees leaves degrees
# without units, 40 over 19 gives blocks of 2-3 (several warps); 11 rows: a partial second tile.
MADE_CASES = [(3, 1, 6, 5), (12, 2, 6, 11), (40, 3, 20, 9)]
SCALE_FNS = {"exp": 1, "tanh": 2, "atan": 3, "sigmoid": 4}  # affine_coupling::ScaleFn
# The MADE solve's outputs and gradients against the CPU operator's (relative); in 16 bits wider
# than TOLERANCES.
MADE_TOLERANCES = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.bfloat16: 2e-2,
    torch.float16: 3e-3,
}


def made_solve_table(solve_weights, order: list[int], mask: torch.Tensor) -> torch.Tensor:
    """The kernel's int64 table: units, bounds, order, the spans of the values filled (inputs) and
    computed (hidden units) at each step, and keep. The spans as made_solve.cpp's make_solve
    grows them."""
    _, _, units, bounds = solve_weights
    dim = len(order)

    def grow(span, i):
        return (min(span[0], i), max(span[1], i + 1)) if span[1] > span[0] else (i, i + 1)

    filled, computed, spans, j = (0, 0), (0, 0), [], 0
    for m in range(dim):
        if m > 0:
            filled = grow(filled, order[m - 1])
        while j < bounds[m]:
            computed = grow(computed, int(units[j]))
            j += 1
        spans.append((filled, computed))
    table = [*units.tolist(), *bounds, *order]
    table += [v for f, _ in spans for v in f] + [v for _, c in spans for v in c]
    table += (mask != 0).long().tolist()
    return torch.tensor(table, dtype=torch.float64)


def run_made_case(
    binary: Path, workdir: Path, case, dtype, scale_fn: str, backward: bool = False
) -> str | None:
    """A MADE solve case: None when the emulated forward kernel gives the CPU kernel's x and
    params, or (backward) the emulated backward kernel's gradients, completed by the products the
    operator runs (made_solve.cpp), give the CPU operator's gradients of target, weights and
    biases."""
    hidden, n_hidden, dim, rows = case
    torch.manual_seed(0)
    made = MADE(dim, hidden, n_hidden, order="random", seed=3).to(dtype)
    with torch.no_grad():
        for p in made.parameters():
            p.add_(0.3 * torch.randn_like(p))
    target = torch.randn(rows, dim, dtype=dtype)
    mask = torch.zeros(dim, dtype=dtype)
    mask[2] = 1  # one input passes through
    order = made.order.tolist()
    clamp = 1.5 if scale_fn in ("tanh", "atan") else None
    weights, biases, units, bounds = solve = made.solve_weights(target)
    leaves = [t.detach().requires_grad_(backward) for t in (target, *weights, *biases)]
    layers = len(weights)
    with torch.set_grad_enabled(backward):
        x, params = torch.ops.pygen.made_affine_solve(
            leaves[0],
            leaves[1 : 1 + layers],
            leaves[1 + layers :],
            units,
            bounds,
            order,
            mask,
            scale_fn,
            clamp,
            True,
        )
    header = [rows, dim, hidden, layers, SCALE_FNS[scale_fn], 1]
    header += [DTYPE_CODES[dtype], int(backward)]
    arrays = [*weights, *biases, made_solve_table(solve, order, mask), target]
    tol = MADE_TOLERANCES[dtype]
    if not backward:
        raw = run_driver(binary, workdir, header, arrays, value=clamp or 0.0)
        return compare_values(raw, (x, params), tol)
    grad_x, grad_params = torch.randn_like(x), torch.randn_like(params)
    want = torch.autograd.grad((x * grad_x).sum() + (params * grad_params).sum(), leaves)
    # The MADE's activations at x (MADE's units all have degrees 1 .. D - 1: none stays zero).
    below, acts = x.detach().to(weights[0].dtype), []
    for w, b in zip(weights[:-1], biases[:-1], strict=True):
        below = torch.relu(below @ w.T + b)
        acts.append(below)
    acts = torch.stack(acts)
    raw = run_driver(
        binary, workdir, header, [*arrays, grad_x, grad_params, params, acts], clamp or 0.0
    )
    if isinstance(raw, str):
        return raw
    got = torch.from_numpy(np.frombuffer(raw, dtype=np.float64).copy())
    grad_target, g_units, g_out = got.split([x.numel(), acts.numel(), params.numel()])
    g_units, g_out = g_units.view(acts.shape), g_out.view(rows, 2 * dim)
    gs = [*g_units, g_out]
    belows = [x.detach().double(), *acts.double()]
    # The operator's products: each weight's gradient where the forward reads it (here its
    # nonzero entries, the MADE's mask), each bias's the sum over samples.
    grads = [g.T @ a * (w != 0) for g, a, w in zip(gs, belows, weights, strict=True)]
    grads = [grad_target.view(rows, dim), *grads, *(g.sum(0) for g in gs)]
    for name, a, b in zip(["target", *range(2 * layers)], grads, want, strict=True):
        b = b.double()
        err = (a - b).abs().max().item() / (1 + b.abs().max().item())
        if err > tol:
            return f"gradient {name} differs by {err:.2e} (relative to its largest entry)"
    return None


# Reparameterize + KL cases: (rows, dim, samples). 520 per row: a lane's several groups (the 16-bit
# rows' loads ahead); 517: the element path; 24: lanes past the row's end. 9 rows: a partial block.
REPARAM_CASES = [(9, 520, 2), (5, 517, 1), (3, 24, 1)]


def reparam_vector_paths(case, dtype) -> list[bool]:
    """The kernels' instantiations a case can run: the vector one only for rows of whole groups."""
    group = 4 if dtype == torch.float64 else 8  # wide_group in common/vector_io.cuh
    return [True, False] if case[1] % group == 0 else [False]


def rows_at_stride(t: torch.Tensor, stride: int, run: int = 0, run_stride: int = 0) -> torch.Tensor:
    """t's samples as rows ``stride`` elements apart, each in runs of ``run`` elements
    ``run_stride`` apart where run is given, NaN between them (an input read there, or an output
    written there, shows)."""
    rows = t.reshape(len(t), -1)
    row_len = rows.shape[1]
    run, run_stride = (run, run_stride) if run else (row_len, row_len)
    e = torch.arange(row_len)
    index = torch.arange(len(t))[:, None] * stride + e // run * run_stride + e % run
    wide = torch.full((len(t) * stride,), float("nan"), dtype=t.dtype)
    wide[index] = rows
    return wide


def grads_at_stride(grad_mu: torch.Tensor, grad_logvar: torch.Tensor, stride: int, offset: int):
    """The backward driver's gradient buffer as the kernel must leave it: the rows of grad_mu
    ``stride`` elements apart from its start, those of grad_logvar from ``offset``, NaN between."""
    rows, dim = grad_mu.shape
    index = torch.arange(rows)[:, None] * stride + torch.arange(dim)
    buffer = torch.full((offset + (rows - 1) * stride + dim,), float("nan"), dtype=torch.float64)
    buffer[index] = grad_mu.double()
    buffer[offset + index] = grad_logvar.double()
    return buffer


def run_reparam_case(
    binary: Path,
    workdir: Path,
    case,
    dtype,
    use_noise: bool,
    vector: bool,
    backward: bool,
    stacked: bool,
) -> str | None:
    """A reparameterize + KL case: None when the emulated kernel gives the CPU kernel's z and kl,
    or (backward) its gradients of mu and logvar, within the dtype's rounding. ``stacked``: mu and
    logvar rows at the strides of the halves of wider tensors (2 and 3 rows' lengths), and the
    gradients written as into the halves of one (the stacked op's), with a row's length of gap
    after each row of grad_logvar that must stay untouched."""
    rows, dim, samples = case
    torch.manual_seed(0)
    mu, logvar = torch.randn(2, rows, dim, dtype=torch.float64).to(dtype)
    z_shape = (samples, rows, dim) if samples > 1 else (rows, dim)
    noise = torch.randn(z_shape, dtype=torch.float64).to(dtype) if use_noise else None
    seed = None if use_noise else torch.tensor([SEED])
    strides = (2 * dim, 3 * dim) if stacked else (dim, dim)
    # The gradients' row stride, and where grad_logvar starts in their buffer.
    grad_layout = (3 * dim, dim) if stacked else (dim, rows * dim)
    header = [rows, dim, samples, *strides, *grad_layout, SEED, DTYPE_CODES[dtype]]
    header += [int(vector), int(backward)]
    arrays = [rows_at_stride(mu, strides[0]), rows_at_stride(logvar, strides[1])]
    arrays.append(noise if use_noise else torch.empty(0))
    if backward:
        grad_z = torch.randn(z_shape, dtype=torch.float64).to(dtype)
        grad_kl = torch.randn(rows, dtype=torch.float64).to(logdet_dtype(dtype))  # as the KL
        want = torch.ops.pygen.reparameterize_kl_backward(
            grad_z, grad_kl, mu, logvar, noise, seed, samples
        )
        want = [grads_at_stride(*want, *grad_layout)]
        arrays += [grad_z, grad_kl]
    else:
        want = torch.ops.pygen.reparameterize_kl(mu, logvar, noise, seed, samples)
    raw = run_driver(binary, workdir, header, arrays)
    # Drawn noise is float in every dtype, and the CPU kernel's vector code (FMA) rounds it apart.
    tol = TOLERANCES[dtype] if use_noise else max(TOLERANCES[dtype], 1e-6)
    return compare_values(raw, want, tol)


# Affine coupling cases: (per-sample shape, mask kind code as pygen.ops.MaskKind, mask per
# sample). Widths of 6 (a group across lines) and 48 (one division per group), 2 x 48 x 48: two
# segments per sample; 5 channels: an odd split and rows of no whole group; a mask read per sample.
AFFINE_CASES = [
    ((4, 6, 6), 1, False),
    ((2, 48, 48), 2, False),
    ((5, 3, 3), 3, False),
    ((10,), 0, True),
]
AFFINE_SCALE_FNS = {"none": 0, **SCALE_FNS}


def affine_problem(
    shape, code: int, per_sample: bool, scale_fn: str, reverse: bool, layout: str
) -> list[int]:
    """The kernels' Problem as affine_coupling.cpp makes it (less the clamp). ``layout`` of
    log_scale, shift and their gradients: "rows", contiguous; "stacked", rows at the strides of
    chunks of wider tensors (3 and 2 samples' lengths), the gradients' as the halves of one (2);
    "runs", the stacked params of a channels-last x: rows 2 samples' lengths apart in runs of
    shape[0] elements (C) twice that apart."""
    row_len = math.prod(shape)
    stacked = layout != "rows"
    run, run_stride = (shape[0], 2 * shape[0]) if layout == "runs" else (row_len, row_len)
    kind, parity = (code + 1) // 2, 0 if code == 0 else (code + 1) % 2
    width, height = shape[-1], shape[-2] if len(shape) >= 2 else 1
    split = (shape[0] // 2) * (row_len // shape[0])
    stride = row_len if per_sample else 0
    return [
        row_len,
        AFFINE_SCALE_FNS[scale_fn],
        int(reverse),
        kind,
        parity,
        width,
        height,
        split,
        stride,
        (2 if layout == "runs" else 3) * row_len if stacked else row_len,
        2 * row_len if stacked else row_len,
        2 * row_len if stacked else row_len,
        run,
        run_stride,
    ]


def run_affine_case(
    binary: Path,
    workdir: Path,
    case,
    dtype,
    scale_fn: str,
    reverse: bool,
    vector: bool,
    backward: bool,
    layout: str,
) -> str | None:
    """An affine coupling case: None when the emulated kernel gives the CPU kernel's y and logdet,
    or (backward) its gradients, within the dtype's rounding."""
    shape, code, per_sample = case
    rows = 3
    torch.manual_seed(0)
    x, log_scale, shift = torch.randn(3, rows, *shape, dtype=torch.float64).to(dtype)
    if code == 0:
        mask = (torch.rand(rows if per_sample else 1, *shape) < 0.5).to(dtype)
    else:
        pattern = checkerboard_mask if code in (1, 2) else channel_mask
        mask = pattern(shape, (code + 1) % 2).to(dtype)
    log_scale = None if scale_fn == "none" else log_scale
    clamp = 1.5 if scale_fn in ("tanh", "atan") else None
    settings = (mask, code, scale_fn, clamp, reverse)
    problem = affine_problem(shape, code, per_sample, scale_fn, reverse, layout)
    header = [rows, *problem, DTYPE_CODES[dtype], int(vector), int(backward)]
    kernel_mask = mask.expand(rows, *shape) if per_sample else mask.expand(1, *shape)
    log_scale_stride, shift_stride, param_grad_stride, *runs = problem[-5:]
    arrays = [
        x,
        torch.empty(0) if log_scale is None else rows_at_stride(log_scale, log_scale_stride, *runs),
        rows_at_stride(shift, shift_stride, *runs),
    ]
    arrays.append((kernel_mask != 0).double() if code == 0 else torch.empty(0))
    if backward:
        grad_y = torch.randn(rows, *shape, dtype=torch.float64).to(dtype)
        grad_logdet = torch.randn(rows, dtype=torch.float64).to(
            torch.promote_types(dtype, torch.float32)
        )
        grad_x, *grad_params = torch.ops.pygen.affine_coupling_backward(
            grad_y, grad_logdet, x, log_scale, shift, *settings
        )
        want = [grad_x] + [
            rows_at_stride(g, param_grad_stride, *runs) for g in grad_params if g.numel()
        ]
        arrays += [grad_y, grad_logdet]
    else:
        want = torch.ops.pygen.affine_coupling(x, log_scale, shift, *settings)
    raw = run_driver(binary, workdir, header, arrays, value=clamp or 0.0)
    return compare_values(raw, want, TOLERANCES[dtype])


def affine_vector_paths(case, layout: str) -> list[bool]:
    """The kernels' paths a case can take: vector loads only for samples (and runs) of whole
    groups."""
    shape = case[0]
    whole = math.prod(shape) % 4 == 0 and (layout != "runs" or shape[0] % 4 == 0)  # kVec
    return [True, False] if whole else [False]


def affine_layouts(case, dtype) -> list[str]:
    """The layouts of log_scale and shift a case runs (affine_problem): rows apart (chunks of a
    stacked tensor) for float32; runs (a channels-last x's params: images only) for float32 and
    bfloat16."""
    layouts = ["rows"]
    if dtype == torch.float32:
        layouts.append("stacked")
    if dtype in (torch.float32, torch.bfloat16) and len(case[0]) == 3:
        layouts.append("runs")
    return layouts


# Cluster exchange cases: (blocks, steps); 5 steps reuse each set of slots.
CEILINGS_CASES = [(2, 1), (4, 5), (8, 5), (16, 5)]


def run_ceilings_case(binary: Path, workdir: Path, blocks: int, steps: int) -> str | None:
    """A cluster exchange: None when the emulated kernel's sum is its twin's."""
    raw = run_driver(binary, workdir, [blocks, steps], [])
    if isinstance(raw, str):
        return raw
    got = int(np.frombuffer(raw, dtype=np.float64)[0])
    want = cluster_exchange_expected(blocks, steps)
    return None if got == want else f"sum {got}, expected {want}"


def emulated_cases(kernel: str, quick: bool):
    """(label, run, args) for each case of a kernel file: ``run(binary, workdir, *args)`` is None
    when the case passes, else the failure's message."""
    sources = {True: "noise", False: "seed"}
    if kernel == "pixelcnn":
        labels = ("cluster", "samples", "resident", "fused_link", "folded", "tensor_cores")
        configs = QUICK_CONFIGS if quick else CONFIGS
        for name, config, (dtype, use_noise) in itertools.product(
            PIXELCNN_MODELS, configs, SAMPLER_CASES
        ):
            if config[0] > 1 and config[1] > 2 and dtype != torch.float32:
                if config[1] != 16 or dtype == torch.float64:
                    continue  # groups of 4 and 8: float32 only; of 16: float32 and 16-bit
            if name == "grey-16" and not config[5]:
                continue  # a model for the tensor cores' products
            settings = (f"{k}={v}" for k, v in zip(labels, config, strict=True))
            label = " ".join([name, *settings, str(dtype)[6:], sources[use_noise]])
            yield label, run_case, (name, dtype, use_noise, config)
    elif kernel == "pixelrnn":
        for case, (dtype, use_noise) in itertools.product(PIXELRNN_CASES, SAMPLER_CASES):
            label = f"{case} {str(dtype)[6:]} {sources[use_noise]}"
            yield label, run_pixelrnn_case, (case, dtype, use_noise)
    elif kernel == "ceilings":
        for blocks, steps in CEILINGS_CASES:
            yield f"{blocks} blocks {steps} steps", run_ceilings_case, (blocks, steps)
    elif kernel == "made_solve":
        for case, dtype, scale_fn, backward in itertools.product(
            MADE_CASES, DTYPE_CODES, SCALE_FNS, (False, True)
        ):
            label = f"{case} {str(dtype)[6:]} {scale_fn} {'backward' if backward else 'forward'}"
            yield label, run_made_case, (case, dtype, scale_fn, backward)
    elif kernel == "affine_coupling":
        for case, dtype, scale_fn, reverse, backward in itertools.product(
            AFFINE_CASES, DTYPE_CODES, AFFINE_SCALE_FNS, (False, True), (False, True)
        ):
            for layout in affine_layouts(case, dtype):
                if layout == "runs" and scale_fn == "none":
                    continue  # stacked params hold a log_scale
                for vector in affine_vector_paths(case, layout):
                    label = f"{case} {str(dtype)[6:]} {scale_fn}"
                    label += f" {'reverse' if reverse else 'forward'}"
                    label += f" {'vector' if vector else 'element'}"
                    label += f" {'gradients' if backward else 'values'}"
                    label += "" if layout == "rows" else f" {layout}"
                    args = (case, dtype, scale_fn, reverse, vector, backward, layout)
                    yield label, run_affine_case, args
    else:
        for case, dtype, use_noise, backward in itertools.product(
            REPARAM_CASES, DTYPE_CODES, (True, False), (False, True)
        ):
            # mu and logvar rows apart (an encoder output's halves): float32 and the 16-bit path
            # that loads a group ahead
            wide = dtype in (torch.float32, torch.bfloat16)
            layouts = (False, True) if wide else (False,)
            for vector, stacked in itertools.product(reparam_vector_paths(case, dtype), layouts):
                label = f"{case} {str(dtype)[6:]} {sources[use_noise]}"
                label += (
                    f" {'vector' if vector else 'element'} {'gradients' if backward else 'values'}"
                )
                label += " stacked" if stacked else ""
                args = (case, dtype, use_noise, vector, backward, stacked)
                yield label, run_reparam_case, args


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", nargs="+", choices=sorted(SOURCES), default=sorted(SOURCES))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sanitizer", choices=sorted(SANITIZER_FLAGS), default="thread")
    opts = parser.parse_args()
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for kernel in opts.kernels:
            start = time.time()
            binary = build(workdir, kernel, opts.sanitizer)
            print(f"{kernel}: built in {time.time() - start:.0f} s", flush=True)
            for label, run, args in emulated_cases(kernel, opts.quick):
                start = time.time()
                error = run(binary, workdir, *args)
                verdict = "ok  " if error is None else "FAIL"
                print(f"{verdict} {kernel} {label} ({time.time() - start:.1f} s)", flush=True)
                if error is not None:
                    print(error)
                    failures += 1
    print(f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
