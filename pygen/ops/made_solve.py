"""The D-step solve of an autoregressive affine flow: ``pygen.ops.made_affine_solve``.

The operator ``pygen::made_affine_solve`` is registered in C++ when pygen._C loads. On the CPU it
runs the fused kernels ``pygen::_made_affine_solve_fused`` and its backward (their fake
implementations are below); on CUDA too when ``PYGEN_MADE_SOLVE_CUDA=1`` (the forward passes its
tests on an H200; the backward has run only emulated on the CPU; neither has been timed on a GPU);
else ``pygen::_made_affine_solve_composite``, composed of other operators (the MADE's products and
``pygen::affine_coupling``), which give it autograd, every device and its fake implementation.
Its twin is ``pygen.ops.reference.made_affine_solve``, the loop in Python (``MADE.solve``'s).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pygen._extension import _C  # noqa: F401  (registers the pygen:: operators)
from pygen.ops import reference
from pygen.ops._fake import check_same_device, indexed
from pygen.ops._higher_order import register_twin_backward, runs_twins, vjp


@torch.library.register_fake("pygen::_made_affine_solve_fused")
def _(target, weights, biases, units, bounds, order, mask, scale_fn, clamp, reverse):
    weights_and_biases = {**indexed("weights", weights), **indexed("biases", biases)}
    check_same_device("target", target, **weights_and_biases, units=units, mask=mask)
    n, dim = target.shape
    return target.new_empty(n, dim), target.new_empty(n, 2, dim)


@torch.library.register_fake("pygen::_made_affine_solve_fused_backward")
def _(grad_x, grad_params, target, x, params, weights, biases, units, *args):
    weights_and_biases = {**indexed("weights", weights), **indexed("biases", biases)}
    inputs = dict(grad_x=grad_x, grad_params=grad_params, x=x, params=params, units=units)
    check_same_device("target", target, **inputs, **weights_and_biases)
    # Contiguous, as the kernel's, whatever the inputs' strides.
    return (
        target.new_empty(target.shape),
        [w.new_empty(w.shape) for w in weights],
        [b.new_empty(b.shape) for b in biases],
    )


def _twin_backward(grad_x, grad_params, target, x, params, weights, biases, units, *args):
    """The fused backward's gradients by the composite loop (which recomputes x and params)."""
    outputs = torch.ops.pygen._made_affine_solve_composite(target, weights, biases, units, *args)
    grads = vjp(outputs, (target, *weights, *biases), (grad_x, grad_params))
    layers = len(weights)
    return grads[0], grads[1 : 1 + layers], grads[1 + layers :]


register_twin_backward("pygen::_made_affine_solve_fused_backward", _twin_backward)


def made_affine_solve(
    target: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    units: Tensor,
    bounds: Sequence[int],
    order: Sequence[int],
    mask: Tensor,
    *,
    scale_fn: str = "tanh",
    clamp: float | None = None,
    reverse: bool = True,
) -> tuple[Tensor, Tensor]:
    """The ``x`` with ``x = affine(target, params=MADE(x))``, one input at a time in ``order``.

    Step d takes the MADE's two outputs for input d (log-scale and shift, computed from the inputs
    filled before it), and sets ``x[:, d]`` to ``pygen.ops.affine_coupling`` of ``target[:, d]``
    with them (``reverse``: ``(target - t) * exp(-s)``, MAF sampling; else ``target * exp(s) +
    t``). Each hidden unit is computed once, at the step that fills the last input it sees, so the
    D steps do the arithmetic of one pass of the MADE. On the CPU the solve and its backward are
    each one fused kernel (the backward's weight gradients: one product per layer; derivatives
    after the first: through the loop); elsewhere the loop runs over differentiable operators (on
    CUDA, see the module's note on ``PYGEN_MADE_SOLVE_CUDA``).

    Args:
        target: ``(N, D)``.
        weights, biases: the MADE's layers as ``MADE.solve_weights(target)`` gives them: masked
            weights ``(out, in)`` as ``nn.Linear`` holds them, converted to the dtype the solve
            sums in, ``promote_types(target.dtype, float32)``; every hidden layer has the same
            ``hidden`` units; the last layer has ``2 * D`` outputs, log-scales then shifts.
        units: ``(hidden,)`` int64, the hidden units sorted by degree (a permutation).
        bounds: ``D`` ints; the hidden units of degree m are ``units[bounds[m - 1]:bounds[m]]``.
        order: the MADE's order of the inputs (a permutation of ``range(D)``).
        mask: ``(D,)``, read by the affine map (1 = pass through).
        scale_fn, clamp, reverse: as in ``pygen.ops.affine_coupling``.

    Returns:
        ``(x, params)``: ``(N, D)`` and the MADE's outputs at x, ``(N, 2, D)``.

    Under ``torch.func`` transforms (``grad``, ``jacrev``, ``vmap``...) and forward-mode AD it
    runs its twin, ``pygen.ops.reference.made_affine_solve``.
    """
    if runs_twins(target, weights, biases, units, mask):
        return reference.made_affine_solve(
            target,
            weights,
            biases,
            units,
            bounds,
            order,
            mask,
            scale_fn=scale_fn,
            clamp=clamp,
            reverse=reverse,
        )
    return torch.ops.pygen.made_affine_solve(
        target,
        list(weights),
        list(biases),
        units,
        list(bounds),
        list(order),
        mask,
        scale_fn,
        clamp,
        reverse,
    )
