"""Mint, redeem and relay through a real sidecar, against the fake OpenAI realtime upstream (a real WebSocket server).

The "browser" is a websockets client offering the subprotocols @ai-sdk/gateway's getGatewayRealtimeProtocols()
builds; the sidecar relays to FakeRealtime, which replays OpenAI's documented GA text turn.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.fakerealtime import FakeRealtime
from tests.sidecar_server import OPENAI_CANARY, TOKEN, RunningSidecar, run_sidecar, sidecar_environ, write_config

MODEL = "openai/gpt-realtime"
HEADERS = {"authorization": f"Bearer {TOKEN}"}
CONFIG = """
[upstream]
max_retries = 0

[realtime]
max_frame_bytes = 4096
"""
# gpt-realtime catalog rates (USD per 1M tokens): text in/out/cached 4/16/0.4, audio in/out/cached 32/64/0.4.
# Usage of the fixture's response.done: text in 119 (64 cached), audio in 13, text out 30, audio out 91.
FIXTURE_COST = ((119 - 64) * 4 + 64 * 0.4 + 13 * 32 + 30 * 16 + 91 * 64) / 1e6


@pytest.fixture
def realtime_upstream() -> Iterator[FakeRealtime]:
    with FakeRealtime() as up:
        yield up


def start(up: FakeRealtime, tmp_path: Path, config: str = CONFIG) -> Any:
    environ = sidecar_environ("http://127.0.0.1:9", tmp_path)
    environ["OPENAI_BASE_URL"] = up.url.replace("ws://", "http://")
    return run_sidecar(environ, write_config(tmp_path, config))


@pytest.fixture
def sidecar(realtime_upstream: FakeRealtime, tmp_path: Path) -> Iterator[RunningSidecar]:
    with start(realtime_upstream, tmp_path) as running:
        yield running


def mint(sidecar: RunningSidecar, **body: Any) -> httpx.Response:
    return httpx.post(f"{sidecar.url}/v1/realtime/client-secrets", json={"model": MODEL, **body}, headers=HEADERS)


def socket_url(sidecar: RunningSidecar, model: str = MODEL, base: str = "/v4/ai") -> str:
    return f"ws://127.0.0.1:{sidecar.port}{base}/realtime-model?ai-model-id={model.replace('/', '%2F')}"


def browser(sidecar: RunningSidecar, token: str, **kw: Any) -> ClientConnection:
    protocols = ["ai-gateway-realtime.v1", f"ai-gateway-auth.{token}", "ai-gateway-team.bXktdGVhbQ"]
    return connect(socket_url(sidecar, **kw), subprotocols=protocols, open_timeout=5)  # type: ignore[arg-type]


def receive_until(ws: ClientConnection, kind: str, seen: list[dict[str, Any]]) -> dict[str, Any]:
    while True:
        event = json.loads(ws.recv(timeout=5))
        seen.append(event)
        if event["type"] == kind:
            return event


def text_turn(ws: ClientConnection, opened: bool = True) -> list[dict[str, Any]]:
    """One text turn; ``opened``: the session-created event is still to be read."""
    seen: list[dict[str, Any]] = []
    if opened:
        receive_until(ws, "session-created", seen)
    gateway = {"tags": ["voice", "demo"], "user": "carol"}
    ws.send(
        json.dumps(
            {"type": "session-update", "config": {"instructions": "Be brief.", "providerOptions": {"gateway": gateway}}}
        )
    )
    receive_until(ws, "session-updated", seen)
    item = {"type": "text-message", "role": "user", "text": "Say hi."}
    ws.send(json.dumps({"type": "conversation-item-create", "item": item}))
    ws.send(json.dumps({"type": "response-create"}))
    receive_until(ws, "response-done", seen)
    return seen


def test_a_minted_secret_opens_a_relayed_text_turn_priced_into_the_ledger(
    sidecar: RunningSidecar, realtime_upstream: FakeRealtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    minted = mint(sidecar, expiresIn=60)
    assert minted.status_code == 200, minted.text
    body = minted.json()
    token = body["token"]
    assert token.startswith("vcst_") and len(token) > 40
    assert time.time() + 55 <= body["expiresAt"] <= time.time() + 61
    with browser(sidecar, token) as ws:
        assert ws.subprotocol == "ai-gateway-realtime.v1"  # the auth entry is never echoed
        assert ws.response is not None and ws.response.headers["Sec-WebSocket-Protocol"] == "ai-gateway-realtime.v1"
        seen = text_turn(ws)
    types = [e["type"] for e in seen]
    assert types[:2] == ["session-created", "session-updated"]
    assert "text-delta" in types and "text-done" in types
    delta = next(e for e in seen if e["type"] == "text-delta")
    assert delta["delta"] == "Sure, I can h" and delta["raw"]["type"] == "response.output_text.delta"
    done = seen[-1]
    assert done["usage"]["inputTokens"] == 132 and done["usage"]["outputAudioTokens"] == 91
    generation_id = done["generationId"]

    (upstream,) = realtime_upstream.wait_closed()
    assert upstream.path == "/v1/realtime?model=gpt-realtime"
    assert upstream.headers["authorization"] == f"Bearer {OPENAI_CANARY}"  # the stored key, server-side only
    update = next(f for f in upstream.frames if f["type"] == "session.update")
    assert update["session"]["instructions"] == "Be brief." and update["session"]["model"] == "gpt-realtime"
    assert "gateway" not in json.dumps(update)  # attribution stays in the sidecar
    assert [f["type"] for f in upstream.frames] == ["session.update", "conversation.item.create", "response.create"]
    assert OPENAI_CANARY not in json.dumps(seen)

    data = httpx.get(f"{sidecar.url}/v1/generation", params={"id": generation_id}, headers=HEADERS).json()["data"]
    assert data["total_cost"] == pytest.approx(FIXTURE_COST, rel=1e-12)
    assert data["model"] == MODEL and data["streamed"] is True and data["api"] == "openai-realtime"
    assert (data["native_tokens_prompt"], data["native_tokens_cached"], data["native_tokens_completion"]) == (
        132,
        64,
        121,
    )
    assert (data["user"], data["tags"]) == ("carol", ["voice", "demo"])
    assert data["finish_reason"] == "stop"
    # Neither the key, the bearer nor the client secret is logged by the sidecar or the libraries it runs. Records of
    # the test's own peers are left out: the fake upstream ("websockets.server") and the browser ("websockets.client")
    # log the headers they exchange; the sidecar's upstream connection logs as "sidecar.realtime.upstream".
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("websockets."))
    for secret in (OPENAI_CANARY, TOKEN, token):
        assert secret not in logged
    assert "realtime session for bearer:" in logged


def test_a_secret_is_single_use(sidecar: RunningSidecar, realtime_upstream: FakeRealtime) -> None:
    token = mint(sidecar).json()["token"]
    with browser(sidecar, token) as ws:
        json.loads(ws.recv(timeout=5))
    with pytest.raises(InvalidStatus) as refused:
        browser(sidecar, token)
    assert refused.value.response.status_code == 401
    error = json.loads(refused.value.response.body)["error"]
    assert error["type"] == "authentication_error" and "already used" in error["message"]
    assert len(realtime_upstream.connections) == 1  # refused before any upstream connection


def test_an_expired_secret_is_refused_before_the_upstream(
    sidecar: RunningSidecar, realtime_upstream: FakeRealtime
) -> None:
    token = mint(sidecar, expiresIn=1).json()["token"]
    time.sleep(1.1)
    with pytest.raises(InvalidStatus) as refused:
        browser(sidecar, token)
    assert refused.value.response.status_code == 401
    assert realtime_upstream.connections == []


def test_a_secret_only_opens_its_own_model(sidecar: RunningSidecar, realtime_upstream: FakeRealtime) -> None:
    token = mint(sidecar).json()["token"]
    with pytest.raises(InvalidStatus) as refused:
        browser(sidecar, token, model="openai/gpt-realtime-mini")
    assert refused.value.response.status_code == 403
    assert "minted for openai/gpt-realtime" in json.loads(refused.value.response.body)["error"]["message"]
    with pytest.raises(InvalidStatus):  # and the attempt used it up
        browser(sidecar, token)
    assert realtime_upstream.connections == []


def test_the_workload_bearer_opens_a_server_owned_socket_at_the_root(
    sidecar: RunningSidecar, realtime_upstream: FakeRealtime
) -> None:
    with connect(socket_url(sidecar, base=""), additional_headers=HEADERS, open_timeout=5) as ws:
        assert ws.subprotocol is None
        seen = text_turn(ws)
    assert seen[-1]["type"] == "response-done"


@pytest.mark.parametrize(
    ("body", "headers", "status", "type_", "fragment"),
    [
        ({"model": "openai/nope"}, HEADERS, 404, "model_not_found", "Unknown realtime model"),
        ({"model": "openai/gpt-4o"}, HEADERS, 400, "invalid_request_error", "not a realtime model"),
        ({"model": MODEL, "expiresIn": 3600}, HEADERS, 400, "invalid_request_error", "maximum of 600 s"),
        ({"model": MODEL, "expiresIn": -5}, HEADERS, 400, "invalid_request_error", "positive number"),
        ({"model": MODEL, "routeKind": "speech"}, HEADERS, 400, "invalid_request_error", 'routeKind "speech"'),
        ({}, HEADERS, 400, "invalid_request_error", "`model` is required"),
        ({"model": MODEL}, {"authorization": "Bearer nope"}, 401, "authentication_error", "bearer token"),
    ],
)
def test_mint_errors(
    sidecar: RunningSidecar, body: dict[str, Any], headers: dict[str, str], status: int, type_: str, fragment: str
) -> None:
    response = httpx.post(f"{sidecar.url}/v1/realtime/client-secrets", json=body, headers=headers)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == type_ and fragment in error["message"]


def test_an_oversize_frame_closes_both_sides(sidecar: RunningSidecar, realtime_upstream: FakeRealtime) -> None:
    token = mint(sidecar).json()["token"]
    with browser(sidecar, token) as ws:
        json.loads(ws.recv(timeout=5))
        ws.send(json.dumps({"type": "input-audio-append", "audio": "A" * 5000}))
        error = json.loads(ws.recv(timeout=5))
        assert error["type"] == "error" and error["code"] == "frame_too_large"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert ws.close_code == 1009
    (upstream,) = realtime_upstream.wait_closed()
    assert upstream.close_code == 1009
    assert not any(f.get("type") == "input_audio_buffer.append" for f in upstream.frames)


def test_a_malformed_event_gets_an_error_event_and_the_session_goes_on(
    sidecar: RunningSidecar, realtime_upstream: FakeRealtime
) -> None:
    token = mint(sidecar).json()["token"]
    with browser(sidecar, token) as ws:
        json.loads(ws.recv(timeout=5))
        ws.send(json.dumps({"type": "conversation-item-create", "item": {"type": "text-message", "role": "user"}}))
        error = json.loads(ws.recv(timeout=5))
        assert error["type"] == "error" and "item.text must be a string" in error["message"]
        ws.send("not json")
        assert json.loads(ws.recv(timeout=5))["code"] == "invalid_event"
        seen = text_turn(ws, opened=False)
    assert seen[-1]["type"] == "response-done"


def test_an_upstream_drop_mid_response_reaches_the_browser_and_the_ledger(tmp_path: Path) -> None:
    with FakeRealtime(drop_after=2) as up, start(up, tmp_path) as sidecar:
        token = mint(sidecar).json()["token"]
        seen: list[dict[str, Any]] = []
        with browser(sidecar, token) as ws:
            receive_until(ws, "session-created", seen)
            ws.send(json.dumps({"type": "response-create"}))
            error = receive_until(ws, "error", seen)
            assert error["code"] == "upstream_disconnected" and "1006" in error["message"]
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=5)
            assert ws.close_code == 1011
        assert [e["type"] for e in seen[:-1]] == ["session-created", "response-created", "output-item-added"]
        report = httpx.get(
            f"{sidecar.url}/v1/report",
            params={
                "start_date": time.strftime("%Y-%m-%d", time.gmtime()),
                "end_date": time.strftime("%Y-%m-%d", time.gmtime()),
                "group_by": "model",
            },
            headers=HEADERS,
        ).json()["results"]
        assert report and report[0]["model"] == MODEL and report[0]["request_count"] == 1  # the cut response


def test_missing_credentials_and_model_are_refused_at_the_upgrade(sidecar: RunningSidecar) -> None:
    with pytest.raises(InvalidStatus) as no_auth:
        connect(socket_url(sidecar), subprotocols=["ai-gateway-realtime.v1"], open_timeout=5)  # type: ignore[list-item]
    assert no_auth.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as no_model:
        connect(f"ws://127.0.0.1:{sidecar.port}/realtime-model", additional_headers=HEADERS, open_timeout=5)
    assert no_model.value.response.status_code == 400


def test_an_idle_session_is_closed_with_a_reason(realtime_upstream: FakeRealtime, tmp_path: Path) -> None:
    with start(realtime_upstream, tmp_path, CONFIG + "idle_timeout_seconds = 1\n") as sidecar:
        token = mint(sidecar).json()["token"]
        with browser(sidecar, token) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "session-created"
            error = json.loads(ws.recv(timeout=5))
            assert error["code"] == "session_limit" and "no frames for 1 s" in error["message"]
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=5)
            assert ws.close_code == 1008
        (upstream,) = realtime_upstream.wait_closed()
        assert upstream.close_code == 1000


def test_sessions_per_bearer_are_limited(realtime_upstream: FakeRealtime, tmp_path: Path) -> None:
    with start(realtime_upstream, tmp_path, CONFIG + "max_sessions_per_bearer = 1\n") as sidecar:
        with browser(sidecar, mint(sidecar).json()["token"]) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "session-created"
            with pytest.raises(InvalidStatus) as refused:
                browser(sidecar, mint(sidecar).json()["token"])
            assert refused.value.response.status_code == 429
            assert "already has 1 realtime sessions open" in json.loads(refused.value.response.body)["error"]["message"]
        deadline = time.monotonic() + 5
        while True:  # the slot frees when the first session has wound down
            try:
                with browser(sidecar, mint(sidecar).json()["token"]) as again:
                    assert json.loads(again.recv(timeout=5))["type"] == "session-created"
                break
            except InvalidStatus:
                assert time.monotonic() < deadline
                time.sleep(0.05)


def test_refusals_and_unknown_models_leave_no_error_or_warning_in_the_log(
    sidecar: RunningSidecar, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(InvalidStatus):
        browser(sidecar, "vcst_never-minted-0000000000")
    assert mint(sidecar, model="openai/nope").status_code == 404
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_an_upstream_refusal_reaches_the_browser_as_an_error_event(tmp_path: Path) -> None:
    with FakeRealtime(reject_status=401) as up, start(up, tmp_path) as sidecar:
        with browser(sidecar, mint(sidecar).json()["token"]) as ws:
            error = json.loads(ws.recv(timeout=5))
            assert error["type"] == "error" and error["code"] == "upstream_unavailable"
            assert "refused the realtime connection: 401" in error["message"]
            assert OPENAI_CANARY not in error["message"]
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=5)
            assert ws.close_code == 1011
        assert up.connections[0].headers["authorization"] == f"Bearer {OPENAI_CANARY}"
