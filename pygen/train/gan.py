"""Adversarial training: k discriminator steps per generator step, separate learning rates
(TTUR), optional spectral norm and R1 penalty, an exponential moving average of G for sampling,
fixed-z sample grids, and mixed precision on CUDA."""

from __future__ import annotations

import contextlib
import math
import warnings
from pathlib import Path
from typing import cast

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from pygen.losses.gan import GANLoss, r1_penalty
from pygen.losses.registry import get_gan_loss
from pygen.models.gan import AutoencoderCritic, spectral_norm_
from pygen.utils.grad import frozen
from pygen.utils.png import save_image_grid
from pygen.utils.state import Resumable


def _ema_update(decay: float):
    """AveragedModel's update for an EMA of weights and buffers: floating tensors move toward
    the model's, integer buffers (BatchNorm's ``num_batches_tracked``, which momentum=None
    averages by) are copied: an average of a count is not a count."""
    lerp = get_ema_multi_avg_fn(decay)

    def update(averaged: list[Tensor], current: list[Tensor], n_averaged: Tensor) -> None:
        # AveragedModel groups its tensors by dtype: a list is all floating or all integer.
        if averaged[0].is_floating_point():
            lerp(averaged, current, n_averaged)
        else:
            torch._foreach_copy_(averaged, current)

    return update


class GANTrainer(Resumable):
    """Trains ``generator`` against ``discriminator`` with one of ``pygen.losses``.

    ``state_dict()`` holds what a resumed run needs besides the two models' weights: the
    optimizers, loss scalers, EMA and step count.

    Args:
        generator: maps ``(z, labels)`` to samples; needs ``latent_dim`` and ``num_classes``
            attributes (as every ``pygen.models`` generator has).
        discriminator: maps ``(x, labels)`` to raw scores ``(N,)`` (or critic features
            ``(N, k)`` for the MMD and Sinkhorn losses); an ``AutoencoderCritic`` for a loss with
            an autoencoder term (``loss.ae_weight > 0``), and then ``loss.clip_value`` clips its
            encoder only.
        loss: a ``GANLoss`` or its registry name (``pygen.losses.GAN_LOSSES``).
        d_steps: discriminator steps per generator step (k >= 1; 5 is usual for WGAN).
        g_lr, d_lr: Adam learning rates; TTUR (Heusel et al. 2017) uses a larger ``d_lr``.
        betas: Adam betas (DCGAN's (0.5, 0.999); WGAN-GP uses (0.0, 0.9)).
        r1_gamma: weight of the R1 penalty on real data (0: off).
        spectral_norm: spectral-normalize every conv/linear layer of D (in place).
        ema_decay: keep an exponential moving average of G's weights and floating buffers with
            this decay (integer buffers are copied) and sample from it; None: sample from G.
        amp: autocast D and G (bfloat16 where supported, else float16 with loss scaling). None:
            on for CUDA; mixed precision needs CUDA.
        n_fixed: size of the fixed-z batch behind ``save_samples`` (its labels cycle classes).
        seed: seed of the fixed z.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss: str | GANLoss = "non_saturating",
        *,
        d_steps: int = 1,
        g_lr: float = 2e-4,
        d_lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        r1_gamma: float = 0.0,
        spectral_norm: bool = False,
        ema_decay: float | None = None,
        amp: bool | None = None,
        n_fixed: int = 64,
        seed: int = 0,
    ) -> None:
        self.loss = get_gan_loss(loss) if isinstance(loss, str) else loss
        if d_steps < 1:
            raise ValueError(
                f"d_steps (discriminator steps per generator step) must be >= 1, got {d_steps}"
            )
        if g_lr <= 0 or d_lr <= 0:
            raise ValueError(f"learning rates must be positive, got g_lr={g_lr}, d_lr={d_lr}")
        if r1_gamma < 0:
            raise ValueError(f"r1_gamma must be >= 0, got {r1_gamma}")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {ema_decay}")
        has_batch_norm = any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in discriminator.modules()
        )
        if has_batch_norm and (self.loss.penalizes_gradients or r1_gamma > 0):
            warnings.warn(
                "the discriminator has batch norm, which mixes samples: the gradient penalty "
                "then constrains batch gradients, not per-sample ones (use batch_norm=False)",
                stacklevel=2,
            )
        self.device = next(generator.parameters()).device
        if amp is None:
            amp = self.device.type == "cuda"
        if amp and self.device.type != "cuda":
            raise ValueError(
                f"mixed precision needs a CUDA device, the models are on {self.device}"
            )
        self.amp_dtype = None
        if amp:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        # Loss scaling only for float16, whose range underflows small gradients.
        scale = self.amp_dtype == torch.float16
        self._g_scaler = torch.amp.GradScaler("cuda", enabled=scale)
        self._d_scaler = torch.amp.GradScaler("cuda", enabled=scale)

        if self.loss.ae_weight > 0 and not isinstance(discriminator, AutoencoderCritic):
            raise ValueError(
                f"the {self.loss.name} loss has an autoencoder term (ae_weight="
                f"{self.loss.ae_weight}): the discriminator must be an AutoencoderCritic"
            )
        self.generator = generator
        self.discriminator = spectral_norm_(discriminator) if spectral_norm else discriminator
        # Clipping constrains the feature map only: an autoencoder critic's decoder is free.
        clipped = (
            discriminator.encoder
            if isinstance(discriminator, AutoencoderCritic)
            else self.discriminator
        )
        self._clipped = list(clipped.parameters())
        self.d_steps, self.r1_gamma = d_steps, r1_gamma
        self.g_opt = torch.optim.Adam(generator.parameters(), lr=g_lr, betas=betas)
        # A parameter-free D (an identity feature map under the MMD loss: a generative
        # moment-matching network) has nothing to train: its steps only report its loss.
        d_params = list(self.discriminator.parameters())
        self.d_opt = torch.optim.Adam(d_params, lr=d_lr, betas=betas) if d_params else None
        self.ema = None
        if ema_decay is not None:
            self.ema = AveragedModel(
                generator, multi_avg_fn=_ema_update(ema_decay), use_buffers=True
            )
        self.z_dtype = next(generator.parameters()).dtype  # a .double() G takes float64 z
        gen = torch.Generator().manual_seed(seed)
        fixed_z = torch.randn(n_fixed, cast(int, generator.latent_dim), generator=gen)
        self.fixed_z = fixed_z.to(self.device, self.z_dtype)
        classes = cast(int, generator.num_classes)
        self.fixed_labels = torch.arange(n_fixed, device=self.device) % classes if classes else None
        self.steps = 0
        self.history: list[dict[str, float]] = []

    resumable = ("g_opt", "d_opt", "_g_scaler", "_d_scaler", "ema")

    def state_dict(self) -> dict:
        return {**super().state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.steps = state["steps"]

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.amp_dtype)

    def _z(self, n: int) -> Tensor:
        latent_dim = cast(int, self.generator.latent_dim)
        return torch.randn(n, latent_dim, device=self.device, dtype=self.z_dtype)

    def discriminator_step(self, real: Tensor, labels: Tensor | None = None) -> float:
        """One update of D on a real batch and as many fresh generated samples (a parameter-free
        D: its loss only)."""
        with torch.no_grad(), self._autocast():
            fake = self.generator(self._z(len(real)), labels)
        with self._autocast():
            real_out = self.discriminator(real, labels)
            fake_out = self.discriminator(fake, labels)
        loss = self.loss.discriminator_loss(real_out.float(), fake_out.float())
        if self.d_opt is None:
            return loss.item()

        def critic(x: Tensor) -> Tensor:
            return self.discriminator(x, labels)

        # Penalties in full precision: they differentiate through D's input gradients.
        penalty = self.loss.penalty(critic, real, fake.float())
        if penalty is not None:
            loss = loss + penalty
        if self.r1_gamma > 0:
            loss = loss + r1_penalty(critic, real, self.r1_gamma)
        if self.loss.ae_weight > 0:
            # A loss with an autoencoder term takes an AutoencoderCritic only (see __init__).
            error = cast(AutoencoderCritic, self.discriminator).reconstruction_error
            errors = error(real, real_out.float(), labels) + error(fake, fake_out.float(), labels)
            loss = loss + self.loss.ae_weight * errors
        self.d_opt.zero_grad(set_to_none=True)
        self._d_scaler.scale(loss).backward()
        self._d_scaler.step(self.d_opt)
        self._d_scaler.update()
        if self.loss.clip_value is not None:
            with torch.no_grad():
                for p in self._clipped:
                    p.clamp_(-self.loss.clip_value, self.loss.clip_value)
        return loss.item()

    def generator_step(
        self, batch_size: int, labels: Tensor | None = None, real: Tensor | None = None
    ) -> float:
        """One update of G (D frozen); ``real`` is needed by losses that compare with real data
        (MMD). Updates the EMA of G."""
        with frozen(self.discriminator):
            with self._autocast():
                fake_out = self.discriminator(self.generator(self._z(batch_size), labels), labels)
                real_out = None
                if self.loss.generator_needs_real:
                    if real is None:
                        raise ValueError(f"the {self.loss.name} generator loss needs a real batch")
                    real_out = self.discriminator(real, labels).float()
            loss = self.loss.generator_loss(fake_out.float(), real_out)
            self.g_opt.zero_grad(set_to_none=True)
            self._g_scaler.scale(loss).backward()
            self._g_scaler.step(self.g_opt)
            self._g_scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.generator)
        return loss.item()

    def step(self, real: Tensor, labels: Tensor | None = None) -> dict[str, float]:
        """One training step: ``real`` (and ``labels``) hold ``d_steps`` batches back to back;
        D takes a step on each, then G one step on a batch of the same size."""
        if len(real) % self.d_steps:
            raise ValueError(f"{len(real)} real samples do not split into {self.d_steps} batches")
        batch = len(real) // self.d_steps
        reals = real.split(batch)
        label_batches = labels.split(batch) if labels is not None else [None] * self.d_steps
        d_losses = [
            self.discriminator_step(r, y) for r, y in zip(reals, label_batches, strict=True)
        ]
        d_loss = sum(d_losses) / len(d_losses)
        g_loss = self.generator_step(batch, label_batches[-1], reals[-1])
        self.steps += 1
        record = {"step": self.steps, "d_loss": d_loss, "g_loss": g_loss}
        self.history.append(record)
        return record

    def fit(
        self,
        data: Tensor,
        steps: int,
        batch_size: int = 64,
        labels: Tensor | None = None,
        sample_every: int = 0,
        sample_dir: str | Path | None = None,
    ) -> list[dict[str, float]]:
        """``steps`` training steps on batches drawn with replacement from ``data`` (scaled as
        G's output, e.g. [-1, 1] images); every ``sample_every`` steps, a fixed-z grid
        ``sample_dir/samples_<step>.png``. Returns the history of losses."""
        if sample_every and sample_dir is None:
            raise ValueError("sample_every needs a sample_dir")
        for _ in range(steps):
            idx = torch.randint(len(data), (self.d_steps * batch_size,))
            batch_labels = None if labels is None else labels[idx].to(self.device)
            self.step(data[idx].to(self.device), batch_labels)
            if sample_dir is not None and sample_every and self.steps % sample_every == 0:
                self.save_samples(Path(sample_dir) / f"samples_{self.steps:06d}.png")
        return self.history

    @property
    def sampler(self) -> nn.Module:
        """The generator used for sampling: the EMA copy when kept, else G."""
        return self.ema.module if self.ema is not None else self.generator

    @torch.no_grad()
    def generate(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Samples of the sampling generator (eval mode: batch norm uses running statistics)."""
        sampler = self.sampler
        was_training = sampler.training
        sampler.eval()
        try:
            return sampler(z.to(self.device), labels).float()
        finally:
            sampler.train(was_training)

    def sample(self, n: int, labels: Tensor | None = None) -> Tensor:
        """``n`` samples from fresh ``z ~ N(0, I)``."""
        return self.generate(self._z(n), labels)

    def save_samples(self, path: str | Path) -> Path:
        """PNG grid of the samples at the fixed z (images in [-1, 1]): progress across steps."""
        images = self.generate(self.fixed_z, self.fixed_labels)
        if images.dim() != 4:
            raise ValueError(f"sample grids need image samples (N, C, H, W), got {images.shape}")
        nrow = math.ceil(math.sqrt(len(images)))
        return save_image_grid((images + 1) / 2, path, nrow=nrow)
