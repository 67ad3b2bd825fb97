"""The model classes used from Python the way a researcher would: odd inputs, dtypes, edge sizes.

Each test pins a bug that was found by probing the public API (a crash, a silently wrong answer
or a bare traceback where a clear error is due)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pygen.models import (
    CNF,
    DCGAN,
    MAF,
    MLPGAN,
    NICE,
    VAE,
    BiGAN,
    CycleGAN,
    GaussianLikelihood,
    Glow,
    Pix2Pix,
    PixelCNN,
    PixelRNN,
    RealNVP,
    interpolate,
    spectral_norm_,
)

# ----------------------------------------------------------------------------- flows


def test_flow_log_prob_rejects_a_batch_of_the_wrong_shape():
    # NICE broadcast a (N, 1, D) batch through its ActNorm to (N, D, D) and returned numbers.
    torch.manual_seed(0)
    nice = NICE(6, n_couplings=2, hidden=8, n_blocks=1).eval()
    with pytest.raises(ValueError, match=r"expected a batch of shape \(N, 6\)"):
        nice.log_prob(torch.rand(2, 1, 6))
    realnvp = RealNVP((4,), n_couplings=2, hidden=8)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        realnvp.log_prob(torch.rand(4))
    assert nice.log_prob(torch.rand(3, 6)).shape == (3,)


@pytest.mark.parametrize("bad", [17, -1])
def test_bits_per_dim_rejects_levels_out_of_range(bad):
    # Out-of-range levels gave NaN (logit models) or finite nonsense (NICE, no logit).
    torch.manual_seed(0)
    for model in (
        NICE(16, n_couplings=2, hidden=8, n_blocks=1, levels=17).eval(),
        RealNVP((1, 4, 4), n_scales=1, hidden=4, n_blocks=1, levels=17),
    ):
        images = torch.randint(0, 17, (2, 1, 4, 4))
        assert torch.isfinite(model.bits_per_dim(images)).all()
        images[1, 0, 2, 3] = bad
        with pytest.raises(ValueError, match=r"integer pixel levels in \[0, 16\]"):
            model.bits_per_dim(images)


def test_autoregressive_log_prob_takes_any_integer_dtype():
    torch.manual_seed(0)
    model = PixelCNN(1, n_levels=4, n_layers=2, hidden=8, kernel_size=3, image_size=4)
    x = torch.randint(0, 4, (2, 1, 4, 4))
    for dtype in (torch.uint8, torch.int16, torch.int32):
        torch.testing.assert_close(model.log_prob(x.to(dtype)), model.log_prob(x))
        torch.testing.assert_close(model.bits_per_dim(x.to(dtype)), model.bits_per_dim(x))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autoregressive_log_prob_of_16_bit_models_sums_in_float32(dtype):
    # A 28x28 image's 784 terms summed in bfloat16 were off by ~8 nats in ~4000.
    torch.manual_seed(0)
    for model in (PixelCNN(1, 256, 2, 16, 3, image_size=28), PixelRNN(1, 256, 1, 8, image_size=28)):
        model = model.to(dtype)
        x = torch.randint(0, 256, (2, 1, 28, 28))
        log_prob = model.log_prob(x)
        with torch.no_grad():
            logits = model(x).double()
        want = -torch.nn.functional.cross_entropy(logits, x, reduction="none").sum((1, 2, 3))
        assert log_prob.dtype == torch.float32
        torch.testing.assert_close(log_prob.double(), want, rtol=1e-6, atol=0)


def test_flow_log_prob_of_a_16_bit_model_is_float32():
    torch.manual_seed(0)
    model = RealNVP((1, 4, 4), n_scales=1, hidden=4, n_blocks=1, levels=17).to(torch.bfloat16)
    x = torch.rand(2, 1, 4, 4, dtype=torch.bfloat16) * 0.8 + 0.1
    assert model.log_prob(x).dtype == torch.float32


def test_bits_per_dim_rejects_pixels_scaled_to_the_unit_interval():
    # A common slip: log_prob's [0, 1] floats passed to bits_per_dim gave a plausible number.
    torch.manual_seed(0)
    model = RealNVP((1, 4, 4), n_scales=1, hidden=4, n_blocks=1, levels=17)
    levels = torch.randint(0, 17, (2, 1, 4, 4))
    with pytest.raises(ValueError, match="log_prob takes pixels in"):
        model.bits_per_dim(levels / 16)
    gen = torch.Generator
    torch.testing.assert_close(  # integer-valued floats are levels too
        model.bits_per_dim(levels.float(), gen().manual_seed(0)),
        model.bits_per_dim(levels, gen().manual_seed(0)),
    )
    assert model.bits_per_dim(levels[:0]).shape == (0,)  # was an IndexError


IMAGE_FLOWS = {
    "realnvp": lambda: RealNVP((1, 4, 4), n_scales=2, hidden=4, n_blocks=1, levels=17),
    "glow": lambda: Glow((1, 4, 4), n_scales=1, steps=2, hidden=4, levels=17),
    "maf": lambda: MAF(16, n_layers=2, hidden=16, levels=17),
    "cnf": lambda: CNF(16, hidden=8, n_hidden=1, levels=17, trace="exact", euler_steps=4),
}


@pytest.mark.parametrize("name", list(IMAGE_FLOWS))
def test_image_flow_log_prob_is_minus_inf_outside_its_support(name):
    # A pixel outside the logit pre-processing's domain gave a NaN log_prob, and NaN parameter
    # gradients even for a loss over the batch's other samples only.
    torch.manual_seed(0)
    model = IMAGE_FLOWS[name]()
    shape = (6, *model.shape)
    model.log_prob(torch.rand(shape) * 0.8 + 0.1)  # ActNorm's data-dependent init
    x = torch.rand(shape)
    flat = x.view(6, -1)
    flat[2, 3], flat[3, 5], flat[4, 0] = -0.2, 1.5, -0.01  # -0.01 lies inside the domain
    flat[5, 7] = 1.06  # just past 1 + 0.05 / 0.9
    log_prob = model.log_prob(x)
    assert log_prob[[3, 2, 5]].eq(-torch.inf).all() and torch.isfinite(log_prob[[0, 1, 4]]).all()
    alone = model.log_prob(x[[0, 1, 4]])
    torch.testing.assert_close(log_prob[[0, 1, 4]], alone)
    bits = model.bits_per_dim(torch.randint(0, 17, (6, 1, 4, 4)))
    assert torch.isfinite(bits).all()

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    x_grad = x.clone().requires_grad_()
    batch_grads = grads(model.log_prob(x_grad)[[0, 1, 4]].sum())
    assert x_grad.grad[[2, 3, 5]].eq(0).all() and torch.isfinite(x_grad.grad).all()
    for batch, single in zip(batch_grads, grads(alone.sum()), strict=True):
        torch.testing.assert_close(batch, single)
    # The sum with the -inf samples: their gradient is zero, the others' unchanged.
    for batch, single in zip(grads(model.log_prob(x).sum()), batch_grads, strict=True):
        torch.testing.assert_close(batch, single)


def test_image_flow_log_prob_outside_its_support_compiles_whole():
    torch.manual_seed(0)
    model = RealNVP((1, 4, 4), n_scales=1, hidden=4, n_blocks=1, levels=17)
    x = torch.rand(3, 1, 4, 4)
    x[1, 0, 2, 2] = 2.0
    compiled = torch.compile(model.log_prob, fullgraph=True)
    torch.testing.assert_close(compiled(x), model.log_prob(x))
    assert compiled(x)[1] == -torch.inf


def test_logit_transform_domain_is_the_open_interval_for_alpha_zero():
    from pygen.layers import LogitTransform

    logit = LogitTransform(0.0)
    x = torch.tensor([[0.5, 0.5], [0.0, 0.5], [0.5, 1.0], [float("nan"), 0.5]])
    assert logit.outside(x).tolist() == [False, True, True, False]  # NaN propagates, not -inf
    z, logdet = logit(x)
    assert torch.isfinite(z[:3]).all() and torch.isfinite(logdet[:3]).all()


def test_bits_per_dim_of_flattened_images_checks_the_pixel_count():
    nice = NICE(16, n_couplings=2, hidden=8, n_blocks=1, levels=17).eval()
    assert nice.bits_per_dim(torch.randint(0, 17, (2, 1, 4, 4))).shape == (2,)
    with pytest.raises(ValueError, match="expected a batch of shape"):
        nice.bits_per_dim(torch.randint(0, 17, (2, 1, 4, 5)))  # was a bare reshape error


def test_multiscale_flows_check_n_scales_and_image_size_at_construction():
    # RealNVP(n_scales=0) recursed without end (memory grew until the process was killed);
    # Glow(n_scales=0) silently built one scale; sizes the squeezes cannot halve failed only at
    # the first forward.
    with pytest.raises(ValueError, match="n_scales >= 1"):
        Glow((1, 8, 8), n_scales=0)
    with pytest.raises(ValueError, match="divisible by 4"):
        RealNVP((1, 6, 6), n_scales=3)
    with pytest.raises(ValueError, match="divisible by 16"):
        Glow((1, 8, 8), n_scales=4)
    with pytest.raises(ValueError, match="divisible by 2"):
        Glow((1, 5, 5), n_scales=1)
    with pytest.raises(ValueError, match="n_scales >= 1"):  # last: it never returned before
        RealNVP((1, 8, 8), n_scales=0)
    # Allowed: odd sizes at one RealNVP scale (no squeeze), non-square images.
    for model, shape in [
        (RealNVP((1, 5, 5), n_scales=1, hidden=4, n_blocks=1), (1, 5, 5)),
        (RealNVP((3, 8, 4), n_scales=2, hidden=4, n_blocks=1), (3, 8, 4)),
        (Glow((1, 8, 4), n_scales=2, steps=1, hidden=4), (1, 8, 4)),
    ]:
        assert model.log_prob(torch.rand(2, *shape)).shape == (2,)
        assert model.sample(1).shape == (1, *shape)


def test_cnf_takes_an_empty_batch():
    # sample(0) and log_prob of no rows were torchdiffeq's "AssertionError: underflow in dt 0.0".
    torch.manual_seed(0)
    cnf = CNF(3, hidden=8, n_hidden=1)
    assert cnf.sample(0).shape == (0, 3)
    assert cnf.log_prob(torch.rand(0, 3)).shape == (0,)
    assert cnf.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 3)


def test_cnf_sample_follows_its_generator_alone():
    # With the Hutchinson trace each solve drew a probe from torch's global stream, and the probe
    # steered the adaptive steps (through the log-det): the same generator seed gave samples that
    # differed by ~1e-5 between calls, and the global stream moved.
    torch.manual_seed(0)
    cnf = CNF(10, hidden=16, trace="hutchinson")
    with torch.no_grad():
        for p in cnf.parameters():
            p.add_(0.3 * torch.randn_like(p))
    state = torch.get_rng_state()
    first = cnf.sample(4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first, cnf.sample(4, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(state, torch.get_rng_state())
    assert cnf.ode.dynamics.with_trace  # restored after sampling
    z = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference, _ = cnf.flow.inverse(z)  # with the trace, as before
    torch.testing.assert_close(first, reference, rtol=0, atol=1e-3)
    temperature = cnf.sample(4, temperature=0.0, generator=torch.Generator().manual_seed(0))
    at_zero = cnf.flow.inverse(torch.zeros(4, 10))[0].detach()
    torch.testing.assert_close(temperature, at_zero, rtol=0, atol=1e-3)


# ----------------------------------------------------------------------------- VAE


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "categorical"])
def test_vae_in_float64_and_bfloat16(architecture, likelihood):
    # The encoder input, the prior draw of sample() and interpolate's weights were float32
    # whatever the model's dtype: a .double() or bfloat16 VAE raised a dtype mismatch everywhere.
    torch.manual_seed(0)
    model = VAE((1, 8, 8), 4, likelihood=likelihood, architecture=architecture, hidden=8)
    if likelihood == "bernoulli":
        x = torch.rand(3, 1, 8, 8).round()
    else:
        x = torch.randint(0, 17, (3, 1, 8, 8))
    noise = torch.randn(3, 4)
    expected = model.elbo(x, noise).elbo
    double = model.double()
    x64 = x.double() if x.is_floating_point() else x
    torch.testing.assert_close(double.elbo(x64, noise.double()).elbo.float(), expected)
    assert double.log_likelihood(x64, k=3).dtype == torch.float64
    assert double.interpolate(x64, x64.flip(0), steps=3).shape == (3, 3, 1, 8, 8)
    gen = torch.Generator
    first = double.sample(2, generator=gen().manual_seed(1))
    assert torch.equal(first, double.sample(2, generator=gen().manual_seed(1)))
    assert double.sample(1, mean=True).dtype == torch.float64

    half = model.to(torch.bfloat16)
    assert half.sample(2, mean=True).dtype == torch.bfloat16
    assert half.sample(1).shape == (1, 1, 8, 8)
    assert torch.isfinite(half.elbo(x.bfloat16() if x.is_floating_point() else x).elbo).all()


def test_gaussian_vae_rejects_data_outside_its_clamp_range():
    # Data outside [0, 1] was accepted while means and draws were clipped to [0, 1]: sample()
    # and reconstruct() could never reach the data (here they stayed in [0, 0.2] for N(0, 9)).
    torch.manual_seed(0)
    model = VAE((5,), 2, likelihood="gaussian", hidden=8)
    data = 3 * torch.randn(4, 5)
    with pytest.raises(ValueError, match=r"clamp=None"):
        model.elbo(data)
    assert model.elbo(torch.rand(4, 5)).elbo.shape == (4,)
    unbounded = VAE((5,), 2, likelihood=GaussianLikelihood(clamp=None), hidden=8)
    assert torch.isfinite(unbounded.elbo(data).elbo).all()


# ----------------------------------------------------------------------------- GANs


SMALL_GANS = pytest.mark.parametrize(
    "make",
    [
        lambda: DCGAN(image_size=8, channels=1, latent_dim=4, width=4),
        lambda: MLPGAN(hidden=8),
        lambda: BiGAN(data_dim=3, hidden=8),
    ],
    ids=["dcgan", "mlpgan", "bigan"],
)


@SMALL_GANS
def test_gan_sample_in_float64_and_bfloat16(make):
    # The prior draw was float32 whatever the generator's dtype: a dtype error.
    torch.manual_seed(0)
    model = make().eval()
    gen = torch.Generator
    expected = model.sample(2, generator=gen().manual_seed(0))
    double = model.double()
    got = double.sample(2, generator=gen().manual_seed(0))
    assert got.dtype == torch.float64
    torch.testing.assert_close(got.float(), expected, rtol=1e-5, atol=1e-5)
    half = model.to(torch.bfloat16).sample(1)
    assert half.dtype == torch.bfloat16 and torch.isfinite(half).all()


@SMALL_GANS
def test_gan_samples_are_the_generator_at_the_seeds_prior_draws(make):
    torch.manual_seed(0)
    model = make().eval()
    samples = model.sample(6, generator=torch.Generator().manual_seed(3))
    z = torch.randn(6, model.latent_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(samples, model.generator(z))
    assert not torch.equal(samples[0], samples[1])  # one draw per sample


def test_vae_samples_decode_the_seeds_prior_draws():
    torch.manual_seed(0)
    model = VAE((1, 8, 8), 3, likelihood="bernoulli", hidden=16).eval()
    with torch.no_grad():
        means = model.sample(6, mean=True, generator=torch.Generator().manual_seed(3))
        z = torch.randn(6, 3, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(means, model.decode(z))
        assert not torch.equal(means[0], means[1])
        # A draw from p(x|z) at the same z: Bernoulli pixels whose rate follows the means.
        draws = model.sample(2000, generator=torch.Generator().manual_seed(4))
        z = torch.randn(2000, 3, generator=torch.Generator().manual_seed(4))
        rates = model.decode(z)
    assert ((draws == 0) | (draws == 1)).all()
    assert (draws.mean(0) - rates.mean(0)).abs().max() < 0.05  # ~5 standard errors


def test_bigan_trains_in_float64_and_rejects_unflattened_images():
    torch.manual_seed(0)
    model = BiGAN(data_dim=4, hidden=8).double()
    history = model.fit(torch.rand(16, 4, dtype=torch.float64), steps=2, batch_size=4)
    assert len(history) == 2  # losses() drew float32 latents: a dtype error
    # encode() of (N, 1, 4) gave codes (N, 1, latent_dim); the losses a bare cat error.
    images = torch.rand(3, 1, 2, 2, dtype=torch.float64)
    for call in (model.encode, model.reconstruct, model.losses):
        with pytest.raises(ValueError, match=r"vectors \(N, 4\)"):
            call(images)
    assert model.encode(images.flatten(1)).shape == (3, 2)


def test_dcgan_discriminator_rejects_another_image_size():
    # A 16x16 batch of 2 through an 8x8 discriminator gave 50 scores (a 5x5 map each, flattened
    # into the batch); a non-square one 10.
    torch.manual_seed(0)
    discriminator = DCGAN(image_size=8, channels=1, latent_dim=4, width=4).discriminator
    assert discriminator(torch.rand(2, 1, 8, 8)).shape == (2,)
    for shape in [(2, 1, 16, 16), (2, 1, 8, 16), (2, 3, 8, 8)]:
        with pytest.raises(ValueError, match=r"expects images \(N, 1, 8, 8\)"):
            discriminator(torch.rand(shape))


def test_spectral_norm_covers_the_module_itself_and_is_idempotent():
    # A bare layer was left unnormalized (only children were visited); a second call stacked a
    # second spectral norm on every layer (and changed the state dict's keys).
    torch.manual_seed(0)
    layer = spectral_norm_(nn.Linear(6, 4))
    assert len(layer.parametrizations.weight) == 1
    model = MLPGAN(hidden=8)
    spectral_norm_(model.discriminator)
    keys = set(model.discriminator.state_dict())
    spectral_norm_(model)  # the whole model: the discriminator keeps its one
    for module in model.discriminator.modules():
        if isinstance(module, nn.Linear):
            assert len(module.parametrizations.weight) == 1
    assert keys == set(model.discriminator.state_dict())
    for _ in range(30):  # power iterations
        layer(torch.randn(2, 6))
    assert torch.linalg.matrix_norm(layer.weight, 2).item() == pytest.approx(1.0, abs=1e-4)


def test_interpolate_checks_its_endpoints():
    # (D,) endpoints gave a (D, steps) "path", transposed from the documented (B, steps, D).
    z0, z1 = torch.randn(3, 5), torch.randn(3, 5)
    for method in ("lerp", "slerp"):
        path = interpolate(z0, z1, 4, method)
        assert path.shape == (3, 4, 5)
        torch.testing.assert_close(path[:, 0], z0)
        torch.testing.assert_close(path[:, -1], z1)
        with pytest.raises(ValueError, match=r"\(B, D\)"):
            interpolate(z0[0], z1[0], 4, method)
        with pytest.raises(ValueError, match=r"\(B, D\)"):
            interpolate(z0, z1[:2], 4, method)


# ----------------------------------------------------------------------------- translation


def test_translation_generators_reject_sizes_they_would_resize():
    # CycleGAN's ResNet generator (2 stride-2 steps) turned a 10x10 image into a 12x12 one
    # without a word; pix2pix's U-Net failed with a bare concatenation error on 12x12.
    torch.manual_seed(0)
    cycle = CycleGAN(channels=1, image_size=8, width=4, n_blocks=1, d_width=4)
    assert cycle.translate_ab(torch.rand(2, 1, 8, 12) * 2 - 1).shape == (2, 1, 8, 12)
    with pytest.raises(ValueError, match="divisible by 4"):
        cycle.translate_ab(torch.rand(2, 1, 10, 10))
    with pytest.raises(ValueError, match="divisible by 4"):
        CycleGAN(channels=1, image_size=10, width=4, n_blocks=1, d_width=4)
    pix = Pix2Pix(1, 1, image_size=8, width=4, d_width=4)
    assert pix.translate(torch.rand(2, 1, 16, 8)).shape == (2, 1, 16, 8)
    with pytest.raises(ValueError, match="divisible by 8"):
        pix.translate(torch.rand(2, 1, 12, 12))
