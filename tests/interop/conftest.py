"""Plumbing for the interop suite: the sidecar's log attached to a failing test's report."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.interop.harness import INTEROP_DIR, installed_version, npm_install, require_node

GATEWAY_VERSION = "4.0.146"


@pytest.fixture(scope="session")
def node() -> str:
    """Node >= 20 on PATH, with @ai-sdk/gateway installed in tests/interop/node_modules (``npm ci`` if missing)."""
    node = require_node()
    npm_install()
    installed = installed_version("@ai-sdk/gateway")
    assert installed == GATEWAY_VERSION, f"node_modules has @ai-sdk/gateway {installed}; run `npm ci` in {INTEROP_DIR}"
    return node


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    """Attach what the sidecar wrote to stderr during a failed test to that test's report."""
    report = yield
    sidecar = getattr(item, "funcargs", {}).get("sidecar")
    if isinstance(report, pytest.TestReport) and report.failed and hasattr(sidecar, "log_since_mark"):
        report.sections.append(("sidecar stderr during this test", sidecar.log_since_mark()))
    return report
