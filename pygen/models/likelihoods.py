"""Decoder likelihoods p(x|z) of the VAE: Bernoulli, categorical over pixel levels, Gaussian.

A decoder emits ``params_per_element`` numbers per data element, laid out as
``(*batch, *data_shape, params_per_element)``. Each likelihood checks data of its kind, maps it to
[0, 1] (encoder input and figures), scores it elementwise and gives the decoder's mean or a draw.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _check_finite(x: Tensor) -> None:
    if not torch.isfinite(x).all():
        raise ValueError("the batch contains NaN or infinite values")


class Likelihood(nn.Module):
    """Interface of the decoder distributions (see the module docstring for the layout)."""

    params_per_element: int = 1

    def check(self, x: Tensor) -> None:
        """Raise ValueError when ``x`` is not data of this likelihood (dtype, range, NaN)."""
        raise NotImplementedError

    def to_unit(self, x: Tensor) -> Tensor:
        """Data (or a mean) as floats in [0, 1]: the encoder's input and the figures' pixels."""
        return x.float()

    def from_levels(self, levels: Tensor, n_levels: int) -> Tensor:
        """Integer images with values ``0 .. n_levels - 1`` as data of this likelihood."""
        if n_levels < 2:
            raise ValueError(f"n_levels must be >= 2, got {n_levels}")
        return levels.float() / (n_levels - 1)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """Elementwise log p(x|z), ``(*batch, *data_shape)``, from decoder ``params``
        ``(*batch, *data_shape, P)``; ``x`` ``(B, *data_shape)`` broadcasts over sample dims."""
        raise NotImplementedError

    def mean(self, params: Tensor) -> Tensor:
        """E[x|z], in the data's units and range."""
        raise NotImplementedError

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A draw from p(x|z), in the data's units, dtype and range."""
        raise NotImplementedError


class BernoulliLikelihood(Likelihood):
    """Binary pixels (grey levels in [0, 1]: cross-entropy); the decoder emits logits."""

    def check(self, x: Tensor) -> None:
        if not x.is_floating_point():
            raise ValueError(f"Bernoulli data must be floating point in [0, 1], got {x.dtype}")
        _check_finite(x)
        if ((x < 0) | (x > 1)).any():
            raise ValueError("Bernoulli data must lie in [0, 1]")

    def from_levels(self, levels: Tensor, n_levels: int) -> Tensor:
        # Binarize at the middle level (8 of 0..16 for the digits).
        return (levels >= (n_levels - 1) / 2).float()

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        logits = params[..., 0]
        return x * logits - F.softplus(logits)

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params[..., 0])

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.bernoulli(self.mean(params), generator=generator)


class CategoricalLikelihood(Likelihood):
    """Integer pixel levels ``0 .. n_levels - 1`` with a softmax over the levels per pixel."""

    def __init__(self, n_levels: int) -> None:
        super().__init__()
        if n_levels < 2:
            raise ValueError(f"n_levels must be >= 2, got {n_levels}")
        self.n_levels = n_levels
        self.params_per_element = n_levels

    def check(self, x: Tensor) -> None:
        if x.is_floating_point() or x.dtype == torch.bool or x.is_complex():
            raise ValueError(f"categorical data must be integer levels, got {x.dtype}")
        if ((x < 0) | (x >= self.n_levels)).any():
            raise ValueError(f"categorical data must lie in 0 .. {self.n_levels - 1}")

    def to_unit(self, x: Tensor) -> Tensor:
        return x.float() / (self.n_levels - 1)

    def from_levels(self, levels: Tensor, n_levels: int) -> Tensor:
        if n_levels != self.n_levels:
            raise ValueError(f"data has {n_levels} levels but the likelihood {self.n_levels}")
        return levels.long()

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        logp = F.log_softmax(params, dim=-1)
        index = x.long().unsqueeze(-1).expand(*logp.shape[:-1], 1)
        return logp.gather(-1, index).squeeze(-1)

    def mean(self, params: Tensor) -> Tensor:
        levels = torch.arange(self.n_levels, device=params.device, dtype=params.dtype)
        return torch.softmax(params, dim=-1) @ levels

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        probs = torch.softmax(params, dim=-1).reshape(-1, self.n_levels)
        draws = torch.multinomial(probs, 1, generator=generator)
        return draws.reshape(params.shape[:-1])

    def extra_repr(self) -> str:
        return f"n_levels={self.n_levels}"


class _Floored(torch.autograd.Function):
    """``max(x, floor)`` whose gradient also passes below the floor where descent raises ``x``
    (a negative gradient): a learned parameter that one optimizer step carried past the floor
    gets back, where a plain clamp would give it a zero gradient for good."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, floor: float) -> Tensor:
        return x.clamp(min=floor)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])
        ctx.floor = inputs[1]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        return torch.where((x >= ctx.floor) | (grad < 0), grad, 0.0), None


class GaussianLikelihood(Likelihood):
    """N(mean, std^2) per element; the decoder emits the mean.

    Args:
        std: fixed standard deviation, or None to learn one shared std (the "sigma-VAE" choice:
            a per-pixel learned variance collapses on pixels that never change).
        min_std: floor of the std, which keeps the density bounded (a fixed ``std`` must not lie
            below it).
        clamp: the data range ``(low, high)`` that means and draws are clipped to (images live in
            [0, 1]) and that data must lie in; None for unbounded data.
    """

    def __init__(
        self,
        std: float | None = None,
        min_std: float = 1e-3,
        clamp: tuple[float, float] | None = (0.0, 1.0),
    ) -> None:
        super().__init__()
        if min_std <= 0:
            raise ValueError(f"min_std must be > 0, got {min_std}")
        if std is not None and std < min_std:
            raise ValueError(
                f"std {std} lies below min_std {min_std}, the floor the likelihood applies: lower "
                "min_std for a smaller fixed std"
            )
        self.learned = std is None
        log_std = torch.tensor(0.0 if std is None else math.log(std))
        if self.learned:
            self.log_std = nn.Parameter(log_std)
        else:
            self.register_buffer("log_std", log_std)
        self.min_log_std = math.log(min_std)
        self.clamp = clamp

    def check(self, x: Tensor) -> None:
        if not x.is_floating_point():
            raise ValueError(f"Gaussian data must be floating point, got {x.dtype}")
        _check_finite(x)
        # Means and draws are clipped to the clamp range: data outside it would be modelled by a
        # density whose samples and reconstructions can never reach it.
        if self.clamp is not None and ((x < self.clamp[0]) | (x > self.clamp[1])).any():
            low, high = self.clamp
            raise ValueError(
                f"Gaussian data must lie in the likelihood's clamp range [{low}, {high}], got "
                f"values in [{x.min().item():.4g}, {x.max().item():.4g}]; use "
                "GaussianLikelihood(clamp=None) for unbounded data"
            )

    def _log_std(self) -> Tensor:
        return _Floored.apply(self.log_std, self.min_log_std)

    def std(self) -> Tensor:
        return self._log_std().exp()

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        log_std = self._log_std()
        residual = (x - params[..., 0]) * torch.exp(-log_std)
        return -0.5 * residual.square() - log_std - 0.5 * math.log(2 * math.pi)

    def _clip(self, x: Tensor) -> Tensor:
        return x if self.clamp is None else x.clamp(*self.clamp)

    def mean(self, params: Tensor) -> Tensor:
        return self._clip(params[..., 0])

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        mean = params[..., 0]
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return self._clip(mean + self.std() * noise)

    def extra_repr(self) -> str:
        return f"learned={self.learned}, clamp={self.clamp}"


def make_likelihood(name: str, n_levels: int = 17, std: float | None = None) -> Likelihood:
    """The likelihood called ``name``: "bernoulli", "categorical" (``n_levels``) or "gaussian"
    (``std``, None to learn it)."""
    if name == "bernoulli":
        return BernoulliLikelihood()
    if name == "categorical":
        return CategoricalLikelihood(n_levels)
    if name == "gaussian":
        return GaussianLikelihood(std)
    raise ValueError(f"likelihood must be 'bernoulli', 'categorical' or 'gaussian', got {name!r}")
