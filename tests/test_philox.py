"""The kernels' own noise against its twin: the Philox4x32-10 stream of pygen.ops.reference
(checked against Random123's published answers) gives the normals of reparameterize_kl and the
uniforms of the fused samplers when they draw their own."""

from __future__ import annotations

import pytest
import torch
from conftest import requires_cuda

from pygen.models import PixelCNN, PixelRNN
from pygen.ops import reference
from pygen.ops._random import draw_seed

# Random123's known-answer tests of Philox4x32-10 (its kat_vectors file): counter, key, output.
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]
# Seeds with both key words in use (the high one is what draw_seed's range mostly sets).
SEEDS = [7, 123456789012345, 2**62 - 3]
fused_reparam = torch.ops.pygen.reparameterize_kl  # (mu, logvar, noise, seed, n_samples)


@pytest.mark.parametrize(("counter", "key", "expected"), KNOWN_ANSWERS)
def test_twin_gives_the_published_answers(counter, key, expected):
    words = reference.philox4x32_10(tuple(torch.tensor([c]) for c in counter), key)
    assert [w.item() for w in words] == list(expected)


def test_twin_normals_and_uniforms_have_their_distributions():
    normals = reference.philox_normal(3, 200_001).double()
    assert abs(normals.mean().item()) < 0.012 and abs(normals.var().item() - 1) < 0.016
    uniforms = reference.philox_uniform(3, 200_001).double()
    assert uniforms.min() >= 0 and uniforms.max() < 1
    assert abs(uniforms.mean().item() - 0.5) < 0.0035  # 5 standard errors


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("shape", "n_samples"), [((3, 7), 2), ((1000, 33), 1), ((4, 256), 3)])
def test_reparameterize_noise_is_the_stream(device, seed, shape, n_samples):
    # With mu = logvar = 0, z is the noise itself: normal (s * N + n) * D + d of the stream. Rows
    # of 7 and 33 start the kernels' chunks inside Philox blocks.
    zeros = torch.zeros(shape, device=device)
    seed_t = torch.tensor([seed], device=device)
    z = fused_reparam(zeros, zeros, None, seed_t, n_samples)[0]
    expected = reference.philox_normal(seed, z.numel(), device).view(z.shape)
    torch.testing.assert_close(z, expected, rtol=0, atol=2e-6)


def seeded_noise(generator_seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The uniforms a fused sampler draws from torch.Generator().manual_seed(generator_seed)."""
    generator = torch.Generator().manual_seed(generator_seed)
    seed = draw_seed(torch.device("cpu"), generator).item()
    return reference.philox_uniform(seed, torch.Size(shape).numel()).view(shape)


@pytest.mark.parametrize("model_name", ["pixelcnn", "pixelrnn"])
def test_fused_samplers_draw_the_streams_uniforms(model_name):
    torch.manual_seed(0)
    if model_name == "pixelcnn":
        model = PixelCNN(in_channels=3, n_levels=7, n_layers=2, hidden=12, image_size=(4, 5))
    else:
        model = PixelRNN(n_levels=7, n_layers=2, hidden=8, kind="diagonal", image_size=(4, 5))
    model.eval()
    shape = (6, model.in_channels, 4, 5)
    drawn = model.sample(6, generator=torch.Generator().manual_seed(11))
    assert torch.equal(model.sample(6, noise=seeded_noise(11, shape)), drawn)
    assert drawn.unique().numel() > 3


@requires_cuda
def test_cuda_samplers_draw_the_streams_uniforms():
    torch.manual_seed(0)
    model = PixelCNN(n_levels=7, n_layers=2, hidden=8, image_size=(4, 5)).eval().cuda()
    generator = torch.Generator("cuda").manual_seed(11)
    seed = draw_seed(torch.device("cuda"), torch.Generator("cuda").manual_seed(11)).item()
    drawn = model.sample(6, generator=generator)
    noise = reference.philox_uniform(seed, 6 * 20, "cuda").view(6, 1, 4, 5)
    assert torch.equal(model.sample(6, noise=noise), drawn)
