"""One training step of the IPM GANs (MMD GAN, Sinkhorn GAN) on the 2-D ring, BiGAN on the ring,
and CycleGAN / pix2pix on 8x8 digit-sized images: what each objective costs.

Providers are the models; a training step is compute-bound, so no byte floor (gbps None). BiGAN,
CycleGAN and pix2pix time a one-step ``fit`` (which also builds their Adam optimizers).
"""

from __future__ import annotations

import torch

from benchmarks.common import device_under_test, measure_side_by_side, row
from pygen.losses import MMDGANLoss, SinkhornLoss
from pygen.models import BiGAN, CycleGAN, MLPDiscriminator, MLPGenerator, Pix2Pix
from pygen.train import GANTrainer

OP = "ipm_gans"
DEVICE = device_under_test()
RING_BATCH = 256
IMAGE_BATCH = 64 if DEVICE.type == "cuda" else 16
IMAGE_SHAPE = (IMAGE_BATCH, 1, 8, 8)


def ring_step(loss):
    generator = MLPGenerator(latent_dim=8).to(DEVICE)
    critic = MLPDiscriminator(hidden=64, depth=2, features=16).to(DEVICE)
    trainer = GANTrainer(generator, critic, loss)
    real = torch.randn(RING_BATCH, 2, device=DEVICE)
    return lambda: trainer.step(real), (RING_BATCH, 2)


def make_step(provider: str):
    if provider == "mmd_gan":
        return ring_step(MMDGANLoss())
    if provider == "sinkhorn_gan":
        return ring_step(SinkhornLoss(epsilon=1e-3, scaling=0.8, clip_value=0.1))
    if provider == "bigan":
        bigan = BiGAN(latent_dim=2).to(DEVICE)
        data = torch.randn(RING_BATCH, 2, device=DEVICE)
        return lambda: bigan.fit(data, 1, batch_size=RING_BATCH), (RING_BATCH, 2)
    images = torch.rand(IMAGE_SHAPE, device=DEVICE) * 2 - 1
    if provider == "cyclegan":
        cyclegan = CycleGAN(channels=1, image_size=8, width=8, n_blocks=2, n_down=1, d_width=16)
        cyclegan.to(DEVICE)
        return lambda: cyclegan.fit(images, -images, 1, batch_size=IMAGE_BATCH), IMAGE_SHAPE
    pix2pix = Pix2Pix(1, 1, image_size=8, width=8, d_width=16).to(DEVICE)
    return lambda: pix2pix.fit(images, images.flip(-1), 1, batch_size=IMAGE_BATCH), IMAGE_SHAPE


def test_ipm_gans(record, quick):
    """Every model's training step, side by side."""
    steps, shapes = {}, {}
    for provider in ("mmd_gan", "sinkhorn_gan", "bigan", "cyclegan", "pix2pix"):
        torch.manual_seed(0)
        steps[provider], shapes[provider] = make_step(provider)
    for provider, timing in measure_side_by_side(steps, DEVICE, quick).items():
        record(row(OP, provider, "train_step", shapes[provider], torch.float32, DEVICE, timing, 0))
