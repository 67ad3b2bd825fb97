"""How the pygen command trains, evaluates and samples each model family: one Recipe per name.

A recipe turns the data and the user's options into the model's full constructor config (stored
in every checkpoint, so a checkpoint rebuilds its model with no other input), and knows the
model's training loss, its evaluation metrics and how it samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pygen.data import ImageData
from pygen.losses import GANLoss, MMDGANLoss, SinkhornLoss
from pygen.metrics import mmd2
from pygen.models import (
    DCGAN,
    IAF,
    MAF,
    NICE,
    VAE,
    AutoregressiveImageModel,
    FlowModel,
    PixelCNN,
    PixelRNN,
    RealNVP,
)
from pygen.train import GANTrainer, TrainConfig, save_checkpoint


@dataclass(frozen=True)
class SampleOptions:
    """What ``pygen sample`` passes to a recipe."""

    method: str | None = None
    temperature: float = 1.0
    label: int | None = None
    generator: torch.Generator | None = None


FitFn = Callable[[nn.Module, ImageData, TrainConfig, Path, dict[str, Any]], list[dict]]


@dataclass(frozen=True)
class Recipe:
    """One model family as the pygen command sees it.

    ``config(data, options)`` returns the model's constructor arguments; ``loss(model, x, y)`` is
    the mean training loss of a batch of levels (for the shared loop, ``pygen.train.train``);
    ``fit(model, data, config, out, model_config)``, when given, trains instead of that loop
    (adversarial models) and writes the checkpoint; ``evaluate(model, data)`` returns metrics on
    a dataset; ``sample(model, n, options)`` returns images in [0, 1] ``(n, C, H, W)``.
    """

    model: type[nn.Module]
    config: Callable[[ImageData, dict[str, Any]], dict[str, Any]]
    evaluate: Callable[[nn.Module, ImageData], dict[str, float]]
    sample: Callable[[nn.Module, int, SampleOptions], Tensor]
    loss: Callable[[nn.Module, Tensor, Tensor | None], Tensor] | None = None
    fit: FitFn | None = None
    description: str = ""


RECIPES: dict[str, Recipe] = {}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(RECIPES)) or 'none'}")
    return RECIPES[name]


def build_model(name: str, config: dict[str, Any]) -> nn.Module:
    """The model of family ``name`` from its stored constructor config."""
    return get_recipe(name).model(**config)


def _to_unit(images: Tensor, n_levels: int) -> Tensor:
    """Levels ``[0, n_levels)`` to floats in [0, 1]."""
    return images.float() / (n_levels - 1)


def autoregressive_loss(model: AutoregressiveImageModel, x: Tensor, y: Tensor | None) -> Tensor:
    """Mean bits/dim of a batch of levels (labels are used by class-conditional models only)."""
    return F.cross_entropy(model(x, y if model.n_classes is not None else None), x) / math.log(2)


def _image_config(data: ImageData) -> dict[str, Any]:
    """What the data fixes in an autoregressive model's config."""
    return {
        "in_channels": data.images.shape[1],
        "n_levels": data.n_levels,
        "image_size": list(data.images.shape[2:]),
    }


def _pixelcnn_config(data: ImageData, options: dict[str, Any]) -> dict[str, Any]:
    defaults = {"n_layers": 5, "hidden": 32, "kernel_size": 5, "n_classes": None}
    return {**defaults, **options, **_image_config(data)}


def _autoregressive_evaluate(
    model: AutoregressiveImageModel, data: ImageData, chunk: int = 256
) -> dict[str, float]:
    device = next(model.parameters()).device
    bits = []
    for start in range(0, len(data.images), chunk):
        x = data.images[start : start + chunk].to(device)
        y = None if model.n_classes is None else data.labels[start : start + chunk].to(device)
        bits.append(model.bits_per_dim(x, y))
    return {"bits_per_dim": torch.cat(bits).mean().item()}


def _pixelcnn_sample(model: PixelCNN, n: int, options: SampleOptions) -> Tensor:
    device = next(model.parameters()).device
    method = options.method or ("fused" if device.type == "cpu" else "cached")
    y = None
    if model.n_classes is not None:
        label = 0 if options.label is None else options.label
        y = torch.full((n,), label, dtype=torch.long, device=device)
    images = model.sample(
        n, y=y, method=method, temperature=options.temperature, generator=options.generator
    )
    return _to_unit(images, model.n_levels)


RECIPES["pixelcnn"] = Recipe(
    model=PixelCNN,
    config=_pixelcnn_config,
    loss=autoregressive_loss,
    evaluate=_autoregressive_evaluate,
    sample=_pixelcnn_sample,
    description="Gated PixelCNN (samplers: fused C++, cached, naive)",
)


def _pixelrnn_config(data: ImageData, options: dict[str, Any]) -> dict[str, Any]:
    defaults = {"n_layers": 2, "hidden": 16, "kind": "row", "kernel_size": 5}
    return {**defaults, **options, **_image_config(data)}


def _pixelrnn_sample(model: PixelRNN, n: int, options: SampleOptions) -> Tensor:
    images = model.sample(
        n, method=options.method, temperature=options.temperature, generator=options.generator
    )
    return _to_unit(images, model.n_levels)


RECIPES["pixelrnn"] = Recipe(
    model=PixelRNN,
    config=_pixelrnn_config,
    loss=autoregressive_loss,
    evaluate=_autoregressive_evaluate,
    sample=_pixelrnn_sample,
    description="PixelRNN, Row LSTM or Diagonal BiLSTM (samplers: cached for kind=row, naive)",
)


def _vae_data(model: VAE, x: Tensor) -> Tensor:
    return model.likelihood.from_levels(x, model.config["n_levels"])


def _vae_config(data: ImageData, options: dict[str, Any]) -> dict[str, Any]:
    defaults = {"latent_dim": 16, "likelihood": "categorical", "architecture": "mlp"}
    fixed = {"data_shape": list(data.images.shape[1:]), "n_levels": data.n_levels}
    return {**defaults, **options, **fixed}


def _vae_evaluate(model: VAE, data: ImageData, k: int = 100) -> dict[str, float]:
    x = _vae_data(model, data.images.to(next(model.parameters()).device))
    with torch.no_grad():
        negative_elbo = -model.elbo(x).elbo.mean().item()
        nll = -model.log_likelihood(x, k, chunk_size=25).mean().item()
    dims = math.prod(model.data_shape) * math.log(2.0)
    return {
        "negative_elbo_nats": negative_elbo,
        f"iwae{k}_nll_nats": nll,
        f"iwae{k}_bits_per_dim": nll / dims,
    }


def _vae_sample(model: VAE, n: int, options: SampleOptions) -> Tensor:
    images = model.sample(n, generator=options.generator).float()
    if model.config["likelihood"] == "categorical":
        images = _to_unit(images, model.config["n_levels"])
    return images


RECIPES["vae"] = Recipe(
    model=VAE,
    config=_vae_config,
    loss=lambda model, x, y: model.loss(_vae_data(model, x)),
    evaluate=_vae_evaluate,
    sample=_vae_sample,
    description="variational autoencoder (MLP or conv; Bernoulli, categorical or Gaussian p(x|z))",
)


def _gan_config(defaults: dict[str, Any]):
    """The config of a DCGAN on the data's square images: ``image_size`` and ``channels`` are
    fixed by the data."""

    def config(data: ImageData, options: dict[str, Any]) -> dict[str, Any]:
        channels, height, width = data.images.shape[1:]
        if height != width:
            raise ValueError(f"DCGAN needs square images, got {height}x{width}")
        return {**defaults, **options, "image_size": height, "channels": channels}

    return config


def _gan_fit(name: str, loss: str | GANLoss, d_steps: int) -> FitFn:
    """Adversarial training with ``loss`` (GANTrainer, ``d_steps`` critic steps per generator
    step), then one checkpoint of model family ``name``. No mid-run resume: the trainer's two
    optimizers and EMA are not checkpointed."""

    def fit(
        model: DCGAN, data: ImageData, config: TrainConfig, out: Path, model_config: dict[str, Any]
    ) -> list[dict]:
        trainer = GANTrainer(
            model.generator,
            model.discriminator,
            loss,
            d_steps=d_steps,
            g_lr=config.lr,
            d_lr=config.lr,
            seed=config.seed,
        )
        real = _to_unit(data.images, data.n_levels) * 2 - 1  # G's Tanh range
        history = trainer.fit(real, config.steps, config.batch_size)
        save_checkpoint(
            out / "checkpoints", model, model_name=name, config=model_config, step=config.steps
        )
        return [{"step": h["step"], "loss": h["g_loss"], "d_loss": h["d_loss"]} for h in history]

    return fit


def _dcgan_evaluate(model: DCGAN, data: ImageData) -> dict[str, float]:
    """Unbiased MMD^2 (Gaussian kernel, median bandwidth) between samples and the data."""
    real = _to_unit(data.images, data.n_levels).flatten(1)
    fake = _dcgan_sample(model, len(real), SampleOptions()).flatten(1)
    return {"mmd2_to_data": mmd2(fake, real).item()}


def _dcgan_sample(model: DCGAN, n: int, options: SampleOptions) -> Tensor:
    model.eval()
    return (model.sample(n, generator=options.generator).float().cpu() + 1) / 2


def _gan_recipe(
    name: str,
    loss: str | GANLoss,
    defaults: dict[str, Any],
    description: str,
    d_steps: int = 1,
) -> Recipe:
    """A DCGAN (``defaults``: its constructor options) trained adversarially with ``loss``;
    evaluated by the MMD^2 of its samples to the data."""
    return Recipe(
        model=DCGAN,
        config=_gan_config(defaults),
        fit=_gan_fit(name, loss, d_steps),
        evaluate=_dcgan_evaluate,
        sample=_dcgan_sample,
        description=description,
    )


_DCGAN_DEFAULTS = {"latent_dim": 32, "width": 32}
RECIPES["dcgan"] = _gan_recipe(
    "dcgan",
    "non_saturating",
    _DCGAN_DEFAULTS,
    "DCGAN (non-saturating loss; other losses through pygen.train.GANTrainer)",
)
# Li et al. 2017: the critic's features are an autoencoder's code (k = 16 here), 5 critic steps
# per generator step. Clipping at 0.1, not their 0.01: at 8x8 the encoder has one hidden layer and
# no batch norm, and 0.01-clipped weights give features far below the kernel bandwidths (1-16).
# Measured on digits (seed 0, lr 1e-3, batch 64): clip 0.01 collapsed (test MMD^2 0.36 after
# 1000 steps), clip 0.1 reached 0.007 after 300 and 0.002 after 1000 (dcgan: 0.05 after 1000).
RECIPES["mmdgan"] = _gan_recipe(
    "mmdgan",
    MMDGANLoss.li2017(clip_value=0.1),
    {**_DCGAN_DEFAULTS, "d_features": 16, "d_autoencoder": True},
    "MMD GAN (Li et al. 2017: autoencoder critic, Gaussian kernels, clipping, one-sided penalty)",
    d_steps=5,
)
# Genevay et al. 2018: the critic's features define the learned cost of the Sinkhorn divergence.
RECIPES["sinkhorngan"] = _gan_recipe(
    "sinkhorngan",
    SinkhornLoss(),
    {**_DCGAN_DEFAULTS, "d_features": 16},
    "Sinkhorn GAN (Genevay et al. 2018: Sinkhorn divergence of clipped critic features)",
)


def _flow_loss(model: FlowModel, x: Tensor, y: Tensor | None) -> Tensor:
    """Mean bits/dim of uniformly dequantized levels."""
    return model.bits_per_dim(x).mean()


def _flow_evaluate(model: FlowModel, data: ImageData) -> dict[str, float]:
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)  # fixed dequantization noise: repeatable numbers
    bits = torch.cat(
        [model.bits_per_dim(x.to(device), generator=gen) for x in data.images.split(256)]
    )
    return {"bits_per_dim": bits.mean().item()}


def _flow_sample(shape: Callable[[FlowModel], tuple[int, ...]]):
    def sample(model: FlowModel, n: int, options: SampleOptions) -> Tensor:
        images = model.sample(n, options.temperature, generator=options.generator)
        return images.reshape(n, *shape(model)).float().cpu()

    return sample


def _realnvp_config(data: ImageData, options: dict[str, Any]) -> dict[str, Any]:
    defaults = {"n_scales": 2, "hidden": 32, "n_blocks": 2}
    return {**defaults, **options, "shape": list(data.images.shape[1:]), "levels": data.n_levels}


def _flattened_config(defaults: dict[str, Any]):
    """The config of a vector flow on flattened images: ``dim``, ``levels`` and the image shape
    are fixed by the data."""

    def config(data: ImageData, options: dict[str, Any]) -> dict[str, Any]:
        return {
            **defaults,
            **options,
            "dim": math.prod(data.images.shape[1:]),
            "levels": data.n_levels,
            "image_shape": list(data.images.shape[1:]),
        }

    return config


class _FlattenedImages:
    """Mixin for vector flows on flattened images: remembers the image shape for sampling."""

    def __init__(self, image_shape: list[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.image_shape = tuple(image_shape)


class _ImageNICE(_FlattenedImages, NICE):
    """NICE on flattened images."""


class _ImageMAF(_FlattenedImages, MAF):
    """MAF on flattened images."""


class _ImageIAF(_FlattenedImages, IAF):
    """IAF on flattened images."""


RECIPES["realnvp"] = Recipe(
    model=RealNVP,
    config=_realnvp_config,
    loss=_flow_loss,
    evaluate=_flow_evaluate,
    sample=_flow_sample(lambda model: model.shape),
    description="RealNVP, multi-scale (fused affine coupling)",
)


def _flattened_recipe(model: type[FlowModel], defaults: dict[str, Any], description: str) -> Recipe:
    """A vector flow trained on flattened images (dequantized levels, bits/dim)."""
    return Recipe(
        model=model,
        config=_flattened_config(defaults),
        loss=_flow_loss,
        evaluate=_flow_evaluate,
        sample=_flow_sample(lambda m: m.image_shape),
        description=description,
    )


RECIPES["nice"] = _flattened_recipe(
    _ImageNICE,
    {"n_couplings": 4, "hidden": 256, "n_blocks": 2},
    "NICE on flattened images (additive coupling)",
)
RECIPES["maf"] = _flattened_recipe(
    _ImageMAF,
    {"n_layers": 4, "hidden": 256, "n_hidden": 1},
    "MAF on flattened images (MADE + fused elementwise affine; sampling D passes)",
)
RECIPES["iaf"] = _flattened_recipe(
    _ImageIAF,
    {"n_layers": 4, "hidden": 256, "n_hidden": 1},
    "IAF on flattened images (sampling one pass; density D passes, slow to train)",
)
