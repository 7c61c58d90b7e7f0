"""Plumbing for the interop suite: the sidecar's log attached to a failing test's report."""

from __future__ import annotations

from collections.abc import Generator

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    """Attach what the sidecar wrote to stderr during a failed test to that test's report."""
    report = yield
    sidecar = getattr(item, "funcargs", {}).get("sidecar")
    if isinstance(report, pytest.TestReport) and report.failed and hasattr(sidecar, "log_since_mark"):
        report.sections.append(("sidecar stderr during this test", sidecar.log_since_mark()))
    return report
