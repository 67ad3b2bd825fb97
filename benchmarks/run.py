"""Runs the benchmark suite and rebuilds the report.

Usage: ``python -m benchmarks.run [--quick] [--ops OP ...]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.common import device_under_test, results_file

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few rounds per case")
    parser.add_argument("--ops", nargs="*", help="ops to run (bench_<op>.py), default all")
    args = parser.parse_args(argv)
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
    rows = json.loads(results_file(device_under_test()).read_text())
    ran = {f.stem.removeprefix("bench_") for f in files}
    device = rows[0]["device"]
    for op in sorted(ran):
        group = [r for r in rows if r["op"] == op]
        if not group:
            continue
        body, ceilings = report.op_table(rows, group, device)
        print(f"\n{op} on {device}\n\n{report.provenance(ceilings, group)}\n\n{body}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
