"""The bytes each memory-bound op must move at least (its floor), from a results row's fields
alone (op, mode, shape, dtype). The benchmarks record their GB/s with these counts and the report
recomputes GB/s with them from each row's median time, so that a corrected count reads in
REPORT.md without rerunning the benchmarks. Torch-free: the report imports it.
"""

from __future__ import annotations

from math import prod

ITEMSIZE = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2, "int64": 8}
CHANNEL_MASK = " (channel mask)"
CHANNELS_LAST = " (channels-last)"  # the same bytes as the contiguous case
ENCODER_HALVES = " (encoder halves)"  # mu and logvar the halves of one tensor: the same bytes
STACKED = " (stacked)"  # that tensor whole, to the stacked op: the same bytes
STACKED_CHANNELS_LAST = " (stacked, channels-last)"  # the same, all stored channels-last
SAME_BYTES = (CHANNELS_LAST, ENCODER_HALVES, STACKED, STACKED_CHANNELS_LAST)


def reparam_kl_bytes(shape, dtype: str, mode: str) -> int:
    """reparameterize + KL on ``(rows, dim)``. Forward: read mu and logvar, write z (3 passes)
    and kl (one value per row); the noise is drawn inside the kernel (no pass). Forward+backward
    adds reading grad_z, mu and logvar and writing grad_mu and grad_logvar (5 passes) and reading
    grad_kl (one value per row): 8 passes and 2 values per row."""
    if mode not in ("fwd", "fwd+bwd"):  # a mode's suffix left on would count another mode
        raise ValueError(f"mode must be 'fwd' or 'fwd+bwd', got {mode!r}")
    rows, dim = shape
    passes, per_row = (3, 1) if mode == "fwd" else (8, 2)
    return (passes * rows * dim + per_row * rows) * ITEMSIZE[dtype]


def affine_coupling_bytes(shape, dtype: str, mode: str, mask: str = "checkerboard") -> int:
    """Affine coupling ``y = m*x + (1-m)*(x*exp(s) + shift)``. Forward and reverse: read x,
    log_scale and shift, write y (4 passes). Forward+backward adds reading grad_y, x and
    log_scale and writing the three gradients (6 passes; shift's gradient is grad_y's
    transformed half, zeros elsewhere). A checkerboard alternates element by element, so every
    cache line holds both halves: whole passes. A channel mask keeps whole channel spans, and
    the kept half needs no log_scale or shift (forward), nor x or log_scale (backward: there
    grad_x = grad_y and the other two gradients are 0): forward 3 passes, backward 5, 8 in all.
    (The per-sample logdet and its gradient are a value per sample: not counted.)"""
    if mode not in ("fwd", "reverse", "fwd+bwd"):
        raise ValueError(f"mode must be 'fwd', 'reverse' or 'fwd+bwd', got {mode!r}")
    passes = 10.0 if mode == "fwd+bwd" else 4.0
    if mask == "channel":
        passes -= 2.0 if mode == "fwd+bwd" else 1.0
    return int(passes * prod(shape) * ITEMSIZE[dtype])


def floor_bytes(row: dict) -> int | None:
    """The floor of a results row, None where the op has no byte floor (whole models,
    compute-bound ops)."""
    op, mode, shape, dtype = row["op"], row["mode"], row["shape"], row["dtype"]
    if dtype not in ITEMSIZE:
        return None
    if op == "copy":
        return 2 * prod(shape) * ITEMSIZE[dtype]  # read + write
    if op == "matmul":
        m, k, n = shape
        return (m * k + k * n + m * n) * ITEMSIZE[dtype]
    mask = "channel" if mode.endswith(CHANNEL_MASK) else "checkerboard"
    base = mode.removesuffix(CHANNEL_MASK)
    for suffix in SAME_BYTES:
        base = base.removesuffix(suffix)
    if op == "reparam_kl" and base in ("fwd", "fwd+bwd"):
        return reparam_kl_bytes(shape, dtype, base)
    if op == "affine_coupling" and base in ("fwd", "reverse", "fwd+bwd"):
        return affine_coupling_bytes(shape, dtype, base, mask)
    return None
