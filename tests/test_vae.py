"""pygen.models.VAE: IWAE bounds against a closed-form log p(x), training on the digits, the fused
op against its reference, objective options, figures, checkpoints and input errors."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import requires_cuda
from torch import nn

from pygen.data import DIGIT_LEVELS, load_digits
from pygen.models import VAE, GaussianLikelihood
from pygen.models.vae import _diagonal_normal_log_prob, _standard_normal_log_prob
from pygen.ops import reference, reparameterize_kl
from pygen.utils import read_png


def linear_gaussian_vae(encoder="prior-like", data_dim=6, latent_dim=2, sigma=0.6, seed=0):
    """VAE with p(z) = N(0, I), p(x|z) = N(Wz + b, sigma^2 I) and a linear encoder, and the exact
    marginal p(x) = N(b, W W^T + sigma^2 I).

    Encoders: "prior-like" (random small weights, variance 1.5: a poor proposal for outlying x)
    or "wide-posterior" (the exact posterior mean, twice the posterior's marginal variances).
    """
    gen = torch.Generator().manual_seed(seed)
    weight = 0.8 * torch.randn(data_dim, latent_dim, generator=gen, dtype=torch.float64)
    bias = torch.randn(data_dim, generator=gen, dtype=torch.float64)
    posterior_cov = torch.linalg.inv(
        torch.eye(latent_dim, dtype=torch.float64) + weight.T @ weight / sigma**2
    )
    if encoder == "prior-like":
        enc_weight = 0.1 * torch.randn(2 * latent_dim, data_dim, generator=gen, dtype=torch.float64)
        enc_bias = torch.cat([torch.zeros(latent_dim), torch.full((latent_dim,), math.log(1.5))])
    else:
        to_mean = posterior_cov @ weight.T / sigma**2
        enc_weight = torch.cat([to_mean, torch.zeros(latent_dim, data_dim)])
        enc_bias = torch.cat([-to_mean @ bias, torch.log(2 * posterior_cov.diagonal())])
    decoder = nn.Sequential(nn.Linear(latent_dim, data_dim), nn.Unflatten(-1, (data_dim, 1)))
    encoder_module = nn.Linear(data_dim, 2 * latent_dim)
    with torch.no_grad():
        decoder[0].weight.copy_(weight)
        decoder[0].bias.copy_(bias)
        encoder_module.weight.copy_(enc_weight)
        encoder_module.bias.copy_(enc_bias)
    model = VAE(
        (data_dim,),
        latent_dim,
        likelihood=GaussianLikelihood(std=sigma, clamp=None),
        encoder=encoder_module,
        decoder=decoder,
    )
    marginal = torch.distributions.MultivariateNormal(
        bias, weight @ weight.T + sigma**2 * torch.eye(data_dim, dtype=torch.float64)
    )
    return model, marginal


def assert_mean_increase(lower: torch.Tensor, upper: torch.Tensor) -> None:
    """Statistical bound: the mean per-example increase from lower to upper is positive by more
    than 3 standard errors (for the true means, theory says >= 0)."""
    diff = (upper - lower).double()
    stderr = diff.std() / math.sqrt(len(diff))
    assert diff.mean() > 3 * stderr, (diff.mean().item(), stderr.item())


# Stated tolerances on the error IWAE_4096 - log p(x) over 256 draws of x: (|mean|, mean of |.|).
# Measured over seeds: wide posterior <= 0.001 and ~0.008; prior-like <= 0.03 and <= 0.09, with
# rare outlying x off by up to ~5 nats (at k = 5 the prior-like mean error is -1 to -6 nats).
IWAE_TOLERANCES = {"wide-posterior": (0.005, 0.02), "prior-like": (0.05, 0.15)}


@pytest.mark.parametrize("encoder", list(IWAE_TOLERANCES))
def test_iwae_converges_to_closed_form_log_likelihood(encoder):
    torch.manual_seed(0)
    model, marginal = linear_gaussian_vae(encoder)
    x = marginal.sample((256,)).float()
    error = model.log_likelihood(x, k=4096, chunk_size=1024).double() - marginal.log_prob(x)
    mean_tol, abs_tol = IWAE_TOLERANCES[encoder]
    assert error.mean().abs() < mean_tol
    assert error.abs().mean() < abs_tol


def test_elbo_below_iwae_k_below_iwae_larger_k_linear_gaussian():
    torch.manual_seed(1)
    model, marginal = linear_gaussian_vae()
    x = marginal.sample((512,)).float()
    with torch.no_grad():
        elbo = model.elbo(x).elbo
    iwae_5 = model.log_likelihood(x, k=5)
    iwae_50 = model.log_likelihood(x, k=50)
    assert_mean_increase(elbo, iwae_5)
    assert_mean_increase(iwae_5, iwae_50)
    # Every bound is below log p(x) on average (up to Monte Carlo error).
    assert iwae_50.double().mean() < marginal.log_prob(x.double()).mean() + 0.05


# --- trained on the bundled digits -------------------------------------------------------------

# (likelihood, architecture, hidden, extra options, bound on the test-set negative ELBO in nats).
# Before training: ~44 (Bernoulli, 64 ln 2), ~180 (categorical, ~64 ln 17), ~64 (Gaussian).
# After 300 Adam steps they reach about 22, 102 and 29.
CONFIGS = {
    "bernoulli-mlp": ("bernoulli", "mlp", 128, {}, 26.0),
    "categorical-conv": ("categorical", "conv", 16, {"free_bits": 0.1, "warmup_steps": 100}, 115.0),
    "gaussian-conv": ("gaussian", "conv", 16, {"beta": 0.5}, 40.0),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def train(model, data, steps, seed=0):
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for step in range(steps):
        loss = model.loss(data[torch.randint(len(data), (128,))], step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


@pytest.fixture(scope="module", params=list(CONFIGS))
def trained(request):
    likelihood, architecture, hidden, options, bound = CONFIGS[request.param]
    torch.manual_seed(0)
    model = VAE(
        latent_dim=8, likelihood=likelihood, architecture=architecture, hidden=hidden, **options
    )
    train_levels, _ = load_digits("train")
    test_levels, _ = load_digits("test")
    x_train = model.likelihood.from_levels(train_levels, DIGIT_LEVELS)
    x_test = model.likelihood.from_levels(test_levels, DIGIT_LEVELS)
    with torch.no_grad():
        before = -model.elbo(x_test).elbo.mean().item()
    train(model, x_train, 300)
    return model, x_test, before, bound


def test_from_levels_needs_two_levels():
    with pytest.raises(ValueError, match="n_levels must be >= 2"):
        GaussianLikelihood().from_levels(torch.zeros(2, 3, dtype=torch.long), 1)


def test_training_lowers_negative_elbo(trained):
    model, x_test, before, bound = trained
    with torch.no_grad():
        after = -model.elbo(x_test).elbo.mean().item()
    assert after < bound < before
    if getattr(model.likelihood, "learned", False):  # the learned Gaussian std left its start, 1
        assert model.likelihood.std() < 0.8


def test_elbo_below_iwae_bounds_on_digits(trained):
    model, x_test, _, _ = trained
    torch.manual_seed(2)
    draws = 4  # estimates averaged over 4 independent draws per example: less noise per example
    x = x_test.repeat(draws, *[1] * (x_test.dim() - 1))
    with torch.no_grad():
        elbo = model.elbo(x).elbo.view(draws, -1).mean(0)
    iwae_4 = model.log_likelihood(x, k=4).view(draws, -1).mean(0)
    iwae_32 = model.log_likelihood(x, k=32).view(draws, -1).mean(0)
    assert_mean_increase(elbo, iwae_4)
    assert_mean_increase(iwae_4, iwae_32)


def assert_data_like(images, x, exact_levels):
    """images have the data's shape and range (and dtype, for draws of integer levels)."""
    assert images.shape[1:] == x.shape[1:]
    assert torch.isfinite(images.float()).all()
    high = DIGIT_LEVELS - 1 if not x.is_floating_point() else 1.0
    assert images.min() >= 0 and images.max() <= high
    if exact_levels:
        assert images.dtype == x.dtype
        assert torch.equal(images, images.round())


def test_samples_reconstructions_interpolations_have_the_data_shape_and_range(trained):
    model, x_test, _, _ = trained
    gen = torch.Generator().manual_seed(0)
    samples = model.sample(10, generator=gen)
    assert samples.shape[0] == 10
    assert_data_like(samples, x_test, exact_levels=model.likelihood.params_per_element > 1)
    assert_data_like(model.sample(10, mean=True), x_test, exact_levels=False)
    assert_data_like(model.reconstruct(x_test[:10]), x_test, exact_levels=False)
    path = model.interpolate(x_test[:3], x_test[3:6], steps=5)
    assert path.shape == (5, 3, *x_test.shape[1:])
    torch.testing.assert_close(path[0], model.reconstruct(x_test[:3]))
    torch.testing.assert_close(path[-1], model.reconstruct(x_test[3:6]))


def test_figures_are_png_grids(trained, tmp_path):
    model, x_test, _, _ = trained
    pixels = read_png(model.reconstruction_figure(x_test[:16], tmp_path / "r.png"))
    # 8 (input, reconstruction) pairs per row, 2 rows of 8x8 images, 1-pixel padding, scaled x4.
    assert pixels.shape == (1, (2 * 9 + 1) * 4, (16 * 9 + 1) * 4)
    pixels = read_png(model.sample_figure(tmp_path / "s.png", n=64, scale=1))
    assert pixels.shape == (1, 8 * 9 + 1, 8 * 9 + 1)


def test_checkpoint_round_trip(trained, tmp_path):
    model, x_test, _, _ = trained
    model.save(tmp_path / "vae.pt")
    loaded = VAE.load(tmp_path / "vae.pt")
    assert loaded.config == model.config and not loaded.reference
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    noise = torch.randn(10, model.latent_dim)
    with torch.no_grad():
        torch.testing.assert_close(loaded.elbo(x_test[:10], noise), model.elbo(x_test[:10], noise))
    torch.testing.assert_close(loaded.reconstruct(x_test[:10]), model.reconstruct(x_test[:10]))


def test_a_data_shape_given_as_a_list_round_trips_as_a_tuple(tmp_path):
    model = VAE([1, 8, 8], 4, hidden=16)
    assert model.data_shape == (1, 8, 8) and model.config["data_shape"] == (1, 8, 8)
    model.save(tmp_path / "vae.pt")
    assert VAE.load(tmp_path / "vae.pt").data_shape == (1, 8, 8)


def test_manifold_figure_of_a_2d_latent(tmp_path):
    levels, _ = load_digits("test")
    model = VAE(latent_dim=2, hidden=32)
    train(model, model.likelihood.from_levels(levels, DIGIT_LEVELS), 20)
    pixels = read_png(model.manifold_figure(tmp_path / "m.png", n=5, scale=2))
    assert pixels.shape == (1, 5 * 8 * 2, 5 * 8 * 2)


# --- fused op vs reference, objective options ------------------------------------------------

OBJECTIVES = {
    "elbo": {},
    "beta-warmup": {"beta": 4.0, "warmup_steps": 10},
    "free-bits": {"free_bits": 0.5, "free_bits_group_size": 2},
    "iwae": {"iwae_k": 4},
}


def small_batch(likelihood="bernoulli", n=16):
    levels, _ = load_digits("test")
    model = VAE(latent_dim=4, likelihood=likelihood, hidden=32)
    return model.likelihood.from_levels(levels[:n], DIGIT_LEVELS)


def loss_and_grads(model, x, noise, step=5):
    model.zero_grad()
    loss = model.loss(x, step, noise)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("objective", list(OBJECTIVES))
@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_fused_and_reference_give_the_same_loss_and_gradients(objective, architecture, device):
    torch.manual_seed(0)
    options = OBJECTIVES[objective]
    model = VAE(latent_dim=4, architecture=architecture, hidden=16, **options).to(device)
    x = small_batch().to(device)
    k = options.get("iwae_k", 1)
    noise = torch.randn((k, len(x), 4) if k > 1 else (len(x), 4), device=device)
    loss, grads = loss_and_grads(model, x, noise)
    model.reference = True
    ref_loss, ref_grads = loss_and_grads(model, x, noise)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("group_size", [4, 2], ids=["one-kl-group", "two-kl-groups"])
def test_elbo_reparameterizes_the_encoder_output_as_its_halves(device, group_size):
    # The model hands the encoder's output to the stacked op (a view of it with one KL group, a
    # copy with several): the terms and gradients of the op on encode()'s halves, bit for bit,
    # with the same seed (the same Philox stream).
    torch.manual_seed(0)
    free_bits = 0.5 if group_size < 4 else 0.0
    options = {"free_bits": free_bits, "free_bits_group_size": group_size}
    model = VAE(latent_dim=4, hidden=16, **options).to(device)
    x = small_batch().to(device)

    def halves():  # the op on encode()'s halves, grouped as the model groups the KL
        mu, logvar = model.encode(x)
        groups = (-1, group_size)
        z, kl = reparameterize_kl(
            mu.unflatten(-1, groups),
            logvar.unflatten(-1, groups),
            generator=torch.Generator(device).manual_seed(1),
        )
        return model._log_px(model._decoder_params(z.flatten(-2)), x), kl.sum(-1)

    def terms_and_grads(elbo):
        model.zero_grad()
        reconstruction, kl = elbo()
        (reconstruction - kl).sum().backward()
        return [reconstruction, kl, *(p.grad for p in model.parameters())]

    got = terms_and_grads(lambda: model.elbo(x, generator=torch.Generator(device).manual_seed(1)))
    for g, w in zip(got, terms_and_grads(halves), strict=True):
        assert torch.equal(g, w)


def test_the_loss_backward_concatenates_no_gradient_halves():
    torch.manual_seed(0)
    model = VAE(latent_dim=4, hidden=16)
    loss = model.loss(small_batch())
    with torch.profiler.profile() as prof:
        loss.backward()
    ops = {event.name for event in prof.events()}
    assert "pygen::reparameterize_kl_stacked_backward" in ops and "aten::cat" not in ops


def manual_terms(model, x, noise):
    """Reconstruction log-likelihood and per-dimension KL computed by hand with the reference."""
    mu, logvar = model.encode(x)
    z, _ = reference.reparameterize_kl(mu, logvar, noise)
    kl_dims = 0.5 * (mu.square() + logvar.exp() - 1 - logvar)
    return model._log_px(model._decoder_params(z), x), kl_dims


def test_beta_and_linear_kl_warmup():
    torch.manual_seed(0)
    model = VAE(latent_dim=4, hidden=16, beta=2.0, warmup_steps=100)
    x = small_batch()
    noise = torch.randn(len(x), 4)
    assert [model.kl_weight(s) for s in (0, 50, 100, 1000, None)] == [0.0, 1.0, 2.0, 2.0, 2.0]
    rec, kl_dims = manual_terms(model, x, noise)
    for step, weight in [(0, 0.0), (25, 0.5), (None, 2.0)]:
        expected = -rec.mean() + weight * kl_dims.sum(-1).mean()
        torch.testing.assert_close(model.loss(x, step, noise), expected)
    terms = model.elbo(x, noise)
    torch.testing.assert_close(terms.reconstruction, rec)
    torch.testing.assert_close(terms.kl, kl_dims.sum(-1))
    torch.testing.assert_close(terms.elbo, rec - kl_dims.sum(-1))


def test_free_bits_floor_the_mean_kl_per_group():
    torch.manual_seed(0)
    model = VAE(latent_dim=6, hidden=16, free_bits=0.5, free_bits_group_size=3)
    x = small_batch()
    noise = torch.randn(len(x), 6)
    with torch.no_grad():  # one group far above the floor, one far below
        model.encoder[-1].bias[:3] = 3.0
        model.encoder[-1].bias[3:6] = 0.0
        model.encoder[-1].weight[:6].mul_(0.01)
    rec, kl_dims = manual_terms(model, x, noise)
    group_kl = kl_dims.unflatten(-1, (2, 3)).sum(-1).mean(0)
    assert group_kl[0] > 0.5 > group_kl[1]
    expected = -rec.mean() + group_kl.clamp(min=0.5).sum()
    torch.testing.assert_close(model.loss(x, None, noise), expected)
    # Below the floor the KL exerts no pull: the group's mu gets only the decoder's gradient.
    mu_grad = torch.autograd.grad(model.loss(x, None, noise), model.encoder[-1].bias)[0]
    mu_grad_no_kl = torch.autograd.grad(-rec.mean(), model.encoder[-1].bias)[0]
    torch.testing.assert_close(mu_grad[3:6], mu_grad_no_kl[3:6])


def test_iwae_objective_matches_the_importance_weights():
    torch.manual_seed(0)
    model = VAE(latent_dim=4, hidden=16, iwae_k=5)
    x = small_batch()
    noise = torch.randn(5, len(x), 4)
    mu, logvar = model.encode(x)
    z = mu + torch.exp(0.5 * logvar) * noise
    log_w = (
        model._log_px(model._decoder_params(z), x)
        + _standard_normal_log_prob(z)
        - _diagonal_normal_log_prob(z, mu, logvar)
    )
    expected = -(torch.logsumexp(log_w, 0) - math.log(5)).mean()
    torch.testing.assert_close(model.loss(x, None, noise), expected)
    levels, _ = load_digits("train")
    data = model.likelihood.from_levels(levels, DIGIT_LEVELS)
    before = -model.log_likelihood(data[:200], k=5).mean()
    train(model, data, 100)
    assert -model.log_likelihood(data[:200], k=5).mean() < before - 5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reconstruction_term_under_autocast_sums_in_float32(dtype):
    # CPU autocast left the categorical log-softmax and the sum over pixels in 16 bits: up to 5
    # nats of a 4352-nat ELBO in bfloat16 before.
    torch.manual_seed(0)
    x = torch.randint(0, 256, (4, 1, 28, 28))
    model = VAE((1, 28, 28), 16, likelihood="categorical", n_levels=256, hidden=64)
    noise = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=dtype), torch.no_grad():
        terms = model.elbo(x, noise=noise)
        mu, logvar = model.encode(x)
        params = model._decoder_params(mu + torch.exp(0.5 * logvar) * noise)
    assert params.dtype == dtype and terms.reconstruction.dtype == torch.float32
    # The same 16-bit decoder output's terms, summed in float64.
    log_px = torch.log_softmax(params.double(), -1).gather(-1, x.unsqueeze(-1)).flatten(1).sum(1)
    torch.testing.assert_close(terms.reconstruction.double(), log_px, rtol=2e-5, atol=0)


def test_a_learned_std_pushed_below_its_floor_comes_back():
    # An optimizer step can carry log_std past the floor; a plain clamp then gave it a zero
    # gradient for good. Where the data wants a larger std, descent raises it again.
    likelihood = GaussianLikelihood(min_std=0.1)
    with torch.no_grad():
        likelihood.log_std.fill_(math.log(0.05))
    x, mean = torch.full((8, 1), 0.9), torch.full((8, 1, 1), 0.1)  # residual 0.8 >> 0.1
    likelihood.log_prob(mean, x).sum().neg().backward()
    assert likelihood.log_std.grad.item() < 0  # descent raises it
    torch.testing.assert_close(likelihood.std(), torch.tensor(0.1))  # still floored in value
    likelihood.log_std.grad = None
    x = mean[..., 0].clone()  # a perfect fit wants a smaller std: no gradient below the floor
    likelihood.log_prob(mean, x).sum().neg().backward()
    assert likelihood.log_std.grad.item() == 0


def test_internal_noise_is_seeded():
    model = VAE(latent_dim=4, hidden=16)
    x = small_batch()
    first = model.loss(x, generator=torch.Generator().manual_seed(3))
    again = model.loss(x, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(first, again)
    a = model.log_likelihood(x, k=7, chunk_size=3, generator=torch.Generator().manual_seed(4))
    b = model.log_likelihood(x, k=7, chunk_size=3, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b)


@requires_cuda
def test_cuda_model_matches_cpu():
    torch.manual_seed(0)
    model = VAE(latent_dim=4, architecture="conv", hidden=16)
    x = small_batch()
    noise = torch.randn(len(x), 4)
    cpu_loss = model.loss(x, None, noise)
    cuda_loss = model.cuda().loss(x.cuda(), None, noise.cuda())
    torch.testing.assert_close(cuda_loss.cpu(), cpu_loss, rtol=1e-4, atol=1e-4)
    assert model.sample(4).device.type == "cuda"


# --- errors ------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors(tmp_path):
    model = VAE(latent_dim=4, architecture="conv", hidden=8)
    x = small_batch(n=4)
    with pytest.raises(ValueError, match=r"shape \(N, 1, 8, 8\).*got \(4, 1, 16, 16\)"):
        model.loss(torch.zeros(4, 1, 16, 16))
    with pytest.raises(ValueError, match=r"shape \(N, 1, 8, 8\).*got \(4, 3, 8, 8\)"):
        model.encode(torch.zeros(4, 3, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        model.elbo(torch.zeros(1, 8, 8))
    bad = x.clone()
    bad[1, 0, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model.loss(bad)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.loss(x * 2)
    with pytest.raises(ValueError, match="k must be >= 1"):
        model.log_likelihood(x, k=0)
    with pytest.raises(ValueError, match="chunk_size"):
        model.log_likelihood(x, k=4, chunk_size=0)
    with pytest.raises(ValueError, match="noise must have shape"):
        model.loss(x, noise=torch.randn(3, 4))
    with pytest.raises(ValueError, match="latent_dim == 2"):
        model.manifold_figure(tmp_path / "m.png")
    with pytest.raises(ValueError, match="steps"):
        model.interpolate(x, x, steps=1)
    categorical = VAE(latent_dim=4, likelihood="categorical", hidden=8)
    with pytest.raises(ValueError, match="integer levels"):
        categorical.loss(x)
    with pytest.raises(ValueError, match=r"0 \.\. 16"):
        categorical.loss(torch.full((2, 1, 8, 8), 17))
    gaussian = VAE(latent_dim=4, likelihood="gaussian", hidden=8)
    with pytest.raises(ValueError, match="NaN"):
        gaussian.elbo(bad)
    custom = VAE((3,), 2, encoder=nn.Linear(3, 4), decoder=nn.Unflatten(-1, (2, 1)))
    with pytest.raises(ValueError, match="cannot be rebuilt"):
        custom.save(tmp_path / "custom.pt")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"latent_dim": 0}, "latent_dim"),
        ({"iwae_k": 0}, "iwae_k"),
        ({"free_bits": 1.0, "free_bits_group_size": 3}, "divide"),
        ({"free_bits": 1.0, "iwae_k": 2}, "free bits"),
        ({"architecture": "rnn"}, "architecture"),
        ({"likelihood": "poisson"}, "likelihood"),
        ({"architecture": "conv", "data_shape": (1, 6, 6)}, "divisible by 4"),
        ({"encoder": nn.Identity()}, "both encoder and decoder"),
        ({"likelihood": "gaussian", "std": 0.0}, "std"),
        ({"likelihood": "gaussian", "std": 1e-4}, "below min_std"),  # was run at 1e-3
    ],
)
def test_bad_constructor_arguments_raise(options, match):
    with pytest.raises(ValueError, match=match):
        VAE(**{"latent_dim": 4, **options})
