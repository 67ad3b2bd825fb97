"""Second and higher derivatives of the fused ops, from their pure-PyTorch twins.

A fused op's autograd (C++) calls its backward op straight to the kernel, unless the backward is
itself being differentiated (``create_graph=True``, a gradient penalty, a Hessian-vector product):
then the call goes through the backward op's autograd, registered here, which differentiates a
recomputation of the same gradients by the op's twin. The kernels keep every first derivative;
the twin gives the derivatives after it, in the twin's arithmetic. Under ``torch.func``
transforms and forward-mode AD, which cannot run the ops' C++ autograd, the ops run their twin
throughout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def runs_twins(*arguments) -> bool:
    """Whether an op runs its pure-PyTorch twin instead of the kernels on these ``arguments``
    (tensors, lists of them, anything else): under a ``torch.func`` transform (grad, jacrev, vmap,
    ...), or where forward-mode AD (``torch.autograd.forward_ad``) gave one of them a tangent;
    the ops' C++ autograd functions can serve neither. (The dual level is a process-wide counter:
    one thread's level must not send every thread's calls to the twins.)"""
    if torch._C._are_functorch_transforms_active():
        return True
    if torch.autograd.forward_ad._current_level < 0:  # no dual level open anywhere
        return False
    return any(
        isinstance(t, Tensor) and torch.autograd.forward_ad.unpack_dual(t).tangent is not None
        for t in _flat(arguments)
    )


def vjp(
    outputs: Sequence[Tensor],
    inputs: Sequence[Tensor],
    cotangents: Sequence,
    create_graph: bool = True,
) -> list[Tensor]:
    """``sum <cotangent, d output / d input>`` per input (differentiable with ``create_graph``);
    an output with a None cotangent or no dependence on the inputs drops out, an input nothing
    reaches gets zeros. The inputs must be the twin's own (``register_twin_backward`` passes
    them), so that these are partial derivatives."""
    pairs = [
        (o, c.to(o.dtype))
        for o, c in zip(outputs, cotangents, strict=True)
        if c is not None and o.requires_grad
    ]
    if not pairs:
        return [torch.zeros_like(t) for t in inputs]
    used, grads = zip(*pairs, strict=True)
    return list(
        torch.autograd.grad(
            used,
            inputs,
            grads,
            create_graph=create_graph,
            allow_unused=True,
            materialize_grads=True,
        )
    )


def _own(value):
    """A floating-point tensor as a node of its own: an alias of it (the derivative with respect
    to the alias is the partial one, even where another argument depends on the tensor, and
    stays connected to it for the next order), or a detached copy that records its uses."""
    if not isinstance(value, Tensor) or not value.is_floating_point():
        return value
    return value.view_as(value) if value.requires_grad else value.detach().requires_grad_()


_SAVED = object()  # a tensor argument's place in a saved template


def _map(values, fn) -> list:
    """``fn`` of each value, inside lists too (which stay lists)."""
    return [[fn(v) for v in a] if isinstance(a, (list, tuple)) else fn(a) for a in values]


def _flat(values) -> list:
    """``values`` with its lists spliced in."""
    return [v for value in values for v in (value if isinstance(value, (list, tuple)) else [value])]


def _gradient_of(arg, by_id: dict[int, Tensor]):
    """The gradient of argument ``arg``: a list for a tensor list, else a tensor or None."""
    if isinstance(arg, (list, tuple)) and any(isinstance(v, Tensor) for v in arg):
        return [by_id.get(id(v)) for v in arg]
    return by_id.get(id(arg)) if isinstance(arg, Tensor) else None


def register_twin_backward(
    op: str, twin: Callable[..., Sequence], constants: Sequence[int] = ()
) -> None:
    """Registers the autograd of backward op ``op`` (``"pygen::..."``): ``twin`` takes the op's
    arguments (its floating-point tensors as nodes of their own) and returns its outputs (tensors
    or tensor lists) computed by differentiable PyTorch operators; the op's gradient is that of
    ``twin``. The arguments at positions ``constants`` get none, as in the first derivative (a
    mask): ``twin`` sees them detached."""

    def setup_context(ctx, inputs, output) -> None:
        # The tensors as saved tensors (checked for in-place changes, seen by saved-tensor
        # hooks), the rest as given.
        ctx.save_for_backward(*[v for v in _flat(inputs) if isinstance(v, Tensor)])
        ctx.template = _map(inputs, lambda v: _SAVED if isinstance(v, Tensor) else v)

    def backward(ctx, *cotangents):
        higher = torch.is_grad_enabled()  # create_graph: a further derivative will follow
        with torch.enable_grad():
            saved = iter(ctx.saved_tensors)
            args = _map(ctx.template, lambda v: _own(next(saved)) if v is _SAVED else v)
            args = [a.detach() if i in constants else a for i, a in enumerate(args)]
            wrt = [v for v in _flat(args) if isinstance(v, Tensor) and v.requires_grad]
            grads = vjp(_flat(twin(*args)), wrt, _flat(cotangents), create_graph=higher)
        by_id = {id(v): g for v, g in zip(wrt, grads, strict=True)}
        return tuple(_gradient_of(a, by_id) for a in args)

    torch.library.register_autograd(op, backward, setup_context=setup_context)
