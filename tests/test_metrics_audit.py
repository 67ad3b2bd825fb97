"""Evaluation metrics and losses against independent computations (numpy, enumeration, closed
forms): the numbers the package reports must be the ones the papers define."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from pygen.data import ImageData
from pygen.losses import F_DIVERGENCES, FGANLoss, get_gan_loss
from pygen.metrics import (
    median_bandwidth,
    memorization_ratio,
    mmd_permutation_test,
    nearest_neighbours,
)
from pygen.models import VAE, PixelCNN, RealNVP
from pygen.recipes import RECIPES

pytestmark = pytest.mark.usefixtures("one_thread")


def numpy_mmd2(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) with one Gaussian kernel, as a double loop."""
    k = lambda a, b: math.exp(-float(((a - b) ** 2).sum()) / (2 * bandwidth**2))  # noqa: E731
    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(a, b) for a in x for b in y) / (n * m)
    return xx + yy - 2 * xy


# ----------------------------------------------------------------------------- MMD test


@pytest.mark.parametrize("seed", range(8))
def test_permutation_p_value_matches_exhaustive_enumeration(seed):
    # With 3 + 3 samples the 20 relabellings can be enumerated: the exact permutation p-value is
    # the fraction of them at least as large as the observed statistic. The swap of x and y gives
    # the observed value again, so a test that rounds that tie away reports about half the true
    # p-value for the most extreme data (0.05 instead of 0.1), below its level.
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 1, generator=gen, dtype=torch.float64)
    y = torch.randn(3, 1, generator=gen, dtype=torch.float64)
    pooled = torch.cat([x, y]).numpy()
    labellings = [list(c) for c in itertools.combinations(range(6), 3)]
    stats = [
        numpy_mmd2(pooled[c], pooled[[i for i in range(6) if i not in c]], 1.0) for c in labellings
    ]
    observed = stats[labellings.index([0, 1, 2])]
    exact = np.mean([s >= observed - 1e-12 for s in stats])
    got = mmd_permutation_test(x, y, 4000, bandwidths=1.0, generator=gen)
    assert got.mmd2 == pytest.approx(observed, abs=1e-12)
    assert got.p_value == pytest.approx(exact, abs=0.035)


def test_permutation_test_level_and_power():
    gen = torch.Generator().manual_seed(0)
    null = [
        mmd_permutation_test(
            torch.randn(8, 1, generator=gen), torch.randn(12, 1, generator=gen), 99, generator=gen
        ).p_value
        for _ in range(200)
    ]
    # A valid test: P(p <= a) <= a up to sampling error (200 trials: sd of the 5% rate ~1.5%).
    assert np.mean(np.array(null) <= 0.05) <= 0.08
    assert np.mean(np.array(null) <= 0.2) <= 0.26
    shifted = [
        mmd_permutation_test(
            torch.randn(20, 2, generator=gen),
            torch.randn(20, 2, generator=gen) + 1.5,
            99,
            generator=gen,
        ).p_value
        for _ in range(20)
    ]
    assert np.mean(np.array(shifted) <= 0.05) >= 0.9
    # The +1 correction: never below 1 / (1 + permutations), even for disjoint samples.
    far = mmd_permutation_test(torch.zeros(5, 2), torch.full((7, 2), 50.0), 9, generator=gen)
    assert far.p_value == pytest.approx(0.1)


@pytest.mark.parametrize("n", [4, 5])
def test_median_bandwidth_is_the_median_of_the_distinct_pairwise_distances(n):
    # 4 points: 6 distances, an even count whose median is the mean of the two middle ones (the
    # lower one alone is what torch.median gives); 5 points: 10 distances, also even.
    gen = torch.Generator().manual_seed(n)
    pooled = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    points = pooled.numpy()
    distances = [np.linalg.norm(points[i] - points[j]) for i in range(n) for j in range(i + 1, n)]
    assert median_bandwidth(pooled) == pytest.approx(float(np.median(distances)), rel=1e-12)
    odd = torch.tensor([[0.0], [1.0], [3.0]])  # distances 1, 2, 3
    assert median_bandwidth(odd) == pytest.approx(2.0)


def test_memorization_ratio_takes_numpys_median():
    # Nearest-training distances 1, 3 (samples) and 2, 4 (held out): medians 2 and 3.
    train, samples, heldout = torch.tensor([[0.0], [10.0]]), torch.tensor([[1.0], [3.0]]), None
    heldout = torch.tensor([[2.0], [4.0]])
    assert memorization_ratio(samples, train, heldout) == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------- neighbours


@pytest.mark.parametrize("chunk", [7, 1024])
def test_nearest_neighbour_of_an_exact_copy_is_the_copy_at_pixel_scale(chunk):
    # Pixels in [0, 255]: |x|^2 ~ 1e6, where float32 |x|^2 + |y|^2 - 2 x.y loses ~0.1 of the
    # squared distance, more than the gap between a copy and a near-duplicate of the original.
    gen = torch.Generator().manual_seed(0)
    train = torch.rand(300, 64, generator=gen, dtype=torch.float64) * 255
    train = torch.cat([train, train[:40] + 0.01])  # near-duplicates of the first 40 images
    queries = torch.cat([train[:40], torch.rand(20, 64, generator=gen, dtype=torch.float64) * 255])
    found = nearest_neighbours(queries.float(), train.float(), chunk=chunk)
    brute = (queries[:, None] - train[None]).square().sum(-1).sqrt()
    assert torch.equal(found.indices, brute.argmin(1))
    assert not found.distances[:40].any()
    torch.testing.assert_close(found.distances.double(), brute.min(1).values, rtol=1e-6, atol=0)


def test_nearest_neighbour_tells_a_copy_from_a_duplicate_below_the_product_forms_rounding():
    # In float64 at pixel scale over 3072 values the product form's error (~1e-9 |x|^2 ~ 1e-2)
    # exceeds a 1e-7 offset's squared distance: only the retaken candidates find the copy.
    gen = torch.Generator().manual_seed(0)
    queries = torch.rand(20, 3072, generator=gen, dtype=torch.float64) * 255
    reference = torch.cat([queries + 1e-7, queries])  # each query's copy is listed second
    found = nearest_neighbours(queries, reference)
    assert torch.equal(found.indices, torch.arange(20, 40)) and not found.distances.any()


# ----------------------------------------------------------------------------- losses


def test_classifier_and_wasserstein_losses_are_the_paper_formulas():
    gen = torch.Generator().manual_seed(0)
    r, f = torch.randn(16, generator=gen, dtype=torch.float64), torch.randn(16, generator=gen)
    f = f.double()
    d_r, d_f = torch.sigmoid(r), torch.sigmoid(f)
    want = {  # (D loss, G loss), both minimized
        "minimax": (-(d_r.log() + (1 - d_f).log()).mean(), (1 - d_f).log().mean()),
        "non_saturating": (-(d_r.log() + (1 - d_f).log()).mean(), -d_f.log().mean()),
        "lsgan": (0.5 * ((r - 1) ** 2).mean() + 0.5 * (f**2).mean(), 0.5 * ((f - 1) ** 2).mean()),
        "hinge": ((1 - r).clamp(min=0).mean() + (1 + f).clamp(min=0).mean(), -f.mean()),
        "wgan": (f.mean() - r.mean(), -f.mean()),
    }
    for name, (d_loss, g_loss) in want.items():
        loss = get_gan_loss(name)
        assert loss.discriminator_loss(r, f).item() == pytest.approx(d_loss.item(), rel=1e-12)
        assert loss.generator_loss(f, r).item() == pytest.approx(g_loss.item(), rel=1e-12)


def _f_prime(name: str, u: torch.Tensor) -> torch.Tensor:
    if name == "total_variation":
        return 0.5 * torch.sign(u - 1)  # a subgradient at the kink
    u = u.clone().requires_grad_()
    (grad,) = torch.autograd.grad(F_DIVERGENCES[name].f(u).sum(), u)
    return grad


def _inverse_activation(name: str, t: torch.Tensor) -> torch.Tensor:
    """g_f^{-1}(t) by bisection (every g_f is increasing)."""
    lo, hi = torch.full_like(t, -60.0), torch.full_like(t, 60.0)
    for _ in range(100):
        mid = (lo + hi) / 2
        below = F_DIVERGENCES[name].activation(mid) < t
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize("name", list(F_DIVERGENCES))
def test_fgan_bound_at_the_optimal_critic_estimates_the_divergence_of_two_gaussians(name):
    # P = N(0, 1), Q = N(1, 1): p / q = exp(1/2 - x). The critic T* = f'(p / q) attains the
    # bound; D_f(P || Q) = E_Q[f(p / q)] by quadrature. ("js" is Nowozin et al.'s f, which
    # gives 2 JSD; "gan" gives 2 JSD - log 4.)
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(50_000, generator=gen, dtype=torch.float64)
    fake = torch.randn(50_000, generator=gen, dtype=torch.float64) + 1

    def critic(x):
        return _inverse_activation(name, _f_prime(name, torch.exp(0.5 - x)))

    grid = torch.linspace(-12, 13, 50_001, dtype=torch.float64)
    q = torch.exp(-((grid - 1) ** 2) / 2) / math.sqrt(2 * math.pi)
    exact = torch.trapezoid(q * F_DIVERGENCES[name].f(torch.exp(0.5 - grid)), grid).item()
    closed = {"kl": 0.5, "reverse_kl": 0.5, "pearson": math.e - 1}
    assert exact == pytest.approx(closed.get(name, exact), rel=1e-6)
    if name == "js":  # twice the Jensen-Shannon divergence, as the docstring says
        p = torch.exp(-(grid**2) / 2) / math.sqrt(2 * math.pi)
        m = (p + q) / 2
        jsd = torch.trapezoid(0.5 * p * (p / m).log() + 0.5 * q * (q / m).log(), grid).item()
        assert exact == pytest.approx(2 * jsd, rel=1e-6)
    loss, div = FGANLoss(name), F_DIVERGENCES[name]
    v_real, v_fake = critic(real), critic(fake)
    estimate = loss.divergence_estimate(v_real, v_fake).item()
    # Within sampling error: 4 standard errors of the two sample means.
    error = math.sqrt(
        div.activation(v_real).var().item() / len(real)
        + div.conjugate_of_activation(v_fake).var().item() / len(fake)
    )
    assert estimate == pytest.approx(exact, abs=4 * error + 1e-6)
    # Any other critic gives less (the bound is a supremum): the optimal one shifted.
    assert loss.divergence_estimate(critic(real + 0.5), critic(fake + 0.5)).item() < estimate


# ----------------------------------------------------------------------------- bits/dim


@pytest.mark.parametrize("shape", [(1, 2, 2), (3, 1, 2)])
def test_pixelcnn_probabilities_of_all_images_sum_to_one(shape):
    # Grey and RGB: exp(-bits_per_dim * D * log 2) over every image of 2 levels is a distribution.
    torch.manual_seed(0)
    model = PixelCNN(shape[0], 2, n_layers=2, hidden=6, kernel_size=3, image_size=shape[1:])
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
        images = torch.tensor(list(itertools.product(range(2), repeat=math.prod(shape))))
        bits = model.bits_per_dim(images.view(-1, *shape))
    total = torch.exp(-bits * math.prod(shape) * math.log(2.0)).sum()
    assert total.item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("shape", [(1, 2, 2), (3, 2, 2)])
def test_flow_bits_per_dim_by_hand_with_the_jacobian(shape):
    # bits/dim = -(log N(f(s); 0, I) + log|det df/ds| - D log 256) / (D log 2) at the
    # dequantized s = (x + u) / 256, with the Jacobian of the whole flow taken by autograd.
    torch.manual_seed(0)
    model = RealNVP(shape, n_scales=1, hidden=8, n_blocks=1, reference=True).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randint(0, 256, (2, *shape), generator=torch.Generator().manual_seed(1))
    bits = model.bits_per_dim(x, generator=torch.Generator().manual_seed(2))
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(2))
    dequantized = ((x.double() + noise) / 256).flatten(1)  # summed in float64
    dims = math.prod(shape)

    def flow(v):
        return model.flow(v.view(1, *shape))[0].flatten()

    for i in range(2):
        z = flow(dequantized[i])
        logdet = torch.linalg.slogdet(torch.autograd.functional.jacobian(flow, dequantized[i]))[1]
        log_p = -0.5 * (z.square().sum() + dims * math.log(2 * math.pi)) + logdet
        want = -(log_p - dims * math.log(256)) / (dims * math.log(2))
        assert bits[i].item() == pytest.approx(want.item(), rel=1e-10)


@pytest.mark.parametrize("likelihood", ["categorical", "gaussian", "bernoulli"])
def test_vae_evaluation_reports_bits_per_dim_of_the_levels_only(likelihood):
    # A Gaussian density of levels scaled to [0, 1] is no distribution over the levels (its
    # "bits/dim" goes negative once the std is small) and a Bernoulli scores binarized pixels:
    # neither is the bits/dim that the autoregressive models and flows report for the levels.
    torch.manual_seed(0)
    images = torch.randint(0, 17, (6, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    data = ImageData(images, None, 17, "tiny")
    recipe = RECIPES["vae"]
    config = recipe.config(data, {"likelihood": likelihood, "latent_dim": 2, "hidden": 8})
    if likelihood == "gaussian":
        config["std"] = 0.01  # a density far above 1 on [0, 1]
    result = recipe.evaluate(VAE(**config), data, k=4)
    assert np.isfinite(result["iwae4_nll_nats"])
    if likelihood == "categorical":
        want = result["iwae4_nll_nats"] / (16 * math.log(2.0))
        assert result["iwae4_bits_per_dim"] == pytest.approx(want)
    else:
        assert "iwae4_bits_per_dim" not in result
