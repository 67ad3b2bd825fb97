"""Builds benchmarks/REPORT.md from benchmarks/results/*.json: per op and device, a table and a
PNG plot (benchmarks/plots/) of each provider's speedup over eager per case.

Every ratio between rows (vs eager, vs naive, vs graph) divides rows of the same run only. A
ceiling (copy bandwidth, matrix throughput, cluster step) may come from another run on the same
device: each table names the run of the ceilings it used. GB/s is recomputed from each row's
median time and its op's floor (benchmarks/floors.py), so that a corrected count reads here
without rerunning."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from benchmarks import floors
from benchmarks.common import add_speedups, results_dir


def load_rows() -> list[dict]:
    rows = []
    for path in sorted(results_dir().glob("*.json")):
        rows.extend(json.loads(path.read_text()))
    return rows


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def run_key(r: dict) -> tuple:
    """The run a row came from: its ``run`` id; rows written before runs had ids, by commit (a
    run's rows could carry HEAD with and without "-dirty") and kernel tree."""
    if r.get("run"):
        return (r["run"],)
    return ("legacy", r.get("commit", "").removesuffix("-dirty"), r.get("csrc_tree"))


def gbps(r: dict) -> float | None:
    """GB/s of a row: its op's floor (benchmarks/floors.py) over its median time; else the
    stored value; None (not 0) where there is no floor."""
    nbytes = floors.floor_bytes(r)
    if nbytes is None:
        return r.get("gbps") or None
    return nbytes / (r["median_ms"] * 1e-3) / 1e9


def _ceiling(rows: list[dict], device: str, op: str, keep=lambda r: True) -> list[dict]:
    return [r for r in rows if r["op"] == op and r["device"] == device and keep(r)]


def copy_row(rows: list[dict], device: str) -> dict | None:
    """The device's copy row (benchmarks/bench_copy.py) of the fastest copy, if one was run."""
    copies = [r for r in _ceiling(rows, device, "copy") if gbps(r)]
    return max(copies, key=lambda r: gbps(r) or 0.0) if copies else None


def copy_gbps(rows: list[dict], device: str) -> float | None:
    """The device's measured copy bandwidth (benchmarks/bench_copy.py), if it was run."""
    found = copy_row(rows, device)
    return gbps(found) if found else None


def matmul_tflops(rows: list[dict], device: str) -> dict[str, float]:
    """The device's measured matrix throughput per dtype (benchmarks/bench_copy.py)."""
    return {r["dtype"]: r["tflops"] for r in _ceiling(rows, device, "matmul")}


def step_row(rows: list[dict], device: str) -> dict | None:
    """The device's fastest dependent step across a thread-block cluster of 8 blocks
    (benchmarks/bench_copy.py), if it was run."""
    steps = _ceiling(rows, device, "cluster_step", lambda r: r["shape"][0] == 8)
    return min(steps, key=lambda r: r["us_per_step"]) if steps else None


def step_us(rows: list[dict], device: str) -> float | None:
    """The device's measured latency of one dependent step across a thread-block cluster of 8
    blocks (benchmarks/bench_copy.py), if it was run."""
    found = step_row(rows, device)
    return found["us_per_step"] if found else None


def provenance(ceilings: list[tuple[str, dict]], group: list[dict]) -> str:
    """One line naming each ceiling a table used and whether it came from the table's run."""
    runs = {run_key(r) for r in group}
    parts = []
    for what, r in ceilings:
        where = "this run" if run_key(r) in runs else "another run"
        parts.append(f"{what}: {where} (commit {r['commit']}, {r['timestamp']})")
    return "Ceilings: " + "; ".join(parts) + "." if parts else ""


def with_speedups(rows: list[dict]) -> list[dict]:
    """Copies of rows with speedup_vs_eager recomputed over the eager row of the same run."""
    copies = [r | {"run": run_key(r)} for r in rows]
    add_speedups(copies)
    return [r | {"run": orig.get("run")} for r, orig in zip(copies, rows, strict=True)]


def case_key(r: dict) -> tuple:
    """The case a row belongs to in its run: the rows that may be divided by each other."""
    return (run_key(r), r.get("model"), r["mode"], tuple(r["shape"]), r["dtype"])


def copies_beside(rows: list[dict]) -> dict[tuple, float]:
    """GB/s of each case's own copy (provider ``copy``, timed beside the case's providers)."""
    return {case_key(r): g for r in rows if r["provider"] == "copy" and (g := gbps(r))}


def table(rows: list[dict], copy: float | None = None) -> str:
    """Markdown table of rows of one op on one device, with % of copy bandwidth: over the copy
    timed beside the row's case where it has one (``copies_beside``), else over ``copy``."""
    lines = [
        "| mode | shape | dtype | provider | median ms | p20 | p80 | GB/s | % copy | vs eager |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    order = {
        "pygen": 0,
        "pygen (chunks)": 0.5,
        "compile": 1,
        "compile_eager_rng": 1.5,
        "eager": 2,
        "copy": 3,
    }
    rows = sorted(
        rows, key=lambda r: (r["mode"], r["shape"], r["dtype"], order.get(r["provider"], 9))
    )
    beside = copies_beside(rows)
    for r in with_speedups(rows):
        shape = "x".join(map(str, r["shape"]))
        rate, ceiling = gbps(r), beside.get(case_key(r), copy)
        lines.append(
            f"| {r['mode']} | {shape} | {r['dtype']} | {r['provider']} | {r['median_ms']:.3f} "
            f"| {r['p20']:.3f} | {r['p80']:.3f} | {_fmt(rate, '.1f')} "
            f"| {_fmt(100 * rate / ceiling if ceiling and rate else None, '.0f')} "
            f"| {_fmt(None if r['provider'] == 'copy' else r.get('speedup_vs_eager'), '.2f')} |"
        )
    return "\n".join(lines)


def sampler_table(
    rows: list[dict], matmul: dict[str, float] | None = None, step: float | None = None
) -> str:
    """Markdown table of a sampler's rows (they carry images_per_s and the model): throughput,
    arithmetic rate (and its share of the matrix throughput in that dtype: of the product timed
    beside its case, ``matmul_tflops_beside``, where the row has one, else the device's measured
    one, ``matmul``), the row's floor and its distance from it, and each row's speed over the naive
    sampler and the cached sampler in one CUDA graph of the same model and shape, measured in the
    same run (rows of another run are never divided). The floor is the larger of the arithmetic
    at that matrix throughput and the chain of dependent steps (``dependent_steps``) at the
    measured latency of one step across a cluster (``step``, microseconds); a GPU row without
    that measure shows the arithmetic as a lower bound of its floor (``>=``, ``<=`` its
    distance)."""
    matmul = matmul or {}
    lines = [
        "| model | mode | shape | dtype | provider | median ms | images/s | TFLOP/s | % mm "
        "| floor ms | x floor | vs naive | vs graph |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base: defaultdict[tuple, dict[str, float]] = defaultdict(dict)
    for r in rows:
        base[case_key(r)][r["provider"]] = r["median_ms"]
    order = lambda r: (r.get("model") or "", r["mode"], r["shape"][1:], r["shape"][0], r["dtype"])  # noqa: E731
    for r in sorted(rows, key=order):
        ref = base[case_key(r)]
        naive, graph = ref.get("naive"), ref.get("cached_graph")
        ceiling = r.get("matmul_tflops_beside") or matmul.get(r["dtype"])
        share = 100 * r["tflops"] / ceiling if ceiling and r.get("tflops") else None
        # On a GPU the chain is the floor at small batches: without its measure the arithmetic
        # alone is a lower bound of the floor, shown as one (">= floor", "<= x floor").
        floor, at_least, at_most = None, "", ""
        chain = step is not None and r.get("dependent_steps") is not None
        if ceiling and r.get("gflop_per_image"):
            floor = r["gflop_per_image"] * r["shape"][0] / ceiling
            if chain:
                floor = max(floor, r["dependent_steps"] * step / 1e3)
            elif r.get("device_type") == "cuda":
                at_least, at_most = ">=", "<="
        provider = r["provider"]
        if r.get("extrapolated_from_steps"):  # the naive sampler's minutes, scaled from a few steps
            provider += f" (timed over {r['extrapolated_from_steps']} steps, scaled to the image)"
        lines.append(
            f"| {r.get('model', '')} | {r['mode']} | {'x'.join(map(str, r['shape']))} "
            f"| {r['dtype']} | {provider} | {r['median_ms']:.2f} | {r['images_per_s']:.1f} "
            f"| {_fmt(r.get('tflops'), '.2f')} | {_fmt(share, '.1f')} "
            f"| {at_least}{_fmt(floor, '.2f')} "
            f"| {at_most}{_fmt(r['median_ms'] / floor if floor else None, '.1f')} "
            f"| {_fmt(naive / r['median_ms'] if naive else None, '.1f')} "
            f"| {_fmt(graph / r['median_ms'] if graph else None, '.2f')} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> Path | None:
    """Grouped bars: speedup over eager of each non-eager provider, one group per case."""
    rows = [r for r in rows if r.get("speedup_vs_eager") and r["provider"] not in ("eager", "copy")]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = sorted({(r["mode"], "x".join(map(str, r["shape"])), r["dtype"]) for r in rows})
    providers = sorted({r["provider"] for r in rows})
    width = 0.8 / len(providers)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(cases)), 3.8))
    for k, provider in enumerate(providers):
        speed = {
            (r["mode"], "x".join(map(str, r["shape"])), r["dtype"]): r["speedup_vs_eager"]
            for r in rows
            if r["provider"] == provider
        }
        xs = [i + k * width for i, case in enumerate(cases) if case in speed]
        ax.bar(xs, [speed[c] for c in cases if c in speed], width, label=provider)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))])
    ax.set_xticklabels(["\n".join(c) for c in cases], fontsize=7)
    ax.set_ylabel("speedup over eager")
    ax.set_title(f"{rows[0]['op']} on {rows[0]['device']}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _listed(values) -> str:
    return ", ".join(sorted({str(v) for v in values}))


def op_table(rows: list[dict], group: list[dict], device: str) -> tuple[str, list]:
    """The table of one op's rows (``group``) on ``device`` against the device's ceilings among
    ``rows``, and the (label, row) of each ceiling it used."""
    ceilings = []
    if all("images_per_s" in r for r in group):
        step = step_row(rows, device)
        # The device's product is the ceiling of the rows without one timed beside their case.
        dtypes = {
            r["dtype"] for r in group if r.get("tflops") and not r.get("matmul_tflops_beside")
        }
        ceilings += [
            (f"matmul {r['dtype']} {r['tflops']:.3g} TFLOP/s", r)
            for r in _ceiling(rows, device, "matmul")
            if r["dtype"] in dtypes
        ]
        matmul_beside = [r for r in group if r.get("matmul_tflops_beside")]
        if matmul_beside:
            rates = sorted(r["matmul_tflops_beside"] for r in matmul_beside)
            label = f"matmul float32 timed beside each case, {rates[0]:.3g}-{rates[-1]:.3g} TFLOP/s"
            ceilings.append((label, matmul_beside[0]))
        if step and any(r.get("dependent_steps") for r in group):
            ceilings.append((f"cluster step {step['us_per_step']:.3g} us", step))
        step_time = step["us_per_step"] if step else None
        return sampler_table(group, matmul_tflops(rows, device), step_time), ceilings
    beside = copies_beside(group)
    alone = any(gbps(r) and case_key(r) not in beside for r in group)
    copy = copy_row(rows, device) if alone else None
    if copy and group[0]["op"] != "copy":
        ceilings.append((f"copy {gbps(copy):.1f} GB/s", copy))
    return table(group, gbps(copy) if copy else None), ceilings


def timing_note(group: list[dict]) -> str:
    """How a table's providers were timed: side by side (``timed_with``, from
    benchmarks.common.measure_side_by_side) or, in rows written before that, one provider's
    rounds after another's, where a machine's drift between them moves the ratios; "" for a
    table of one provider. Rows whose rounds a run's deadline cut (``rounds_planned``) are
    counted."""
    cut = sum("rounds_planned" in r for r in group)
    cut_note = f" {cut} of {len(group)} rows with fewer rounds than planned (the run's deadline)."
    cut_note = cut_note if cut else ""
    if len({r["provider"] for r in group}) < 2:
        return cut_note.strip()
    old = sum("timed_with" not in r for r in group)
    if not old:
        return "Providers of a case timed side by side." + cut_note
    if old == len(group):
        return "Providers timed one after another (rows from before side-by-side timing)."
    return (
        f"{old} of {len(group)} rows timed one provider after another (before side-by-side)."
        + cut_note
    )


def build(rows: list[dict], plots_dir: Path | None = None) -> str:
    groups = defaultdict(list)
    for r in rows:
        groups[(r["op"], r["device"])].append(r)
    parts = [
        "# pygen benchmark report",
        "",
        "Generated by `python -m benchmarks.report` from `benchmarks/results/*.json`. "
        "GB/s counts the bytes each op must move at least (`benchmarks/floors.py`, over the "
        "median); `vs eager` is the eager reference's median over this row's, measured in the "
        "same run; `% copy` is GB/s over that of a copy of the same bytes timed beside the case "
        "(provider `copy`), or where a case has none, over the copy bandwidth measured on the "
        "same device (bench_copy.py); `% mm` a sampler's "
        "TFLOP/s over the matrix throughput in the same dtype, of a product timed beside the "
        "case where it has one, else measured on the same device; a sampler's "
        "`floor ms` is the larger of its arithmetic at that throughput and (GPU rows) its chain "
        "of dependent steps at the latency of one step across a thread-block cluster measured "
        "there (`cluster_step`), `x floor` its time over that floor. Ratios between rows "
        "(`vs eager`, `vs naive`, `vs graph`) divide rows of the same run only; each table "
        "names the run of the ceilings it used, which may be another run on that device. The "
        "providers of a case are timed side by side: their rounds in alternating blocks, so that "
        "a machine's drift over a case slows them alike.",
        "",
    ]
    for (op, device), group in sorted(groups.items()):
        stamps = sorted(r["timestamp"] for r in group)
        span = stamps[0] if stamps[0] == stamps[-1] else f"{stamps[0]} to {stamps[-1]}"
        runs = len({run_key(r) for r in group})
        parts += [
            f"## {op} on {device}",
            "",
            f"torch {_listed(r['torch'] for r in group)}, "
            f"CUDA {_listed(r.get('cuda') for r in group)}, "
            f"commit {_listed(r['commit'] for r in group)}, {span}"
            + (f" ({runs} runs)" if runs > 1 else "")
            + (f". {note}" if (note := timing_note(group)) else ""),
            "",
        ]
        body, ceilings = op_table(rows, group, device)
        line = provenance(ceilings, group)
        parts += [line, ""] if line else []
        parts += [body, ""]
        slug = re.sub(r"[^a-z0-9]+", "-", f"{op}-{device}".lower()).strip("-")
        png = plot(with_speedups(group), plots_dir / f"{slug}.png") if plots_dir else None
        if png:
            parts += [f"![{op} on {device}](plots/{png.name})", ""]
    return "\n".join(parts)


def main() -> None:
    report = results_dir().parent / "REPORT.md"
    report.write_text(build(load_rows(), report.parent / "plots"))
    print(f"wrote {report}")


if __name__ == "__main__":
    main()
