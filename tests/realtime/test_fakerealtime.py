"""The fake OpenAI Realtime upstream behaves as documented, checked with a real ``websockets`` client."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import connect

from tests.fakerealtime import GA_TEXT_TURN, INVALID_EVENT_ERROR, FakeRealtime, fixture_lines

HEADERS = {"Authorization": "Bearer sk-fake-upstream-key", "OpenAI-Safety-Identifier": "caller-1"}


def test_session_handshake_scripted_replay_and_recording() -> None:
    with FakeRealtime() as up:
        with connect(f"{up.url}/realtime?model=gpt-realtime-mini", additional_headers=HEADERS) as ws:
            created = json.loads(ws.recv(timeout=5))
            assert created["type"] == "session.created"
            assert created["session"]["model"] == "gpt-realtime-mini"

            update = {"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief."}}
            ws.send(json.dumps(update))
            updated = json.loads(ws.recv(timeout=5))
            assert updated["type"] == "session.updated"
            assert updated["session"]["instructions"] == "Be brief."

            ws.send(json.dumps({"type": "response.create"}))
            replayed = [ws.recv(timeout=5) for _ in fixture_lines(GA_TEXT_TURN)]
            assert replayed == fixture_lines(GA_TEXT_TURN)  # byte for byte, in order

        (record,) = up.wait_closed()
    assert record.path == "/v1/realtime?model=gpt-realtime-mini"
    assert record.status == 101
    assert record.headers["authorization"] == "Bearer sk-fake-upstream-key"
    assert record.headers["openai-safety-identifier"] == "caller-1"
    assert record.frames == [update, {"type": "response.create"}]
    assert record.sent[2:] == fixture_lines(GA_TEXT_TURN)
    assert record.close_code == 1000


def test_drop_after_aborts_the_connection_mid_response() -> None:
    with FakeRealtime(drop_after=2) as up:
        with connect(f"{up.url}/realtime?model=gpt-realtime") as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "session.created"
            ws.send(json.dumps({"type": "response.create"}))
            assert [ws.recv(timeout=5) for _ in range(2)] == fixture_lines(GA_TEXT_TURN)[:2]
            with pytest.raises(ConnectionClosedError) as closed:
                ws.recv(timeout=5)
        assert closed.value.rcvd is None  # no close frame: an abnormal closure
        assert ws.close_code == 1006
        (record,) = up.wait_closed()
    assert record.close_code == 1006
    assert len(record.sent) == 3  # session.created + the two scripted events


def test_error_event_then_scripted_close_code() -> None:
    with FakeRealtime(error_event=INVALID_EVENT_ERROR, close_code=4000) as up:
        with connect(f"{up.url}/realtime") as ws:
            ws.recv(timeout=5)
            ws.send(json.dumps({"type": "response.create"}))
            assert json.loads(ws.recv(timeout=5)) == INVALID_EVENT_ERROR
            with pytest.raises(ConnectionClosedError):
                ws.recv(timeout=5)
        assert ws.close_code == 4000
        assert up.wait_closed()[0].close_code == 4000


def test_reject_status_answers_the_upgrade_with_an_http_error() -> None:
    with FakeRealtime(reject_status=401) as up:
        with pytest.raises(InvalidStatus) as rejected:
            connect(f"{up.url}/realtime?model=gpt-realtime", additional_headers=HEADERS)
        response = rejected.value.response
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/json"
        assert json.loads(response.body)["error"]["type"] == "invalid_request_error"
        (record,) = up.connections
    assert record.status == 401
    assert record.headers["authorization"] == "Bearer sk-fake-upstream-key"
    assert record.frames == [] and record.close_code is None
