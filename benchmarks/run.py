"""Runs the benchmark suite and rebuilds the report.

Usage: ``python -m benchmarks.run [--quick] [--ops OP ...] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.common import DEADLINE_ENV, RUN, device_under_test, results_file

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few rounds per case")
    parser.add_argument("--ops", nargs="*", help="ops to run (bench_<op>.py), default all")
    parser.add_argument(
        "--seconds",
        type=float,
        help="end within this many seconds: cases take fewer rounds (rows carry rounds_planned) "
        "and those past it are skipped, rather than a case cut mid-way losing its rows",
    )
    args = parser.parse_args(argv)
    if args.seconds is not None:
        os.environ[DEADLINE_ENV] = str(time.time() + args.seconds)
    files = sorted(HERE.glob("bench_*.py"))
    if args.ops:
        files = [f for f in files if f.stem.removeprefix("bench_") in args.ops]
        if not files:
            parser.error(f"no benchmark for {args.ops}")
    pytest_args = [
        *map(str, files),
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "python_files=bench_*.py",
        "--rootdir",
        str(HERE.parent),
    ]
    if args.quick:
        pytest_args.append("--quick")
    code = pytest.main(pytest_args)
    if code != 0:
        return int(code)
    report.main()
    path = results_file(device_under_test())
    rows = json.loads(path.read_text()) if path.exists() else []
    ran = {f.stem.removeprefix("bench_") for f in files}
    for op in sorted(ran):
        # This run's rows only: an op whose every case a deadline skipped keeps its old rows.
        group = [r for r in rows if r["op"] == op and r.get("run") == RUN]
        if not group:
            continue
        device = group[0]["device"]
        body, ceilings = report.op_table(rows, group, device)
        print(f"\n{op} on {device}\n\n{report.provenance(ceilings, group)}\n\n{body}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
