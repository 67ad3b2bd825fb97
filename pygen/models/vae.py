"""Variational autoencoder whose sampling step is the fused ``pygen.ops.reparameterize_kl``.

The model maximizes ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)) with q(z|x) = N(mu, diag
exp(logvar)) and p(z) = N(0, I); the reparameterized z and the analytic KL come from one fused op
(or its pure-PyTorch twin with ``reference=True``). Options: beta-VAE weight, linear KL warm-up,
free bits per group of latent dimensions, and the importance-weighted (IWAE) objective.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from pygen.layers import GaussianReparameterize
from pygen.models.likelihoods import Likelihood, make_likelihood
from pygen.utils.png import save_image_grid

_LOG_2PI = math.log(2 * math.pi)


class ELBOTerms(NamedTuple):
    """Per-example parts of the ELBO: ``reconstruction`` is a one-sample estimate of
    E_q[log p(x|z)], ``kl`` the analytic KL(q(z|x) || p(z))."""

    reconstruction: Tensor
    kl: Tensor

    @property
    def elbo(self) -> Tensor:
        return self.reconstruction - self.kl


class _ParamsLast(nn.Module):
    """Conv decoder output ``(N, P * C, H, W)`` -> ``(N, C, H, W, P)``, the likelihoods' layout."""

    def __init__(self, params_per_element: int) -> None:
        super().__init__()
        self.params_per_element = params_per_element

    def forward(self, out: Tensor) -> Tensor:
        return out.unflatten(1, (self.params_per_element, -1)).movedim(1, -1)


def mlp_encoder_decoder(
    data_shape: tuple[int, ...], latent_dim: int, hidden: int, params_per_element: int
) -> tuple[nn.Module, nn.Module]:
    """Two-hidden-layer MLPs: ``(N, *data_shape) -> (N, 2 * latent_dim)`` and
    ``(N, latent_dim) -> (N, *data_shape, params_per_element)``."""
    size = math.prod(data_shape)
    encoder = nn.Sequential(
        nn.Flatten(),
        nn.Linear(size, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 2 * latent_dim),
    )
    decoder = nn.Sequential(
        nn.Linear(latent_dim, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, size * params_per_element),
        nn.Unflatten(-1, (*data_shape, params_per_element)),
    )
    return encoder, decoder


def conv_encoder_decoder(
    data_shape: tuple[int, ...], latent_dim: int, hidden: int, params_per_element: int
) -> tuple[nn.Module, nn.Module]:
    """Two stride-2 convolutions (``hidden``, ``2 * hidden`` channels) and their transposes;
    images ``(C, H, W)`` with H and W divisible by 4."""
    if len(data_shape) != 3 or data_shape[1] % 4 or data_shape[2] % 4:
        raise ValueError(f"the conv VAE needs (C, H, W) with H, W divisible by 4, got {data_shape}")
    channels, height, width = data_shape
    inner = (2 * hidden, height // 4, width // 4)
    encoder = nn.Sequential(
        nn.Conv2d(channels, hidden, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(hidden, 2 * hidden, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(math.prod(inner), 2 * latent_dim),
    )
    decoder = nn.Sequential(
        nn.Linear(latent_dim, math.prod(inner)),
        nn.ReLU(),
        nn.Unflatten(-1, inner),
        nn.ConvTranspose2d(2 * hidden, hidden, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(hidden, channels * params_per_element, 4, stride=2, padding=1),
        _ParamsLast(params_per_element),
    )
    return encoder, decoder


_ARCHITECTURES = {"mlp": (mlp_encoder_decoder, 256), "conv": (conv_encoder_decoder, 32)}


def _standard_normal_log_prob(z: Tensor) -> Tensor:
    return -0.5 * (z.square() + _LOG_2PI).sum(-1)


def _diagonal_normal_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    eps = (z - mu) * torch.exp(-0.5 * logvar)
    return -0.5 * (eps.square() + logvar + _LOG_2PI).sum(-1)


class VAE(nn.Module):
    """Variational autoencoder with MLP or convolutional encoder/decoder and a choice of p(x|z).

    Data: Bernoulli takes floats in [0, 1] (binarized images), categorical integer levels
    ``0 .. n_levels - 1``, Gaussian floats in [0, 1] (``GaussianLikelihood(clamp=None)`` for
    unbounded data); ``model.likelihood.from_levels(images, n_levels)``
    converts integer images such as the bundled digits.

    Args:
        data_shape: shape of one example, e.g. ``(1, 8, 8)`` (any sequence of ints; kept as a
            tuple).
        latent_dim: size of z.
        likelihood: "bernoulli", "categorical", "gaussian" or a ``Likelihood`` module.
        architecture: "mlp" or "conv" (ignored when ``encoder`` and ``decoder`` are given).
        hidden: MLP width or first conv layer's channels (default 256 and 32).
        n_levels: pixel levels of the categorical likelihood.
        std: the Gaussian likelihood's fixed std, None to learn it.
        beta: weight of the KL term (beta-VAE).
        warmup_steps: the KL weight grows linearly from 0 to ``beta`` over this many steps.
        free_bits: floor in nats on the batch-mean KL of each group of latent dimensions.
        free_bits_group_size: latent dimensions per free-bits group (divides ``latent_dim``).
        iwae_k: importance samples of the training objective (1: the ELBO; > 1: the IWAE bound).
        reference: use the pure-PyTorch reparameterize + KL instead of the fused op.
        encoder, decoder: custom modules, ``(N, *data_shape) -> (N, 2 * latent_dim)`` (mu and
            logvar) and ``(N, latent_dim) -> (N, *data_shape, likelihood.params_per_element)``.
    """

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 8, 8),
        latent_dim: int = 16,
        *,
        likelihood: str | Likelihood = "bernoulli",
        architecture: str = "mlp",
        hidden: int | None = None,
        n_levels: int = 17,
        std: float | None = None,
        beta: float = 1.0,
        warmup_steps: int = 0,
        free_bits: float = 0.0,
        free_bits_group_size: int = 1,
        iwae_k: int = 1,
        reference: bool = False,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if beta < 0 or warmup_steps < 0 or free_bits < 0:
            raise ValueError("beta, warmup_steps and free_bits must be >= 0")
        if free_bits_group_size < 1 or latent_dim % free_bits_group_size:
            raise ValueError(
                f"free_bits_group_size must divide latent_dim={latent_dim}, "
                f"got {free_bits_group_size}"
            )
        if iwae_k < 1:
            raise ValueError(f"iwae_k must be >= 1, got {iwae_k}")
        if free_bits > 0 and iwae_k > 1:
            raise ValueError("free bits act on the analytic KL of the ELBO; use iwae_k=1")
        if (encoder is None) != (decoder is None):
            raise ValueError("give both encoder and decoder, or neither")
        if architecture not in _ARCHITECTURES:
            raise ValueError(f"architecture must be 'mlp' or 'conv', got {architecture!r}")
        self.data_shape = tuple(data_shape)
        self.latent_dim = latent_dim
        self.beta = beta
        self.warmup_steps = warmup_steps
        self.free_bits = free_bits
        # The op sums the KL over its last dim: grouping the latent dims gives the KL per group.
        self._kl_group_size = free_bits_group_size if free_bits > 0 else latent_dim
        self.iwae_k = iwae_k
        # What save() needs to rebuild the model; None when it holds custom modules.
        self.config: dict[str, Any] | None = None
        if encoder is None and isinstance(likelihood, str):
            self.config = dict(
                data_shape=self.data_shape,
                latent_dim=latent_dim,
                likelihood=likelihood,
                architecture=architecture,
                hidden=hidden,
                n_levels=n_levels,
                std=std,
                beta=beta,
                warmup_steps=warmup_steps,
                free_bits=free_bits,
                free_bits_group_size=free_bits_group_size,
                iwae_k=iwae_k,
                reference=reference,
            )
        if isinstance(likelihood, str):
            likelihood = make_likelihood(likelihood, n_levels, std)
        self.likelihood = likelihood
        if encoder is None or decoder is None:  # both (checked above)
            build, default_hidden = _ARCHITECTURES[architecture]
            encoder, decoder = build(
                self.data_shape,
                latent_dim,
                hidden or default_hidden,
                self.likelihood.params_per_element,
            )
        self.encoder = encoder
        self.decoder = decoder
        self.reparameterize = GaussianReparameterize(reference=reference)

    @property
    def reference(self) -> bool:
        """Whether the pure-PyTorch twin replaces the fused reparameterize + KL op."""
        return self.reparameterize.reference

    @reference.setter
    def reference(self, value: bool) -> None:
        self.reparameterize.reference = value

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _dtype(self) -> torch.dtype:
        """The floating-point dtype of the weights (``.double()``, ``.to(torch.bfloat16)``)."""
        return next(p.dtype for p in self.parameters() if p.is_floating_point())

    def _check(self, x: Tensor) -> None:
        if x.dim() != len(self.data_shape) + 1 or tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(
                f"expected a batch of shape (N, {', '.join(map(str, self.data_shape))}) for this "
                f"model, got {tuple(x.shape)}"
            )
        self.likelihood.check(x)

    def _encoder_stats(self, x: Tensor) -> Tensor:
        """The encoder's output for a checked batch x: ``(N, 2 * latent_dim)``, mu then logvar."""
        self._check(x)
        return self.encoder(self.likelihood.to_unit(x).to(self._dtype()))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z|x), each ``(N, latent_dim)``, for a checked batch x."""
        mu, logvar = self._encoder_stats(x).chunk(2, dim=-1)
        return mu, logvar

    def _decoder_params(self, z: Tensor) -> Tensor:
        """``(*batch, latent_dim) -> (*batch, *data_shape, params_per_element)``."""
        params = self.decoder(z.reshape(-1, self.latent_dim))
        return params.reshape(*z.shape[:-1], *params.shape[1:])

    def decode(
        self, z: Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> Tensor:
        """p(x|z) for ``z`` ``(*batch, latent_dim)``: its mean, or a draw when ``sample``, in the
        data's units, shape ``(*batch, *data_shape)``."""
        params = self._decoder_params(z)
        return self.likelihood.sample(params, generator) if sample else self.likelihood.mean(params)

    def _log_px(self, params: Tensor, x: Tensor) -> Tensor:
        # In at least float32: a 16-bit decoder's (or autocast's) softmax and sum over every
        # pixel would round to 16 bits (5 nats of a 4352-nat ELBO in bfloat16).
        params = params.to(torch.promote_types(params.dtype, torch.float32))
        return self.likelihood.log_prob(params, x).flatten(-len(self.data_shape)).sum(-1)

    def _reparameterize(
        self,
        stats: Tensor,
        noise: Tensor | None,
        n_samples: int,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        """z ``(N, L)`` (``(n_samples, N, L)`` when n_samples > 1) and the KL per latent group
        ``(N, G)`` from the encoder's output ``stats`` ``(N, 2L)`` by the stacked op, called on
        ``(N, G, 2 * group_size)``: each group's mu, then its logvar. With one group that is a
        view of stats, whose gradient the op then writes whole (a chunk's would be concatenated)."""
        mu_shape = (*stats.shape[:-1], stats.shape[-1] // 2)
        z_shape = mu_shape if n_samples == 1 else (n_samples, *mu_shape)
        if noise is not None and noise.shape != z_shape:
            raise ValueError(f"noise must have shape {tuple(z_shape)}, got {tuple(noise.shape)}")
        group = self._kl_group_size
        grouped = stats.unflatten(-1, (2, -1, group)).transpose(-3, -2).flatten(-2)
        z, kl = self.reparameterize.forward_stacked(
            grouped,
            None if noise is None else noise.unflatten(-1, (-1, group)),
            generator=generator,
            n_samples=n_samples,
        )
        return z.flatten(-2), kl

    def _elbo_parts(
        self, x: Tensor, noise: Tensor | None, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        z, kl_groups = self._reparameterize(self._encoder_stats(x), noise, 1, generator)
        return self._log_px(self._decoder_params(z), x), kl_groups

    def elbo(
        self, x: Tensor, noise: Tensor | None = None, generator: torch.Generator | None = None
    ) -> ELBOTerms:
        """Per-example reconstruction term (one z per example, ``noise`` ``(N, latent_dim)`` if
        given) and analytic KL; ``.elbo`` is their difference."""
        reconstruction, kl_groups = self._elbo_parts(x, noise, generator)
        return ELBOTerms(reconstruction, kl_groups.sum(-1))

    def _log_weights(
        self,
        x: Tensor,
        stats: Tensor,
        k: int,
        noise: Tensor | None,
        generator: torch.Generator | None,
        kl_weight: float = 1.0,
    ) -> Tensor:
        """log p(x|z) + kl_weight * (log p(z) - log q(z|x)) for k draws of z: ``(k, N)``, from
        the encoder's output ``stats``."""
        z, _ = self._reparameterize(stats, noise, k, generator)
        mu, logvar = stats.chunk(2, dim=-1)
        z = z.reshape(k, *mu.shape)
        log_ratio = _standard_normal_log_prob(z) - _diagonal_normal_log_prob(z, mu, logvar)
        return self._log_px(self._decoder_params(z), x) + kl_weight * log_ratio

    def kl_weight(self, step: int | None = None) -> float:
        """The KL weight at training ``step``: ``beta``, ramped linearly from 0 over
        ``warmup_steps``; ``step=None`` means after the warm-up."""
        if step is None or self.warmup_steps == 0:
            return self.beta
        return self.beta * min(1.0, step / self.warmup_steps)

    def loss(
        self,
        x: Tensor,
        step: int | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Training loss, a scalar: the batch mean of the negative (beta-weighted, warmed-up,
        free-bits) ELBO, or of the negative IWAE bound when ``iwae_k > 1`` (its log p(z) - log q
        term then takes the KL weight). ``noise``: ``(N, L)``, or ``(iwae_k, N, L)`` for IWAE."""
        weight = self.kl_weight(step)
        if self.iwae_k > 1:
            stats = self._encoder_stats(x)
            log_w = self._log_weights(x, stats, self.iwae_k, noise, generator, weight)
            return -(torch.logsumexp(log_w, 0) - math.log(self.iwae_k)).mean()
        reconstruction, kl_groups = self._elbo_parts(x, noise, generator)
        if self.free_bits > 0:
            # Free bits (Kingma et al. 2016): no KL pressure on a group whose mean is below it.
            kl = kl_groups.mean(0).clamp(min=self.free_bits).sum()
        else:
            kl = kl_groups.sum(-1).mean()
        return -reconstruction.mean() + weight * kl

    @torch.no_grad()
    def log_likelihood(
        self,
        x: Tensor,
        k: int = 100,
        *,
        chunk_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Importance-sampled (IWAE) estimate of log p(x) per example with k draws from q(z|x):
        log (1/k) sum_i p(x, z_i) / q(z_i|x), a lower bound in expectation that tightens as k
        grows. ``chunk_size`` bounds the draws decoded at once (memory)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        chunk = k if chunk_size is None else chunk_size
        if chunk < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        stats = self._encoder_stats(x)
        log_w = torch.cat(
            [
                self._log_weights(x, stats, min(chunk, k - start), None, generator)
                for start in range(0, k, chunk)
            ]
        )
        return torch.logsumexp(log_w, 0) - math.log(k)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decoder mean at the posterior mean of each example: the data's shape and range."""
        return self.decode(self.encode(x)[0])

    @torch.no_grad()
    def sample(
        self, n: int, *, mean: bool = False, generator: torch.Generator | None = None
    ) -> Tensor:
        """n examples: z ~ N(0, I), then a draw from p(x|z) (its mean if ``mean``)."""
        z = torch.randn(
            n, self.latent_dim, generator=generator, device=self._device(), dtype=self._dtype()
        )
        return self.decode(z, sample=not mean, generator=generator)

    @torch.no_grad()
    def interpolate(self, x1: Tensor, x2: Tensor, steps: int = 8) -> Tensor:
        """Decoder means along the straight line between the posterior means of x1 and x2
        (both ``(N, *data_shape)``), endpoints included: ``(steps, N, *data_shape)``."""
        if steps < 2:
            raise ValueError(f"steps must be >= 2, got {steps}")
        if x1.shape != x2.shape:
            raise ValueError(f"x1 and x2 differ in shape: {tuple(x1.shape)}, {tuple(x2.shape)}")
        start, end = self.encode(x1)[0], self.encode(x2)[0]
        t = torch.linspace(0.0, 1.0, steps, device=start.device, dtype=start.dtype).view(-1, 1, 1)
        return self.decode(torch.lerp(start, end, t))

    @torch.no_grad()
    def reconstruction_figure(
        self, x: Tensor, path: str | Path, nrow: int = 8, scale: int = 4
    ) -> Path:
        """PNG of inputs next to their reconstructions (input, reconstruction, ...), ``nrow`` pairs
        per row."""
        pairs = torch.stack(
            [self.likelihood.to_unit(x), self.likelihood.to_unit(self.reconstruct(x))], dim=1
        )
        return save_image_grid(pairs.flatten(0, 1), path, nrow=2 * nrow, scale=scale)

    @torch.no_grad()
    def sample_figure(
        self,
        path: str | Path,
        n: int = 64,
        nrow: int = 8,
        scale: int = 4,
        generator: torch.Generator | None = None,
    ) -> Path:
        """PNG grid of the decoder means of n draws from the prior."""
        images = self.likelihood.to_unit(self.sample(n, mean=True, generator=generator))
        return save_image_grid(images, path, nrow=nrow, scale=scale)

    @torch.no_grad()
    def manifold_figure(self, path: str | Path, n: int = 15, scale: int = 4) -> Path:
        """PNG of the learned manifold of a 2-D latent: decoder means on an n x n grid of z at the
        prior's quantiles 0.05 .. 0.95 (z1 left to right, z2 bottom to top)."""
        if self.latent_dim != 2:
            raise ValueError(f"the manifold figure needs latent_dim == 2, got {self.latent_dim}")
        q = torch.special.ndtri(torch.linspace(0.05, 0.95, n, device=self._device()))
        q = q.to(self._dtype())
        z1, z2 = torch.meshgrid(q, q.flip(0), indexing="xy")
        z = torch.stack([z1, z2], dim=-1).reshape(-1, 2)
        images = self.likelihood.to_unit(self.decode(z))
        return save_image_grid(images, path, nrow=n, padding=0, scale=scale)

    def save(self, path: str | Path) -> None:
        """Write the constructor arguments and the weights to ``path`` (see ``VAE.load``)."""
        if self.config is None:
            raise ValueError(
                "a VAE with a custom encoder, decoder or likelihood cannot be rebuilt from its "
                "arguments; save its state_dict instead"
            )
        config = {**self.config, "reference": self.reference}  # the flag may have been switched
        torch.save({"config": config, "state_dict": self.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device | None = None) -> VAE:
        """Rebuild a VAE written by ``save``."""
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        model = cls(**checkpoint["config"])
        model.load_state_dict(checkpoint["state_dict"])
        return model
