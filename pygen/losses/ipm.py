"""Integral-probability-metric GAN objectives of the lecture: MMD GAN (Li et al. 2017; Binkowski
et al. 2018) and Sinkhorn GAN (Genevay et al. 2018).

Both compare *features*: the discriminator ``h`` maps samples to ``(N, k)`` vectors, G minimizes
a distance between the feature clouds of a real and a generated batch, and ``h`` maximizes it
under a constraint that keeps it from blowing the distance up (a gradient penalty or clipping).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from pygen.losses.gan import Critic, GANLoss, MMDLoss, gradient_penalty
from pygen.metrics.mmd import kernel_matrix

# Li et al. 2017's Gaussian bandwidths for features of unit-ish scale.
LI_BANDWIDTHS = (1.0, 2.0, 4.0, 8.0, 16.0)


def sinkhorn_divergence(
    x: Tensor, y: Tensor, epsilon: float = 0.01, scaling: float = 0.9
) -> Tensor:
    """Debiased Sinkhorn divergence (Genevay et al. 2018; Feydy et al. 2019) between the uniform
    empirical measures of ``x`` ``(N, ...)`` and ``y`` ``(M, ...)``.

    ``S(a, b) = OT_eps(a, b) - (OT_eps(a, a) + OT_eps(b, b)) / 2`` with the cost
    ``C(x, y) = |x - y|^2 / 2`` and ``OT_eps(a, b) = min_P <P, C> + eps KL(P | a x b)`` (the
    value of the entropic problem, including its entropic term, computed as its dual objective
    ``<a, f> + <b, g>``). It is >= 0, 0 iff the clouds coincide, and tends to W2^2 / 2 as
    ``eps -> 0`` and to an MMD as ``eps -> inf``.

    Computed by geomloss: log-domain (stable) Sinkhorn iterations with epsilon-scaling from the
    cloud's diameter down to ``epsilon`` (each scale multiplies the blur by ``scaling``; closer
    to 1 means more iterations and a more exact answer). geomloss is parameterized by
    ``blur = eps^(1/p)``, so ``blur = sqrt(epsilon)`` here (p = 2). Gradients flow through the
    optimal dual potentials (the envelope theorem: no backprop through the iterations).
    """
    from geomloss import SamplesLoss  # a hard dependency, imported where it is used

    if epsilon <= 0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    if not 0 < scaling < 1:
        raise ValueError(f"scaling must be in (0, 1), got {scaling}")
    loss = SamplesLoss(
        "sinkhorn", p=2, blur=epsilon**0.5, scaling=scaling, debias=True, backend="tensorized"
    )
    return loss(x.reshape(len(x), -1), y.reshape(len(y), -1))


class SinkhornLoss(GANLoss):
    """Sinkhorn GAN (Genevay et al. 2018): G minimizes the Sinkhorn divergence between the
    critic's features of a real and a generated batch; the critic (a learned cost
    ``C(h(x), h(y))``) maximizes it with its weights clipped to ``[-clip_value, clip_value]``,
    as in the paper's Algorithm 1. The critic's raw outputs are the features ``(N, k)``."""

    name = "sinkhorn"
    generator_needs_real = True

    def __init__(
        self, epsilon: float = 0.01, scaling: float = 0.9, clip_value: float | None = 0.01
    ) -> None:
        self.epsilon, self.scaling, self.clip_value = epsilon, scaling, clip_value

    def divergence(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return sinkhorn_divergence(real_out, fake_out, self.epsilon, self.scaling)

    def discriminator_loss(self, real_out, fake_out):
        return -self.divergence(real_out, fake_out)

    def generator_loss(self, fake_out, real_out=None):
        if real_out is None:
            raise ValueError("the Sinkhorn generator loss needs the critic's real outputs")
        return self.divergence(real_out.detach(), fake_out)

    def __repr__(self) -> str:
        return (
            f"SinkhornLoss(epsilon={self.epsilon}, scaling={self.scaling}, "
            f"clip_value={self.clip_value})"
        )


class MMDGANLoss(MMDLoss):
    """MMD GAN: the unbiased MMD^2 of the critic's features under a kernel mixture.

    ``kernel="rational_quadratic"`` (shapes ``scales``, default ``RQ_ALPHAS``) with the
    gradient penalty of Binkowski et al. 2018 ("Demystifying MMD GANs"): ``gp_weight *
    E[(|grad w(x_hat)| - 1)^2]`` on the witness function ``w(x) = mean_j k(h(x), h(real_j)) -
    mean_j k(h(x), h(fake_j))`` at random interpolates of real and fake. ``kernel="gaussian"``
    (bandwidths ``scales``, default ``LI_BANDWIDTHS``) with ``clip_value`` and no penalty is Li
    et al. 2017's weight-clipped MMD GAN (without their autoencoder term).
    """

    name = "mmd_gan"

    def __init__(
        self,
        kernel: str = "rational_quadratic",
        scales: Sequence[float] | None = None,
        gp_weight: float = 1.0,
        clip_value: float | None = None,
    ) -> None:
        if kernel == "gaussian" and scales is None:
            scales = LI_BANDWIDTHS
        super().__init__(scales, kernel)
        if gp_weight < 0:
            raise ValueError(f"gp_weight must be >= 0, got {gp_weight}")
        self.gp_weight, self.clip_value = gp_weight, clip_value

    def witness(self, critic: Critic, real: Tensor, fake: Tensor) -> Critic:
        """The MMD witness function of the current critic on a real and a fake batch."""
        real_features, fake_features = critic(real), critic(fake)

        def w(x: Tensor) -> Tensor:
            h = critic(x)
            k_real = kernel_matrix(h, real_features, self.kernel, self.bandwidths)
            k_fake = kernel_matrix(h, fake_features, self.kernel, self.bandwidths)
            return k_real.mean(1) - k_fake.mean(1)

        return w

    def penalty(self, critic, real, fake):
        if self.gp_weight == 0:
            return None
        return gradient_penalty(self.witness(critic, real, fake), real, fake, self.gp_weight)

    def __repr__(self) -> str:
        return (
            f"MMDGANLoss(kernel={self.kernel!r}, scales={self.bandwidths}, "
            f"gp_weight={self.gp_weight}, clip_value={self.clip_value})"
        )
