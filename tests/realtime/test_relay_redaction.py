"""Canary keys through the realtime relay: whatever provider text the upstream sends (an ``error`` event, a failed
``response.done``, an event type the mapper does not know, a close reason), in whatever spelling, the browser's
socket never receives the key, neither in ``message`` nor in ``raw`` nor in any decoding of the frame.

The key is the live one the sidecar sent upstream: one shaped like an OpenAI key, and one with no recognisable
shape, which only the relay's knowledge of the live key can catch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from tests.canaries import ENCODINGS, leaks
from tests.fakerealtime import Connection, FakeRealtime
from tests.realtime.test_relay import browser, mint
from tests.sidecar_server import OPENAI_CANARY, run_sidecar, sidecar_environ, write_config

UNSHAPED_KEY = "realtimeKeyWithNoShape4242"
KEYS = {"shaped": OPENAI_CANARY, "unshaped": UNSHAPED_KEY}


def error_frame(spelled: str) -> str:
    """OpenAI's ``error`` event for a bad key, as raw JSON text (so an escaped spelling stays escaped on the wire)."""
    return (
        '{"type": "error", "event_id": "event_1", "error": {"type": "invalid_request_error", "code": '
        f'"invalid_api_key", "message": "Incorrect API key provided: {spelled}.", "param": null, "event_id": null}}}}'
    )


def failed_response_frame(spelled: str) -> str:
    return (
        '{"type": "response.done", "event_id": "event_2", "response": {"id": "resp_1", "status": "failed", '
        '"status_details": {"type": "failed", "error": {"type": "invalid_request_error", '
        f'"message": "key {spelled}"}}}}, '
        '"output": [], "usage": null}}'
    )


def unknown_event_frame(spelled: str) -> str:
    return (
        '{"type": "conversation.item.input_audio_transcription.failed", "event_id": "event_3", "item_id": "item_1", '
        f'"content_index": 0, "error": {{"type": "auth", "message": "transcriber refused key {spelled}"}}}}'
    )


def start(up: FakeRealtime, tmp_path: Path, key: str) -> Any:
    environ = sidecar_environ("http://127.0.0.1:9", tmp_path)
    environ["OPENAI_BASE_URL"] = up.url.replace("ws://", "http://")
    environ["OPENAI_API_KEY"] = key
    return run_sidecar(environ, write_config(tmp_path, "[upstream]\nmax_retries = 0\n"))


def frames_until_close(ws: ClientConnection) -> list[str]:
    frames: list[str] = []
    try:
        while True:
            frame = ws.recv(timeout=5)
            assert isinstance(frame, str)
            frames.append(frame)
    except ConnectionClosed:
        return frames


@pytest.fixture(params=sorted(KEYS))
def key(request: pytest.FixtureRequest) -> str:
    return KEYS[request.param]


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_provider_text_reaches_the_browser_without_the_key(tmp_path: Path, key: str, encoding: str) -> None:
    spelled = ENCODINGS[encoding](key)
    script = [error_frame(spelled), failed_response_frame(spelled), unknown_event_frame(spelled)]
    with FakeRealtime(script=script, close_code=1000) as up, start(up, tmp_path, key) as sidecar:
        with browser(sidecar, mint(sidecar).json()["token"]) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "session-created"
            ws.send(json.dumps({"type": "response-create"}))
            frames = frames_until_close(ws)
        (upstream,) = up.wait_closed()
    assert upstream.headers["authorization"] == f"Bearer {key}"  # the key was live
    for frame in frames:
        assert not leaks(frame, key), frame
        assert not leaks(json.dumps(json.loads(frame), ensure_ascii=False), key), frame
    events = {event["type"]: event for event in map(json.loads, frames)}
    error = events["error"]
    assert error["message"] == "Incorrect API key provided: [REDACTED]."
    assert error["code"] == "invalid_api_key"
    assert error["raw"]["error"]["message"] == "Incorrect API key provided: [REDACTED]."
    done = events["response-done"]
    assert done["status"] == "failed"
    assert done["raw"]["response"]["status_details"]["error"]["message"] == "key [REDACTED]"
    custom = events["custom"]
    assert custom["rawType"] == "conversation.item.input_audio_transcription.failed"
    assert custom["raw"]["error"]["message"] == "transcriber refused key [REDACTED]"


class ClosingWithReason(FakeRealtime):
    """Answers ``response.create`` by closing cleanly with a scripted reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(script=[])
        self.reason = reason

    async def _respond(self, ws: ServerConnection, record: Connection) -> bool:
        await ws.close(1000, self.reason)
        return False


def test_an_upstream_close_reason_reaches_the_browser_without_the_key(tmp_path: Path, key: str) -> None:
    with ClosingWithReason(f"bad key {key}") as up, start(up, tmp_path, key) as sidecar:
        with browser(sidecar, mint(sidecar).json()["token"]) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "session-created"
            ws.send(json.dumps({"type": "response-create"}))
            assert frames_until_close(ws) == []
        up.wait_closed()
    assert ws.close_code == 1000
    assert ws.close_reason == "bad key [REDACTED]"
