"""Run the CUDA PixelCNN sampler's kernels on the CPU, without a GPU, under ThreadSanitizer.

The device code of csrc/pixelcnn/cuda.cu (the row kernels and the two small kernels of the
vertical stack) is compiled as host C++ with the CUDA built-ins of emulate_cuda/shim.h: each CUDA
thread is a std::thread, barriers and warp exchanges are real synchronisation, a cluster's blocks
run at once and see each other's shared memory. Blocks are narrowed to 64 threads (2 warps: every
loop of the kernels strides by the block size) so that a cluster of 16 runs as 1024 threads. The
host's row loop (emulate_cuda/pixelcnn_rows.cpp) feeds them; the images and logits are compared
with the CPU kernel's for the same weights and noise or seed. TSan reports any two accesses of one
location that no barrier orders.

What it cannot show: the launch (cluster attributes, shared-memory limits, occupancy), the GPU's
memory model beyond barrier ordering, and speed. Usage: ``python scripts/emulate_cuda.py``
(``--quick``: fewer kernel configurations; ``--no-tsan``: a faster build without the sanitizer).
"""

from __future__ import annotations

import argparse
import itertools
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.utils.cpp_extension as cpp_extension

from pygen.models import PixelCNN
from pygen.sampling import export_weights

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent / "emulate_cuda"
EMULATED_THREADS = 64
TEMPERATURE = 0.8

# (cluster blocks or 1 for the block kernel, samples per block or group, weights resident).
# Groups of 4 and 8 samples exist for float32 only; batches of 3 leave the last group partial.
CONFIGS = [
    (1, 1, 0),
    (1, 2, 0),
    (1, 4, 0),
    (2, 1, 1),
    (4, 2, 1),
    (4, 2, 0),
    (16, 2, 1),
    (16, 1, 0),
    (2, 4, 1),
    (4, 8, 0),
]
QUICK_CONFIGS = [(1, 2, 0), (4, 2, 1), (16, 2, 0)]


def kernel_source() -> str:
    """The device code of cuda.cu, ready to compile after shim.h."""
    text = (ROOT / "csrc/pixelcnn/cuda.cu").read_text()
    start = text.index("namespace {")
    end = text.index("template <typename T, int S>\nvoid launch_row(")
    code = text[start:end]
    code, n = re.subn(
        r"constexpr int (kThreads|kClusterThreads) = \d+;",
        rf"constexpr int \1 = {EMULATED_THREADS};",
        code,
    )
    assert n == 2, "the block sizes of cuda.cu moved"
    code, n = re.subn(
        r"extern __shared__ (__align__\(16\) )?unsigned char smem_raw\[\];",
        "unsigned char* smem_raw = emu::shared_memory();",
        code,
    )
    assert n == 2, "the shared-memory declarations of cuda.cu moved"
    code, n = re.subn(r"#if defined\(__CUDA_ARCH__\) && __CUDA_ARCH__ >= 900", "#if 1", code)
    assert n == 1, "the cluster kernel's architecture guard moved"
    prelude = (
        '#include "shim.h"\n#include <ATen/OpMathType.h>\n#include "common/philox.h"\n'
        '#include "common/vector_io.cuh"\n#include "pixelcnn/pixelcnn.h"\n'
        "namespace pygen::pixelcnn {\n"
    )
    return (
        prelude
        + code
        + "}  // namespace\n}  // namespace pygen::pixelcnn\n"
        + (HERE / "pixelcnn_rows.cpp").read_text()
    )


def build(workdir: Path, tsan: bool) -> Path:
    source = workdir / "pixelcnn_rows_emulated.cpp"
    source.write_text(kernel_source())
    binary = workdir / "pixelcnn_rows"
    includes = [f"-I{p}" for p in cpp_extension.include_paths()]
    flags = ["-fsanitize=thread", "-O1"] if tsan else ["-O2"]
    lib = Path(torch.__file__).parent / "lib"
    command = [
        "g++",
        "-std=c++20",
        "-g",
        *flags,
        "-Wno-unknown-pragmas",
        f"-I{ROOT / 'csrc'}",
        f"-I{HERE}",
        *includes,
        str(source),
        "-o",
        str(binary),
        f"-L{lib}",
        "-lc10",
        f"-Wl,-rpath,{lib}",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
    ]
    subprocess.run(command, check=True)
    return binary


MODELS = {
    # 5 levels: the level scale 2 / (L - 1) is exact in float, as the kernels take it.
    "grey": {"in_channels": 1, "n_levels": 5, "n_layers": 3, "hidden": 6, "kernel_size": 3},
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


SIZES = {"grey": (4, 3), "rgb-conditional": (2, 3)}  # 36 and 54 values over a batch of 3


def write_problem(path: Path, weights, noise, seed, dims, config, dtype) -> None:
    """The driver's input: dims (batch, channels, height, width, levels, hidden, kernel, layers),
    the seed, return_logits, the kernel configuration, the dtype's size, the temperature, arrays."""
    header = [*dims, seed, 1, *config, 8 if dtype == torch.float64 else 4]
    with path.open("wb") as f:
        f.write(np.asarray(header, dtype=np.int64).tobytes())
        f.write(np.asarray([TEMPERATURE], dtype=np.float64).tobytes())
        for t in [*weights, noise if noise is not None else torch.empty(0)]:
            values = t.detach().double().contiguous().numpy().ravel()
            f.write(np.asarray([values.size], dtype=np.int64).tobytes())
            f.write(values.tobytes())


def run_case(binary: Path, workdir: Path, name: str, dtype, use_noise: bool, config) -> str | None:
    """None when the emulated kernels give the CPU kernel's images and logits, else a message."""
    torch.manual_seed(0)
    spec = MODELS[name]
    batch, size = 3, SIZES[name]
    model = PixelCNN(image_size=size, **spec).eval().to(dtype)
    y = torch.tensor([1, 0, 1]) if spec.get("n_classes") else None
    weights = export_weights(model, y, batch)
    channels, levels = spec["in_channels"], spec["n_levels"]
    noise = torch.rand(batch, channels, *size, dtype=dtype) if use_noise else None
    seed = 1234
    dims = (batch, channels, *size, levels, spec["hidden"], spec["kernel_size"], spec["n_layers"])
    seed_t = None if use_noise else torch.tensor([seed])
    images, logits = torch.ops.pygen.pixelcnn_sample(
        weights, noise, seed_t, *dims[:5], spec["kernel_size"], TEMPERATURE, True
    )
    problem, result = workdir / "problem.bin", workdir / "result.bin"
    write_problem(problem, weights, noise, seed, dims, config, dtype)
    run = subprocess.run([str(binary), str(problem), str(result)], capture_output=True, text=True)
    if run.returncode != 0 or "WARNING: ThreadSanitizer" in run.stderr:
        return f"exit {run.returncode}\n{run.stderr[-3000:]}"
    raw = result.read_bytes()
    n_img = images.numel()
    got_images = torch.from_numpy(np.frombuffer(raw[: 8 * n_img], dtype=np.int64).copy())
    got_logits = torch.from_numpy(np.frombuffer(raw[8 * n_img :], dtype=np.float64).copy())
    if not torch.equal(got_images, images.flatten()):
        return f"images differ at {(got_images != images.flatten()).sum().item()} values"
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    err = (got_logits - logits.double().flatten()).abs().max().item()
    return None if err <= tol else f"logits differ by {err:.2e}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-tsan", action="store_true")
    opts = parser.parse_args()
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        start = time.time()
        binary = build(workdir, tsan=not opts.no_tsan)
        print(f"built in {time.time() - start:.0f} s")
        configs = QUICK_CONFIGS if opts.quick else CONFIGS
        cases = itertools.product(MODELS, (torch.float64, torch.float32), (True, False), configs)
        for name, dtype, use_noise, config in cases:
            if config[0] > 1 and config[1] > 2 and dtype != torch.float32:
                continue
            start = time.time()
            error = run_case(binary, workdir, name, dtype, use_noise, config)
            label = (
                f"{name} {str(dtype)[6:]} {'noise' if use_noise else 'seed'} "
                f"cluster={config[0]} samples={config[1]} resident={config[2]}"
            )
            verdict = "ok  " if error is None else "FAIL"
            print(f"{verdict} {label} ({time.time() - start:.1f} s)", flush=True)
            if error is not None:
                print(error)
                failures += 1
    print(f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
