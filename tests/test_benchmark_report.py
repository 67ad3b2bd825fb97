"""The benchmark report's arithmetic (each ratio divides rows of the same model and case), the
checks before timing, and the timing of a case's providers side by side."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch

from benchmarks import common, floors
from benchmarks import conftest as bench_conftest
from benchmarks.common import (
    RUN,
    add_speedups,
    check_close,
    check_sampler,
    compile_reference,
    measure,
    measure_side_by_side,
    row,
)
from benchmarks.report import build, gbps, run_key, sampler_table, table, timing_note


@pytest.fixture(autouse=True)
def no_deadline(monkeypatch):
    """These tests count rounds: a deadline in the environment (scripts/gpu_check.sh sets one
    for every step) would scale them."""
    monkeypatch.delenv(common.DEADLINE_ENV, raising=False)
    common.set_cases_left(1)


def _row(model, provider, median_ms, mode="sample", shape=(16, 1, 8, 8)):
    return {
        "op": "pixelrnn",
        "model": model,
        "provider": provider,
        "mode": mode,
        "shape": list(shape),
        "dtype": "float32",
        "device": "cpu",
        "median_ms": median_ms,
        "images_per_s": shape[0] / (median_ms * 1e-3),
    }


def _cells(markdown: str) -> list[dict[str, str]]:
    """The rows of a markdown table as {header: cell}."""
    header, _, *lines = markdown.splitlines()
    names = [c.strip() for c in header.strip("|").split("|")]
    return [
        dict(zip(names, (c.strip() for c in line.strip("|").split("|")), strict=True))
        for line in lines
    ]


def test_sampler_ratios_take_the_baseline_of_their_own_model():
    rows = [
        _row("row", "cached", 50.0),
        _row("row", "naive", 200.0),
        _row("diagonal", "naive", 800.0),
        _row("diagonal", "cached_graph", 400.0),
    ]
    cells = {(c["model"], c["provider"]): c for c in _cells(sampler_table(rows))}
    assert cells["row", "cached"]["vs naive"] == "4.0"  # 200 / 50, not 800 / 50
    assert cells["row", "cached"]["vs graph"] == ""  # no graph row of this model
    assert cells["diagonal", "naive"]["vs naive"] == "1.0"
    assert cells["diagonal", "naive"]["vs graph"] == "0.50"


def test_sampler_arithmetic_rate_over_the_matrix_throughput_of_its_dtype():
    rows = [_row("row", "fused", 10.0) | {"tflops": 0.5}, _row("row", "naive", 90.0)]
    cells = {
        c["provider"]: c for c in _cells(sampler_table(rows, {"float32": 2.0, "bfloat16": 8.0}))
    }
    assert cells["fused"]["% mm"] == "25.0" and cells["naive"]["% mm"] == ""
    assert _cells(sampler_table(rows))[0]["% mm"] == ""  # no ceiling measured
    # A product timed beside the case is its ceiling, before the device's.
    beside = [rows[0] | {"matmul_tflops_beside": 1.0}, rows[1]]
    assert _cells(sampler_table(beside, {"float32": 2.0}))[0]["% mm"] == "50.0"


def test_sampler_floor_is_the_larger_of_arithmetic_and_chain_and_a_bound_without_the_chain():
    # 16 images of 0.5 GFLOP at 2 TFLOP/s: 4 ms of arithmetic; 1000 steps at 10 us: 10 ms.
    work = {"gflop_per_image": 0.5, "tflops": 1.0, "dependent_steps": 1000}
    gpu = _row("row", "fused", 20.0) | work | {"device_type": "cuda"}
    cells = _cells(sampler_table([gpu], {"float32": 2.0}, step=10.0))[0]
    assert cells["floor ms"] == "10.00" and cells["x floor"] == "2.0"
    cells = _cells(sampler_table([gpu], {"float32": 2.0}, step=1.0))[0]
    assert cells["floor ms"] == "4.00" and cells["x floor"] == "5.0"  # 1000 steps: 1 ms
    # No chain measure: the arithmetic is a lower bound of the floor.
    cells = _cells(sampler_table([gpu], {"float32": 2.0}))[0]
    assert cells["floor ms"] == ">=4.00" and cells["x floor"] == "<=5.0"
    cpu = _row("row", "fused", 20.0) | work | {"device_type": "cpu"}
    assert _cells(sampler_table([cpu], {"float32": 2.0}))[0]["floor ms"] == "4.00"


def test_speedup_over_eager_takes_the_eager_row_of_its_own_model():
    rows = [_row("a", "pygen", 10.0), _row("a", "eager", 30.0), _row("b", "eager", 90.0)]
    add_speedups(rows)
    assert [r["speedup_vs_eager"] for r in rows] == [3.0, 1.0, 1.0]


# ---------------------------------------------------------------- floors, runs and ceilings


def _mem_row(provider, median_ms, run="a", mode="fwd+bwd (channel mask)", **extra):
    return {
        "op": "affine_coupling",
        "provider": provider,
        "mode": mode,
        "shape": [4, 2, 8, 8],
        "dtype": "float32",
        "device": "cpu",
        "median_ms": median_ms,
        "p20": median_ms,
        "p80": median_ms,
        "run": run,
        "commit": "abc1234",
        "torch": "2.14.1",
        "timestamp": "2026-11-28T00:00:00+00:00",
    } | extra


def test_floor_bytes_counted_by_hand():
    # reparam+KL (rows 256, dim 64, float32): forward mu, logvar read, z written + kl per row;
    # forward+backward also grad_z, mu, logvar read, grad_mu, grad_logvar written, grad_kl read.
    assert floors.reparam_kl_bytes((256, 64), "float32", "fwd") == (3 * 256 * 64 + 256) * 4
    assert floors.reparam_kl_bytes((256, 64), "float32", "fwd+bwd") == (8 * 256 * 64 + 2 * 256) * 4
    # A mode's suffix names the inputs' layout, not other bytes; left on, it is an error.
    row = {"op": "reparam_kl", "mode": "fwd (encoder halves)", "shape": [256, 64]}
    assert floors.floor_bytes({**row, "dtype": "float32"}) == (3 * 256 * 64 + 256) * 4
    with pytest.raises(ValueError, match="mode must be"):
        floors.reparam_kl_bytes((256, 64), "float32", "fwd (encoder halves)")
    for layout in (floors.ENCODER_HALVES, floors.STACKED):  # the same bytes from one tensor
        row = {
            "op": "reparam_kl",
            "mode": "fwd+bwd" + layout,
            "shape": [256, 64],
            "dtype": "float32",
        }
        assert floors.floor_bytes(row) == (8 * 256 * 64 + 2 * 256) * 4
    n = 4 * 2 * 8 * 8
    # Checkerboard: x, log_scale, shift read, y written; backward grad_y, x, log_scale read and
    # three gradients written. Channel mask: the kept half reads no log_scale/shift (forward),
    # no x/log_scale (backward, where grad_x = grad_y).
    assert floors.affine_coupling_bytes((4, 2, 8, 8), "bfloat16", "fwd") == 4 * n * 2
    assert floors.affine_coupling_bytes((4, 2, 8, 8), "float32", "fwd+bwd") == 10 * n * 4
    assert floors.affine_coupling_bytes((4, 2, 8, 8), "float32", "fwd", "channel") == 3 * n * 4
    channel = floors.affine_coupling_bytes((4, 2, 8, 8), "float32", "fwd+bwd", "channel")
    assert channel == (3 + 1 + 0.5 + 0.5 + 3) * n * 4
    assert floors.floor_bytes(_mem_row("pygen", 1.0)) == channel
    for layout in (floors.CHANNELS_LAST, floors.STACKED, floors.STACKED_CHANNELS_LAST):
        row = {"op": "affine_coupling", "mode": "fwd+bwd" + layout, "shape": [4, 2, 8, 8]}
        assert floors.floor_bytes({**row, "dtype": "float32"}) == 10 * n * 4


def test_report_recomputes_gb_per_s_from_the_floor_and_leaves_rows_without_one_empty():
    stale = _mem_row("pygen", 1e-3, gbps=123.0)  # a count since corrected
    model = _mem_row("pygen", 2.0, mode="realnvp_train_step", gbps=0.0)
    cells = {c["mode"]: c for c in _cells(table([stale, model]))}
    assert cells["fwd+bwd (channel mask)"]["GB/s"] == f"{8 * 512 * 4 / 1e-6 / 1e9:.1f}"
    assert cells["realnvp_train_step"]["GB/s"] == ""  # no floor: empty, not "0.0"


def test_report_never_divides_rows_of_different_runs():
    rows = [_mem_row("pygen", 1.0, run="a"), _mem_row("eager", 4.0, run="b")]
    assert {c["vs eager"] for c in _cells(table(rows))} == {"", "1.00"}
    rows.append(_mem_row("eager", 2.0, run="a"))
    cells = {(c["provider"], c["median ms"]): c for c in _cells(table(rows))}
    assert cells["pygen", "1.000"]["vs eager"] == "2.00"  # its own run's eager, not 4.0
    samplers = [_row("m", "fused", 10.0) | {"run": "a"}, _row("m", "naive", 90.0) | {"run": "b"}]
    assert _cells(sampler_table(samplers))[0]["vs naive"] == ""


def test_rows_written_before_run_ids_are_one_run_per_commit_with_or_without_dirty():
    old = {k: v for k, v in _mem_row("pygen", 1.0).items() if k != "run"}
    assert run_key(old) == run_key(old | {"commit": "abc1234-dirty"})
    assert run_key(old) != run_key(old | {"commit": "def5678"})


def _device_copy(run: str, commit: str = "abc1234") -> dict:
    """A bench_copy row of 2^20 float32 values in 1 ms: 8.4 GB/s."""
    return _mem_row("torch", 1.0, run=run, commit=commit) | {
        "op": "copy",
        "mode": "copy",
        "shape": [2**20],
        "timestamp": "2026-11-27T00:00:00+00:00",
    }


def test_report_names_the_run_of_the_copy_ceiling_it_used():
    op = _mem_row("pygen", 1.0, run="a")
    text = build([op, _device_copy("b", commit="def5678")])
    assert "Ceilings: copy 8.4 GB/s: another run (commit def5678" in text
    assert "Ceilings: copy 8.4 GB/s: this run" in build([op, _device_copy("a")])


def test_percent_of_copy_takes_the_copy_timed_beside_the_case_where_it_has_one():
    pygen, beside = _mem_row("pygen", 1.0), _mem_row("copy", 0.5)  # the copy twice as fast
    cells = {c["provider"]: c for c in _cells(table([pygen, beside], copy=1e-9))}
    assert cells["pygen"]["% copy"] == "50" and cells["copy"]["% copy"] == "100"
    other_case = _mem_row("pygen", 1.0, mode="fwd")
    assert _cells(table([other_case, beside], copy=gbps(other_case) * 4))[0]["% copy"] == "25"
    assert "Ceilings: copy" not in build([pygen, beside, _device_copy("a")])  # its own copy
    assert "Ceilings: copy 8.4 GB/s: this run" in build([other_case, beside, _device_copy("a")])


def test_a_copy_row_has_no_speedup_over_eager_and_an_extrapolated_row_says_so():
    rows = [_mem_row("pygen", 1.0), _mem_row("copy", 0.5), _mem_row("eager", 4.0)]
    cells = {c["provider"]: c for c in _cells(table(rows))}
    assert cells["pygen"]["vs eager"] == "4.00" and cells["copy"]["vs eager"] == ""
    naive = _row("row", "naive", 200.0) | {"extrapolated_from_steps": 2}
    provider = _cells(sampler_table([naive]))[0]["provider"]
    assert provider == "naive (timed over 2 steps, scaled to the image)"


def test_a_row_without_a_byte_floor_has_no_gb_per_s_and_carries_its_run():
    timing = {"median_ms": 2.0, "p20": 2.0, "p80": 2.0, "rounds": 5}
    r = row("gan", "wgan", "train_step", (4, 1), torch.float32, torch.device("cpu"), timing, 0)
    assert r["gbps"] is None and r["nbytes"] is None
    assert r["run"] == RUN and r["python"]
    r = row("copy", "torch", "copy", (8,), torch.float32, torch.device("cpu"), timing, 64)
    assert r["gbps"] == 64 / 2e-3 / 1e9


# ---------------------------------------------------------------- checks before timing


def test_check_close_rejects_a_wrong_result_and_takes_16_bit_rounding():
    want = torch.linspace(-3, 3, 101)
    check_close("ok", want.to(torch.bfloat16), want, torch.bfloat16)
    wrong = want.clone()
    wrong[-1] += 0.01  # one element off (a vector tail, say)
    with pytest.raises(AssertionError, match="benchmark check: tail"):
        check_close("tail", wrong, want, torch.float32)


def test_check_sampler_passes_the_fused_sampler_and_rejects_wrong_logits(monkeypatch):
    from pygen.models import PixelCNN

    torch.manual_seed(0)
    model = PixelCNN(n_levels=5, n_layers=2, hidden=8, kernel_size=3, image_size=4).eval()
    check_sampler(model, 2)
    sample = model.sample

    def off_by_a_bit(*args, **kwargs):
        images, logits = sample(*args, **kwargs)
        return images, logits + 1e-3

    monkeypatch.setattr(model, "sample", off_by_a_bit)
    with pytest.raises(AssertionError, match="fused sampler logits"):
        check_sampler(model, 2)


def test_compile_provider_cannot_fall_back_to_eager():
    # Past dynamo's recompile limit (8) a compiled function runs eagerly without an error: the
    # CPU affine_coupling fwd+bwd "compile" rows at 4096x1024 timed eager code (0.93x eager).
    # The config's own patch restores it (monkeypatch's undo removes dynamo's config entries).
    config = torch._dynamo.config
    with config.patch(recompile_limit=8, fail_on_recompile_limit_hit=False):
        compile_reference(lambda x: x + 1)
        assert config.recompile_limit >= 64 and config.fail_on_recompile_limit_hit


# ---------------------------------------------------------------- timing side by side


@pytest.mark.parametrize("c_is_slow", [False, True])
def test_providers_alternate_block_by_block_after_their_warm_up(monkeypatch, c_is_slow):
    if c_is_slow:  # a call of seconds: no untimed call before a block of one round
        monkeypatch.setattr(common, "WARM_CALL_BELOW_S", 0.0)
    calls = []
    steps = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    timings = measure_side_by_side(steps, torch.device("cpu"), quick=False, rounds={"c": 3})
    assert "".join(calls[:7]) == "aaabbbc"  # warm-up: 3 calls, 1 for a slow provider
    expected = ""
    for block, order in enumerate(["abc", "bca", "cab", "abc", "bca"]):
        for name in order:
            # 30 rounds in blocks of 6, each after one untimed call; c's 3 rounds: 0 1 0 1 1,
            # each after an untimed call unless c is slow.
            c_calls = [0, 1, 0, 1, 1][block] * (1 if c_is_slow else 2)
            expected += "c" * c_calls if name == "c" else name * 7
    assert "".join(calls[7:]) == expected
    assert [timings[name]["rounds"] for name in "abc"] == [30, 30, 3]
    assert timings["a"]["timed_with"] == ["b", "c"]
    assert measure(lambda: 0, torch.device("cpu"), quick=True)["rounds"] == 5


def test_a_machine_that_slows_down_midway_slows_every_provider_alike(monkeypatch):
    # A fake clock: provider a costs 2 units and b 1, and everything takes twice as long from the
    # third block on. Timed one after the other, a would meet the fast stretch and b the slow one
    # (ratio 1); side by side each has 12 of its 30 rounds fast and 18 slow: the ratio stays 2.
    clock, calls = [0.0], [0]
    slow_from = 2 * 3 + 2 * 2 * 7  # warm-ups, then two blocks of (1 + 6) calls per provider

    def step(cost):
        def run():
            calls[0] += 1
            clock[0] += cost * (2 if calls[0] > slow_from else 1)

        return run

    monkeypatch.setattr(common, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    timings = measure_side_by_side({"a": step(2.0), "b": step(1.0)}, torch.device("cpu"), False)
    assert calls[0] == 2 * (3 + 5 * 7)
    assert timings["a"]["median_ms"] == pytest.approx(2 * timings["b"]["median_ms"])
    assert timings["b"]["median_ms"] == pytest.approx(2e3) and timings["b"]["p20"] == 1e3


def test_report_says_whether_a_tables_providers_were_timed_side_by_side():
    header = lambda rows: build(rows).split("## ")[1].splitlines()[2]  # noqa: E731
    pygen, eager = _mem_row("pygen", 1.0), _mem_row("eager", 2.0)
    beside = [pygen | {"timed_with": ["eager"]}, eager | {"timed_with": ["pygen"]}]
    assert header(beside).endswith("Providers of a case timed side by side.")
    assert "timed one after another" in header([pygen, eager])
    assert "1 of 2 rows" in header([beside[0], eager])
    assert header([pygen, pygen | {"run": "b"}]).endswith("(2 runs)")  # one provider: no note


def test_a_gpu_call_is_timed_by_cuda_events_in_seconds(monkeypatch):
    # No GPU here: CUDA events that read a fake stream clock (milliseconds, as torch's do). The
    # time between the events is the call's; the host's wait for the end event is not.
    stream_ms = [0.0]

    class Event:
        def __init__(self, enable_timing: bool) -> None:
            assert enable_timing

        def record(self) -> None:
            self.at = stream_ms[0]

        def synchronize(self) -> None:
            stream_ms[0] += 5.0  # the host's wait: outside the events

        def elapsed_time(self, end: Event) -> float:
            return end.at - self.at

    monkeypatch.setattr(torch.cuda, "Event", Event)

    def kernel() -> None:
        stream_ms[0] += 2.0

    assert common.clocked(kernel, torch.device("cuda"))() == pytest.approx(2e-3)
    timing = measure(kernel, torch.device("cuda"), quick=True)
    assert timing["median_ms"] == pytest.approx(2.0) and timing["clock"] == "cuda events"


# ---------------------------------------------------------------- a run's deadline


def test_rounds_fit_the_time_left_before_the_deadline_leaving_some_to_later_cases(monkeypatch):
    counts, per_call = {"a": 30, "b": 3}, {"a": 0.1, "b": 1.0}  # (30 + 5) x 0.1 + 3 x 1 = 6.5 s
    assert common.fit_to_deadline(counts, per_call) == counts  # no deadline
    monkeypatch.setenv(common.DEADLINE_ENV, str(time.time() + 100))
    assert common.fit_to_deadline(counts, per_call) == counts  # it fits
    monkeypatch.setenv(common.DEADLINE_ENV, str(time.time() + 3.25))
    fitted = common.fit_to_deadline(counts, per_call)
    assert fitted["b"] == 1 and 13 <= fitted["a"] <= 15  # about half of each
    common.set_cases_left(3)  # two later cases keep 2 s each, but this one gets a third at least
    monkeypatch.setenv(common.DEADLINE_ENV, str(time.time() + 9.75))
    assert common.fit_to_deadline(counts, per_call) == {"a": 26, "b": 2}  # 5.75 s of 6.5
    monkeypatch.setenv(common.DEADLINE_ENV, str(time.time() + 3.3))
    assert common.fit_to_deadline(counts, per_call) == {"a": 5, "b": 1}  # 1.1 s: a third
    monkeypatch.setenv(common.DEADLINE_ENV, str(time.time() - 1))
    assert common.fit_to_deadline(counts, per_call) == {"a": 1, "b": 1}  # past it: one each


def test_a_case_near_the_deadline_takes_fewer_rounds_and_says_so(monkeypatch):
    clock = [0.0]

    def step() -> None:
        clock[0] += 0.1

    fake = SimpleNamespace(perf_counter=lambda: clock[0], time=time.time)
    monkeypatch.setattr(common, "time", fake)
    monkeypatch.setenv(common.DEADLINE_ENV, str(time.time() + 1.75))
    timings = measure_side_by_side({"a": step, "b": step}, torch.device("cpu"), quick=False)
    # 2 x (30 + 5) calls of 0.1 s planned, 1.75 s left: a quarter, 7 rounds each, in every block.
    for timing in timings.values():
        assert (timing["rounds"], timing["rounds_planned"]) == (7, 30)
    group = [
        row("x", p, "fwd", (1,), torch.float32, torch.device("cpu"), t, 0)
        for p, t in timings.items()
    ]
    assert timing_note(group).endswith(
        "2 of 2 rows with fewer rounds than planned (the run's deadline)."
    )
    monkeypatch.setenv(common.DEADLINE_ENV, str(time.time() + 100))
    assert "rounds_planned" not in measure(step, torch.device("cpu"), quick=True)


def test_cases_past_the_deadline_are_skipped_and_each_case_knows_how_many_are_left(monkeypatch):
    items = [SimpleNamespace(name=f"case{i}", session=None) for i in range(4)]
    session = SimpleNamespace(items=items)
    for item in items:
        item.session = session
    bench_conftest.pytest_runtest_setup(items[1])
    assert common._cases_left[0] == 3
    monkeypatch.setenv(common.DEADLINE_ENV, str(time.time() - 1))
    with pytest.raises(pytest.skip.Exception, match="deadline"):
        bench_conftest.pytest_runtest_setup(items[2])


def test_tuning_run_times_a_cases_variants_side_by_side(monkeypatch, tmp_path):
    # The CUDA tuning run's case on the CPU kernel (the variants' knobs act on CUDA only): every
    # variant is checked, then timed beside the others.
    from benchmarks import tune_pixelcnn

    monkeypatch.setenv("PYGEN_RESULTS_DIR", str(tmp_path))
    rows = tune_pixelcnn.tune("digits8", 2, torch.float32, torch.device("cpu"))
    labels = [label for label, _ in tune_pixelcnn.variants(2)]
    assert [r["provider"] for r in rows] == labels
    for r in rows:
        assert sorted([r["provider"], *r["timed_with"]]) == sorted(labels)
        assert r["rounds"] == 5 and r["op"] == "pixelcnn_tuning" and r["images_per_s"] > 0
