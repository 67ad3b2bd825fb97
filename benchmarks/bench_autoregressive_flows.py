"""Autoregressive and continuous-time flows.

- MAF and IAF training steps (loss, backward, Adam): "pygen" (the fused elementwise affine; for
  IAF, whose density is the D-step direction, the fused solve and its backward) vs "eager" (the
  reference layers: the Python loop of MADE.solve and the reference affine op).
- The MADE solve operator alone (one MADE of the sampling cases), without and with its backward:
  "pygen" (on the CPU its fused kernels) vs "composite" (its loop over differentiable operators,
  the path it takes off the CPU).
- The MAF trade-off: the density pass (``log_prob``, one MADE pass per layer) vs sampling (D
  steps per layer), on the same batch. Sampling three ways: "pygen" (the cached solve, one pass of
  arithmetic per layer, and the fused affine op), "naive" (D MADE passes per layer, fused op) and
  "eager" (D passes, the reference op: what a plain PyTorch implementation does).
- CNF ``log_prob`` with the exact trace (D vector-Jacobian products per evaluation) vs the
  Hutchinson estimator (one), with a fixed-step solve so that both make the same number of field
  evaluations.

Whole-model rows: the GB/s column does not apply and is left empty. Before timing, each fused
path is checked: the MADE solve against its composite loop, a fused model's log-density against
the reference model's (same weights), and sampling by mapping the samples back to the prior
draws they came from (the density direction).
"""

from __future__ import annotations

import os

import pytest
import torch

from benchmarks.common import (
    adam_step,
    check_close,
    device_under_test,
    flow_nll,
    measure_side_by_side,
    row,
)
from pygen import ops
from pygen.layers import MAFLayer
from pygen.models import CNF, IAF, MAF
from pygen.utils.random import standard_normal

OP = "autoregressive_flows"
DEVICE = device_under_test()
if DEVICE.type == "cuda":  # the CUDA fused solve is opt-in until validated (NOTES.md): time it
    os.environ.setdefault("PYGEN_MADE_SOLVE_CUDA", "1")
# MAF: (batch, dim, hidden, layers); CNF: (batch, dim, hidden, Euler steps)
MAF_CASE = (1024, 784, 1024, 5) if DEVICE.type == "cuda" else (256, 64, 256, 4)
# The density/sampling rows add flattened 28x28 images on the CPU (the GPU case already is).
MAF_SAMPLE_CASES = [MAF_CASE] if DEVICE.type == "cuda" else [MAF_CASE, (64, 784, 512, 1)]
CNF_CASE = (1024, 64, 256, 10) if DEVICE.type == "cuda" else (256, 16, 64, 10)


def _maf(
    case: tuple[int, int, int, int] = MAF_CASE,
    reference: bool = False,
    solver: str = "cached",
    model_type: type[MAF] | type[IAF] = MAF,
) -> tuple[MAF | IAF, torch.Tensor]:
    batch, dim, hidden, layers = case
    torch.manual_seed(0)
    model = model_type(dim, n_layers=layers, hidden=hidden, reference=reference, solver=solver)
    # Away from the identity start (a zero output layer), so that sampling does real work.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.to(DEVICE), torch.randn(batch, dim, device=DEVICE)


@pytest.mark.parametrize("model_type", [MAF, IAF], ids=lambda cls: cls.__name__)
def test_train_step(record, quick, model_type):
    models = {p: _maf(reference=p == "eager", model_type=model_type) for p in ("pygen", "eager")}
    (model, x), (reference, _) = models["pygen"], models["eager"]
    with torch.no_grad():
        want = reference.log_prob(x)
        check_close(f"{model_type.__name__} log_prob", model.log_prob(x), want, x.dtype)
    steps = {
        provider: adam_step(model, flow_nll(model, x), lr=1e-4)
        for provider, (model, _) in models.items()
    }
    # IAF's density runs D steps per layer: a few rounds (seconds per step off the CPU).
    rounds = 5 if model_type is IAF else 0
    mode = f"{model_type.__name__.lower()}_train_step"
    for provider, timing in measure_side_by_side(steps, DEVICE, quick, rounds).items():
        record(row(OP, provider, mode, x.shape, x.dtype, DEVICE, timing, 0))


@pytest.mark.parametrize("mode", ["made_solve", "made_solve fwd+bwd"])
@pytest.mark.parametrize("case", MAF_SAMPLE_CASES, ids=lambda case: f"dim{case[1]}")
def test_made_solve(record, quick, case, mode):
    model, x = _maf(case)
    layer = next(layer for layer in model.flow if isinstance(layer, MAFLayer))
    weights, biases, units, bounds = layer.made.solve_weights(x)
    backward = mode.endswith("fwd+bwd")
    leaves = [t.detach().requires_grad_(backward) for t in (x, *weights, *biases)]
    x, weights, biases = leaves[0], leaves[1 : 1 + len(weights)], leaves[1 + len(weights) :]
    args = (units, bounds, layer.made.order.tolist(), layer.mask)

    def step_of(op):
        def step():
            with torch.set_grad_enabled(backward):
                out, params = op(
                    x, weights, biases, *args, scale_fn=layer.scale_fn, clamp=layer.clamp
                )
                if backward:
                    return torch.autograd.grad(out.sum() + params.sum(), leaves)
                return out, params

        return step

    steps = {"pygen": step_of(ops.made_affine_solve), "composite": step_of(_composite)}
    for k, (got, want) in enumerate(zip(steps["pygen"](), steps["composite"](), strict=True)):
        check_close(f"made_solve {mode} output {k}", got, want, x.dtype)
    rounds = {"composite": 5}
    for provider, timing in measure_side_by_side(steps, DEVICE, quick, rounds).items():
        record(row(OP, provider, mode, x.shape, x.dtype, DEVICE, timing, 0))


def _composite(target, weights, biases, units, bounds, order, mask, scale_fn, clamp):
    return torch.ops.pygen._made_affine_solve_composite(
        target, weights, biases, units, bounds, order, mask, scale_fn, clamp, True
    )


@pytest.mark.parametrize("case", MAF_SAMPLE_CASES, ids=lambda case: f"dim{case[1]}")
def test_maf_density_vs_sampling(record, quick, case):
    """The density pass (``maf_density``, pygen) and sampling (``maf_sample``) of one MAF, side by
    side. Sampling four ways: pygen, the cached solve as one operator
    (pygen.ops.made_affine_solve; on the CPU its fused kernel); twin, its loop in Python
    (MADE.solve) with the pure-PyTorch affine map; naive, D passes of the fused layer; eager, D
    passes of the pure-PyTorch layer."""
    models = {}
    for provider in ("pygen", "twin", "naive", "eager"):
        solver = "naive" if provider in ("naive", "eager") else "cached"
        model, x = _maf(case, reference=provider in ("twin", "eager"), solver=solver)
        models[provider] = model.eval()
    with torch.no_grad():
        want = models["twin"].log_prob(x)  # the reference layers, same weights
        check_close("MAF log_prob", models["pygen"].log_prob(x), want, x.dtype)
        for provider in ("pygen", "twin", "naive"):
            model, gen = models[provider], torch.Generator(x.device)
            z, _ = model(model.sample(len(x), generator=gen.manual_seed(1)))
            want = standard_normal(tuple(x.shape), gen.manual_seed(1), device=x.device)
            check_close(f"{provider} MAF sample mapped back", z, want, x.dtype)

    def density():
        with torch.no_grad():
            return models["pygen"].log_prob(x)

    def sample(model):
        def step():
            with torch.no_grad():
                return model.sample(len(x))

        return step

    steps = {"density": density} | {p: sample(model) for p, model in models.items()}
    # The D-pass baselines take seconds per call at dim 784: a few rounds.
    rounds = {"naive": 5, "eager": 5}
    for name, timing in measure_side_by_side(steps, DEVICE, quick, rounds).items():
        provider, mode = ("pygen", "maf_density") if name == "density" else (name, "maf_sample")
        record(row(OP, provider, mode, x.shape, x.dtype, DEVICE, timing, 0))


def test_cnf_log_prob_trace(record, quick):
    """CNF log-density with the exact trace and with the Hutchinson estimator, side by side."""
    batch, dim, hidden, steps = CNF_CASE
    x = torch.randn(batch, dim, generator=torch.Generator().manual_seed(0)).to(DEVICE)

    def log_prob(trace):
        torch.manual_seed(0)
        model = CNF(dim, hidden=hidden, trace=trace, euler_steps=steps).to(DEVICE)

        def step():
            with torch.no_grad():
                return model.log_prob(x)

        return step

    timings = measure_side_by_side({t: log_prob(t) for t in ("exact", "hutchinson")}, DEVICE, quick)
    for trace, timing in timings.items():
        record(row(OP, trace, "cnf_log_prob", x.shape, x.dtype, DEVICE, timing, 0))
