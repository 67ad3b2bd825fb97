"""One DCGAN training step (one discriminator step, one generator step) on 8x8 digit-sized
images, per GAN loss: what each objective (and WGAN-GP's double backward) costs.

Providers are the loss names; a training step is compute-bound, so no byte floor (gbps None).
"""

from __future__ import annotations

import functools

import torch

from benchmarks.common import device_under_test, measure_side_by_side, row
from pygen.losses import GAN_LOSSES
from pygen.models import DCGAN
from pygen.train import GANTrainer

OP = "gan"
DEVICE = device_under_test()
BATCH = 256 if DEVICE.type == "cuda" else 64
SHAPE = (BATCH, 1, 8, 8)


def test_gan(record, quick):
    """Every loss's training step, side by side."""
    real = (torch.rand(SHAPE, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(DEVICE)
    steps = {}
    for provider in GAN_LOSSES:
        torch.manual_seed(0)
        gan = DCGAN(image_size=8, channels=1, latent_dim=100).to(DEVICE)
        trainer = GANTrainer(gan.generator, gan.discriminator, provider)
        steps[provider] = functools.partial(trainer.step, real)
    for provider, timing in measure_side_by_side(steps, DEVICE, quick).items():
        record(row(OP, provider, "train_step", SHAPE, torch.float32, DEVICE, timing, 0))
