"""Workloads for Nsight Compute (scripts/gpu_profile.sh; GPU only): each runs the kernels of one
job once, on the benchmark suite's inputs, so that ncu's counters say where a kernel's time goes
(bytes in flight, occupancy, what its warps wait on) where timings alone cannot.

Usage: ``python -m benchmarks.profile_kernels memory|pixelcnn-1|pixelcnn-256`` (it also runs on
the CPU, with the CPU cases, as a check of the script).
"""

from __future__ import annotations

import sys

import torch

from benchmarks import bench_affine_coupling, bench_reparam_kl
from benchmarks.bench_pixelcnn import MODELS
from pygen.models import PixelCNN
from pygen.ops import affine_coupling, reparameterize_kl


def memory_bound() -> None:
    """reparameterize+KL forward and forward+backward, affine coupling forward, reverse and
    forward+backward, at every benchmark case (float32 and bfloat16)."""
    gen = torch.Generator(bench_reparam_kl.DEVICE).manual_seed(0)
    for kl_shape, dtype in bench_reparam_kl.CASES:
        mu, logvar = bench_reparam_kl.make_inputs(kl_shape, dtype, gen)
        with torch.no_grad():
            reparameterize_kl(mu, logvar)
        mu.requires_grad_()
        logvar.requires_grad_()
        z, kl = reparameterize_kl(mu, logvar)
        torch.autograd.grad((z, kl), (mu, logvar), (torch.ones_like(z), torch.ones_like(kl)))
    for shape, dtype in bench_affine_coupling.CASES:
        x, log_scale, shift, mask, kind = bench_affine_coupling.make_inputs(shape, dtype, gen)
        options = {"scale_fn": bench_affine_coupling.SCALE_FN, "mask_kind": kind}
        with torch.no_grad():
            affine_coupling(x, log_scale, shift, mask, **options)
            affine_coupling(x, log_scale, shift, mask, reverse=True, **options)
        x.requires_grad_()
        log_scale.requires_grad_()
        shift.requires_grad_()
        y, logdet = affine_coupling(x, log_scale, shift, mask, **options)
        torch.autograd.grad(
            (y, logdet), (x, log_scale, shift), (torch.ones_like(y), torch.ones_like(logdet))
        )


def pixelcnn(batch: int) -> None:
    """One image batch of the 28x28 default model (the cluster kernel at batch 1, the block kernel
    at 256)."""
    torch.manual_seed(0)
    PixelCNN(**MODELS["mnist28"]).to(bench_reparam_kl.DEVICE).eval().sample(batch)


if __name__ == "__main__":
    job = sys.argv[1]
    if job == "memory":
        memory_bound()
    elif job.startswith("pixelcnn-"):
        pixelcnn(int(job.removeprefix("pixelcnn-")))
    else:
        raise SystemExit(f"unknown job {job!r}: memory, pixelcnn-1 or pixelcnn-256")
