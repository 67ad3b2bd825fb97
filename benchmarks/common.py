"""What every benchmark shares: the device under test, timing through pytest-benchmark, the
results schema (one row per op x provider x mode x shape x dtype) and where results are written."""

from __future__ import annotations

import datetime
import functools
import json
import os
import platform
import re
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch


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


def commit() -> str:
    """HEAD's short hash, "-dirty" when tracked files other than the run's outputs differ from
    it."""
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


def timed(fn: Callable[[], object], device: torch.device) -> Callable[[], None]:
    """fn, synchronized on CUDA so that the host clock sees the kernels finish."""
    if device.type != "cuda":
        return fn

    def run() -> None:
        fn()
        torch.cuda.synchronize(device)

    return run


def measure(
    benchmark, fn: Callable[[], object], device: torch.device, quick: bool, rounds: int = 0
) -> dict:
    """Time fn with pytest-benchmark (warm-up rounds first); return median/p20/p80 in ms.
    ``rounds`` > 0 sets a small number of rounds for cases that take seconds each."""
    target = timed(fn, device)
    for _ in range(1 if rounds else 3):  # warm-up outside the statistics: compilation, caches
        target()
    rounds = rounds or (5 if quick else 30)
    benchmark.pedantic(target, rounds=rounds, warmup_rounds=1, iterations=1)
    data = sorted(benchmark.stats.stats.data)
    q = statistics.quantiles(data, n=10, method="inclusive") if len(data) > 1 else data * 9
    return {
        "median_ms": statistics.median(data) * 1e3,
        "p20": q[1] * 1e3,
        "p80": q[7] * 1e3,
        "rounds": len(data),
    }


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
    """One results row; gbps counts the bytes the op must move at least (its floor)."""
    return {
        "op": op,
        "provider": provider,
        "mode": mode,
        "shape": list(shape),
        "dtype": str(dtype).removeprefix("torch."),
        "device": device_name(device),
        "device_type": device.type,
        **timing,
        "gbps": nbytes / (timing["median_ms"] * 1e-3) / 1e9,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "driver": cuda_driver() if device.type == "cuda" else None,
        "commit": commit(),
        "csrc_tree": kernel_tree(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def add_speedups(rows: list[dict]) -> None:
    """speedup_vs_eager: the eager row of the same op/model/mode/shape/dtype/device over this
    one."""
    key = lambda r: (r["op"], r.get("model"), r["mode"], tuple(r["shape"]), r["dtype"], r["device"])  # noqa: E731
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
