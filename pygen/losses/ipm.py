"""Integral-probability-metric GAN objectives of the lecture: MMD GAN (Li et al. 2017; Binkowski
et al. 2018) and Sinkhorn GAN (Genevay et al. 2018).

Both compare *features*: the discriminator ``h`` maps samples to ``(N, k)`` vectors, G minimizes
a distance between the feature clouds of a real and a generated batch, and ``h`` maximizes it
under a constraint that keeps it from blowing the distance up (a gradient penalty or clipping;
Li et al.'s MMD GAN adds an autoencoder term that keeps ``h`` injective).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from pygen.losses.gan import Critic, GANLoss, MMDLoss, check_clip_value, gradient_penalty
from pygen.metrics.mmd import kernel_matrix

# Li et al. 2017's Gaussian bandwidths for features of unit-ish scale.
LI_BANDWIDTHS = (1.0, 2.0, 4.0, 8.0, 16.0)


def _check_sinkhorn(epsilon: float, scaling: float) -> None:
    if epsilon <= 0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    if not 0 < scaling < 1:
        raise ValueError(f"scaling must be in (0, 1), got {scaling}")


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

    _check_sinkhorn(epsilon, scaling)
    loss = SamplesLoss(
        "sinkhorn", p=2, blur=epsilon**0.5, scaling=scaling, debias=True, backend="tensorized"
    )
    return loss(x.reshape(len(x), -1), y.reshape(len(y), -1))


class SinkhornLoss(GANLoss):
    """Sinkhorn GAN (Genevay et al. 2018): G minimizes the Sinkhorn divergence between the
    critic's features of a real and a generated batch; the critic (a learned cost
    ``C(h(x), h(y))``) maximizes it with its weights clipped to ``[-clip_value, clip_value]``,
    as in the paper's Algorithm 1. The critic's raw outputs are the features ``(N, k)``.

    Args:
        epsilon: the entropic regularization of ``sinkhorn_divergence``, in the units of the
            cost ``|h(x) - h(y)|^2 / 2`` of the features; must be > 0.
        scaling: the epsilon-scaling factor of the Sinkhorn iterations, in (0, 1): closer to 1,
            more iterations and a more exact divergence.
        clip_value: the critic's weights are clamped to ``[-clip_value, clip_value]`` after each
            of its steps (by the trainer), > 0; None for no clipping.
    """

    name = "sinkhorn"
    generator_needs_real = True

    def __init__(
        self, epsilon: float = 0.01, scaling: float = 0.9, clip_value: float | None = 0.01
    ) -> None:
        _check_sinkhorn(epsilon, scaling)
        check_clip_value(clip_value)
        self.epsilon, self.scaling, self.clip_value = epsilon, scaling, clip_value

    def divergence(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        """``sinkhorn_divergence`` (a 0-d tensor, differentiable in both arguments) between the
        critic's features of a real batch ``(N, ...)`` and of a generated one ``(M, ...)``, each
        flattened per sample, with this loss's ``epsilon`` and ``scaling``."""
        return sinkhorn_divergence(real_out, fake_out, self.epsilon, self.scaling)

    def discriminator_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return -self.divergence(real_out, fake_out)

    def generator_loss(self, fake_out: Tensor, real_out: Tensor | None = None) -> Tensor:
        if real_out is None:
            raise ValueError("the Sinkhorn generator loss needs the critic's real outputs")
        return self.divergence(real_out.detach(), fake_out)

    def __repr__(self) -> str:
        return (
            f"SinkhornLoss(epsilon={self.epsilon}, scaling={self.scaling}, "
            f"clip_value={self.clip_value})"
        )


class MMDGANLoss(MMDLoss):
    """MMD GAN: the unbiased MMD^2 of the critic's features under a kernel mixture, with the
    critic constraints of either paper.

    Binkowski et al. 2018 ("Demystifying MMD GANs"), the default: ``kernel="rational_quadratic"``
    (shapes ``scales``, default ``RQ_ALPHAS``) and the gradient penalty ``gp_weight *
    E[(|grad w(x_hat)| - 1)^2]`` on the witness function ``w(x) = mean_j k(h(x), h(real_j)) -
    mean_j k(h(x), h(fake_j))`` at random interpolates of real and fake.

    Li et al. 2017 (``MMDGANLoss.li2017()``): ``kernel="gaussian"`` (bandwidths ``scales``,
    default ``LI_BANDWIDTHS``), no gradient penalty, and

    - ``clip_value``: the critic's weights clipped to ``[-c, c]`` after each of its steps (for an
      ``AutoencoderCritic`` the trainer clips the encoder only, as Li et al. do);
    - ``ae_weight`` (their lambda_AE): the critic is a ``pygen.models.AutoencoderCritic`` whose
      loss adds ``ae_weight * (|dec(h(x)) - x|^2 + |dec(h(y)) - y|^2)`` (mean squared errors) on
      the real batch ``x`` and the generated batch ``y``, which keeps the feature map injective;
    - ``rg_weight`` (their lambda_RG): the one-sided penalty of their feasible-set reduction,
      ``rg_weight * mean_k relu(E[h_k(y)] - E[h_k(x)])``, which asks the critic to rank real
      data above generated data feature by feature. It is a term of the min-max objective, so
      it enters both players' losses: added to the critic's, subtracted from the generator's.

    Li et al. train on the square root of the biased MMD^2 estimate; both variants here use the
    unbiased MMD^2 of Binkowski et al.
    """

    name = "mmd_gan"

    def __init__(
        self,
        kernel: str = "rational_quadratic",
        scales: Sequence[float] | None = None,
        gp_weight: float = 1.0,
        clip_value: float | None = None,
        ae_weight: float = 0.0,
        rg_weight: float = 0.0,
    ) -> None:
        if kernel == "gaussian" and scales is None:
            scales = LI_BANDWIDTHS
        super().__init__(scales, kernel)
        weights = {"gp_weight": gp_weight, "ae_weight": ae_weight, "rg_weight": rg_weight}
        for label, weight in weights.items():
            if weight < 0:
                raise ValueError(f"{label} must be >= 0, got {weight}")
        check_clip_value(clip_value)
        self.gp_weight, self.clip_value = gp_weight, clip_value
        self.ae_weight, self.rg_weight = ae_weight, rg_weight

    @property
    def penalizes_gradients(self) -> bool:
        """The witness gradient penalty is on (``gp_weight > 0``)."""
        return self.gp_weight > 0

    @classmethod
    def li2017(cls, clip_value: float = 0.01) -> MMDGANLoss:
        """Li et al. 2017's MMD GAN: Gaussian kernels of bandwidths 1 to 16, weights clipped to
        ``clip_value`` (their 0.01 by default), lambda_AE = 8 and lambda_RG = 16 (the values of
        their code)."""
        return cls("gaussian", gp_weight=0.0, clip_value=clip_value, ae_weight=8.0, rg_weight=16.0)

    @staticmethod
    def one_sided_violation(real_out: Tensor, fake_out: Tensor) -> Tensor:
        """``mean_k relu(E[h_k(fake)] - E[h_k(real)])``: how far the generated batch's mean
        features exceed the real batch's (Li et al. 2017's one-sided penalty)."""
        return F.relu(fake_out.mean(0) - real_out.mean(0)).mean()

    def discriminator_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        violation = self.one_sided_violation(real_out, fake_out)
        return super().discriminator_loss(real_out, fake_out) + self.rg_weight * violation

    def generator_loss(self, fake_out: Tensor, real_out: Tensor | None = None) -> Tensor:
        if real_out is None:
            raise ValueError("the MMD GAN generator loss needs the critic's real outputs")
        loss = super().generator_loss(fake_out, real_out)
        return loss - self.rg_weight * self.one_sided_violation(real_out.detach(), fake_out)

    def witness(self, critic: Critic, real: Tensor, fake: Tensor) -> Critic:
        """The MMD witness function of the current critic on a real and a fake batch."""
        real_features, fake_features = critic(real), critic(fake)

        def w(x: Tensor) -> Tensor:
            h = critic(x)
            k_real = kernel_matrix(h, real_features, self.kernel, self.bandwidths)
            k_fake = kernel_matrix(h, fake_features, self.kernel, self.bandwidths)
            return k_real.mean(1) - k_fake.mean(1)

        return w

    def penalty(self, critic: Critic, real: Tensor, fake: Tensor) -> Tensor | None:
        if self.gp_weight == 0:
            return None
        return gradient_penalty(self.witness(critic, real, fake), real, fake, self.gp_weight)

    def __repr__(self) -> str:
        return (
            f"MMDGANLoss(kernel={self.kernel!r}, scales={self.bandwidths}, "
            f"gp_weight={self.gp_weight}, clip_value={self.clip_value}, "
            f"ae_weight={self.ae_weight}, rg_weight={self.rg_weight})"
        )
