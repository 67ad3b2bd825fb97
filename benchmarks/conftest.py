"""Collects the rows each benchmark records and writes them to benchmarks/results/ as they come
(a run cut short, say at the end of a GPU lease, keeps what it measured)."""

from __future__ import annotations

import pytest

from benchmarks.common import device_under_test, past_deadline, set_cases_left, write_results

_ROWS: list[dict] = []


def pytest_addoption(parser):
    parser.addoption(
        "--quick", action="store_true", help="few rounds (5 per provider), the same cases"
    )


@pytest.fixture(scope="session")
def quick(request) -> bool:
    return request.config.getoption("--quick")


@pytest.fixture(scope="session")
def device():
    return device_under_test()


@pytest.fixture
def record():
    """record(row): keep one results row (see benchmarks.common.row) and rewrite the file."""

    def keep(row: dict) -> None:
        _ROWS.append(row)
        write_results(_ROWS, device_under_test())

    return keep


def pytest_sessionstart(session):
    _ROWS.clear()  # a second run in one process (pygen bench twice) starts afresh


def pytest_runtest_setup(item):
    """Before each case: the cases left (their share of time under a deadline); past the
    deadline, the case is skipped, so that the run still ends and rebuilds the report."""
    items = item.session.items
    set_cases_left(len(items) - items.index(item))
    if past_deadline():
        pytest.skip("the run's deadline (PYGEN_BENCH_DEADLINE) has passed")


def pytest_sessionfinish(session, exitstatus):
    if _ROWS:
        print(f"\nbenchmark results: {write_results(_ROWS, device_under_test())}")
