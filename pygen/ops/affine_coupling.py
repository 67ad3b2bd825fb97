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


# pygen::affine_coupling and its backward (kernels and autograd) are registered in C++ when
# pygen._C loads; these are their shape-only implementations for torch.compile, and the
# backward's own derivative (from the twin).
_forward = torch.ops.pygen.affine_coupling


@torch.library.register_fake("pygen::affine_coupling")
def _(x, log_scale, shift, mask, mask_kind, scale_fn, clamp, reverse):
    check_same_device("x", x, log_scale=log_scale, shift=shift, mask=mask)
    return x.new_empty(x.shape), x.new_empty(x.shape[:1], dtype=reference.logdet_dtype(x.dtype))


@torch.library.register_fake("pygen::affine_coupling_backward")
def _(grad_y, grad_logdet, x, log_scale, shift, mask, mask_kind, scale_fn, clamp, reverse):
    check_same_device(
        "x", x, grad_y=grad_y, grad_logdet=grad_logdet, log_scale=log_scale, shift=shift, mask=mask
    )
    grad_log_scale = x.new_empty(x.shape if log_scale is not None else (0,))
    return x.new_empty(x.shape), grad_log_scale, x.new_empty(x.shape)


@torch.library.register_fake("pygen::affine_coupling_stacked")
def _(x, params, mask, mask_kind, scale_fn, clamp, reverse):
    check_same_device("x", x, params=params, mask=mask)
    reference.params_halves(x, params)  # the kernels' error for another shape
    return x.new_empty(x.shape), x.new_empty(x.shape[:1], dtype=reference.logdet_dtype(x.dtype))


@torch.library.register_fake("pygen::affine_coupling_stacked_backward")
def _(grad_y, grad_logdet, x, params, mask, mask_kind, scale_fn, clamp, reverse):
    check_same_device("x", x, grad_y=grad_y, grad_logdet=grad_logdet, params=params, mask=mask)
    reference.params_halves(x, params)
    return x.new_empty(x.shape), x.new_empty(params.shape)


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
    return int(detect_mask_kind(mask, x.shape) if mask_kind is None else mask_kind)


def _channels_last(x: Tensor, mask: Tensor, *others: Tensor) -> bool:
    """Whether x is a 4-d tensor stored channels-last (and not also contiguous, as when C or H*W
    is 1): the kernels then run on the NHWC views (x's read in place, as are log_scale's and
    shift's where their samples are contiguous there) and y keeps x's layout, as an elementwise
    op's would."""
    return (
        x.dim() == 4
        and mask.dim() <= 4
        and all(t.dim() == 4 for t in others)
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    )


def _coupling_nhwc(
    x: Tensor,
    log_scale: Tensor | None,
    shift: Tensor,
    mask: Tensor,
    scale_fn: str,
    clamp: float | None,
    reverse: bool,
) -> tuple[Tensor, Tensor]:
    """The op on the NHWC views of a channels-last x and its log_scale and shift, y returned
    channels-last. The mask patterns the kernels compute run over NCHW's last dimensions: the
    permuted mask is read. The logdet sums the same values (in another order)."""
    mask = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape)).permute(0, 2, 3, 1)
    to_nhwc = (0, 2, 3, 1)
    y, logdet = _forward(
        x.permute(to_nhwc),
        None if log_scale is None else log_scale.permute(to_nhwc),
        shift.permute(to_nhwc),
        mask,
        int(MaskKind.READ),
        scale_fn,
        clamp,
        reverse,
    )
    return y.permute(0, 3, 1, 2), logdet


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
    if _channels_last(x, mask, log_scale, shift):
        return _coupling_nhwc(x, log_scale, shift, mask, scale_fn, clamp, reverse)
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
            in place where each sample is contiguous, else copied.
        mask, scale_fn, clamp, reverse, mask_kind: as for ``affine_coupling``.

    Returns:
        ``(y, logdet)`` as ``affine_coupling``. An x stored channels-last runs as
        ``affine_coupling`` on the chunks (its NHWC path reads channels last, not halves of dim 1).
    """
    if runs_twins(x, params, mask):
        return reference.affine_coupling_stacked(
            x, params, mask, scale_fn=scale_fn, clamp=clamp, reverse=reverse
        )
    if _channels_last(x, mask, params):
        log_scale, shift = params.chunk(2, dim=1)
        return _coupling_nhwc(x, log_scale, shift, mask, scale_fn, clamp, reverse)
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
    if _channels_last(x, mask, shift):
        return _coupling_nhwc(x, None, shift, mask, "exp", None, reverse)
    kind = _kind(mask, x, mask_kind)
    return _forward(x, None, shift, mask, kind, "exp", None, reverse)
