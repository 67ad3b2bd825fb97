"""What the operators' fake (meta) implementations share."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor


def check_same_device(ref_name: str, ref: Tensor, **others: Tensor | None) -> None:
    """Raise RuntimeError, as the kernels' own checks do, unless each tensor of ``others`` (None:
    absent) is on ``ref``'s device. A call that mixes meta tensors with real ones dispatches to the
    fake implementation, which would otherwise return uninitialized tensors on the real device."""
    for name, tensor in others.items():
        if tensor is not None and tensor.device != ref.device:
            raise RuntimeError(f"{name} is on {tensor.device} but {ref_name} is on {ref.device}")


def indexed(name: str, tensors: Sequence[Tensor]) -> dict[str, Tensor]:
    """``{"name[i]": tensors[i]}``: a list's tensors for ``check_same_device``."""
    return {f"{name}[{i}]": t for i, t in enumerate(tensors)}
