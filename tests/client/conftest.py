from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.client.sse_server import ScriptedServer

_ENV = (
    "SIDECAR_URL",
    "SIDECAR_TOKEN",
    "PI_STREAM_IDLE_TIMEOUT_MS",
    "PI_OPENAI_STREAM_IDLE_TIMEOUT_MS",
    "PI_STREAM_FIRST_EVENT_TIMEOUT_MS",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as running:
        yield running
