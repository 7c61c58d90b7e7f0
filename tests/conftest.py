from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.fakeupstream import FakeUpstream
from tests.sidecar_server import TOKEN, RunningSidecar, run_sidecar, sidecar_environ, write_config

FAST_CONFIG = """
[upstream]
max_retries = 0
"""


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture
def sidecar(upstream: FakeUpstream, tmp_path: Path) -> Iterator[RunningSidecar]:
    """A real sidecar on 127.0.0.1 whose anthropic/openai providers point at the fake upstream."""
    with run_sidecar(sidecar_environ(upstream.url, tmp_path), write_config(tmp_path, FAST_CONFIG)) as running:
        yield running


@pytest.fixture
def auth_headers() -> dict[str, str]:
    return {"authorization": f"Bearer {TOKEN}"}


def user(text: str) -> dict[str, object]:
    return {"role": "user", "content": text, "timestamp": 1}


def pi_body(model: str, text: str = "hello", **options: object) -> dict[str, object]:
    return {"modelId": model, "context": {"messages": [user(text)]}, "options": options}


def read_events(response: httpx.Response) -> list[dict[str, object]]:
    """Parse an SSE body into events; asserts the framing the protocol requires (data lines, [DONE] last)."""
    text = response.text
    frames = [f for f in text.split("\n\n") if f.strip()]
    data_frames = [f for f in frames if not f.startswith(":")]
    assert data_frames[-1] == "data: [DONE]", data_frames[-1][:200]
    events = []
    for f in data_frames[:-1]:
        assert f.startswith("data: ") and "\n" not in f, f[:200]
        events.append(orjson.loads(f[len("data: ") :]))
    return events
