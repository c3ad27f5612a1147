"""Under ``CI`` every skip fails, unless the test says why it may skip there.

A green CI run must mean every test ran: a missing service, binary, header or SDK that merely
skips locally is a broken CI machine. The only skips allowed under ``CI`` are tests marked
``@pytest.mark.ci_skip_allowed(reason="...")`` (e.g. a platform CI cannot be: another CPU
architecture). Skips at collection time (a module-level ``importorskip``) are never allowed.
xfail is not a skip and is left alone.

Loaded by tests/conftest.py (its hooks are imported there), or as ``-p support.ci_guard``.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

__all__ = ["pytest_configure", "pytest_make_collect_report", "pytest_runtest_makereport"]

MARKER = "ci_skip_allowed"


def _in_ci() -> bool:
    return bool(os.environ.get("CI"))


def _reason(longrepr: object) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(reason): this test may skip under CI (why: e.g. another CPU architecture)",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    rep = yield
    if not (_in_ci() and rep.skipped) or hasattr(rep, "wasxfail"):
        return rep
    allowed = item.get_closest_marker(MARKER)
    if allowed is not None and (allowed.kwargs.get("reason") or allowed.args):
        return rep
    rep.outcome = "failed"
    rep.longrepr = (
        f"skipped under CI: {_reason(rep.longrepr)}\n"
        f"CI must run every test: provide what is missing, or mark the test "
        f'@pytest.mark.{MARKER}(reason="...") if it can never run there'
    )
    return rep


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    rep = yield
    if _in_ci() and rep.skipped:
        rep.outcome = "failed"
        rep.longrepr = (
            f"{collector.nodeid} skipped at collection under CI: {_reason(rep.longrepr)}\n"
            "CI must run every test: install what is missing (a module-level importorskip "
            "hides a broken install)"
        )
    return rep
