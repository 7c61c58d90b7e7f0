"""Realtime identifiers are bounded like the pi route's (issue #9, item 2): a huge or control-character model id in
the mint or in ``ai-model-id`` is a 400 that echoes at most a truncated, escaped form, before any token or socket."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.fakerealtime import FakeRealtime
from tests.realtime.test_relay import HEADERS, MODEL, mint, start
from tests.sidecar_server import TOKEN, RunningSidecar


@pytest.fixture
def realtime_upstream() -> Iterator[FakeRealtime]:
    with FakeRealtime() as up:
        yield up


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("openai/" + "r" * 5000, "`model` is 5007 characters long; the limit is 256"),
        ("openai/gpt-realtime\n2026-11-30 ERROR forged", "`model` may contain only letters, digits"),
    ],
)
def test_mint_refuses_unbounded_model_ids(
    realtime_upstream: FakeRealtime, tmp_path: Path, model: str, message: str
) -> None:
    with start(realtime_upstream, tmp_path) as sidecar:
        response = httpx.post(
            f"{sidecar.url}/v1/realtime/client-secrets", json={"model": model}, headers=HEADERS, timeout=10
        )
        assert response.status_code == 400, response.text[:300]
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and message in error["message"]
        assert len(response.content) < 600 and "\n" not in error["message"]
        assert mint(sidecar).status_code == 200  # the sidecar is fine afterwards
        huge = httpx.post(
            f"{sidecar.url}/v1/realtime/client-secrets", json={"model": "r" * 100_000}, headers=HEADERS, timeout=10
        )
        assert huge.status_code == 413 and "65536-byte limit" in huge.json()["error"]["message"]


def test_socket_refuses_a_control_character_model_id(realtime_upstream: FakeRealtime, tmp_path: Path) -> None:
    with start(realtime_upstream, tmp_path) as sidecar:
        _refused(sidecar, "openai%2Fgpt-realtime%0AERROR", "`ai-model-id` may contain only")
        _refused(sidecar, "openai%2F" + "r" * 5000, "`ai-model-id` is 5007 characters long")
        assert realtime_upstream.connections == []  # refused before any upstream connection
        token = mint(sidecar).json()["token"]
        protocols = ["ai-gateway-realtime.v1", f"ai-gateway-auth.{token}"]
        url = f"ws://127.0.0.1:{sidecar.port}/realtime-model?ai-model-id={MODEL.replace('/', '%2F')}"
        with connect(url, subprotocols=protocols, open_timeout=5) as ws:  # type: ignore[arg-type]
            assert ws.subprotocol == "ai-gateway-realtime.v1"


def _refused(sidecar: RunningSidecar, model_query: str, message: str) -> None:
    url = f"ws://127.0.0.1:{sidecar.port}/realtime-model?ai-model-id={model_query}"
    with pytest.raises(InvalidStatus) as refused:
        connect(url, additional_headers={"authorization": f"Bearer {TOKEN}"}, open_timeout=5)
    response = refused.value.response
    assert response.status_code == 400 and response.body is not None and len(response.body) < 600
    error = json.loads(response.body)["error"]
    assert error["type"] == "invalid_request_error" and message in error["message"] and "\n" not in error["message"]
