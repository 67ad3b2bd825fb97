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


def test_sampler_ratios_take_the_baseline_of_their_own_model():
    rows = [
        _row("row", "cached", 50.0),
        _row("row", "naive", 200.0),
        _row("diagonal", "naive", 800.0),
        _row("diagonal", "cached_graph", 400.0),
    ]
    lines = {
        tuple(c.strip() for c in line.split("|")[1:6]): line
        for line in sampler_table(rows).splitlines()
    }
    cached = lines[("row", "sample", "16x1x8x8", "float32", "cached")].split("|")
    assert cached[9].strip() == "4.0"  # 200 / 50, not 800 / 50
    assert cached[10].strip() == ""  # no graph row of this model
    diagonal = lines[("diagonal", "sample", "16x1x8x8", "float32", "naive")].split("|")
    assert diagonal[9].strip() == "1.0" and diagonal[10].strip() == "0.50"


def test_speedup_over_eager_takes_the_eager_row_of_its_own_model():
    rows = [_row("a", "pygen", 10.0), _row("a", "eager", 30.0), _row("b", "eager", 90.0)]
    add_speedups(rows)
    assert [r["speedup_vs_eager"] for r in rows] == [3.0, 1.0, 1.0]
