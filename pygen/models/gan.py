"""The GAN family: DCGAN (Radford et al. 2015) for images, an MLP GAN for 2-D toy data, their
class-conditional variants, and latent-space tools (interpolation, vector arithmetic).

Generators map ``z`` ``(N, latent_dim)`` (and labels ``(N,)`` when conditional) to samples;
discriminators return one raw score per sample ``(N,)`` (a logit or a critic value: the losses in
``pygen.losses`` decide). Image generators end in Tanh: data is scaled to ``[-1, 1]``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

from pygen.utils.png import save_image_grid
from pygen.utils.random import standard_normal


def _stages(image_size: int) -> int:
    """Resolution doublings between DCGAN's 4x4 base and ``image_size`` (a power of two >= 8)."""
    if image_size < 8 or image_size & (image_size - 1):
        raise ValueError(f"DCGAN image_size must be a power of two >= 8, got {image_size}")
    return image_size.bit_length() - 3  # log2(size) - 2


def _with_labels(x: Tensor, labels: Tensor | None, num_classes: int) -> Tensor:
    """Concatenate one-hot labels to ``x`` along dim 1 (as constant maps for images)."""
    if num_classes == 0:
        if labels is not None:
            raise ValueError("labels given to an unconditional model (num_classes=0)")
        return x
    if labels is None or labels.shape != (len(x),):
        got = None if labels is None else tuple(labels.shape)
        raise ValueError(f"a conditional model needs labels of shape ({len(x)},), got {got}")
    one_hot = F.one_hot(labels.to(x.device), num_classes).to(x.dtype)
    one_hot = one_hot.view(*one_hot.shape, *[1] * (x.dim() - 2)).expand(-1, -1, *x.shape[2:])
    return torch.cat([x, one_hot], dim=1)


def _dcgan_init(module: nn.Module) -> None:
    """Radford et al.: weights from N(0, 0.02), batch-norm scales from N(1, 0.02)."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator(nn.Module):
    """Fractional-strided convolutions from ``z`` (a 1x1 map) to ``(channels, size, size)``.

    ``z`` becomes a 4x4 map of ``width * 2^(stages-1)`` channels, then each stage doubles the
    resolution and halves the channels; batch norm and ReLU everywhere but the Tanh output; no
    hidden fully connected layers. ``stages = log2(image_size) - 2``: 4 at 64x64, 1 at 8x8.
    """

    def __init__(
        self,
        latent_dim: int = 100,
        image_size: int = 64,
        channels: int = 3,
        width: int = 64,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        stages = _stages(image_size)
        self.latent_dim, self.num_classes = latent_dim, num_classes
        ch = width * 2 ** (stages - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim + num_classes, ch, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ch),
            nn.ReLU(),
        ]
        for _ in range(stages - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False)]
            layers += [nn.BatchNorm2d(ch // 2), nn.ReLU()]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        z = _with_labels(z, labels, self.num_classes)
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """Strided convolutions (no pooling) from ``(channels, size, size)`` down to 4x4, then a 4x4
    convolution to one raw score ``(N,)``, or to ``features > 1`` critic features
    ``(N, features)`` (MMD and Sinkhorn GANs). LeakyReLU(0.2); batch norm on every hidden layer
    but the first (``batch_norm=False`` for WGAN-GP, whose penalty needs per-sample gradients).
    Conditional: one-hot label maps concatenated to the input channels."""

    def __init__(
        self,
        image_size: int = 64,
        channels: int = 3,
        width: int = 64,
        num_classes: int = 0,
        batch_norm: bool = True,
        features: int = 1,
    ) -> None:
        super().__init__()
        stages = _stages(image_size)
        self.num_classes, self.features = num_classes, features
        self.image_shape = (channels, image_size, image_size)
        layers: list[nn.Module] = [
            nn.Conv2d(channels + num_classes, width, 4, 2, 1),
            nn.LeakyReLU(0.2),
        ]
        ch = width
        for _ in range(stages - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=not batch_norm)]
            layers += [nn.BatchNorm2d(ch * 2)] if batch_norm else []
            layers += [nn.LeakyReLU(0.2)]
            ch *= 2
        layers += [nn.Conv2d(ch, features, 4, 1, 0)]
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        # Another image size runs through the convolutions too, to a map of scores per sample
        # that the flattening would mix into the batch dimension.
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f"DCGANDiscriminator expects images (N, {', '.join(map(str, self.image_shape))}), "
                f"got {tuple(x.shape)}"
            )
        out = self.net(_with_labels(x, labels, self.num_classes)).flatten(1)
        return out.flatten() if self.features == 1 else out


def _mlp(dims: list[int], activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class MLPGenerator(nn.Module):
    """Fully connected generator for low-dimensional data: ``depth`` hidden ReLU layers."""

    def __init__(
        self,
        latent_dim: int = 2,
        data_dim: int = 2,
        hidden: int = 128,
        depth: int = 3,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.net = _mlp([latent_dim + num_classes, *[hidden] * depth, data_dim], nn.ReLU)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.net(_with_labels(z, labels, self.num_classes))


class MLPDiscriminator(nn.Module):
    """Fully connected discriminator: ``depth`` hidden LeakyReLU layers to one raw score
    ``(N,)``, or to ``features > 1`` critic features ``(N, features)`` (MMD and Sinkhorn GANs)."""

    def __init__(
        self,
        data_dim: int = 2,
        hidden: int = 128,
        depth: int = 3,
        num_classes: int = 0,
        features: int = 1,
    ) -> None:
        super().__init__()
        self.num_classes, self.features = num_classes, features
        self.net = _mlp([data_dim + num_classes, *[hidden] * depth, features], nn.LeakyReLU)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        out = self.net(_with_labels(x, labels, self.num_classes))
        return out.flatten() if self.features == 1 else out


class AutoencoderCritic(nn.Module):
    """The critic of Li et al. 2017's MMD GAN: an encoder whose output ``(N, k)`` is the
    critic's feature map, and a decoder from those features back to the input.

    The critic is trained to keep ``decoder(encoder(x))`` close to ``x`` on real and generated
    samples (``pygen.losses.MMDGANLoss(ae_weight=...)``): an approximately invertible feature
    map is injective, which the MMD of the features needs to be a metric between distributions.
    ``forward`` returns the encoder's features only; the decoder takes them (and the labels,
    when conditional) as a generator takes ``z``.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.encoder(x, labels)

    def reconstruction_error(
        self, x: Tensor, features: Tensor, labels: Tensor | None = None
    ) -> Tensor:
        """Mean squared error between ``x`` and the decoding of its ``features = self(x)``."""
        return (self.decoder(features.reshape(len(x), -1), labels) - x).square().mean()


class GAN(nn.Module):
    """A generator and a discriminator; ``sample`` draws ``z ~ N(0, I)`` and runs G."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module) -> None:
        super().__init__()
        self.generator, self.discriminator = generator, discriminator

    @property
    def latent_dim(self) -> int:
        return cast(int, self.generator.latent_dim)  # every pygen generator has one

    @torch.no_grad()
    def sample(
        self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """``n`` samples of G (in its current train/eval mode)."""
        weight = next(self.generator.parameters())
        z = standard_normal(
            (n, self.latent_dim), generator, device=weight.device, dtype=weight.dtype
        )
        return self.generator(z, labels)


class DCGAN(GAN):
    """DCGAN generator and discriminator for ``(channels, image_size, image_size)`` images;
    ``num_classes > 0`` makes both class-conditional.

    ``d_features``: the discriminator's output size (1: a score; more: critic features for the
    MMD and Sinkhorn GANs). ``d_autoencoder``: the discriminator is an ``AutoencoderCritic``
    whose decoder is a DCGAN generator from the ``d_features`` features (Li et al. 2017).
    """

    generator: DCGANGenerator
    discriminator: DCGANDiscriminator | AutoencoderCritic

    def __init__(
        self,
        image_size: int = 64,
        channels: int = 3,
        latent_dim: int = 100,
        width: int = 64,
        num_classes: int = 0,
        d_batch_norm: bool = True,
        d_features: int = 1,
        d_autoencoder: bool = False,
    ) -> None:
        discriminator: nn.Module = DCGANDiscriminator(
            image_size, channels, width, num_classes, d_batch_norm, d_features
        )
        if d_autoencoder:
            decoder = DCGANGenerator(d_features, image_size, channels, width, num_classes)
            discriminator = AutoencoderCritic(discriminator, decoder)
        super().__init__(
            DCGANGenerator(latent_dim, image_size, channels, width, num_classes), discriminator
        )


class MLPGAN(GAN):
    """MLP generator and discriminator for vectors of ``data_dim`` (2-D toy data)."""

    generator: MLPGenerator
    discriminator: MLPDiscriminator

    def __init__(
        self,
        data_dim: int = 2,
        latent_dim: int = 2,
        hidden: int = 128,
        depth: int = 3,
        num_classes: int = 0,
    ) -> None:
        super().__init__(
            MLPGenerator(latent_dim, data_dim, hidden, depth, num_classes),
            MLPDiscriminator(data_dim, hidden, depth, num_classes),
        )


_WEIGHT_LAYERS = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def _has_spectral_norm(layer: nn.Module) -> bool:
    if not parametrize.is_parametrized(layer, "weight"):
        return False
    parametrizations = cast(nn.ModuleDict, layer.parametrizations)  # what torch registers
    return any(isinstance(p, _SpectralNorm) for p in parametrizations["weight"].children())


def spectral_norm_(module: nn.Module) -> nn.Module:
    """Spectral normalization (Miyato et al. 2018) on every conv and linear layer of ``module``
    (``module`` itself included), in place. A layer that has it already keeps its one: calling
    this again (on the model, then on a part of it) changes nothing."""
    for layer in list(module.modules()):
        if isinstance(layer, _WEIGHT_LAYERS) and not _has_spectral_norm(layer):
            nn.utils.parametrizations.spectral_norm(layer)  # registers in place
    return module


# ----------------------------------------------------------------------------- latent tools


def lerp(z0: Tensor, z1: Tensor, t: float) -> Tensor:
    """Linear interpolation ``(1 - t) z0 + t z1``."""
    return torch.lerp(z0, z1, t)


def slerp(z0: Tensor, z1: Tensor, t: float) -> Tensor:
    """Spherical interpolation along the great circle between each row pair of ``(..., D)``.

    Keeps the norm typical of Gaussian ``z`` (White 2016); falls back to lerp for (anti)parallel
    rows, where the great circle is undefined.
    """
    cos = F.cosine_similarity(z0, z1, dim=-1).clamp(-1, 1).unsqueeze(-1)
    omega = torch.acos(cos)
    sin = torch.sin(omega)
    parallel = sin.abs() < 1e-6
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    spherical = (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / safe
    return torch.where(parallel, lerp(z0, z1, t), spherical)


def interpolate(z0: Tensor, z1: Tensor, steps: int, method: str = "slerp") -> Tensor:
    """``steps`` points from ``z0`` to ``z1`` (both ``(B, D)``), inclusive: ``(B, steps, D)``."""
    if method not in ("lerp", "slerp"):
        raise ValueError(f"method must be 'lerp' or 'slerp', got {method!r}")
    if z0.dim() != 2 or z0.shape != z1.shape:
        raise ValueError(
            f"z0 and z1 must both be (B, D), got {tuple(z0.shape)} and {tuple(z1.shape)}"
        )
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    fn = lerp if method == "lerp" else slerp
    return torch.stack([fn(z0, z1, i / (steps - 1)) for i in range(steps)], dim=1)


def latent_arithmetic(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """``mean(a) - mean(b) + mean(c)`` of groups of z's ``(k, D)``: the DCGAN paper's "smiling
    woman - neutral woman + neutral man"; averaging a few exemplars per concept makes it stable."""
    return a.mean(0) - b.mean(0) + c.mean(0)


def _to_unit(images: Tensor) -> Tensor:
    return (images.float() + 1) / 2  # Tanh range [-1, 1] -> PNG range [0, 1]


@torch.no_grad()
def interpolation_grid(
    generator: nn.Module,
    z0: Tensor,
    z1: Tensor,
    path: str | os.PathLike[str],
    steps: int = 8,
    method: str = "slerp",
    labels: Tensor | None = None,
) -> Path:
    """PNG of G along the path from each ``z0`` row to its ``z1`` row: one row per pair."""
    zs = interpolate(z0, z1, steps, method)
    row_labels = None if labels is None else labels.repeat_interleave(steps)
    images = generator(zs.flatten(0, 1), row_labels)
    return save_image_grid(_to_unit(images), path, nrow=steps)


@torch.no_grad()
def arithmetic_grid(
    generator: nn.Module,
    a: Tensor,
    b: Tensor,
    c: Tensor,
    path: str | os.PathLike[str],
    noise_std: float = 0.25,
    generator_rng: torch.Generator | None = None,
    labels: Tensor | None = None,
) -> Path:
    """PNG of latent vector arithmetic: rows show G(a_i) then G(mean a), the same for b and c,
    then G(y) for ``y = mean(a) - mean(b) + mean(c)`` followed by G at y plus N(0, noise_std^2)
    jitters (as in the DCGAN paper's figure). ``a``, ``b``, ``c``: ``(k, D)`` each. ``labels``
    (a conditional generator's): the class of each of the four rows, shape ``(4,)``."""
    if not a.shape == b.shape == c.shape:
        raise ValueError(f"a, b, c must have one shape, got {a.shape}, {b.shape}, {c.shape}")
    if labels is not None and labels.shape != (4,):
        raise ValueError(f"labels: one class per row, shape (4,), got {tuple(labels.shape)}")
    y = latent_arithmetic(a, b, c)
    k = len(a)
    jitter = noise_std * torch.randn(k, y.shape[-1], generator=generator_rng).to(y)
    rows = [torch.cat([g, g.mean(0, keepdim=True)]) for g in (a, b, c)]
    rows.append(torch.cat([y[None], y + jitter]))
    cell_labels = None if labels is None else labels.repeat_interleave(k + 1)
    images = generator(torch.cat(rows), cell_labels)
    return save_image_grid(_to_unit(images), path, nrow=k + 1)
