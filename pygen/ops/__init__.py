"""Fused ops (torch custom ops over pygen._C); their twins live in ``pygen.ops.reference``
(the cached PixelCNN sampler's twin: ``pygen.sampling.sample_cached``; the PixelRNN sampler's:
``pygen.sampling.sample_pixelrnn_cached``)."""

from pygen.ops import reference
from pygen.ops._higher_order import runs_twins
from pygen.ops.affine_coupling import (
    MaskKind,
    additive_coupling,
    affine_coupling,
    affine_coupling_stacked,
    channel_mask,
    checkerboard_mask,
    detect_mask_kind,
)
from pygen.ops.made_solve import made_affine_solve
from pygen.ops.pixelcnn import pixelcnn_sample
from pygen.ops.pixelrnn import pixelrnn_sample
from pygen.ops.reference import logdet_dtype
from pygen.ops.reparam_kl import reparameterize_kl, reparameterize_kl_stacked

__all__ = [
    "MaskKind",
    "additive_coupling",
    "affine_coupling",
    "affine_coupling_stacked",
    "channel_mask",
    "checkerboard_mask",
    "detect_mask_kind",
    "logdet_dtype",
    "made_affine_solve",
    "pixelcnn_sample",
    "pixelrnn_sample",
    "reference",
    "reparameterize_kl",
    "reparameterize_kl_stacked",
    "runs_twins",
]
