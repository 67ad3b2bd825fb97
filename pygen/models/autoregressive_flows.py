"""Autoregressive flows on vectors: MAF and IAF, stacks of MADE-based affine layers with the
feature order reversed between layers. ``levels`` makes either a model of flattened discrete
images (logit pre-processing first, ``bits_per_dim`` with uniform dequantization)."""

from __future__ import annotations

from torch import nn

from pygen.layers import FlowSequential, IAFLayer, LogitTransform, MAFLayer, Permutation
from pygen.models.flows import FlowModel


def _autoregressive_flow(
    layer: type[nn.Module], dim: int, n_layers: int, levels: int | None, **layer_args
) -> FlowSequential:
    layers: list[nn.Module] = [LogitTransform()] if levels is not None else []
    for i in range(n_layers):
        if i > 0:
            layers.append(Permutation(range(dim - 1, -1, -1)))
        layers.append(layer(dim, **layer_args))
    return FlowSequential(*layers)


class MAF(FlowModel):
    """Masked autoregressive flow (Papamakarios et al. 2017) on ``(N, dim)`` vectors: the density
    is one pass per layer, sampling D steps per layer (one pass of arithmetic when cached).

    Args:
        dim: D.
        n_layers: number of ``MAFLayer``s (the order is reversed between them).
        hidden, n_hidden: the MADEs' width and depth.
        levels: pixel levels of flattened image data (enables ``bits_per_dim``), None for
            continuous data.
        scale_fn: the affine op's scale function (default ``"tanh"``, clamp 2).
        reference: use the pure-PyTorch affine op instead of the fused kernel.
        solver: the layers' D-step solve, ``"cached"`` or ``"naive"`` (see ``MAFLayer``).
    """

    layer_type: type[nn.Module] = MAFLayer

    def __init__(
        self,
        dim: int,
        n_layers: int = 5,
        hidden: int = 64,
        n_hidden: int = 2,
        levels: int | None = None,
        scale_fn: str = "tanh",
        reference: bool = False,
        solver: str = "cached",
    ) -> None:
        flow = _autoregressive_flow(
            self.layer_type,
            dim,
            n_layers,
            levels,
            hidden=hidden,
            n_hidden=n_hidden,
            scale_fn=scale_fn,
            reference=reference,
            solver=solver,
        )
        super().__init__(flow, (dim,), levels)


class IAF(MAF):
    """Inverse autoregressive flow (Kingma et al. 2016) as a density model: sampling is one pass
    per layer, the density of given data D steps per layer (the reverse of MAF's trade-off).
    Arguments as for ``MAF``."""

    layer_type = IAFLayer
