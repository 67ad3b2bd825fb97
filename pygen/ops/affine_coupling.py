"""Fused affine and additive coupling with log-determinant: ``pygen.ops.affine_coupling``.

The kernels know the common masks in closed form and compute them from indices instead of reading
them: a ``MaskKind`` names the pattern, ``detect_mask_kind`` recognizes it in a mask tensor, and
``checkerboard_mask`` / ``channel_mask`` build the tensors those kinds describe.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import torch
from torch import Tensor

from pygen._extension import _C  # noqa: F401  (registers the pygen:: operators)
from pygen.ops import reference
from pygen.ops._fake import check_same_device
from pygen.ops._higher_order import register_twin_backward, runs_twins, vjp


class MaskKind(enum.IntEnum):
    """How the kernels obtain the mask (1 = pass through, 0 = transformed).

    ``READ`` reads the mask tensor. The others are computed from indices: checkerboard keeps the
    positions with ``h + w`` even (``EVEN``) or odd (``ODD``) over the last two dimensions of x (the
    last one for vectors ``(N, D)``); channel keeps the first ``C // 2`` entries of dimension 1
    (``FIRST``) or the others (``SECOND``).
    """

    READ = 0
    CHECKERBOARD_EVEN = 1
    CHECKERBOARD_ODD = 2
    CHANNEL_FIRST = 3
    CHANNEL_SECOND = 4


def _check_parity(parity: int) -> None:
    if parity not in (0, 1):
        raise ValueError(f"parity must be 0 or 1, got {parity!r}")


def checkerboard_mask(
    shape: Sequence[int], parity: int = 0, *, device: torch.device | str | None = None
) -> Tensor:
    """Float 0/1 mask of the per-sample ``shape`` (``(D,)`` or ``(C, H, W)``...) that keeps the
    positions whose last two indices (the last one for vectors) sum to an even number (parity 0) or
    an odd one (parity 1). ``device``: where the mask is made; None: torch's default device (the
    CPU unless set otherwise)."""
    _check_parity(parity)
    shape = tuple(shape)
    rows = torch.arange(shape[-2], device=device)[:, None] if len(shape) >= 2 else 0
    index_sum = rows + torch.arange(shape[-1], device=device)
    keep = (index_sum + parity) % 2 == 0
    return keep.expand(shape).float().contiguous()


def channel_mask(
    shape: Sequence[int], parity: int = 0, *, device: torch.device | str | None = None
) -> Tensor:
    """Float 0/1 mask of the per-sample ``shape`` that keeps the first ``shape[0] // 2`` channels
    (features for vectors) with parity 0, the others with parity 1. ``device``: where the mask is
    made; None: torch's default device (the CPU unless set otherwise)."""
    _check_parity(parity)
    shape = tuple(shape)
    first = torch.arange(shape[0], device=device) < shape[0] // 2
    keep = first if parity == 0 else ~first
    return keep.reshape(-1, *[1] * (len(shape) - 1)).expand(shape).float().contiguous()


_PATTERNS = {
    MaskKind.CHECKERBOARD_EVEN: (checkerboard_mask, 0),
    MaskKind.CHECKERBOARD_ODD: (checkerboard_mask, 1),
    MaskKind.CHANNEL_FIRST: (channel_mask, 0),
    MaskKind.CHANNEL_SECOND: (channel_mask, 1),
}


def detect_mask_kind(mask: Tensor, shape: Sequence[int]) -> MaskKind:
    """The kind of ``mask`` for inputs x of ``shape`` (batch first): a pattern the kernels compute
    from indices, or ``READ``. Reads the mask's values (a device sync for a GPU mask): layers call
    it once and pass the result on."""
    sample_shape = tuple(shape[1:])
    if mask.dim() == len(shape):
        if mask.shape[0] != 1:  # one mask per sample
            return MaskKind.READ
        mask = mask[0]
    if len(shape) < 2 or mask.dim() > len(sample_shape):
        return MaskKind.READ
    try:
        values = torch.broadcast_to(mask.detach().cpu().float(), sample_shape)
    except RuntimeError:  # not broadcastable: the op reports it
        return MaskKind.READ
    for kind, (build, parity) in _PATTERNS.items():
        if torch.equal(values, build(sample_shape, parity)):
            return kind
    return MaskKind.READ


def _channels_last(x: Tensor) -> bool:
    """Whether x is a 4-d tensor stored channels-last (and not also contiguous, as when C or H*W
    is 1): the kernels then run on its NHWC view, and y and the gradients keep its layout."""
    return (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    )


def _like_x(x: Tensor, shape: Sequence[int] | None = None) -> Tensor:
    """An output of x's shape (or ``shape``) in the layout the kernels give it: x's for a
    channels-last x, else contiguous."""
    form = torch.channels_last if _channels_last(x) else torch.contiguous_format
    shape = x.shape if shape is None else shape
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=form)


# pygen::affine_coupling and its backward (kernels and autograd) are registered in C++ when
# pygen._C loads; these are their shape-only implementations for torch.compile, and the
# backward's own derivative (from the twin).
_forward = torch.ops.pygen.affine_coupling


@torch.library.register_fake("pygen::affine_coupling")
def _(x, log_scale, shift, mask, mask_kind, scale_fn, clamp, reverse):
    check_same_device("x", x, log_scale=log_scale, shift=shift, mask=mask)
    return _like_x(x), x.new_empty(x.shape[:1], dtype=reference.logdet_dtype(x.dtype))


@torch.library.register_fake("pygen::affine_coupling_backward")
def _(grad_y, grad_logdet, x, log_scale, shift, mask, mask_kind, scale_fn, clamp, reverse):
    check_same_device(
        "x", x, grad_y=grad_y, grad_logdet=grad_logdet, log_scale=log_scale, shift=shift, mask=mask
    )
    grad_log_scale = _like_x(x) if log_scale is not None else x.new_empty(0)
    return _like_x(x), grad_log_scale, _like_x(x)


@torch.library.register_fake("pygen::affine_coupling_stacked")
def _(x, params, mask, mask_kind, scale_fn, clamp, reverse):
    check_same_device("x", x, params=params, mask=mask)
    reference.params_halves(x, params)  # the kernels' error for another shape
    return _like_x(x), x.new_empty(x.shape[:1], dtype=reference.logdet_dtype(x.dtype))


@torch.library.register_fake("pygen::affine_coupling_stacked_backward")
def _(grad_y, grad_logdet, x, params, mask, mask_kind, scale_fn, clamp, reverse):
    check_same_device("x", x, grad_y=grad_y, grad_logdet=grad_logdet, params=params, mask=mask)
    reference.params_halves(x, params)
    return _like_x(x), _like_x(x, params.shape)


def _twin_backward(
    grad_y, grad_logdet, x, log_scale, shift, mask, mask_kind, scale_fn, clamp, reverse
):
    """The backward op's gradients by the twin."""
    if log_scale is None:
        outputs = reference.additive_coupling(x, shift, mask, reverse=reverse)
        grad_x, grad_shift = vjp(outputs, (x, shift), (grad_y, grad_logdet))
        return grad_x, x.new_zeros(0), grad_shift
    outputs = reference.affine_coupling(
        x, log_scale, shift, mask, scale_fn=scale_fn, clamp=clamp, reverse=reverse
    )
    return vjp(outputs, (x, log_scale, shift), (grad_y, grad_logdet))


def _twin_stacked_backward(
    grad_y, grad_logdet, x, params, mask, mask_kind, scale_fn, clamp, reverse
):
    """The stacked backward op's gradients by the twin."""
    outputs = reference.affine_coupling_stacked(
        x, params, mask, scale_fn=scale_fn, clamp=clamp, reverse=reverse
    )
    return vjp(outputs, (x, params), (grad_y, grad_logdet))


# The mask (argument 5, 4 of the stacked op) gets no gradient, as in the first derivative.
register_twin_backward("pygen::affine_coupling_backward", _twin_backward, constants=(5,))
register_twin_backward(
    "pygen::affine_coupling_stacked_backward", _twin_stacked_backward, constants=(4,)
)


def _kind(mask: Tensor, x: Tensor, mask_kind: MaskKind | int | None) -> int:
    """The kind the kernels get: given, detected, or READ for a channels-last x (whose mask the
    kernels read whatever its kind: no need to read it here)."""
    if mask_kind is not None:
        return int(mask_kind)
    return int(MaskKind.READ if _channels_last(x) else detect_mask_kind(mask, x.shape))


def affine_coupling(
    x: Tensor,
    log_scale: Tensor,
    shift: Tensor,
    mask: Tensor,
    *,
    scale_fn: str = "exp",
    clamp: float | None = None,
    reverse: bool = False,
    mask_kind: MaskKind | int | None = None,
) -> tuple[Tensor, Tensor]:
    """Affine coupling ``y = mask*x + (1-mask)*(x*exp(s) + shift)`` and its log-determinant, fused.

    Args:
        x, log_scale, shift: ``(N, ...)`` tensors of one shape, dtype (float32/64, float16,
            bfloat16; math in float32, float64 for float64) and device. log_scale and shift are
            read in place where each sample is contiguous (e.g. chunks along dim 1 of a
            conditioner's stacked output); an x stored channels-last (4-d) is read in place and
            gives y channels-last, its log_scale and shift then read in place where they are
            channels-last too; other non-contiguous inputs are copied.
        mask: 0/1 tensor (any real or bool dtype) broadcastable to x; 1 marks the positions that
            pass through unchanged (the kernels read any nonzero entry as 1; the twin blends
            ``mask*x + (1-mask)*...``, so only 0/1 masks give the same result). It receives no
            gradient.
        scale_fn: how ``s`` follows from ``log_scale``: ``"exp"`` s = log_scale; ``"tanh"``
            s = clamp*tanh(log_scale/clamp); ``"atan"`` s = clamp*(2/pi)*atan(log_scale/clamp);
            ``"sigmoid"`` s = log(sigmoid(log_scale + 2)) (Glow).
        clamp: the soft bound of ``"tanh"`` and ``"atan"`` (default 2.0, at most 1e30 and at
            least 1e-30); an error for the others.
        reverse: compute the inverse ``x = mask*y + (1-mask)*((y - shift)*exp(-s))`` of input
            ``y = x`` instead, with logdet ``-sum s``.
        mask_kind: the ``MaskKind`` of mask, detected from its values when None (which reads
            the mask: pass it precomputed in a loop, or under torch.compile). A kind that does
            not describe mask gives wrong results.

    Returns:
        ``(y, logdet)``: y of x's shape (contiguous, or channels-last as above) and logdet
        ``(N,)`` = sum of s over the transformed positions (negated for reverse), float32 for
        16-bit inputs.

    Under ``torch.func`` transforms (``grad``, ``jacrev``, ``vmap``...) and forward-mode AD it
    runs its twin, ``pygen.ops.reference.affine_coupling``.

    For log_scale and shift that are the halves of one tensor (``params.chunk(2, dim=1)``),
    prefer ``affine_coupling_stacked(x, params, mask)``: the same results, and its backward
    writes ``params``' gradient as one tensor instead of autograd concatenating the halves'.
    """
    if runs_twins(x, log_scale, shift, mask):
        return reference.affine_coupling(
            x, log_scale, shift, mask, scale_fn=scale_fn, clamp=clamp, reverse=reverse
        )
    kind = _kind(mask, x, mask_kind)
    return _forward(x, log_scale, shift, mask, kind, scale_fn, clamp, reverse)


def affine_coupling_stacked(
    x: Tensor,
    params: Tensor,
    mask: Tensor,
    *,
    scale_fn: str = "exp",
    clamp: float | None = None,
    reverse: bool = False,
    mask_kind: MaskKind | int | None = None,
) -> tuple[Tensor, Tensor]:
    """``affine_coupling`` with log_scale and shift the halves of dim 1 of one tensor: a
    conditioner's output as it comes, ``params = net(x_a)``, instead of ``params.chunk(2, dim=1)``.

    The forward is the same (chunks are read in place there too); the backward writes the
    gradients of both halves into one gradient of ``params``, where after ``chunk`` autograd
    concatenates two: a copy that costs about as much as the kernel.

    Args:
        x: ``(N, C, ...)``, as for ``affine_coupling``.
        params: ``(N, 2C, ...)``, log_scale then shift along dim 1, of x's dtype and device; read
            in place where each sample is contiguous, else copied. For an x stored channels-last
            it is read in place where it is channels-last too (each pixel's C log_scales, then
            its C shifts), else copied into that layout, and its gradient comes channels-last.
        mask, scale_fn, clamp, reverse, mask_kind: as for ``affine_coupling``.

    Returns:
        ``(y, logdet)`` as ``affine_coupling``.
    """
    if runs_twins(x, params, mask):
        return reference.affine_coupling_stacked(
            x, params, mask, scale_fn=scale_fn, clamp=clamp, reverse=reverse
        )
    kind = _kind(mask, x, mask_kind)
    return torch.ops.pygen.affine_coupling_stacked(x, params, mask, kind, scale_fn, clamp, reverse)


def additive_coupling(
    x: Tensor,
    shift: Tensor,
    mask: Tensor,
    *,
    reverse: bool = False,
    mask_kind: MaskKind | int | None = None,
) -> tuple[Tensor, Tensor]:
    """Additive (NICE) coupling ``y = x + (1-mask)*shift`` (``y = x - (1-mask)*shift`` for reverse)
    through the affine coupling kernel without a scale; logdet is zero.

    Args:
        x, shift, mask, reverse: as for ``affine_coupling`` (``shift`` of x's shape).
        mask_kind: the ``MaskKind`` of mask, detected from its values when None (which reads
            the mask: pass it precomputed in a loop, or under torch.compile). A kind that does
            not describe mask gives wrong results.
    """
    if runs_twins(x, shift, mask):
        return reference.additive_coupling(x, shift, mask, reverse=reverse)
    kind = _kind(mask, x, mask_kind)
    return _forward(x, None, shift, mask, kind, "exp", None, reverse)
