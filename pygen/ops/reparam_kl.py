"""Fused reparameterization + Gaussian KL: ``pygen.ops.reparameterize_kl``."""

from __future__ import annotations

import torch
from torch import Tensor

from pygen._extension import _C
from pygen.ops._random import draw_seed


def _z_shape(mu: Tensor, n_samples: int) -> tuple[int, ...]:
    return tuple(mu.shape) if n_samples == 1 else (n_samples, *mu.shape)


@torch.library.custom_op("pygen::reparameterize_kl", mutates_args=())
def _forward(
    mu: Tensor, logvar: Tensor, noise: Tensor | None, seed: Tensor | None, n_samples: int
) -> tuple[Tensor, Tensor]:
    return tuple(_C.reparam_kl_forward(mu, logvar, noise, seed, n_samples))


@_forward.register_fake
def _(mu, logvar, noise, seed, n_samples):
    return mu.new_empty(_z_shape(mu, n_samples)), mu.new_empty(mu.shape[:-1])


@torch.library.custom_op("pygen::reparameterize_kl_backward", mutates_args=())
def _backward(
    grad_z: Tensor | None,
    grad_kl: Tensor | None,
    mu: Tensor,
    logvar: Tensor,
    noise: Tensor | None,
    seed: Tensor | None,
    n_samples: int,
) -> tuple[Tensor, Tensor]:
    return tuple(_C.reparam_kl_backward(grad_z, grad_kl, mu, logvar, noise, seed, n_samples))


@_backward.register_fake
def _(grad_z, grad_kl, mu, logvar, noise, seed, n_samples):
    return torch.empty_like(mu), torch.empty_like(logvar)


def _setup_context(ctx, inputs, output):
    mu, logvar, noise, seed, n_samples = inputs
    ctx.save_for_backward(mu, logvar, noise, seed)
    ctx.n_samples = n_samples


def _autograd_backward(ctx, grad_z, grad_kl):
    mu, logvar, noise, seed = ctx.saved_tensors
    grad_mu = grad_logvar = grad_noise = None
    if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
        grad_mu, grad_logvar = _backward(grad_z, grad_kl, mu, logvar, noise, seed, ctx.n_samples)
    if ctx.needs_input_grad[2] and grad_z is not None:
        grad_noise = grad_z * torch.exp(0.5 * logvar)
    return grad_mu, grad_logvar, grad_noise, None, None


_forward.register_autograd(_autograd_backward, setup_context=_setup_context)


def reparameterize_kl(
    mu: Tensor,
    logvar: Tensor,
    noise: Tensor | None = None,
    *,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Reparameterized sample of N(mu, diag(exp(logvar))) and its KL from N(0, I), fused.

    Args:
        mu, logvar: ``(..., D)`` means and log-variances (float32/64, float16, bfloat16; math in
            float32, float64 for float64). Non-contiguous inputs are copied.
        noise: standard normal ``eps`` of the shape of ``z``; drawn inside the kernel when None
            (Philox, seeded from ``generator`` or torch's default generator of mu's device, so
            ``torch.manual_seed`` makes it reproducible; backward regenerates it: nothing stored).
        n_samples: independent draws per row; ``z`` then has shape ``(n_samples, *mu.shape)``.
        generator: torch generator that seeds the internal noise.

    Returns:
        ``(z, kl)``: ``z = mu + exp(logvar / 2) * eps`` of shape ``mu.shape`` (or
        ``(n_samples, *mu.shape)``) and ``kl = 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar, -1)`` of
        shape ``mu.shape[:-1]``.
    """
    seed = draw_seed(mu.device, generator) if noise is None else None
    return _forward(mu, logvar, noise, seed, n_samples)
