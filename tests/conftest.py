"""Shared test fixtures: the devices to test on and per-dtype tolerances."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time

import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# Outputs of fused ops vs the reference computed in float64 from the same inputs.
TOLERANCES = {
    torch.float64: {"rtol": 1e-10, "atol": 1e-10},
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
    torch.float16: {"rtol": 2e-3, "atol": 2e-3},
    torch.bfloat16: {"rtol": 1.6e-2, "atol": 1e-2},
}
FLOAT_DTYPES = list(TOLERANCES)


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, scale=1.0
) -> None:
    """actual (any dtype) against an expected computed in float64, with dtype's tolerance."""
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(
        actual.double(), expected.double(), rtol=tol["rtol"] * scale, atol=tol["atol"] * scale
    )


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny models: with more, thread start-up and OpenMP
    barriers waiting for descheduled threads cost more than the work (10-100x slower training
    measured on a loaded 2-core machine). Modules opt in with ``pytestmark``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def cuda_context_lost() -> bool:
    """True when this process's CUDA context holds a sticky error (a kernel's illegal or misaligned
    access): every later CUDA call in the process fails with it."""
    if not torch.cuda.is_initialized():
        return False
    try:
        torch.cuda.synchronize()
    except RuntimeError:
        return True
    return False


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report):
    # Under pytest-xdist, a worker whose CUDA context a failed test left unusable ends once the
    # failure is reported (after xdist's own hook sent it; the pause lets it go out), so that the
    # tests after it run in a fresh worker instead of failing one by one with the same error.
    if report.failed and os.environ.get("PYTEST_XDIST_WORKER") and cuda_context_lost():
        time.sleep(1)
        os._exit(1)


def run_two_ranks(argv: list[str], timeout: float = 240) -> list[str]:
    """Run ``argv`` as ranks 0 and 1 of a two-process group on this machine (the variables
    torchrun sets) and return their standard outputs; a rank that exits non-zero fails with its
    standard error. Both ranks are reaped on every path: one that failed or timed out no longer
    leaves the other running into later tests."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(
        os.environ,
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE="2",
        OMP_NUM_THREADS="1",
    )
    # Files, not pipes: a rank blocked on a full pipe would stall the other in a collective.
    outs = [tempfile.TemporaryFile("w+") for _ in range(4)]
    procs = [
        subprocess.Popen(
            argv,
            env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
            stdout=outs[2 * r],
            stderr=outs[2 * r + 1],
            text=True,
        )
        for r in range(2)
    ]
    try:
        for p in procs:
            p.wait(timeout=timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    texts = []
    for f in outs:
        f.seek(0)
        texts.append(f.read())
        f.close()
    for r, p in enumerate(procs):
        assert p.returncode == 0, f"rank {r} exited with {p.returncode}:\n{texts[2 * r + 1]}"
    return texts[0::2]


def fit_digits_and_round_trip(make_model, steps: int, lr: float = 5e-3) -> float:
    """Train ``make_model()`` (an autoregressive image model over the digits' levels) by bits/dim
    for ``steps`` seeded Adam steps, check that a state-dict round trip keeps log_prob and
    samples identical, and return the held-out bits/dim."""
    import io

    from pygen.data import load_digits

    train, _ = load_digits("train")
    test, _ = load_digits("test")
    torch.manual_seed(0)
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = train[torch.randint(0, len(train), (32,), generator=gen)]
        opt.zero_grad()
        model.bits_per_dim(batch).mean().backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        held_out = model.bits_per_dim(test).mean().item()

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    restored = make_model()
    restored.load_state_dict(torch.load(buffer))
    restored.eval()
    with torch.no_grad():
        assert torch.equal(restored.log_prob(test[:50]), model.log_prob(test[:50]))
    noise = torch.rand(3, 1, 8, 8)
    assert torch.equal(restored.sample(3, noise=noise), model.sample(3, noise=noise))
    return held_out


def nested_derivatives(fn, leaves, orders: int = 3) -> list[tuple[torch.Tensor, ...]]:
    """The derivatives with respect to ``leaves`` of a cubic of ``fn(*leaves)``'s outputs, then
    of the sum of squares of that gradient, and so on: ``orders`` orders, each differentiating
    the graph of the one before (so the backward's cotangents depend on the inputs, as in a
    gradient penalty). ``fn`` may derive several op arguments from one leaf."""
    value = sum((out.double() ** 3).sum() for out in fn(*leaves))
    results = []
    for k in range(orders):
        grads = torch.autograd.grad(
            value, leaves, create_graph=k + 1 < orders, allow_unused=True, materialize_grads=True
        )
        results.append(grads)
        value = sum((g.double() ** 2).sum() for g in grads)
    return results
