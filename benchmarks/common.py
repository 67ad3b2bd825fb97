"""What every benchmark shares: the device under test, timing providers side by side, the
results schema (one row per op x provider x mode x shape x dtype) and where results are written."""

from __future__ import annotations

import copy
import datetime
import functools
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

import pygen
from pygen.models import FlowModel, PixelCNN, PixelRNN


def results_dir() -> Path:
    """benchmarks/results, or $PYGEN_RESULTS_DIR (tests use it to leave the committed files)."""
    default = Path(__file__).resolve().parent / "results"
    return Path(os.environ.get("PYGEN_RESULTS_DIR", default))


def device_under_test() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        if found:
            model = found.group(1).strip()
    return f"{model} ({torch.get_num_threads()} threads)"


def results_file(device: torch.device) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")
    return results_dir() / f"{device.type}-{slug}.json"


@functools.cache
def cuda_driver() -> str:
    """The NVIDIA driver version, from nvidia-smi (torch does not report it)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.split("\n")[0].strip() or "unknown"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# What a benchmark run writes itself: it does not make the code that ran differ from HEAD.
OUTPUTS = ("benchmarks/results", "benchmarks/REPORT.md", "benchmarks/plots")

# One id per process (a benchmark run, a tuning run): the report divides rows only by rows of
# the same run, and names the run of each ceiling (copy, matmul) it measures rows against.
RUN = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + f"-{os.getpid()}"


@functools.cache
def commit() -> str:
    """HEAD's short hash, "-dirty" when tracked files other than the run's outputs differ from
    it; taken once per run, when its first row is recorded (the code the run imported: files
    edited while it runs do not relabel its later rows)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        excluded = [f":(exclude,top){path}" for path in OUTPUTS]
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":/", *excluded],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@functools.cache
def kernel_tree() -> str:
    """Git's short hash of csrc/ as it is in the working tree (a scratch index; the repo's own is
    untouched). It names the kernels that ran even where HEAD is stale or dirty, as on a machine
    that gets a copy of the tree, and stays put while the run rewrites its results:
    ``git rev-parse COMMIT:csrc`` gives the same hash for the commits with these kernels."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as scratch:
        env = os.environ | {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        try:
            for cmd in (["git", "read-tree", "HEAD"], ["git", "add", "-A", "csrc"]):
                subprocess.run(cmd, cwd=root, env=env, capture_output=True, check=True)
            out = subprocess.run(
                ["git", "write-tree", "--prefix=csrc/"],
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
        except (OSError, subprocess.CalledProcessError):
            return "unknown"
    return out.stdout.strip()[:7]


def clocked(fn: Callable[[], object], device: torch.device) -> Callable[[], float]:
    """fn as a call that returns its seconds. On a CPU the host clock around it; on a GPU CUDA
    events recorded before and after it on the current stream, waited for: the time from the
    stream reaching the first event to its reaching the second, including any gaps where the GPU
    waits for the host's launches, but not the host's wait for the end (a synchronize is ~10 us,
    a few percent of the shortest kernels timed here)."""
    if device.type != "cuda":

        def host() -> float:
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start

        return host

    def events() -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    return events


BLOCKS = 5  # the blocks a case's rounds are split into, providers alternating between them
# A call faster than this (s) is made once untimed at the start of every block, whatever the
# rounds: with one round per block (--quick) it would else run after the other providers, with
# its data gone from the caches (measured: a 40 MB bfloat16 copy at 42 instead of 89 GB/s).
WARM_CALL_BELOW_S = 0.5
DEADLINE_ENV = "PYGEN_BENCH_DEADLINE"
# Seconds kept for each case still to come when a deadline scales a case's rounds down.
RESERVE_PER_CASE_S = 2.0
_cases_left = [1]


def deadline() -> float | None:
    """$PYGEN_BENCH_DEADLINE: the Unix time a run must end by (scripts/gpu_check.sh sets it from
    each step's time limit), or None."""
    value = os.environ.get(DEADLINE_ENV)
    return float(value) if value else None


def past_deadline() -> bool:
    """Whether a run's deadline is set and has passed: the cases left are skipped."""
    end = deadline()
    return end is not None and time.time() >= end


def set_cases_left(n: int) -> None:
    """The cases still to time, the next one included (benchmarks/conftest.py and tune_pixelcnn
    set it before each case): the time they keep when a deadline cuts a case's rounds."""
    _cases_left[0] = max(1, n)


def fit_to_deadline(counts: dict[str, int], seconds_per_call: dict[str, float]) -> dict[str, int]:
    """Round counts scaled down, at least one per provider, so that a case ends before the
    deadline leaving ``RESERVE_PER_CASE_S`` to each later case (but taking at least an equal
    share of the time left): a case cut at a step's time limit loses all its rows, a case with
    fewer rounds keeps them. Unchanged without a deadline or where the case fits."""
    end = deadline()
    if end is None:
        return counts
    left = end - time.time()
    later = _cases_left[0] - 1
    budget = max(left - RESERVE_PER_CASE_S * later, left / (later + 1))
    # A provider with more rounds than blocks also makes one untimed call per block.
    cost = sum((n + (BLOCKS if n > BLOCKS else 0)) * seconds_per_call[k] for k, n in counts.items())
    if cost <= budget:
        return counts
    scale = max(budget, 0.0) / cost
    return {name: max(1, int(n * scale)) for name, n in counts.items()}


def spread(rounds: int, blocks: int) -> list[int]:
    """``rounds`` split over ``blocks`` as evenly as whole rounds allow (3 over 5: 0 1 0 1 1)."""
    return [rounds * (b + 1) // blocks - rounds * b // blocks for b in range(blocks)]


def summary(times: list[float], others: list[str]) -> dict:
    """median/p20/p80 in ms of per-call times in seconds, their count, and the providers timed
    beside them (``timed_with``)."""
    data = sorted(times)
    q = statistics.quantiles(data, n=10, method="inclusive") if len(data) > 1 else data * 9
    return {
        "median_ms": statistics.median(data) * 1e3,
        "p20": q[1] * 1e3,
        "p80": q[7] * 1e3,
        "rounds": len(data),
        "timed_with": others,
    }


def measure_side_by_side(
    steps: Mapping[str, Callable[[], object]],
    device: torch.device,
    quick: bool,
    rounds: int | dict[str, int] = 0,
) -> dict[str, dict]:
    """Time the providers of one case in turn: each one's rounds are split into ``BLOCKS``
    blocks and the providers alternate block by block (the order rotating), so a machine whose
    speed drifts over a case (a shared VM swings by up to 2x within minutes, NOTES.md) slows
    every provider alike and their ratios hold (timed one provider after another, each met its
    own quiet or busy minute). Before the blocks, warm-up calls (compilation, caches) outside the
    statistics; at the start of each block a provider also makes one untimed call, so that it
    finds its own data in the caches, unless a call takes seconds and the block holds one round
    (``WARM_CALL_BELOW_S``: a sampler case would take twice as long). ``rounds``: per provider
    or for all, > 0 for cases that take seconds per call (default 30, 5 with ``quick``); under a
    deadline (``fit_to_deadline``) fewer, and the rows then carry ``rounds_planned``. Each call
    is timed by ``clocked``. Returns each provider's ``summary`` and its ``clock``; the garbage
    collector is off while timing."""
    counts = {name: (rounds.get(name, 0) if isinstance(rounds, dict) else rounds) for name in steps}
    targets = {name: clocked(fn, device) for name, fn in steps.items()}
    warm = {
        name: min(target() for _ in range(1 if counts[name] else 3))
        for name, target in targets.items()
    }
    planned = {name: n or (5 if quick else 30) for name, n in counts.items()}
    counts = fit_to_deadline(planned, warm)
    plan = {name: spread(n, BLOCKS) for name, n in counts.items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    collecting = gc.isenabled()
    gc.disable()
    try:
        for block in range(BLOCKS):
            shift = block % len(names)
            for name in names[shift:] + names[:shift]:
                target, n = targets[name], plan[name][block]
                if n and (counts[name] > BLOCKS or warm[name] < WARM_CALL_BELOW_S):
                    target()
                times[name] += [target() for _ in range(n)]
    finally:
        if collecting:
            gc.enable()
    clock = "cuda events" if device.type == "cuda" else "host"
    cut = {
        name: {"rounds_planned": planned[name]} for name in names if counts[name] < planned[name]
    }
    return {
        name: summary(times[name], [o for o in names if o != name])
        | {"clock": clock}
        | cut.get(name, {})
        for name in names
    }


def measure(fn: Callable[[], object], device: torch.device, quick: bool, rounds: int = 0) -> dict:
    """``measure_side_by_side`` of one step alone (a ceiling, a model's forward pass)."""
    return measure_side_by_side({"": fn}, device, quick, rounds)[""]


def copy_of(nbytes: int, device: torch.device) -> Callable[[], object]:
    """A copy moving ``nbytes`` (read plus write, in float32 words): the ``copy`` provider timed
    beside a memory-bound case, the ceiling of that case's size measured in its own minutes."""
    src = torch.randn(max(1, nbytes // 8), device=device)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def in_cuda_graph(run: Callable[[], object]) -> tuple[Callable[[], None], float]:
    """``run`` captured whole in one CUDA graph (no Python, no launch gaps: the strongest form of
    a pure-PyTorch sampler): its replay and the capture's seconds. ``run`` must read and write
    only tensors that outlive the graph, and never synchronize with the host."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()  # warm-up on a side stream, as capture requires
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    start = time.perf_counter()
    with torch.cuda.graph(graph):
        run()
    return graph.replay, time.perf_counter() - start


MATMUL_ROUNDS = 10  # ~0.2 s a product on a CPU


def matmul_of(device: torch.device, dtype: torch.dtype) -> tuple[Callable[[], object], int]:
    """A square product of random n x n matrices (8192 on a GPU, 2048 on a CPU) and n: the
    device's matrix throughput, 2 n^3 flops a call, the ceiling of the compute-bound samplers;
    timed alone (bench_copy.py) or beside a sampler case, its ceiling in its own minutes."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    out = torch.empty(n, n, device=device, dtype=dtype)
    return (lambda: torch.mm(a, b, out=out)), n


def adam_step(
    model: torch.nn.Module, loss: Callable[[], torch.Tensor], lr: float = 1e-3
) -> Callable[[], None]:
    """One Adam step on ``loss()``: the body every training-step benchmark times."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def step() -> None:
        value = loss()
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()

    return step


def flow_nll(model: FlowModel, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A flow's training loss on ``x`` (its mean negative log-likelihood), for ``adam_step``."""
    return lambda: -model.log_prob(x).mean()


def compile_reference(
    fn: Callable, **inductor_options: str | int | bool | Callable[..., Any]
) -> Callable:
    """``torch.compile(fn, options=inductor_options)`` for a "compile" provider, whole or not at
    all. Every benchmark case (shape, dtype, grad mode, flag) is a recompilation of the same
    function, and past dynamo's recompile limit (8) dynamo runs the function eagerly without an
    error: such rows would time eager code as "compile" (it did: the CPU affine_coupling fwd+bwd
    rows at 4096x1024, 0.93x eager). The limit is raised for the suite's cases, hitting it is an
    error, and a graph break too (fullgraph)."""
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), 64))
            break
    if hasattr(config, "fail_on_recompile_limit_hit"):
        config.fail_on_recompile_limit_hit = True
    return torch.compile(fn, dynamic=False, fullgraph=True, options=inductor_options or None)


# Relative tolerance of a provider's result against the reference computed in float32 (16-bit:
# the rounding of inputs, outputs and intermediates).
TOLERANCE = {torch.float64: 1e-4, torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 3e-2}


def check_close(what: str, actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype):
    """Before a provider is timed: its result ``actual`` equals ``expected`` (the reference's,
    in float32 where it can be) within ``TOLERANCE[dtype]`` of each value and of the largest
    value (sums and near-zero values), or AssertionError naming ``what``. A fast wrong kernel
    must not produce a speed claim."""
    tol = TOLERANCE[dtype]
    expected = expected.detach().float()
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(
        actual.detach().float(),
        expected,
        rtol=tol,
        atol=tol * scale,
        msg=lambda m: f"benchmark check: {what} differs from the reference: {m}",
    )


# A sampler's logits against the full forward pass at the images it drew (tests/test_pixelcnn.py):
# float32 kernels within 1e-4; 16-bit weights against the float32 forward of the same rounded
# weights (the CUDA sampler keeps its activations in the weights' dtype).
SAMPLER_TOLERANCE = {
    torch.float64: (1e-4, 1e-4),
    torch.float32: (1e-4, 1e-4),
    torch.float16: (1e-2, 2e-2),
    torch.bfloat16: (5e-2, 1e-1),
}


@torch.no_grad()
def check_sampler(
    model: PixelCNN | PixelRNN, batch: int, method: str = "fused", given: torch.Tensor | None = None
) -> None:
    """Before a sampler is timed: with fixed noise, the logits each value was drawn from equal
    the model's full forward pass at the images drawn (the design's oracle; float32 convolutions,
    no TF32), or AssertionError. One more sampler call and one forward pass. With ``given``
    (completions): the given levels are kept, and a call without logits (where the fused
    PixelCNN skips the rows given whole) draws the same images; one more sampler call."""
    param = next(model.parameters())
    shape = (batch, model.in_channels, *model.image_size)
    gen = torch.Generator(param.device).manual_seed(1)
    noise = torch.rand(shape, generator=gen, device=param.device)
    images, logits = model.sample(
        batch, method=method, noise=noise, given=given, return_logits=True
    )
    wide = param.dtype in (torch.float32, torch.float64)
    reference = model if wide else copy.deepcopy(model).float()
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        expected = reference(images)
    rtol, atol = SAMPLER_TOLERANCE[param.dtype]
    torch.testing.assert_close(
        logits.float(),
        expected.float(),
        rtol=rtol,
        atol=atol,
        msg=lambda m: f"benchmark check: {method} sampler logits differ from the forward: {m}",
    )
    if given is not None:
        kept = given >= 0
        assert torch.equal(images[kept], given[kept]), f"{method}: given levels not kept"
        without_logits = model.sample(batch, method=method, noise=noise, given=given)
        assert torch.equal(without_logits, images), f"{method}: completions depend on the logits"


def row(
    op: str,
    provider: str,
    mode: str,
    shape,
    dtype: torch.dtype,
    device: torch.device,
    timing: dict,
    nbytes: int,
) -> dict:
    """One results row; gbps counts the bytes the op must move at least (its floor,
    benchmarks/floors.py), None where there is none (``nbytes`` 0: a whole model, a
    compute-bound op)."""
    return {
        "op": op,
        "provider": provider,
        "mode": mode,
        "shape": list(shape),
        "dtype": str(dtype).removeprefix("torch."),
        "device": device_name(device),
        "device_type": device.type,
        **timing,
        "nbytes": nbytes or None,
        "gbps": nbytes / (timing["median_ms"] * 1e-3) / 1e9 if nbytes else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "driver": cuda_driver() if device.type == "cuda" else None,
        "commit": commit(),
        "csrc_tree": kernel_tree(),
        # CPU rows: the width of the samplers' products here (64 bytes with AVX-512).
        "cpu_matmul_vector_bytes": (
            pygen.build_info()["cpu_matmul_vector_bytes"] if device.type == "cpu" else None
        ),
        "run": RUN,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def add_speedups(rows: list[dict]) -> None:
    """speedup_vs_eager: the eager row of the same run/op/model/mode/shape/dtype/device over
    this one."""
    key = lambda r: (  # noqa: E731
        r.get("run"),
        r["op"],
        r.get("model"),
        r["mode"],
        tuple(r["shape"]),
        r["dtype"],
        r["device"],
    )
    eager = {key(r): r["median_ms"] for r in rows if r["provider"] == "eager"}
    for r in rows:
        base = eager.get(key(r))
        r["speedup_vs_eager"] = base / r["median_ms"] if base else None


def write_results(rows: list[dict], device: torch.device) -> Path:
    """Merge rows into results/<device>.json, replacing earlier rows of the same ops."""
    add_speedups(rows)
    path = results_file(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    ops = {r["op"] for r in rows}
    kept = []
    if path.exists():
        kept = [r for r in json.loads(path.read_text()) if r["op"] not in ops]
    path.write_text(json.dumps(kept + rows, indent=1) + "\n")
    return path
