"""Affine (RealNVP, Glow) and additive (NICE) coupling layers over the fused coupling op."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pygen import ops
from pygen.layers.flows.conditioners import MLP, ResidualCNN


def coupling_mask(shape: Sequence[int], mask: str | Tensor, parity: int = 0) -> Tensor:
    """The 0/1 mask of the per-sample ``shape``: ``"checkerboard"``, ``"channel"`` (see
    ``pygen.ops.checkerboard_mask`` / ``channel_mask``) or a given tensor (1 = pass through)."""
    if isinstance(mask, Tensor):
        pairs = zip(reversed(mask.shape), reversed(shape), strict=False)  # trailing dims
        if mask.dim() > len(shape) or any(m not in (1, s) for m, s in pairs):
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to the shape {tuple(shape)}"
            )
        return mask.float()
    if mask == "checkerboard":
        return ops.checkerboard_mask(shape, parity)
    if mask == "channel":
        return ops.channel_mask(shape, parity)
    raise ValueError(f"mask must be 'checkerboard', 'channel' or a tensor, got {mask!r}")


def _detect_loaded_mask_kind(module: _Coupling, incompatible_keys) -> None:
    """A loaded mask may be another pattern than the one the layer was built with: detect it
    again here, so that a compiled call (which cannot check the mask, see ``_mask_kind``) sees
    it."""
    module._detect_mask_kind()


class _Coupling(nn.Module):
    """Shared part: the mask (a buffer), its kind for the kernels, and the conditioner that maps
    the masked input to ``n_outputs`` tensors of the input's shape: a given ``net`` (a user's own
    network), else an MLP (vectors) or a residual CNN (images) of ``hidden`` and ``n_blocks``."""

    mask: Tensor

    def __init__(
        self,
        shape: Sequence[int],
        mask: str | Tensor,
        parity: int,
        hidden: int,
        n_blocks: int,
        n_outputs: int,
        reference: bool,
        net: nn.Module | None,
    ) -> None:
        super().__init__()
        self.shape = tuple(shape)
        if len(self.shape) not in (1, 3):
            raise ValueError(f"shape must be (D,) or (C, H, W), got {self.shape}")
        self.register_buffer("mask", coupling_mask(self.shape, mask, parity))
        self._detect_mask_kind()
        self.register_load_state_dict_post_hook(_detect_loaded_mask_kind)
        self.reference = reference
        self.n_outputs = n_outputs
        features = self.shape[0]
        if net is not None:
            self.net = net
        elif len(self.shape) == 1:
            self.net = MLP(features, n_outputs * features, hidden, n_blocks)
        else:
            self.net = ResidualCNN(features, n_outputs * features, hidden, n_blocks)

    def _conditioner(self, x: Tensor) -> Tensor:
        """The net's outputs stacked along dim 1 (the ops take them so: one gradient, no cat).
        The pass-through half is the same before and after the coupling: inverse reads it too."""
        out = self.net(x * self.mask)
        want = (x.shape[0], self.n_outputs * self.shape[0], *self.shape[1:])
        if tuple(out.shape) != want:
            raise ValueError(
                f"the conditioner must map (N, *{self.shape}) to {self.n_outputs} tensors of "
                f"that shape stacked along dim 1, shape {want}; it returned {tuple(out.shape)}"
            )
        return out

    def _mask_state(self) -> tuple[Tensor, int, int | None]:
        """The mask, its storage and its version: None for an inference tensor, which has no
        version counter."""
        mask = self.mask
        return mask, mask.data_ptr(), None if mask.is_inference() else mask._version

    def _detect_mask_kind(self) -> None:
        self.mask_kind = ops.detect_mask_kind(self.mask, (1, *self.shape))
        self._mask_detected = self._mask_state()

    def _mask_kind(self) -> ops.MaskKind:
        """The kernels compute a pattern from its kind, not from the buffer: a mask replaced
        (``torch.func.functional_call``, ``mask.data = ...``) or changed in place since its kind
        was detected is detected again, and an inference tensor's (no version counter) on every
        call. A write through ``mask.data``, which PyTorch does not count, is not seen: replace
        the buffer or write to it in place instead. A compiled call cannot read a tensor's version
        and uses the kind of the last eager call or ``load_state_dict``; under ``torch.func``
        transforms and forward-mode AD the ops run their twins, which read the mask."""
        if torch.compiler.is_compiling() or ops.runs_twins():
            return self.mask_kind
        mask, pointer, version = self._mask_detected
        now = self._mask_state()
        if now[0] is not mask or now[1] != pointer or now[2] is None or now[2] != version:
            self._detect_mask_kind()
        return self.mask_kind

    def _couple(self, x: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(z, logdet)``: the coupling applied to ``x``."""
        return self._couple(x, reverse=False)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(x, logdet)``: the coupling undone (logdet of the inverse map)."""
        return self._couple(z, reverse=True)

    def _ops(self):
        return ops.reference if self.reference else ops


class AffineCoupling(_Coupling):
    """``y = mask*x + (1-mask)*(x*exp(s) + t)`` with ``(log_scale, t) = net(mask*x)`` and
    ``s = scale_fn(log_scale)``, through the fused ``pygen.ops.affine_coupling_stacked``.

    Args:
        shape: per-sample shape, ``(D,)`` (MLP conditioner) or ``(C, H, W)`` (residual CNN).
        mask: ``"checkerboard"``, ``"channel"`` or a 0/1 tensor of ``shape``.
        parity: which half of the checkerboard / channel mask passes through (0 or 1).
        hidden, n_blocks: width and depth of the conditioner.
        scale_fn, clamp: as in ``pygen.ops.affine_coupling`` (default ``"tanh"`` with clamp 2).
        reference: use the pure-PyTorch twin instead of the fused kernel (for comparisons).
        net: a conditioner of one's own instead (``hidden`` and ``n_blocks`` then unused): any
            module mapping ``(N, *shape)`` to ``(N, 2 * shape[0], *shape[1:])``, log_scale then
            shift along dim 1; it sees the input with the transformed half zeroed.
    """

    def __init__(
        self,
        shape: Sequence[int],
        mask: str | Tensor = "checkerboard",
        parity: int = 0,
        *,
        hidden: int = 64,
        n_blocks: int = 2,
        scale_fn: str = "tanh",
        clamp: float | None = None,
        reference: bool = False,
        net: nn.Module | None = None,
    ) -> None:
        super().__init__(shape, mask, parity, hidden, n_blocks, 2, reference, net)
        ops.reference.check_scale_fn(scale_fn, clamp)
        self.scale_fn = scale_fn
        self.clamp = clamp

    def _couple(self, x: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
        y, logdet = self._ops().affine_coupling_stacked(
            x,
            self._conditioner(x),
            self.mask,
            scale_fn=self.scale_fn,
            clamp=self.clamp,
            reverse=reverse,
            mask_kind=self._mask_kind(),
        )
        return y, logdet

    def extra_repr(self) -> str:
        return f"shape={self.shape}, mask_kind={self.mask_kind.name}, scale_fn={self.scale_fn!r}"


class AdditiveCoupling(_Coupling):
    """NICE's ``y = x + (1-mask)*t`` with ``t = net(mask*x)``; volume preserving (logdet 0).

    Arguments as for ``AffineCoupling`` (without the scale; a given ``net`` returns the shift
    alone, of the input's shape).
    """

    def __init__(
        self,
        shape: Sequence[int],
        mask: str | Tensor = "checkerboard",
        parity: int = 0,
        *,
        hidden: int = 64,
        n_blocks: int = 2,
        reference: bool = False,
        net: nn.Module | None = None,
    ) -> None:
        super().__init__(shape, mask, parity, hidden, n_blocks, 1, reference, net)

    def _couple(self, x: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
        y, logdet = self._ops().additive_coupling(
            x, self._conditioner(x), self.mask, reverse=reverse, mask_kind=self._mask_kind()
        )
        return y, logdet

    def extra_repr(self) -> str:
        return f"shape={self.shape}, mask_kind={self.mask_kind.name}"
