"""The benchmark report's arithmetic: each ratio divides rows of the same model and case."""

from __future__ import annotations

from benchmarks.common import add_speedups
from benchmarks.report import sampler_table


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


def test_sampler_floor_is_the_larger_of_arithmetic_and_chain_and_needs_the_chain_on_a_gpu():
    # 16 images of 0.5 GFLOP at 2 TFLOP/s: 4 ms of arithmetic; 1000 steps at 10 us: 10 ms.
    work = {"gflop_per_image": 0.5, "tflops": 1.0, "dependent_steps": 1000}
    gpu = _row("row", "fused", 20.0) | work | {"device_type": "cuda"}
    cells = _cells(sampler_table([gpu], {"float32": 2.0}, step=10.0))[0]
    assert cells["floor ms"] == "10.00" and cells["x floor"] == "2.0"
    cells = _cells(sampler_table([gpu], {"float32": 2.0}, step=1.0))[0]
    assert cells["floor ms"] == "4.00" and cells["x floor"] == "5.0"  # 1000 steps: 1 ms
    assert _cells(sampler_table([gpu], {"float32": 2.0}))[0]["floor ms"] == ""  # no chain measure
    cpu = _row("row", "fused", 20.0) | work | {"device_type": "cpu"}
    assert _cells(sampler_table([cpu], {"float32": 2.0}))[0]["floor ms"] == "4.00"


def test_speedup_over_eager_takes_the_eager_row_of_its_own_model():
    rows = [_row("a", "pygen", 10.0), _row("a", "eager", 30.0), _row("b", "eager", 90.0)]
    add_speedups(rows)
    assert [r["speedup_vs_eager"] for r in rows] == [3.0, 1.0, 1.0]
