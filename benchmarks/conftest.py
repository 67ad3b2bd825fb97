"""Collects the rows each benchmark records and writes them to benchmarks/results/ at the end."""

from __future__ import annotations

import pytest

from benchmarks.common import device_under_test, write_results

_ROWS: list[dict] = []


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true", help="few rounds and the small shapes only")


@pytest.fixture(scope="session")
def quick(request) -> bool:
    return request.config.getoption("--quick")


@pytest.fixture(scope="session")
def device():
    return device_under_test()


@pytest.fixture
def record():
    """record(row): keep one results row (see benchmarks.common.row)."""
    return _ROWS.append


def pytest_sessionfinish(session, exitstatus):
    if _ROWS:
        path = write_results(_ROWS, device_under_test())
        print(f"\nbenchmark results: {path}")
