"""scripts/gpu_check.sh without a GPU: its flow, run on a copy of the scripts and sources with
stand-ins for python, nvidia-smi, compute-sanitizer and ncu that log how they were called. A GPU
lease is minutes long, so the script's own mistakes (a step left out, a carried build used for
other sources, a deadline not kept) must show here, not there."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SO_NAME = "_C.cpython-312-x86_64-linux-gnu.so"
# The stand-ins: each logs its name, arguments and the benchmark deadline it was given. python
# "builds" the extension on pip install and fails the test suite when FAKE_TESTS_FAIL is set.
FAKE_PYTHON = f"""#!/usr/bin/env bash
echo "python $* [deadline=${{PYGEN_BENCH_DEADLINE:-}}]" >>"$FAKE_LOG"
case "$*" in
  "-m pip install --no-build-isolation --no-deps -e .") echo built >pygen/{SO_NAME} ;;
  "-m pytest tests "*) [ -z "${{FAKE_TESTS_FAIL:-}}" ] ;;
esac
"""
FAKE_TOOL = """#!/usr/bin/env bash
[ "$1" = --help ] && { echo "  --kernel-name arg"; exit 0; }
echo "$(basename "$0") $*" >>"$FAKE_LOG"
"""


def run_gpu_check(tree: Path, out: Path, seconds: int = 120, **env: str) -> tuple[int, str, list]:
    """gpu_check.sh on ``tree`` with the stand-ins; its exit code, its log, the calls made."""
    calls = tree / "calls.log"
    calls.write_text("")
    environment = {
        **os.environ,
        "PATH": f"{tree / 'fakes'}:{os.environ['PATH']}",
        "PYTHON": str(tree / "fakes" / "python"),
        "FAKE_LOG": str(calls),
        "GPU_CHECK_SECONDS": str(seconds),
        **env,
    }
    environment.pop("PYGEN_BENCH_DEADLINE", None)
    done = subprocess.run(
        ["bash", "scripts/gpu_check.sh", str(out)],
        cwd=tree,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, (out / "gpu_check.log").read_text(), calls.read_text().splitlines()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The scripts and the sources the build's stamp covers, and the stand-ins."""
    if shutil.which("gzip") is None or shutil.which("timeout") is None:
        pytest.skip("needs gzip and timeout")
    repo = tmp_path / "repo"
    for name in ("scripts", "csrc"):
        shutil.copytree(ROOT / name, repo / name)
    for name in ("CMakeLists.txt", "setup.py"):
        shutil.copy(ROOT / name, repo / name)
    (repo / "pygen").mkdir()
    (repo / "benchmarks" / "results").mkdir(parents=True)
    fakes = repo / "fakes"
    fakes.mkdir()
    for name, text in [("python", FAKE_PYTHON)] + [
        (tool, FAKE_TOOL) for tool in ("nvidia-smi", "compute-sanitizer", "ncu")
    ]:
        (fakes / name).write_text(text)
        (fakes / name).chmod(stat.S_IRWXU)
    return repo


def steps(log: str) -> list[str]:
    return [line.removeprefix("=== ") for line in log.splitlines() if line.startswith("=== ")]


def test_a_first_call_builds_checks_sanitizes_benchmarks_and_returns_its_build(tree, tmp_path):
    code, log, calls = run_gpu_check(tree, tmp_path / "out")
    assert code == 0, log
    assert steps(log)[:4] == ["build", "info", "nvidia-smi", "tests"]
    for step in (
        "tune_pixelcnn",
        "benchmarks (PixelRNN sampler, MADE solve)",
        "benchmarks (ceilings, PixelCNN sampler)",
        "benchmarks (memory-bound ops)",
        "gpu_profile",
    ):
        assert step in steps(log), step
    # Six sanitizer runs, each on pygen's kernels only, each log joined to the main one.
    sanitized = [c for c in calls if c.startswith("compute-sanitizer")]
    assert len(sanitized) == 6 and all("--kernel-name kns=pygen" in c for c in sanitized)
    assert sum(line.startswith("=== compute-sanitizer") for line in log.splitlines()) == 6
    assert not list((tmp_path / "out").glob("compute-sanitizer*.log"))
    # The benchmarks get a deadline before their step's limit.
    bench = [c for c in calls if "-m benchmarks.run" in c or "benchmarks.tune_pixelcnn" in c]
    assert len(bench) == 4 and all("[deadline=]" not in c for c in bench)
    # The build comes back with the stamp of its sources, for a later call to carry.
    stamp = subprocess.run(
        ["bash", "scripts/source_stamp.sh"], cwd=tree, capture_output=True, text=True
    )
    assert (tmp_path / "out" / "source.sha256").read_text() == stamp.stdout
    assert (tmp_path / "out" / f"{SO_NAME}.gz").exists()


def carry(tree: Path, out: Path) -> None:
    """A call's returned build as the next call's .prebuilt/, and the tree without its build."""
    prebuilt = tree / ".prebuilt"
    prebuilt.mkdir()
    for name in (f"{SO_NAME}.gz", "source.sha256"):
        shutil.copy(out / name, prebuilt / name)
    (tree / "pygen" / SO_NAME).unlink()


def test_a_carried_build_is_used_only_for_the_sources_it_was_built_from(tree, tmp_path):
    run_gpu_check(tree, tmp_path / "first")
    carry(tree, tmp_path / "first")
    code, log, calls = run_gpu_check(tree, tmp_path / "carried")
    assert code == 0 and "carried build used" in log and "build" not in steps(log)
    assert (tree / "pygen" / SO_NAME).read_text() == "built\n"  # unpacked in place
    assert not any("pip install" in c for c in calls)
    (tree / "csrc" / "bindings.cpp").write_text("// changed\n", encoding="utf-8")
    code, log, calls = run_gpu_check(tree, tmp_path / "changed")
    assert code == 0 and "carried build ignored: built from other sources" in log
    assert steps(log)[0] == "build" and any("pip install" in c for c in calls)


def test_a_failed_step_fails_the_run_and_the_deadline_skips_what_is_left(tree, tmp_path):
    code, log, _ = run_gpu_check(tree, tmp_path / "out", FAKE_TESTS_FAIL="1")
    assert code == 1 and "FAILED tests (exit 1)" in log
    assert "benchmarks (memory-bound ops)" in steps(log)  # the run goes on after a failure
    code, log, calls = run_gpu_check(tree, tmp_path / "late", seconds=15)
    assert code == 0 and "SKIPPED build: the run's deadline" in log
    assert "SKIPPED benchmarks (memory-bound ops): the run's deadline" in log
    assert not any("benchmarks" in c for c in calls)
