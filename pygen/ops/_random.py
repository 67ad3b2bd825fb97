"""Seeds for the kernels' counter-based (Philox) generators, drawn from torch's generators."""

from __future__ import annotations

import torch


def draw_seed(device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """One int64 seed drawn from ``generator`` (default: torch's generator of ``device``).

    The seed stays on the generator's device, so drawing it never synchronizes with a GPU, and
    ``torch.manual_seed`` makes every kernel that consumes it reproducible.
    """
    gen_device = generator.device if generator is not None else device
    return torch.randint(0, 2**62, (1,), dtype=torch.int64, device=gen_device, generator=generator)
