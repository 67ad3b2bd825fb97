"""How the pygen command trains, evaluates and samples each model family: one Recipe per name.

A recipe turns the data and the user's options into the model's full constructor config (stored
in every checkpoint, so a checkpoint rebuilds its model with no other input), and knows the
model's training loss, its evaluation metrics and how it samples.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pygen.data import (
    SYNTHETIC_DOMAINS,
    ImageData,
    load_dataset,
    load_translation_data,
    to_tanh_range,
)
from pygen.layers import ContinuousFlow
from pygen.losses import GANLoss, MMDGANLoss, SinkhornLoss
from pygen.metrics import mmd2, precision_recall_density_coverage
from pygen.models import (
    CNF,
    DCGAN,
    IAF,
    MAF,
    NICE,
    VAE,
    AutoregressiveImageModel,
    BiGAN,
    BiGANTrainer,
    CycleGAN,
    CycleGANTrainer,
    FlowModel,
    Pix2Pix,
    Pix2PixTrainer,
    PixelCNN,
    PixelRNN,
    RealNVP,
)
from pygen.train import GANTrainer, TrainConfig, TrainingSteps, draw_indices, set_lr
from pygen.train.loop import world


@dataclass(frozen=True)
class SampleOptions:
    """What ``pygen sample`` passes to a recipe."""

    method: str | None = None
    temperature: float = 1.0
    label: int | None = None
    generator: torch.Generator | None = None
    # Translation models: the domain-A images to translate. Completions: the images (levels)
    # whose top complete_rows rows are kept, the rest drawn; labels: their classes.
    inputs: Tensor | None = None
    complete_rows: int | None = None
    labels: Tensor | None = None


@dataclass(frozen=True)
class Domains:
    """The two image domains of a translation model, floats in [-1, 1] ``(N, C, H, W)``;
    ``paired``: image ``a[i]`` translates to ``b[i]`` (a known answer to evaluate against)."""

    a: Tensor
    b: Tensor
    paired: bool


Data = ImageData | Domains
ModelT = TypeVar("ModelT", bound=nn.Module)
FlowT = TypeVar("FlowT", bound=FlowModel)
DataT = TypeVar("DataT", ImageData, Domains)
DEFAULT_DOMAIN_B = "invert"  # the translation task when no second domain is given


@dataclass(frozen=True)
class Recipe(Generic[ModelT, DataT]):
    """One model family as the pygen command sees it.

    ``config(data, options)`` returns the model's constructor arguments; ``loss(model, x, y)`` is
    the mean training loss of a batch of levels (the shared loop's ``pygen.train.LossSteps``);
    ``steps(model, data, config)``, when given, is the training step instead (adversarial models:
    their trainer's ``TrainingSteps``, metrics ``loss`` (the generator's) and ``d_loss``);
    ``evaluate(model, data)``
    returns metrics on a dataset; ``sample(model, n, options)`` returns images in [0, 1]
    ``(n, C, H, W)``, ``n >= 1``; ``conditional(model)``: whether the model samples the class
    ``options.label``; ``completes``: whether the model completes images (``options.inputs``
    with ``options.complete_rows``); ``tempered``: whether it samples at
    ``options.temperature``; ``methods``: the samplers ``options.method`` may name (the first
    is the default). ``translation`` (``"paired"`` or ``"unpaired"``) marks a
    model of two domains: its data is ``Domains`` instead of ``ImageData``. ``kwargs_to``: where
    the model's constructor passes its ``**kwargs`` (CNF: its ``ContinuousFlow`` layer), for
    ``option_names``. The type parameters: the model class the callables take and the data
    (``ImageData`` or ``Domains``); ``RECIPES`` holds recipes of every kind.
    """

    model: type[ModelT]
    config: Callable[[DataT, dict[str, Any]], dict[str, Any]]
    evaluate: Callable[[ModelT, DataT], dict[str, float]]
    sample: Callable[[ModelT, int, SampleOptions], Tensor]
    loss: Callable[[ModelT, Tensor, Tensor | None], Tensor] | None = None
    steps: Callable[[ModelT, DataT, TrainConfig], TrainingSteps] | None = None
    description: str = ""
    translation: str | None = None
    kwargs_to: Callable[..., Any] | None = None
    conditional: Callable[[ModelT], bool] = lambda model: False
    completes: bool = False
    tempered: bool = False
    methods: tuple[str, ...] = ()

    def _constructors(self) -> list[Callable[..., Any]]:
        """What takes the model's options: the model class's ``__init__``, those of the mixins
        before it that pass ``**kwargs`` on (``_FlattenedImages``) and ``kwargs_to``'s."""
        inits = []
        for cls in self.model.__mro__:
            if "__init__" not in vars(cls):
                continue
            inits.append(vars(cls)["__init__"])
            if issubclass(cls, nn.Module):  # the model class proper, after the mixins
                break
        if _keywords(inits[-1])[1]:
            if self.kwargs_to is None:
                raise TypeError(f"{cls.__name__} takes **kwargs: the recipe must name kwargs_to")
            target = self.kwargs_to
            inits.append(
                inspect.getattr_static(target, "__init__") if isinstance(target, type) else target
            )
        return inits

    def option_names(self) -> set[str]:
        """The keyword arguments the model's constructor takes (what ``--set`` and a config
        file's ``model`` section may name)."""
        return set().union(*(_keywords(fn)[0] for fn in self._constructors()))

    def option_types(self) -> dict[str, Any]:
        """Each option's annotation (``typing.get_type_hints``), for checking given values."""
        hints: dict[str, Any] = {}
        for fn in self._constructors():
            hints |= {k: v for k, v in typing.get_type_hints(fn).items() if k != "return"}
        return hints

    def load_data(self, spec: str, spec_b: str | None, split: str, seed: int) -> Data:
        """The ``split`` of dataset ``spec`` (``load_dataset``); for a translation model, domain A
        from ``spec`` and B from ``spec_b`` (default ``DEFAULT_DOMAIN_B``; a name in
        ``SYNTHETIC_DOMAINS`` makes B a known transform of A)."""
        if self.translation is None:
            if spec_b is not None:
                raise ValueError("a second domain (--data-b) is for translation models only")
            return load_dataset(spec, split, seed=seed)
        spec_b = spec_b or DEFAULT_DOMAIN_B
        paired = self.translation == "paired"
        a, b = load_translation_data(spec, spec_b, paired, split=split, seed=seed)
        return Domains(a, b, paired or spec_b in SYNTHETIC_DOMAINS)


def _keywords(fn: Callable[..., Any]) -> tuple[set[str], bool]:
    """The names ``fn`` takes by keyword (``self`` aside) and whether it takes ``**kwargs``."""
    params = inspect.signature(fn).parameters.values()
    by_keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = {p.name for p in params if p.kind in by_keyword} - {"self"}
    return names, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


RECIPES: dict[str, Recipe[Any, Any]] = {}


def get_recipe(name: str) -> Recipe[Any, Any]:
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


def _autoregressive_config(
    defaults: dict[str, Any],
) -> Callable[[ImageData, dict[str, Any]], dict[str, Any]]:
    """The config of an autoregressive image model; its default ``hidden`` rounded up to a
    multiple of the data's channels (the channel masks split the hidden units by channel)."""

    def config(data: ImageData, options: dict[str, Any]) -> dict[str, Any]:
        fixed = _image_config(data)
        channels = fixed["in_channels"]
        hidden = -(-defaults["hidden"] // channels) * channels
        return {**defaults, "hidden": hidden, **options, **fixed}

    return config


@contextmanager
def _repeatable(model: nn.Module) -> Iterator[None]:
    """Torch's global random stream seeded with 0 inside, and restored after: evaluations that
    draw (dequantization noise, IWAE samples, a GAN's z) give repeatable numbers, and a training
    run's stream is left alone."""
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        yield


def _autoregressive_evaluate(
    model: AutoregressiveImageModel, data: ImageData, chunk: int = 256
) -> dict[str, float]:
    device = next(model.parameters()).device
    labels = None if model.n_classes is None else data.labels  # unlabelled: the model's error
    bits = []
    for start in range(0, len(data.images), chunk):
        x = data.images[start : start + chunk].to(device)
        y = None if labels is None else labels[start : start + chunk].to(device)
        bits.append(model.bits_per_dim(x, y))
    return {"bits_per_dim": torch.cat(bits).mean().item()}


def _autoregressive_sample(model: PixelCNN | PixelRNN, n: int, options: SampleOptions) -> Tensor:
    """``n`` images; or, with ``options.complete_rows``, ``3n``: for each of ``n`` random inputs
    its kept top rows (the rest black), its completion and the input itself."""
    device = next(model.parameters()).device
    sample = partial(
        model.sample,
        n,
        method=options.method or AUTOREGRESSIVE_METHODS[0],
        temperature=options.temperature,
        generator=options.generator,
    )
    label = 0 if options.label is None else options.label
    labels = torch.full((n,), label, dtype=torch.long, device=device)
    if options.complete_rows is None:
        images = sample(y=labels) if model.n_classes is not None else sample()
        return _to_unit(images, model.n_levels)
    if options.inputs is None or n > len(options.inputs):
        raise ValueError(f"completing {n} images needs as many inputs")
    rows = options.complete_rows
    if not 0 <= rows < model.image_size[0]:
        raise ValueError(f"complete_rows must be in [0, {model.image_size[0]}), got {rows}")
    order = torch.randperm(len(options.inputs), generator=options.generator, device=device)
    pick = order[:n].cpu()
    originals = options.inputs[pick].to(device)
    given = originals.clone()
    given[:, :, rows:] = -1
    if model.n_classes is None:
        completions = sample(given=given)
    else:  # each input's own class unless a label is asked for
        if options.label is None and options.labels is not None:
            labels = options.labels[pick].to(device)
        completions = sample(y=labels, given=given)
    kept = given.clamp(min=0)
    triplets = torch.stack([kept, completions, originals], dim=1).flatten(0, 1)
    return _to_unit(triplets, model.n_levels)


AUTOREGRESSIVE_METHODS = ("fused", "cached", "naive")  # fused: the C++ or CUDA kernels
RECIPES["pixelcnn"] = Recipe(
    model=PixelCNN,
    config=_autoregressive_config(
        {"n_layers": 5, "hidden": 32, "kernel_size": 5, "n_classes": None}
    ),
    loss=autoregressive_loss,
    evaluate=_autoregressive_evaluate,
    sample=_autoregressive_sample,
    description="Gated PixelCNN (samplers: fused C++/CUDA, cached, naive)",
    conditional=lambda model: model.n_classes is not None,
    completes=True,
    tempered=True,
    methods=AUTOREGRESSIVE_METHODS,
)


RECIPES["pixelrnn"] = Recipe(
    model=PixelRNN,
    config=_autoregressive_config({"n_layers": 2, "hidden": 16, "kind": "row", "kernel_size": 5}),
    loss=autoregressive_loss,
    evaluate=_autoregressive_evaluate,
    sample=_autoregressive_sample,
    description="PixelRNN, Row LSTM or Diagonal BiLSTM (samplers: fused C++/CUDA, cached, naive)",
    completes=True,
    tempered=True,
    methods=AUTOREGRESSIVE_METHODS,
)


def _built_config(model: VAE) -> dict[str, Any]:
    """``model.config``: the recipe's VAEs are built from one (a VAE of custom modules has none)."""
    if model.config is None:
        raise ValueError("the vae recipe takes a VAE built from a config, not of custom modules")
    return model.config


def _vae_data(model: VAE, x: Tensor) -> Tensor:
    return model.likelihood.from_levels(x, _built_config(model)["n_levels"])


def _vae_config(data: ImageData, options: dict[str, Any]) -> dict[str, Any]:
    defaults = {"latent_dim": 16, "likelihood": "categorical", "architecture": "mlp"}
    fixed = {"data_shape": list(data.images.shape[1:]), "n_levels": data.n_levels}
    return {**defaults, **options, **fixed}


def _vae_evaluate(model: VAE, data: ImageData, k: int = 100) -> dict[str, float]:
    x = _vae_data(model, data.images.to(next(model.parameters()).device))
    with torch.no_grad(), _repeatable(model):
        negative_elbo = -model.elbo(x).elbo.mean().item()
        nll = -model.log_likelihood(x, k, chunk_size=25).mean().item()
    result = {"negative_elbo_nats": negative_elbo, f"iwae{k}_nll_nats": nll}
    # Bits/dim of the data's levels, comparable with the other models', needs a distribution over
    # the levels: the categorical likelihood. A Gaussian density of levels scaled to [0, 1] (it
    # can be negative) or a Bernoulli of binarized pixels scores other data.
    if _built_config(model)["likelihood"] == "categorical":
        result[f"iwae{k}_bits_per_dim"] = nll / (math.prod(model.data_shape) * math.log(2.0))
    return result


def _vae_sample(model: VAE, n: int, options: SampleOptions) -> Tensor:
    config = _built_config(model)
    images = model.sample(n, generator=options.generator).float()
    if config["likelihood"] == "categorical":
        images = _to_unit(images, config["n_levels"])
    return images


RECIPES["vae"] = Recipe(
    model=VAE,
    config=_vae_config,
    loss=lambda model, x, y: model.loss(_vae_data(model, x)),
    evaluate=_vae_evaluate,
    sample=_vae_sample,
    description="variational autoencoder (MLP or conv; Bernoulli, categorical or Gaussian p(x|z))",
)


def _square_size(images: Tensor, model: str) -> int:
    """The side of square images ``(N, C, S, S)``; other shapes are an error naming ``model``."""
    height, width = images.shape[2:]
    if height != width:
        raise ValueError(f"{model} needs square images, got {height}x{width}")
    return height


class _AdversarialSteps:
    """An adversarial trainer (``step(*batch)`` returns its losses; ``state_dict``) as the shared
    loop's ``TrainingSteps``: ``draw(gen)`` is the step's batch (``batches_per_step`` batches of
    the run's batch size: a GAN's critic steps), and the trainer's ``generator_loss`` is reported
    as ``loss``."""

    def __init__(
        self,
        trainer: Any,
        draw: Callable[[torch.Generator], tuple[Tensor, ...]],
        generator_loss: str,
        batches_per_step: int = 1,
    ) -> None:
        if world()[1] > 1:
            raise ValueError("adversarial models train in one process: run them without torchrun")
        self.trainer, self.draw, self.generator_loss = trainer, draw, generator_loss
        self.batches_per_step = batches_per_step

    def step(self, gen: torch.Generator) -> dict[str, float]:
        losses = self.trainer.step(*self.draw(gen))
        return {"loss": losses[self.generator_loss], "d_loss": losses["d_loss"]}

    def state_dict(self) -> dict[str, Any]:
        return self.trainer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trainer.load_state_dict(state)

    def set_lr(self, lr: float) -> None:
        # The recipes build every optimizer of a trainer with the one config.lr.
        for name in self.trainer.resumable:
            optimizer = getattr(self.trainer, name)
            if isinstance(optimizer, torch.optim.Optimizer):
                set_lr(optimizer, lr)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _sample_metrics(samples: Tensor, data: ImageData) -> dict[str, float]:
    """How samples in [0, 1] match the data, in pixel space: unbiased MMD^2 (Gaussian kernel,
    median bandwidth), and k-NN precision, recall, density and coverage (k = 5)."""
    real = _to_unit(data.images, data.n_levels).flatten(1)
    fake = samples.flatten(1)
    return {
        "mmd2_to_data": mmd2(fake, real).item(),
        **precision_recall_density_coverage(real, fake)._asdict(),
    }


def _dcgan_config(
    defaults: dict[str, Any],
) -> Callable[[ImageData, dict[str, Any]], dict[str, Any]]:
    """The config of a DCGAN on the data's square images: ``image_size`` and ``channels`` are
    fixed by the data."""

    def config(data: ImageData, options: dict[str, Any]) -> dict[str, Any]:
        size = _square_size(data.images, "DCGAN")
        classes = options.get("num_classes", 0)
        if classes and (data.labels is None or data.labels.max() >= classes):
            found = "no labels" if data.labels is None else f"labels up to {data.labels.max()}"
            raise ValueError(
                f"num_classes={classes} needs labels in [0, {classes}); data has {found}"
            )
        return {**defaults, **options, "image_size": size, "channels": data.images.shape[1]}

    return config


def _dcgan_steps(
    loss: str | GANLoss, d_steps: int
) -> Callable[[DCGAN, ImageData, TrainConfig], TrainingSteps]:
    """Adversarial training with ``loss`` (GANTrainer, ``d_steps`` critic batches per generator
    step)."""

    def steps(model: DCGAN, data: ImageData, config: TrainConfig) -> TrainingSteps:
        trainer = GANTrainer(
            model.generator,
            model.discriminator,
            loss,
            d_steps=d_steps,
            g_lr=config.lr,
            d_lr=config.lr,
            seed=config.seed,
        )
        real = to_tanh_range(data)
        labels = data.labels if model.generator.num_classes else None

        def draw(gen: torch.Generator) -> tuple[Tensor, ...]:
            idx = draw_indices(len(real), d_steps * config.batch_size, gen)
            if labels is None:
                return (real[idx].to(trainer.device),)
            return real[idx].to(trainer.device), labels[idx].to(trainer.device)

        return _AdversarialSteps(trainer, draw, "g_loss", batches_per_step=d_steps)

    return steps


def _dcgan_evaluate(model: DCGAN, data: ImageData) -> dict[str, float]:
    """Sample metrics against the data; a conditional model draws the data's classes."""
    labels = data.labels if model.generator.num_classes else None
    with _repeatable(model):
        samples = _dcgan_sample(model, len(data.images), SampleOptions(labels=labels))
    return _sample_metrics(samples, data)


def _dcgan_sample(model: DCGAN, n: int, options: SampleOptions) -> Tensor:
    """``n`` images; a conditional model's of class ``options.label``, else of
    ``options.labels``, else of the classes in turn."""
    model.eval()
    labels = None
    if classes := model.generator.num_classes:
        device = _device(model)
        if options.label is not None:
            if not 0 <= options.label < classes:
                raise ValueError(f"label must be in [0, {classes}), got {options.label}")
            labels = torch.full((n,), options.label, device=device)
        elif options.labels is not None:
            labels = options.labels[:n].to(device)
        else:
            labels = torch.arange(n, device=device) % classes
    return (model.sample(n, labels, generator=options.generator).float().cpu() + 1) / 2


def _dcgan_recipe(
    loss: str | GANLoss, defaults: dict[str, Any], description: str, d_steps: int = 1
) -> Recipe[DCGAN, ImageData]:
    """A DCGAN (``defaults``: its constructor options) trained adversarially with ``loss``;
    evaluated by the MMD^2 of its samples to the data."""
    return Recipe(
        model=DCGAN,
        config=_dcgan_config(defaults),
        steps=_dcgan_steps(loss, d_steps),
        evaluate=_dcgan_evaluate,
        sample=_dcgan_sample,
        description=description,
        conditional=lambda model: model.generator.num_classes > 0,
    )


_DCGAN_DEFAULTS = {"latent_dim": 32, "width": 32}
RECIPES["dcgan"] = _dcgan_recipe(
    "non_saturating",
    _DCGAN_DEFAULTS,
    "DCGAN (non-saturating loss; other losses through pygen.train.GANTrainer)",
)
# Li et al. 2017: the critic's features are an autoencoder's code (k = 16 here), 5 critic steps
# per generator step. Clipping at 0.1, not their 0.01: at 8x8 the encoder has one hidden layer and
# no batch norm, and 0.01-clipped weights give features far below the kernel bandwidths (1-16).
# Measured on digits (seed 0, lr 1e-3, batch 64): clip 0.01 collapsed (test MMD^2 0.36 after
# 1000 steps), clip 0.1 reached 0.007 after 300 and 0.002 after 1000 (dcgan: 0.05 after 1000).
RECIPES["mmdgan"] = _dcgan_recipe(
    MMDGANLoss.li2017(clip_value=0.1),
    {**_DCGAN_DEFAULTS, "d_features": 16, "d_autoencoder": True},
    "MMD GAN (Li et al. 2017: autoencoder critic, Gaussian kernels, clipping, one-sided penalty)",
    d_steps=5,
)
# Genevay et al. 2018: the critic's features define the learned cost of the Sinkhorn divergence.
RECIPES["sinkhorngan"] = _dcgan_recipe(
    SinkhornLoss(),
    {**_DCGAN_DEFAULTS, "d_features": 16},
    "Sinkhorn GAN (Genevay et al. 2018: Sinkhorn divergence of clipped critic features)",
)


def _flow_loss(model: FlowModel, x: Tensor, y: Tensor | None) -> Tensor:
    """Mean bits/dim of uniformly dequantized levels."""
    return model.bits_per_dim(x).mean()


def _flow_evaluate(model: FlowModel, data: ImageData) -> dict[str, float]:
    """Mean bits/dim. The dequantization noise and the model's own random draws (CNF's
    Hutchinson trace probes) come from a fixed seed: repeatable numbers."""
    device = next(model.parameters()).device
    with _repeatable(model):
        bits = torch.cat([model.bits_per_dim(x.to(device)) for x in data.images.split(256)])
    return {"bits_per_dim": bits.mean().item()}


def _flow_sample(
    shape: Callable[[FlowT], tuple[int, ...]],
) -> Callable[[FlowT, int, SampleOptions], Tensor]:
    def sample(model: FlowT, n: int, options: SampleOptions) -> Tensor:
        images = model.sample(n, options.temperature, generator=options.generator)
        return images.reshape(n, *shape(model)).float().cpu()

    return sample


def _realnvp_config(data: ImageData, options: dict[str, Any]) -> dict[str, Any]:
    defaults = {"n_scales": 2, "hidden": 32, "n_blocks": 2}
    return {**defaults, **options, "shape": list(data.images.shape[1:]), "levels": data.n_levels}


def _flattened_config(
    defaults: dict[str, Any],
) -> Callable[[ImageData, dict[str, Any]], dict[str, Any]]:
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


class _ImageCNF(_FlattenedImages, CNF):
    """CNF on flattened images."""


class _ImageBiGAN(_FlattenedImages, BiGAN):
    """BiGAN on flattened images."""


RECIPES["realnvp"] = Recipe(
    model=RealNVP,
    config=_realnvp_config,
    loss=_flow_loss,
    evaluate=_flow_evaluate,
    sample=_flow_sample(lambda model: model.shape),
    description="RealNVP, multi-scale (fused affine coupling)",
    tempered=True,
)


# The vector flows on flattened images, which keep their image shape.
FlattenedFlow = TypeVar("FlattenedFlow", _ImageNICE, _ImageMAF, _ImageIAF, _ImageCNF)


def _flattened_recipe(
    model: type[FlattenedFlow],
    defaults: dict[str, Any],
    description: str,
    kwargs_to: Callable[..., Any] | None = None,
) -> Recipe[FlattenedFlow, ImageData]:
    """A vector flow trained on flattened images (dequantized levels, bits/dim)."""
    return Recipe(
        model=model,
        config=_flattened_config(defaults),
        loss=_flow_loss,
        evaluate=_flow_evaluate,
        sample=_flow_sample(lambda m: m.image_shape),
        description=description,
        kwargs_to=kwargs_to,
        tempered=True,
    )


RECIPES["nice"] = _flattened_recipe(
    _ImageNICE,
    {"n_couplings": 4, "hidden": 256, "n_blocks": 2},
    "NICE on flattened images (additive coupling)",
)
RECIPES["maf"] = _flattened_recipe(
    _ImageMAF,
    {"n_layers": 4, "hidden": 256, "n_hidden": 1},
    "MAF on flattened images (MADE + fused elementwise affine; sampling D cached steps)",
)
RECIPES["iaf"] = _flattened_recipe(
    _ImageIAF,
    {"n_layers": 4, "hidden": 256, "n_hidden": 1},
    "IAF on flattened images (sampling one pass; density D cached steps, slow to train)",
)
RECIPES["cnf"] = _flattened_recipe(
    _ImageCNF,
    {"hidden": 128, "n_hidden": 2, "trace": "hutchinson", "rtol": 1e-4, "atol": 1e-4},
    "FFJORD-style continuous flow on flattened images (dopri5, Hutchinson trace)",
    kwargs_to=ContinuousFlow,
)


def _bigan_config(data: ImageData, options: dict[str, Any]) -> dict[str, Any]:
    defaults = {"latent_dim": 16, "hidden": 256, "depth": 3}
    shape = list(data.images.shape[1:])
    return {**defaults, **options, "data_dim": math.prod(shape), "image_shape": shape}


def _bigan_steps(model: _ImageBiGAN, data: ImageData, config: TrainConfig) -> TrainingSteps:
    real, device = to_tanh_range(data).flatten(1), _device(model)

    def draw(gen: torch.Generator) -> tuple[Tensor]:
        return (real[draw_indices(len(real), config.batch_size, gen)].to(device),)

    return _AdversarialSteps(BiGANTrainer(model, config.lr), draw, "ge_loss")


def _from_tanh(images: Tensor) -> Tensor:
    """Generator outputs in [-1, 1] to pixels in [0, 1] (clamped), on the CPU."""
    return ((images.float().cpu() + 1) / 2).clamp(0, 1)


def _bigan_sample(model: _ImageBiGAN, n: int, options: SampleOptions) -> Tensor:
    return _from_tanh(model.sample(n, generator=options.generator)).reshape(n, *model.image_shape)


def _bigan_evaluate(model: _ImageBiGAN, data: ImageData) -> dict[str, float]:
    """Sample metrics against the data (``_sample_metrics``), and the mean squared pixel error
    (in [0, 1]) of the reconstructions G(E(x)) next to that of G(z) for random z: the first is
    the smaller as far as the encoder inverts the generator."""
    x = to_tanh_range(data).flatten(1).to(next(model.parameters()).device)
    samples = model.sample(len(x), generator=torch.Generator().manual_seed(0))
    target = _from_tanh(x)
    return {
        **_sample_metrics(_from_tanh(samples), data),
        "reconstruction_mse": (_from_tanh(model.reconstruct(x)) - target).square().mean().item(),
        "random_z_mse": (_from_tanh(samples) - target).square().mean().item(),
    }


RECIPES["bigan"] = Recipe(
    model=_ImageBiGAN,
    config=_bigan_config,
    steps=_bigan_steps,
    evaluate=_bigan_evaluate,
    sample=_bigan_sample,
    description="BiGAN on flattened images (MLP generator, encoder and joint discriminator)",
)


def _translation_steps(
    model: CycleGAN | Pix2Pix, data: Domains, config: TrainConfig
) -> TrainingSteps:
    """CycleGAN on independent batches of the two domains, pix2pix on batches of pairs."""
    n, paired, device = config.batch_size, isinstance(model, Pix2Pix), _device(model)

    def draw(gen: torch.Generator) -> tuple[Tensor, Tensor]:
        idx_a = draw_indices(len(data.a), n, gen)
        idx_b = idx_a if paired else draw_indices(len(data.b), n, gen)
        return data.a[idx_a].to(device), data.b[idx_b].to(device)

    trainer = (
        Pix2PixTrainer(model, config.lr)
        if isinstance(model, Pix2Pix)
        else CycleGANTrainer(model, config.lr)
    )
    return _AdversarialSteps(trainer, draw, "g_loss")


Translator = TypeVar("Translator", CycleGAN, Pix2Pix)


def _translation_recipe(
    model: type[Translator],
    config: Callable[[Domains, dict[str, Any]], dict[str, Any]],
    translate: Callable[[Translator, Tensor], Tensor],
    translation: str,
    description: str,
) -> Recipe[Translator, Domains]:
    """A translation model A -> B (``translate(model, a)``): evaluated against B, sampled as
    pairs of inputs and their translations."""

    def translate_all(model: Translator, a: Tensor) -> Tensor:
        device = next(model.parameters()).device
        return torch.cat([translate(model, chunk.to(device)).cpu() for chunk in a.split(256)])

    def evaluate(model: Translator, data: Domains) -> dict[str, float]:
        """MMD^2 between the translations of A and B; when the pairs are known, the mean
        absolute error (in [-1, 1] units) of the translations and of the identity map."""
        fake_b = translate_all(model, data.a)
        result = {"mmd2_to_b": mmd2(fake_b.flatten(1), data.b.flatten(1)).item()}
        if data.paired:
            result["translation_l1"] = (fake_b - data.b).abs().mean().item()
            result["identity_l1"] = (data.a - data.b).abs().mean().item()
        return result

    def sample(model: Translator, n: int, options: SampleOptions) -> Tensor:
        """``2n`` images: ``n`` random inputs (``options.inputs``), each followed by its
        translation (a grey one repeated to the other's channels)."""
        if options.inputs is None:
            raise ValueError("a translation model samples translations of options.inputs")
        if n > len(options.inputs):
            raise ValueError(f"asked for {n} translations of {len(options.inputs)} inputs")
        device = options.generator.device if options.generator is not None else "cpu"
        order = torch.randperm(len(options.inputs), generator=options.generator, device=device)
        a = options.inputs[order[:n].cpu()]
        b = translate_all(model, a)
        channels = max(a.shape[1], b.shape[1])
        pairs = [a.expand(-1, channels, -1, -1), b.expand(-1, channels, -1, -1)]
        return _from_tanh(torch.stack(pairs, dim=1).flatten(0, 1))

    return Recipe(
        model=model,
        config=config,
        steps=_translation_steps,
        evaluate=evaluate,
        sample=sample,
        description=description,
        translation=translation,
    )


def _cyclegan_config(data: Domains, options: dict[str, Any]) -> dict[str, Any]:
    if data.a.shape[1] != data.b.shape[1]:
        raise ValueError(
            f"CycleGAN needs domains of one channel count, got {data.a.shape[1]} and "
            f"{data.b.shape[1]}"
        )
    # No identity term by default: the built-in tasks (invert, mirror) change B's images.
    defaults = {"width": 8, "n_blocks": 2, "n_down": 1, "d_width": 16, "identity_weight": 0.0}
    size = _square_size(data.a, "CycleGAN")
    return {**defaults, **options, "channels": data.a.shape[1], "image_size": size}


def _pix2pix_config(data: Domains, options: dict[str, Any]) -> dict[str, Any]:
    defaults = {"width": 8, "d_width": 16, "l1_weight": 100.0}
    fixed = {
        "in_channels": data.a.shape[1],
        "out_channels": data.b.shape[1],
        "image_size": _square_size(data.a, "pix2pix"),
    }
    return {**defaults, **options, **fixed}


RECIPES["cyclegan"] = _translation_recipe(
    CycleGAN,
    _cyclegan_config,
    lambda model, a: model.translate_ab(a),
    "unpaired",
    "CycleGAN, unpaired translation A -> B (ResNet generators, PatchGAN, image pools)",
)
RECIPES["pix2pix"] = _translation_recipe(
    Pix2Pix,
    _pix2pix_config,
    lambda model, a: model.translate(a),
    "paired",
    "pix2pix, paired translation A -> B (U-Net generator, PatchGAN on pairs)",
)
