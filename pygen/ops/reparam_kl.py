"""Fused reparameterization + Gaussian KL: ``pygen.ops.reparameterize_kl`` and
``pygen.ops.reparameterize_kl_stacked`` (mu and logvar the halves of one tensor).

The operators ``pygen::reparameterize_kl``, ``pygen::reparameterize_kl_stacked`` and their
backward operators (kernels and autograd) are registered in C++ when pygen._C loads; this module
adds their fake (shape-only) implementations for torch.compile, the backwards' own derivatives
(from the twin) and the public functions that draw the seed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pygen._extension import _C  # noqa: F401  (registers the pygen:: operators)
from pygen.ops import reference
from pygen.ops._fake import check_same_device
from pygen.ops._higher_order import register_twin_backward, runs_twins, vjp
from pygen.ops._random import draw_seed

_forward = torch.ops.pygen.reparameterize_kl
_forward_stacked = torch.ops.pygen.reparameterize_kl_stacked


@torch.library.register_fake("pygen::reparameterize_kl")
def _fake_forward(mu, logvar, noise, seed, n_samples):
    check_same_device("mu", mu, logvar=logvar, noise=noise)  # the seed may stay on the CPU
    z_shape = mu.shape if n_samples == 1 else (n_samples, *mu.shape)
    return mu.new_empty(z_shape), mu.new_empty(
        mu.shape[:-1], dtype=reference.logdet_dtype(mu.dtype)
    )


@torch.library.register_fake("pygen::reparameterize_kl_backward")
def _(grad_z, grad_kl, mu, logvar, noise, seed, n_samples):
    check_same_device("mu", mu, grad_z=grad_z, grad_kl=grad_kl, logvar=logvar, noise=noise)
    return mu.new_empty(mu.shape), logvar.new_empty(logvar.shape)  # contiguous, as the kernels'


@torch.library.register_fake("pygen::reparameterize_kl_stacked")
def _(stats, noise, seed, n_samples):
    check_same_device("stats", stats, noise=noise)
    return _fake_forward(*reference.stats_halves(stats), noise, seed, n_samples)


@torch.library.register_fake("pygen::reparameterize_kl_stacked_backward")
def _(grad_z, grad_kl, stats, noise, seed, n_samples):
    check_same_device("stats", stats, grad_z=grad_z, grad_kl=grad_kl, noise=noise)
    reference.stats_halves(stats)  # the kernels' error for an odd last dimension
    return stats.new_empty(stats.shape)  # contiguous, as the kernels'


def _twin_backward(grad_z, grad_kl, mu, logvar, noise, seed, n_samples):
    """The backward op's gradients by the twin; a seed's noise is the op's z at mu 0, sigma 1."""
    if noise is None:
        zeros = torch.zeros(mu.shape, dtype=mu.dtype, device=mu.device)
        noise = _forward(zeros, zeros, None, seed, n_samples)[0]
    outputs = reference.reparameterize_kl(mu, logvar, noise, n_samples=n_samples)
    return vjp(outputs, (mu, logvar), (grad_z, grad_kl))


register_twin_backward("pygen::reparameterize_kl_backward", _twin_backward)


def _twin_backward_stacked(grad_z, grad_kl, stats, noise, seed, n_samples):
    """The stacked backward op's gradient by the twin: the halves' gradients side by side."""
    mu, logvar = reference.stats_halves(stats)
    return [torch.cat(_twin_backward(grad_z, grad_kl, mu, logvar, noise, seed, n_samples), -1)]


register_twin_backward("pygen::reparameterize_kl_stacked_backward", _twin_backward_stacked)


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
            float32, float64 for float64). Rows (over D) read in place where each is contiguous
            and they lie a constant stride apart (e.g. the halves of an encoder's output,
            ``h.chunk(2, dim=-1)``); other non-contiguous inputs are copied.
        noise: standard normal ``eps`` of the shape of ``z``; drawn inside the kernel when None
            (Philox, seeded from ``generator`` or torch's default generator of mu's device, so
            ``torch.manual_seed`` makes it reproducible; backward regenerates it: nothing stored).
        n_samples: independent draws per row; ``z`` then has shape ``(n_samples, *mu.shape)``.
        generator: torch generator that seeds the internal noise.

    Returns:
        ``(z, kl)``: ``z = mu + exp(logvar / 2) * eps`` of shape ``mu.shape`` (or
        ``(n_samples, *mu.shape)``) and ``kl = 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar, -1)`` of
        shape ``mu.shape[:-1]``, in ``pygen.ops.logdet_dtype(mu.dtype)`` (float32 for 16-bit
        inputs: a sum over the latent dimensions, as a flow's logdet).

    Under ``torch.func`` transforms (``grad``, ``jacrev``, ``vmap``...) and forward-mode AD it
    runs its twin, ``pygen.ops.reference.reparameterize_kl`` (noise from ``torch.randn`` with
    ``generator``).

    For mu and logvar that are the halves of one tensor (``h.chunk(2, dim=-1)``), prefer
    ``reparameterize_kl_stacked(h)``: the same results, and its backward writes ``h``'s gradient
    as one tensor instead of concatenating those of the halves (a copy that costs more than
    the kernel).
    """
    if runs_twins(mu, logvar, noise):
        return reference.reparameterize_kl(
            mu, logvar, noise, n_samples=n_samples, generator=generator
        )
    seed = draw_seed(mu.device, generator) if noise is None else None
    return _forward(mu, logvar, noise, seed, n_samples)


def reparameterize_kl_stacked(
    stats: Tensor,
    noise: Tensor | None = None,
    *,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """``reparameterize_kl(mu, logvar, ...)`` with ``mu, logvar = stats.chunk(2, dim=-1)``: an
    encoder's output as it comes, without the cost of the chunks' gradient.

    Args:
        stats: ``(..., 2 * D)``: mu in the first half of the last dimension, logvar in the second
            (dtypes as ``reparameterize_kl``'s). Read in place where its rows over the last
            dimension are contiguous and a constant stride apart; else copied.
        noise, n_samples, generator: as in ``reparameterize_kl``, with ``(..., D)`` the shape of
            mu. Drawn noise is the same: ``z`` equals ``reparameterize_kl``'s for the same seed.

    Returns:
        ``(z, kl)`` as ``reparameterize_kl(mu, logvar, ...)`` returns them. The gradient of
        ``stats`` is one contiguous tensor into whose halves the backward kernel writes those of
        mu and logvar (chunks' gradients would be concatenated, a copy of the whole gradient).

    Under ``torch.func`` transforms and forward-mode AD it runs its twin,
    ``pygen.ops.reference.reparameterize_kl_stacked``.
    """
    if runs_twins(stats, noise):
        return reference.reparameterize_kl_stacked(
            stats, noise, n_samples=n_samples, generator=generator
        )
    seed = draw_seed(stats.device, generator) if noise is None else None
    return _forward_stacked(stats, noise, seed, n_samples)
