"""The CPU kernels' AVX-512 paths and the ones they replace with PYGEN_CPU_AVX512=0 (AVX2 or the
baseline; what CPUs without AVX-512 run): the samplers' matrix products (csrc/common/cpu_matmul.h)
in 64-byte and 32-byte vectors give the same logits bit for bit (one summation order in every
tile, fused multiply-adds in both), hence the same images of the same noise, at every thread count,
and the Philox lanes (csrc/common/cpu_philox.cpp) of both widths give the stream's normals.
The choice is fixed per process, so the run without AVX-512 is a child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pygen
from pygen.models import PixelCNN, PixelRNN
from pygen.ops import reference

LOGIT_TOL = {
    torch.float32: {"rtol": 1e-4, "atol": 1e-4},
    torch.float64: {"rtol": 1e-10, "atol": 1e-10},
}


def models() -> dict[str, torch.nn.Module]:
    """Widths that leave partial tiles in both vector widths (gate outputs 48 = 32 + 16, 2h = 96,
    LSTM gates 4 x 40), RGB channel masks and labels."""
    torch.manual_seed(0)
    pixelcnn = PixelCNN(
        in_channels=3,
        n_levels=40,
        n_layers=3,
        hidden=48,
        kernel_size=5,
        n_classes=2,
        image_size=(5, 6),
    )
    rnn = {
        kind: PixelRNN(
            n_levels=30, n_layers=2, hidden=40, kind=kind, kernel_size=3, image_size=(5, 6)
        )
        for kind in ("row", "diagonal")
    }
    return {"pixelcnn": pixelcnn.eval(), **{f"pixelrnn-{k}": m.eval() for k, m in rnn.items()}}


def samples() -> dict:
    """Images and logits of every model's fused sampler, float32 and float64, batch 7 (tiles of
    4, 2 and 1 rows in 64-byte vectors, 3, 3 and 1 in 32-byte ones), one thread and two."""
    out = {"vector_bytes": pygen.build_info()["cpu_matmul_vector_bytes"]}
    for name, model in models().items():
        for dtype in (torch.float32, torch.float64):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                m = model.to(dtype)
                noise = torch.rand(
                    7, m.in_channels, 5, 6, dtype=dtype, generator=torch.Generator().manual_seed(1)
                )
                kwargs = {"y": torch.arange(7) % 2} if name == "pixelcnn" else {}
                out[name, dtype, threads] = m.sample(7, noise=noise, return_logits=True, **kwargs)
    return out


def without_avx512(tmp_path: Path, function: str):
    """What ``function()`` of this module returns in a child process with PYGEN_CPU_AVX512=0."""
    child = tmp_path / f"{function}.pt"
    code = (
        f"import sys, torch; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"from {Path(__file__).stem} import {function}; torch.save({function}(), {str(child)!r})"
    )
    env = {**os.environ, "PYGEN_CPU_AVX512": "0"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=600)
    return torch.load(child, weights_only=False)


needs_avx512 = pytest.mark.skipif(
    pygen.build_info()["cpu_matmul_vector_bytes"] != 64,
    reason="this CPU has no AVX-512: every test runs the paths without it",
)


@needs_avx512
def test_32_and_64_byte_products_draw_the_same_images(tmp_path):
    narrow = without_avx512(tmp_path, "samples")
    threads = torch.get_num_threads()
    try:
        here = samples()
    finally:
        torch.set_num_threads(threads)
    assert (narrow.pop("vector_bytes"), here.pop("vector_bytes")) == (32, 64)
    assert here.keys() == narrow.keys()
    all_models = models()
    for key, (images, logits) in here.items():
        name, dtype, _ = key
        for other in (narrow[key], here[name, dtype, 1], narrow[name, dtype, 1]):
            assert torch.equal(other[0], images), key
            assert torch.equal(other[1], logits), key
        model = all_models[name].to(dtype)
        kwargs = {"y": torch.arange(7) % 2} if name == "pixelcnn" else {}
        with torch.no_grad():
            torch.testing.assert_close(logits, model(images, **kwargs), **LOGIT_TOL[dtype])


NORMAL_CASES = [((3, 7), 2, 5), ((100, 33), 1, 2**62 - 3), ((4, 256), 3, 123456789012345)]


def normals() -> list[torch.Tensor]:
    """reparameterize_kl's own noise (z with mu = logvar = 0) in NORMAL_CASES."""
    out = []
    for shape, n_samples, seed in NORMAL_CASES:
        zeros = torch.zeros(shape)
        seed_t = torch.tensor([seed])
        out.append(torch.ops.pygen.reparameterize_kl(zeros, zeros, None, seed_t, n_samples)[0])
    return out


@needs_avx512
def test_philox_lanes_of_both_widths_give_the_streams_normals(tmp_path):
    narrow_normals = without_avx512(tmp_path, "normals")
    for (_, _, seed), narrow, here in zip(NORMAL_CASES, narrow_normals, normals(), strict=True):
        expected = reference.philox_normal(seed, here.numel()).view(here.shape)
        torch.testing.assert_close(here, expected, rtol=0, atol=2e-6)
        torch.testing.assert_close(narrow, expected, rtol=0, atol=2e-6)
