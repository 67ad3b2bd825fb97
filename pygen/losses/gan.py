"""GAN objectives, each a pair (discriminator loss, generator loss) of the discriminator's raw
output ``v`` (a logit for the classifier losses, a critic value for the Wasserstein ones).

Both losses are minimized. For the classifier losses ``D(x) = sigmoid(v)``, so ``softplus(-v) =
-log D`` and ``softplus(v) = -log(1 - D)``, computed without overflow for any ``v``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pygen.metrics.mmd import mmd2

Critic = Callable[[Tensor], Tensor]


class GANLoss:
    """A generator/discriminator objective pair.

    Attributes:
        name: registry name.
        clip_value: clamp every discriminator parameter to ``[-c, c]`` after each of its steps
            (WGAN's Lipschitz constraint); None for no clipping.
        generator_needs_real: ``generator_loss`` also needs the discriminator's real outputs.
        ae_weight: the discriminator is a ``pygen.models.AutoencoderCritic`` and its loss adds
            ``ae_weight`` times its reconstruction error of the real and of the generated batch
            (Li et al. 2017's MMD GAN); 0 for no autoencoder term.
        penalizes_gradients: ``penalty`` constrains D's gradients with respect to its inputs,
            per sample (which batch norm in D breaks: the trainer warns).
    """

    name = "base"
    clip_value: float | None = None
    generator_needs_real = False
    ae_weight = 0.0

    @property
    def penalizes_gradients(self) -> bool:
        return False

    def discriminator_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        """Loss of D given its raw outputs on a real and a generated batch."""
        raise NotImplementedError

    def generator_loss(self, fake_out: Tensor, real_out: Tensor | None = None) -> Tensor:
        """Loss of G given D's raw outputs on a generated batch (and a real one if needed)."""
        raise NotImplementedError

    def penalty(self, critic: Critic, real: Tensor, fake: Tensor) -> Tensor | None:
        """Extra discriminator term computed from D itself (WGAN-GP); None when there is none."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MinimaxLoss(GANLoss):
    """Goodfellow et al. 2014, as written: G minimizes ``log(1 - D(G(z)))`` (saturates early on,
    when D rejects every sample and the gradient vanishes)."""

    name = "minimax"

    def discriminator_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return F.softplus(-real_out).mean() + F.softplus(fake_out).mean()

    def generator_loss(self, fake_out: Tensor, real_out: Tensor | None = None) -> Tensor:
        return -F.softplus(fake_out).mean()


class NonSaturatingLoss(MinimaxLoss):
    """Goodfellow et al. 2014's practical variant: G minimizes ``-log D(G(z))``."""

    name = "non_saturating"

    def generator_loss(self, fake_out: Tensor, real_out: Tensor | None = None) -> Tensor:
        return F.softplus(-fake_out).mean()


class LeastSquaresLoss(GANLoss):
    """LSGAN (Mao et al. 2017) with targets a=0 (fake), b=1 (real), c=1 (what G wants)."""

    name = "lsgan"

    def discriminator_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return 0.5 * ((real_out - 1).square().mean() + fake_out.square().mean())

    def generator_loss(self, fake_out: Tensor, real_out: Tensor | None = None) -> Tensor:
        return 0.5 * (fake_out - 1).square().mean()


class HingeLoss(GANLoss):
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018): margins of 1 for D, a linear G loss."""

    name = "hinge"

    def discriminator_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return F.relu(1 - real_out).mean() + F.relu(1 + fake_out).mean()

    def generator_loss(self, fake_out: Tensor, real_out: Tensor | None = None) -> Tensor:
        return -fake_out.mean()


def check_clip_value(clip_value: float | None) -> None:
    """A clear error unless ``clip_value`` (a critic's weight clipping) is positive or None."""
    if clip_value is not None and clip_value <= 0:
        raise ValueError(f"clip_value must be positive or None, got {clip_value}")


class WassersteinLoss(GANLoss):
    """WGAN (Arjovsky et al. 2017): the critic estimates W1, kept Lipschitz by clipping its
    weights to ``[-clip_value, clip_value]``."""

    name = "wgan"

    def __init__(self, clip_value: float | None = 0.01) -> None:
        check_clip_value(clip_value)
        self.clip_value = clip_value

    def discriminator_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return fake_out.mean() - real_out.mean()

    def generator_loss(self, fake_out: Tensor, real_out: Tensor | None = None) -> Tensor:
        return -fake_out.mean()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(clip_value={self.clip_value})"


def _input_gradients(critic: Critic, x: Tensor) -> Tensor:
    """``d critic(x_i) / d x_i`` flattened to ``(N, D)``, kept differentiable (double backward)."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return grad.flatten(1)


def gradient_penalty(
    critic: Critic, real: Tensor, fake: Tensor, weight: float = 10.0, mix: Tensor | None = None
) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017): ``weight * E[(|grad critic(x_hat)| - 1)^2]`` at
    ``x_hat = mix * real + (1 - mix) * fake``, ``mix ~ U(0, 1)`` per sample unless given."""
    if mix is None:
        mix = torch.rand(len(real), *[1] * (real.dim() - 1), device=real.device, dtype=real.dtype)
    x_hat = mix * real.detach() + (1 - mix) * fake.detach()
    norms = _input_gradients(critic, x_hat).norm(dim=1)
    return weight * (norms - 1).square().mean()


def r1_penalty(critic: Critic, real: Tensor, gamma: float) -> Tensor:
    """R1 (Mescheder et al. 2018): ``gamma / 2 * E[|grad D(x)|^2]`` on real data."""
    return 0.5 * gamma * _input_gradients(critic, real).square().sum(1).mean()


class WassersteinGPLoss(WassersteinLoss):
    """WGAN-GP: the Wasserstein losses with a gradient penalty instead of weight clipping.

    Batch norm in the critic breaks the per-sample gradient the penalty constrains (the trainer
    warns about it); use layer norm or no normalization in D.
    """

    name = "wgan_gp"
    penalizes_gradients = True

    def __init__(self, weight: float = 10.0) -> None:
        super().__init__(clip_value=None)
        if weight <= 0:
            raise ValueError(f"gradient penalty weight must be positive, got {weight}")
        self.weight = weight

    def penalty(self, critic: Critic, real: Tensor, fake: Tensor) -> Tensor | None:
        return gradient_penalty(critic, real, fake, self.weight)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weight={self.weight})"


@dataclass(frozen=True)
class FDivergence:
    """One f-divergence of Nowozin et al. 2016 (their Table 2).

    ``f``: the convex generator (``f(1) = 0``, except ``-log 4`` for "gan", whose divergence is
    ``2 JSD - log 4``); ``activation``: ``g_f``, which maps D's raw output into the domain of the
    conjugate; ``conjugate``: the Fenchel conjugate ``f*``; ``conjugate_of_activation``:
    ``f*(g_f(v))`` in a form that does not overflow.

    "js" keeps the paper's generator, whose divergence ``E_Q[f(p / q)]`` is ``2 JSD`` (at most
    ``log 4``), although the paper's table names it JSD: halve the estimate to report JSD.
    """

    name: str
    f: Callable[[Tensor], Tensor]
    activation: Callable[[Tensor], Tensor]
    conjugate: Callable[[Tensor], Tensor]
    conjugate_of_activation: Callable[[Tensor], Tensor]


_LOG2 = math.log(2.0)

F_DIVERGENCES: dict[str, FDivergence] = {
    d.name: d
    for d in [
        FDivergence(
            "kl",
            f=lambda u: u * u.log(),
            activation=lambda v: v,
            conjugate=lambda t: (t - 1).exp(),
            conjugate_of_activation=lambda v: (v - 1).exp(),
        ),
        FDivergence(
            "reverse_kl",
            f=lambda u: -u.log(),
            activation=lambda v: -(-v).exp(),
            conjugate=lambda t: -1 - (-t).log(),
            conjugate_of_activation=lambda v: v - 1,
        ),
        FDivergence(
            "pearson",
            f=lambda u: (u - 1).square(),
            activation=lambda v: v,
            conjugate=lambda t: 0.25 * t * t + t,
            conjugate_of_activation=lambda v: 0.25 * v * v + v,
        ),
        FDivergence(
            "hellinger",
            f=lambda u: (u.sqrt() - 1).square(),
            activation=lambda v: 1 - (-v).exp(),
            conjugate=lambda t: t / (1 - t),
            conjugate_of_activation=lambda v: v.exp() - 1,
        ),
        FDivergence(
            "js",
            f=lambda u: u * u.log() - (u + 1) * ((u + 1) / 2).log(),
            activation=lambda v: _LOG2 - F.softplus(-v),
            conjugate=lambda t: -(2 - t.exp()).log(),
            conjugate_of_activation=lambda v: F.softplus(v) - _LOG2,
        ),
        FDivergence(
            "gan",
            f=lambda u: u * u.log() - (u + 1) * (u + 1).log(),
            activation=lambda v: -F.softplus(-v),
            conjugate=lambda t: -(-t.expm1()).log(),
            conjugate_of_activation=F.softplus,
        ),
        FDivergence(
            "total_variation",
            f=lambda u: 0.5 * (u - 1).abs(),
            activation=lambda v: 0.5 * v.tanh(),
            conjugate=lambda t: t,
            conjugate_of_activation=lambda v: 0.5 * v.tanh(),
        ),
    ]
}


class FGANLoss(GANLoss):
    """f-GAN (Nowozin et al. 2016): D estimates ``D_f(P || Q_G) >= E_P[T] - E_Q[f*(T)]`` with
    ``T = g_f(v)``; its loss is the negated bound.

    G's loss is the saddle objective ``-E_Q[f*(T)]`` when ``saturating``, else the paper's
    practical alternative (their section 3.2) ``-E_Q[T]``, which has strong early gradients.
    """

    def __init__(self, divergence: str = "js", saturating: bool = False) -> None:
        if divergence not in F_DIVERGENCES:
            raise ValueError(
                f"unknown f-divergence {divergence!r}; known: {', '.join(F_DIVERGENCES)}"
            )
        self.divergence = F_DIVERGENCES[divergence]
        self.saturating = saturating
        self.name = f"fgan_{divergence}"

    def divergence_estimate(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        """The variational lower bound ``E_P[g_f(v)] - E_Q[f*(g_f(v))]`` on ``D_f(P || Q)``."""
        d = self.divergence
        return d.activation(real_out).mean() - d.conjugate_of_activation(fake_out).mean()

    def discriminator_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return -self.divergence_estimate(real_out, fake_out)

    def generator_loss(self, fake_out: Tensor, real_out: Tensor | None = None) -> Tensor:
        if self.saturating:
            return -self.divergence.conjugate_of_activation(fake_out).mean()
        return -self.divergence.activation(fake_out).mean()

    def __repr__(self) -> str:
        return f"FGANLoss(divergence={self.divergence.name!r}, saturating={self.saturating})"


class MMDLoss(GANLoss):
    """MMD GAN (Li et al. 2017): D's raw outputs ``(N, ...)`` are features; G minimizes the
    kernel MMD^2 between real and generated features, D maximizes it.

    With a parameter-free identity D this is a generative moment-matching network (Li et al.
    2015). ``bandwidths``: Gaussian kernel widths (or rational-quadratic shapes with
    ``kernel="rational_quadratic"``); None uses the median heuristic per batch (the default
    shapes for the rational-quadratic kernel). ``pygen.losses.MMDGANLoss`` adds the critic
    constraints of the MMD GAN papers.
    """

    name = "mmd"
    generator_needs_real = True

    def __init__(self, bandwidths: Sequence[float] | None = None, kernel: str = "gaussian") -> None:
        self.bandwidths = None if bandwidths is None else tuple(bandwidths)
        self.kernel = kernel

    def discriminator_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return -mmd2(real_out, fake_out, self.bandwidths, self.kernel)

    def generator_loss(self, fake_out: Tensor, real_out: Tensor | None = None) -> Tensor:
        if real_out is None:
            raise ValueError("the MMD generator loss needs the discriminator's real outputs")
        return mmd2(real_out.detach(), fake_out, self.bandwidths, self.kernel)

    def __repr__(self) -> str:
        return f"MMDLoss(bandwidths={self.bandwidths}, kernel={self.kernel!r})"
