"""pygen's public API as a user's type checker sees it: tests/test_typing.py runs mypy on this file
(with the package), and every ``assert_type`` pins a type. Nothing here runs: the uses are the
bodies of functions never called."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from typing_extensions import assert_type

import pygen
from pygen import layers, metrics, models, ops, sampling
from pygen.recipes import autoregressive_loss
from pygen.train import LossSteps, TrainConfig, train


def autoregressive(x: Tensor, y: Tensor, flag: bool) -> None:
    """PixelCNN and PixelRNN: the images, or with ``return_logits`` the images and logits."""
    pixelcnn = models.PixelCNN(in_channels=1, n_levels=4, n_classes=10, image_size=8)
    assert_type(pixelcnn.sample(4), Tensor)
    assert_type(pixelcnn.sample(4, y=y, method="cached", return_logits=False), Tensor)
    assert_type(pixelcnn.sample(4, return_logits=True), tuple[Tensor, Tensor])
    assert_type(pixelcnn.sample(4, return_logits=flag), Tensor | tuple[Tensor, Tensor])
    assert_type(sampling.sample(pixelcnn, 4), Tensor)
    assert_type(sampling.sample(pixelcnn, 4, y=y, return_logits=True), tuple[Tensor, Tensor])
    assert_type(sampling.sample(pixelcnn, 4, return_logits=flag), Tensor | tuple[Tensor, Tensor])
    assert_type(pixelcnn.log_prob(x, y), Tensor)
    assert_type(pixelcnn.bits_per_dim(x, y), Tensor)

    pixelrnn = models.PixelRNN(in_channels=1, n_levels=4, kind="diagonal", image_size=8)
    assert_type(pixelrnn.sample(4), Tensor)
    assert_type(pixelrnn.sample(4, method="naive", return_logits=True), tuple[Tensor, Tensor])
    assert_type(pixelrnn.sample(4, return_logits=flag), Tensor | tuple[Tensor, Tensor])
    assert_type(pixelrnn.log_prob(x), Tensor)


def samplers(pixelcnn: models.PixelCNN, pixelrnn: models.PixelRNN, noise: Tensor) -> None:
    """The PyTorch samplers and the fused ops: ``(images, logits)``, logits None unless asked."""
    weights = sampling.export_weights(pixelcnn, None, 4)
    assert_type(weights, list[Tensor])
    fused = ops.pixelcnn_sample(
        weights, batch=4, channels=1, height=8, width=8, n_levels=4, kernel_size=7
    )
    assert_type(fused, tuple[Tensor, None])
    fused_logits = ops.pixelcnn_sample(
        weights,
        batch=4,
        channels=1,
        height=8,
        width=8,
        n_levels=4,
        kernel_size=7,
        noise=noise,
        return_logits=True,
    )
    assert_type(fused_logits, tuple[Tensor, Tensor])
    rnn_weights = sampling.export_pixelrnn_weights(pixelrnn)
    assert_type(rnn_weights, list[Tensor])
    fused_rnn = ops.pixelrnn_sample(
        rnn_weights,
        kind="row",
        batch=4,
        channels=1,
        height=8,
        width=8,
        n_levels=4,
        kernel_size=7,
        return_logits=True,
    )
    assert_type(fused_rnn, tuple[Tensor, Tensor])
    cached = sampling.sample_cached(weights, noise, n_levels=4, kernel_size=7)
    assert_type(cached, tuple[Tensor, None])
    cached_logits = sampling.sample_cached(
        weights, noise, n_levels=4, kernel_size=7, return_logits=True
    )
    assert_type(cached_logits, tuple[Tensor, Tensor])
    assert_type(sampling.sample_naive(pixelcnn, noise), tuple[Tensor, None])
    assert_type(sampling.sample_naive(pixelrnn, noise, return_logits=True), tuple[Tensor, Tensor])
    assert_type(sampling.sample_pixelrnn_cached(pixelrnn, noise), tuple[Tensor, None])
    assert_type(
        sampling.sample_pixelrnn_cached(pixelrnn, noise, return_logits=True),
        tuple[Tensor, Tensor],
    )
    assert_type(sampling.draw_or_keep(noise, noise[..., 0]), Tensor)
    with layers.frozen_masked_weights(pixelcnn):
        assert_type(pixelcnn.head_out.masked_weight(), Tensor)


def fused_ops(x: Tensor, mask: Tensor) -> None:
    assert_type(ops.affine_coupling(x, x, x, mask, scale_fn="tanh"), tuple[Tensor, Tensor])
    assert_type(ops.affine_coupling_stacked(x, x, mask, clamp=1.5), tuple[Tensor, Tensor])
    assert_type(ops.additive_coupling(x, x, mask, reverse=True), tuple[Tensor, Tensor])
    assert_type(ops.reference.affine_coupling(x, x, x, mask), tuple[Tensor, Tensor])
    assert_type(ops.detect_mask_kind(mask, x.shape), ops.MaskKind)
    assert_type(ops.checkerboard_mask((1, 8, 8)), Tensor)
    assert_type(ops.channel_mask((4, 8, 8), parity=1), Tensor)
    assert_type(ops.reparameterize_kl(x, x, n_samples=2), tuple[Tensor, Tensor])
    assert_type(ops.reparameterize_kl_stacked(x, n_samples=2), tuple[Tensor, Tensor])
    assert_type(ops.reference.reparameterize_kl_stacked(x), tuple[Tensor, Tensor])
    assert_type(layers.GaussianReparameterize().forward_stacked(x), tuple[Tensor, Tensor])
    assert_type(ops.logdet_dtype(torch.bfloat16), torch.dtype)
    assert_type(ops.runs_twins(x, [x]), bool)
    made = layers.MADE(4)
    weights, biases, units, bounds = made.solve_weights(x)
    assert_type(
        ops.made_affine_solve(x, weights, biases, units, bounds, made.order_list, mask),
        tuple[Tensor, Tensor],
    )


def flows(x: Tensor, generator: torch.Generator) -> None:
    """Every flow: ``sample`` and ``log_prob`` are tensors, ``forward`` gives ``(z, logdet)``."""
    flow_models: list[models.FlowModel] = [
        models.RealNVP((1, 8, 8), levels=4),
        models.NICE(16),
        models.Glow((3, 8, 8)),
        models.MAF(16),
        models.IAF(16),
        models.CNF(16),
    ]
    for flow in flow_models:
        assert_type(flow.sample(4, 0.7, generator=generator), Tensor)
        assert_type(flow.log_prob(x), Tensor)
        assert_type(flow.bits_per_dim(x), Tensor)
        assert_type(flow.forward(x), tuple[Tensor, Tensor])
    assert_type(models.CNF(16).ode, layers.ContinuousFlow)
    sequential = layers.FlowSequential(layers.ActNorm(16), layers.Invertible1x1Conv(16))
    assert_type(sequential.inverse(x), tuple[Tensor, Tensor])
    assert_type(layers.Inverse(layers.Permutation([1, 0])).inverse(x), tuple[Tensor, Tensor])


def vae(x: Tensor) -> None:
    model = models.VAE((1, 8, 8), latent_dim=4, likelihood="bernoulli")
    assert_type(model.sample(4), Tensor)
    assert_type(model.sample(4, mean=True, generator=torch.Generator()), Tensor)
    assert_type(model.elbo(x), models.ELBOTerms)
    assert_type(model.elbo(x).elbo, Tensor)
    assert_type(model.log_likelihood(x, 10), Tensor)
    assert_type(model.loss(x), Tensor)
    assert_type(model.encode(x), tuple[Tensor, Tensor])


def gans(z: Tensor, labels: Tensor, a: Tensor) -> None:
    dcgan = models.DCGAN(image_size=8, channels=1, num_classes=10)
    assert_type(dcgan.sample(4), Tensor)
    assert_type(dcgan.sample(4, labels, generator=torch.Generator()), Tensor)
    assert_type(dcgan.latent_dim, int)
    assert_type(dcgan.generator, models.DCGANGenerator)
    assert_type(dcgan.generator.num_classes, int)
    assert_type(models.MLPGAN().discriminator, models.MLPDiscriminator)
    assert_type(models.BiGAN().sample(4), Tensor)
    assert_type(models.CycleGAN().translate_ab(a), Tensor)
    assert_type(models.Pix2Pix().translate(a), Tensor)
    assert_type(models.slerp(z, z, 0.5), Tensor)
    assert_type(models.interpolation_grid(dcgan.generator, z, z, Path("grid.png")), Path)
    assert_type(metrics.mmd2(a, a), Tensor)
    assert_type(metrics.gaussian_kernel(a, a, [1.0]), Tensor)


def training(data: Tensor, out: str) -> None:
    """A loss of the model's own type trains it (``train`` and ``LossSteps`` are generic)."""
    model = models.PixelCNN(in_channels=1, n_levels=4, image_size=8)
    config = TrainConfig(steps=10, batch_size=8)
    assert_type(
        LossSteps(model, autoregressive_loss, data, None, config), LossSteps[models.PixelCNN]
    )
    assert_type(train(model, autoregressive_loss, data, None, config, out), list[dict])
    assert_type(pygen.build_info(), dict[str, Any])
