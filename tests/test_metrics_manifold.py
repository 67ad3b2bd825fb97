"""k-NN precision, recall, density and coverage against the published definitions computed
independently in numpy, known answers, and the input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pygen.metrics import ManifoldMetrics, precision_recall_density_coverage

pytestmark = pytest.mark.usefixtures("one_thread")


def numpy_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> ManifoldMetrics:
    """Kynkäänniemi et al. 2019 and Naeem et al. 2020 as written, on all pairwise distances."""

    def distances(a, b):
        return np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))

    def radii(x):  # distance to the k-th nearest other sample
        d = distances(x, x)
        np.fill_diagonal(d, np.inf)
        return np.sort(d, axis=1)[:, k - 1]

    d = distances(real, fake)  # (N, M)
    in_real_ball = d <= radii(real)[:, None]  # [j, i]: fake i inside the ball of real j
    in_fake_ball = d <= radii(fake)[None, :]  # [j, i]: real j inside the ball of fake i
    return ManifoldMetrics(
        precision=in_real_ball.any(0).mean(),
        recall=in_fake_ball.any(1).mean(),
        density=in_real_ball.sum() / (k * len(fake)),
        coverage=in_real_ball.any(1).mean(),
    )


def assert_metrics(got: ManifoldMetrics, want: ManifoldMetrics) -> None:
    assert got._asdict() == pytest.approx(want._asdict(), rel=1e-12, abs=0)


def continuous_with_copies(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Real samples with duplicates (7 copies of one: balls of radius 0 for k <= 6), fakes with
    exact copies of real ones, far from the origin (~1e4) where the matrix-product distances err
    by far more than the gaps between copies."""
    real = torch.randn(70, 6, generator=gen, dtype=torch.float64) * 30 + 1e4
    real[50:57] = real[0]
    real[57:67] = real[10:20]
    fake = torch.randn(53, 6, generator=gen, dtype=torch.float64) * 30 + 1e4
    fake[:20] = real[::3][:20]
    fake[20:23] = real[0]
    return real, fake


@pytest.mark.parametrize("k", [1, 3, 6])
@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_matches_the_definitions_with_copies_and_ties(k, batch_size):
    real, fake = continuous_with_copies(torch.Generator().manual_seed(k))
    got = precision_recall_density_coverage(real, fake, k=k, batch_size=batch_size)
    assert_metrics(got, numpy_prdc(real.numpy(), fake.numpy(), k))
    # Swapped sides: precision and recall trade places, unequal sizes the other way round.
    swapped = precision_recall_density_coverage(fake, real, k=k, batch_size=batch_size)
    assert_metrics(swapped, numpy_prdc(fake.numpy(), real.numpy(), k))
    assert (swapped.precision, swapped.recall) == (got.recall, got.precision)


@pytest.mark.parametrize("k", [2, 5])
def test_matches_the_definitions_on_a_grid_where_distances_tie_everywhere(k):
    gen = torch.Generator().manual_seed(k)
    real = torch.randint(0, 4, (90, 3), generator=gen).float()
    fake = torch.randint(0, 5, (41, 3), generator=gen).float()
    got = precision_recall_density_coverage(real, fake, k=k, batch_size=13)
    assert_metrics(got, numpy_prdc(real.double().numpy(), fake.double().numpy(), k))


@pytest.mark.parametrize("k", [1, 2])
def test_matches_the_definitions_on_near_ties_the_matrix_product_cannot_order(k):
    # Each base point has neighbours at distances 1 and 1 + 1e-11, far from the origin (~2.5e4),
    # where the matrix-product distances err by ~1e-7 and order about a third of them wrongly;
    # fakes between the two radii are outside the ball in exact arithmetic.
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(40, 6, generator=gen, dtype=torch.float64) * 20 + 1e4
    u = torch.nn.functional.normalize(
        torch.randn(40, 2, 6, generator=gen, dtype=torch.float64), dim=-1
    )
    real = torch.cat([base, base + u[:, 0], base + u[:, 1] * (1 + 1e-11)])
    fake = torch.cat([real[80:], base + u[:, 0] * (1 + 0.5e-11)])
    got = precision_recall_density_coverage(real, fake, k=k, batch_size=16)
    assert_metrics(got, numpy_prdc(real.numpy(), fake.numpy(), k))


def test_matches_the_definitions_for_a_collapsed_fake_set():
    # Mode collapse: every pair of fakes ties at distance 0, the fake balls have radius 0, and a
    # fake on a real sample sits in a ball of radius 0 when the real set repeats it too.
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(150, 20, generator=gen, dtype=torch.float64) + 50
    real[100:106] = real[0]
    fake = torch.cat([real[:1].expand(90, -1), real[1:3]])
    for k in (1, 5):
        got = precision_recall_density_coverage(real, fake, k=k, batch_size=64)
        assert_metrics(got, numpy_prdc(real.numpy(), fake.numpy(), k))


@pytest.mark.parametrize("seed", range(4))
def test_matches_the_definitions_on_random_data(seed):
    gen = torch.Generator().manual_seed(seed)
    real = torch.randn(120, 5, generator=gen)
    fake = torch.randn(85, 5, generator=gen) * 1.3 + 0.4
    want = numpy_prdc(real.double().numpy(), fake.double().numpy(), 4)
    assert_metrics(precision_recall_density_coverage(real, fake, k=4, batch_size=32), want)


def test_by_hand_with_a_duplicate_and_points_on_ball_boundaries():
    real = torch.tensor([[0.0], [0.0], [1.0], [3.0]])  # k=1 radii: 0, 0, 1, 2
    fake = torch.tensor([[0.0], [2.0], [6.0]])  # k=1 radii: 2, 2, 4
    got = precision_recall_density_coverage(real, fake, k=1)
    # fake 0 lies in the balls of reals 0, 1 (radius 0) and 2 (on its boundary); fake 2 in those
    # of reals 2 (boundary) and 3; fake 6 in none.
    assert got == pytest.approx(ManifoldMetrics(2 / 3, 1.0, 5 / 3, 1.0), rel=1e-15)


def test_samples_of_any_shape_are_flattened_and_computed_in_float64():
    gen = torch.Generator().manual_seed(0)
    real = torch.rand(40, 1, 4, 4, generator=gen) * 255
    fake = torch.rand(30, 1, 4, 4, generator=gen) * 255
    got = precision_recall_density_coverage(real, fake, k=3)
    assert got == precision_recall_density_coverage(real.flatten(1).double(), fake.flatten(1), k=3)
    assert all(isinstance(v, float) for v in got)


# ----------------------------------------------------------------------------- known answers


def test_identical_sets():
    real = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
    got = precision_recall_density_coverage(real, real.clone(), k=5)
    # Each real ball holds its own copy and the copies of its 5 neighbours: density (k + 1) / k.
    assert got == pytest.approx(ManifoldMetrics(1.0, 1.0, 6 / 5, 1.0), rel=1e-15)


def test_two_samples_of_one_distribution():
    gen = torch.Generator().manual_seed(0)
    real, fake = torch.randn(1000, 3, generator=gen), torch.randn(1000, 3, generator=gen)
    got = precision_recall_density_coverage(real, fake, k=5)
    # Naeem et al.: density has expectation 1 and coverage 1 - (1/2)^k ~ 0.97 for N = M.
    assert got.density == pytest.approx(1.0, abs=0.06)
    assert got.coverage == pytest.approx(1 - 0.5**5, abs=0.02)
    assert got.precision > 0.9 and got.recall > 0.9


def test_disjoint_sets_score_zero():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(60, 4, generator=gen)
    fake = torch.randn(45, 4, generator=gen) + 100
    got = precision_recall_density_coverage(real, fake, k=3)
    assert got == ManifoldMetrics(0.0, 0.0, 0.0, 0.0)


def test_a_fake_set_on_one_of_two_real_modes():
    gen = torch.Generator().manual_seed(0)
    modes = torch.tensor([[10.0, 0.0], [-10.0, 0.0]])
    real = torch.randn(400, 2, generator=gen) + modes.repeat(200, 1)
    fake = torch.randn(200, 2, generator=gen) + modes[0]
    got = precision_recall_density_coverage(real, fake, k=5)
    # Every fake sample is realistic, but half of the real samples are out of reach.
    assert got.precision > 0.95 and got.density == pytest.approx(1.0, abs=0.1)
    assert 0.45 < got.recall <= 0.5 and 0.45 < got.coverage <= 0.5


# ----------------------------------------------------------------------------- input checks


def test_clear_errors_naming_the_argument():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        precision_recall_density_coverage(x, x, k=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        precision_recall_density_coverage(x, x, batch_size=0)
    with pytest.raises(ValueError, match="k=10 needs more than k samples in real, which has 10"):
        precision_recall_density_coverage(x, torch.randn(20, 3), k=10)
    with pytest.raises(ValueError, match="samples in fake, which has 6"):
        precision_recall_density_coverage(x, x[:6], k=6)
    with pytest.raises(TypeError, match=r"fake must be a floating-point tensor, got torch\.int64"):
        precision_recall_density_coverage(x, torch.ones(10, 3, dtype=torch.long))
    with pytest.raises(
        ValueError, match=r"real needs at least 2 samples \(N, \.\.\.\), got \(1, 3\)"
    ):
        precision_recall_density_coverage(x[:1], x, k=1)
    with pytest.raises(ValueError, match=r"differ in shape: \(3,\) vs \(1, 3\)"):
        precision_recall_density_coverage(x, x[:, None], k=2)
    with pytest.raises(ValueError, match="fake contains NaN or inf"):
        precision_recall_density_coverage(x, torch.cat([x[:9], torch.full((1, 3), torch.nan)]))
    with pytest.raises(ValueError, match="real contains NaN or inf"):
        precision_recall_density_coverage(torch.cat([x[:9], x[:1] / 0]), x)
