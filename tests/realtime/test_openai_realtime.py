"""Realtime in OpenAI's own shape (``sidecar.realtime.openai``): the ``ek_`` mint, the untranslated WebSocket relay
and the WebRTC call setup, through a real sidecar against fake OpenAI upstreams (a real WebSocket server replaying
the documented GA text turn; an aiohttp server for the call setup and its side-band socket).

The "browser" is a websockets client offering the subprotocols OpenAI's browser clients offer (``realtime`` and
``openai-insecure-api-key.<ek>``); the unmodified ``openai`` and ``@openai/agents-realtime`` clients run in
tests/interop/test_openai_realtime_interop.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.fakecalls import ANSWER_SDP, CALL_ID, FakeCalls
from tests.fakerealtime import GA_TEXT_TURN, FakeRealtime, fixture_lines
from tests.realtime.test_relay import CONFIG, FIXTURE_COST, realtime_upstream, sidecar

__all__ = ["realtime_upstream", "sidecar"]  # the relay tests' fixtures: a FakeRealtime and a sidecar on it
from tests.sidecar_server import OPENAI_CANARY, TOKEN, RunningSidecar, run_sidecar, sidecar_environ, write_config

HEADERS = {"authorization": f"Bearer {TOKEN}"}
SESSION = {
    "type": "realtime",
    "model": "gpt-realtime",
    "instructions": "Answer in one sentence.",
    "audio": {"output": {"voice": "marin"}},
}
DEEP: Any = {}
for _ in range(70):
    DEEP = {"x": DEEP}
OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


def mint(
    sidecar: RunningSidecar, body: dict[str, Any] | None = None, headers: dict[str, str] = HEADERS
) -> httpx.Response:
    payload = {"session": SESSION} if body is None else body
    return httpx.post(f"{sidecar.url}/v1/realtime/client_secrets", json=payload, headers=headers)


def browser(sidecar: RunningSidecar, secret: str, model: str | None = "gpt-realtime") -> ClientConnection:
    query = f"?model={model}" if model else ""
    return connect(
        f"ws://127.0.0.1:{sidecar.port}/v1/realtime{query}",
        subprotocols=["realtime", f"openai-insecure-api-key.{secret}"],  # type: ignore[list-item]
        open_timeout=5,
    )


def report(sidecar: RunningSidecar) -> list[dict[str, Any]]:
    """Today's ledger rows of the bearer, by model (``GET /v1/report``)."""
    today = time.strftime("%Y-%m-%d", time.gmtime())
    params = {"start_date": today, "end_date": today, "group_by": "model"}
    response = httpx.get(f"{sidecar.url}/v1/report", params=params, headers=HEADERS)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["results"]
    return rows


def text_turn(ws: ClientConnection) -> list[str]:
    """Send a text message and ``response.create``; every frame received until ``response.done``, as text."""
    ws.send(
        json.dumps(
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            }
        )
    )
    ws.send(json.dumps({"type": "response.create"}))
    frames: list[str] = []
    while True:
        frame = ws.recv(timeout=5)
        assert isinstance(frame, str)
        frames.append(frame)
        if json.loads(frame)["type"] == "response.done":
            return frames


def test_the_mint_answers_in_openais_shape(sidecar: RunningSidecar) -> None:
    before = time.time()
    response = mint(sidecar, {"expires_after": {"anchor": "created_at", "seconds": 120}, "session": SESSION})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["value"].startswith("ek_") and len(body["value"]) > 40
    assert before + 119 <= body["expires_at"] <= time.time() + 121
    session = body["session"]
    assert (session["type"], session["object"], session["model"]) == ("realtime", "realtime.session", "gpt-realtime")
    assert session["id"].startswith("sess_") and session["instructions"] == SESSION["instructions"]
    assert OPENAI_CANARY not in response.text


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"expires_after": {"anchor": "created_at", "seconds": 7200}}, 400, "over this sidecar's maximum of 600 s"),
        ({"expires_after": {"anchor": "now", "seconds": 60}}, 400, '`expires_after.anchor` must be "created_at"'),
        ({"session": {"type": "transcription"}}, 400, "only realtime sessions"),
        ({"session": {"type": "realtime", "model": "gpt-4o"}}, 400, "is not a realtime model"),
        ({"session": {"type": "realtime", "model": "nope-realtime"}}, 404, "Unknown realtime model"),
        ({"session": "x"}, 400, "`session` must be an object"),
        ({"session": {"type": "realtime", "tools": DEEP}}, 400, "deeper than 64 levels"),  # every body's bound
    ],
)
def test_a_bad_mint_is_openais_error(sidecar: RunningSidecar, body: dict[str, Any], status: int, says: str) -> None:
    response = mint(sidecar, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert says in error["message"] and set(error) == {"message", "type", "param", "code"}


def test_a_mint_needs_the_bearer(sidecar: RunningSidecar) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}):
        response = mint(sidecar, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "invalid_request_error"  # OpenAI's for a bad key


def test_a_text_turn_is_relayed_untranslated_with_the_minted_config_first(
    sidecar: RunningSidecar, realtime_upstream: FakeRealtime
) -> None:
    secret = mint(sidecar).json()["value"]
    with browser(sidecar, secret) as ws:
        assert ws.subprotocol == "realtime"
        created = json.loads(ws.recv(timeout=5))
        assert created["type"] == "session.created"
        assert json.loads(ws.recv(timeout=5))["type"] == "session.updated"  # the minted config, applied first
        frames = text_turn(ws)
    (upstream,) = realtime_upstream.wait_closed()
    assert upstream.path == "/v1/realtime?model=gpt-realtime"
    assert upstream.headers["authorization"] == f"Bearer {OPENAI_CANARY}"
    assert secret not in json.dumps(upstream.headers) and TOKEN not in json.dumps(upstream.headers)
    first, item, create = upstream.frames
    expected_config = {k: v for k, v in SESSION.items() if k != "model"}
    assert first == {"type": "session.update", "session": expected_config}
    assert item["type"] == "conversation.item.create" and create == {"type": "response.create"}
    # The upstream's frames, byte for byte: no translation on the way down.
    assert frames == fixture_lines(GA_TEXT_TURN)
    assert OPENAI_CANARY not in "".join(frames)
    done = json.loads(frames[-1])
    (row,) = report(sidecar)
    assert row["model"] == "openai/gpt-realtime" and row["request_count"] == 1
    assert row["total_cost"] == pytest.approx(FIXTURE_COST)
    assert done["response"]["usage"]["total_tokens"] == 253


def test_a_secret_opens_one_socket_only_and_expires(sidecar: RunningSidecar) -> None:
    secret = mint(sidecar).json()["value"]
    with browser(sidecar, secret) as ws:
        ws.recv(timeout=5)
    with pytest.raises(InvalidStatus) as refused:
        browser(sidecar, secret)
    assert refused.value.response.status_code == 401
    error = json.loads(refused.value.response.body)["error"]
    assert "already used" in error["message"] and secret not in error["message"]

    short = mint(sidecar, {"expires_after": {"anchor": "created_at", "seconds": 1}, "session": SESSION}).json()
    time.sleep(1.2)
    with pytest.raises(InvalidStatus) as expired:
        browser(sidecar, short["value"])
    assert expired.value.response.status_code == 401


def test_a_secret_is_bound_to_its_model_and_its_contract(sidecar: RunningSidecar) -> None:
    secret = mint(sidecar).json()["value"]
    with pytest.raises(InvalidStatus) as other_model:
        browser(sidecar, secret, model="gpt-realtime-mini")
    assert other_model.value.response.status_code == 403
    gateway_secret = httpx.post(
        f"{sidecar.url}/v1/realtime/client-secrets", json={"model": "openai/gpt-realtime"}, headers=HEADERS
    ).json()["token"]
    with pytest.raises(InvalidStatus) as wrong_contract:  # a vcst_ secret (the AI Gateway's) is not an ek_ one
        browser(sidecar, gateway_secret)
    assert wrong_contract.value.response.status_code == 401


def test_a_server_socket_may_use_the_bearer_in_the_authorization_header(
    sidecar: RunningSidecar, realtime_upstream: FakeRealtime
) -> None:
    url = f"ws://127.0.0.1:{sidecar.port}/v1/realtime?model=gpt-realtime"
    with connect(url, additional_headers=HEADERS, open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "session.created"
        assert text_turn(ws)[-1] == fixture_lines(GA_TEXT_TURN)[-1]
    (upstream,) = realtime_upstream.wait_closed()
    assert upstream.frames[0]["type"] == "conversation.item.create"  # no minted config: nothing sent first


def test_an_invalid_client_event_gets_openais_error_event(sidecar: RunningSidecar) -> None:
    secret = mint(sidecar).json()["value"]
    with browser(sidecar, secret) as ws:
        ws.recv(timeout=5)
        ws.recv(timeout=5)
        ws.send("not json")
        error = json.loads(ws.recv(timeout=5))
    assert error["type"] == "error" and error["event_id"].startswith("event_")
    assert error["error"]["code"] == "invalid_event" and error["error"]["message"] == "client frame is not JSON"


def test_a_webrtc_call_is_set_up_with_the_stored_key_and_recorded_from_its_side_band(tmp_path: Path) -> None:
    with FakeCalls(OPENAI_CANARY) as up:
        environ = sidecar_environ("http://127.0.0.1:9", tmp_path)
        environ["OPENAI_BASE_URL"] = up.url
        with run_sidecar(environ, write_config(tmp_path, CONFIG)) as sidecar:
            secret = mint(sidecar).json()["value"]
            answer = httpx.post(
                f"{sidecar.url}/v1/realtime/calls",
                content=OFFER,
                headers={"authorization": f"Bearer {secret}", "content-type": "application/sdp"},
            )
            assert answer.status_code == 201, answer.text
            assert answer.headers["content-type"].startswith("application/sdp")
            assert answer.text == ANSWER_SDP and answer.headers["location"] == f"/v1/realtime/calls/{CALL_ID}"
            # Cross-origin from the app's page: the browser may read Location (the call id) only if it is exposed,
            # and may send @openai/agents-realtime's own header only if the preflight allows it.
            assert answer.headers["access-control-allow-origin"] == "*"
            assert answer.headers["access-control-expose-headers"] == "location"
            preflight = httpx.options(
                f"{sidecar.url}/v1/realtime/calls",
                headers={"origin": "https://app.example", "access-control-request-method": "POST"},
            )
            assert preflight.status_code == 204
            allowed = preflight.headers["access-control-allow-headers"]
            assert {"authorization", "content-type", "x-openai-agents-sdk"} <= set(allowed.replace(" ", "").split(","))
            (setup,) = up.setups
            assert setup.headers["authorization"] == f"Bearer {OPENAI_CANARY}"
            assert setup.sdp == OFFER
            assert setup.session == {**{k: v for k, v in SESSION.items()}, "model": "gpt-realtime"}
            assert up.side_band_done.wait(5)
            (side_band,) = up.side_bands
            assert side_band.path == f"/v1/realtime?call_id={CALL_ID}"
            assert side_band.headers["authorization"] == f"Bearer {OPENAI_CANARY}"
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                rows = report(sidecar)
                if rows:
                    break
                time.sleep(0.05)
            (row,) = rows
            assert row["total_cost"] == pytest.approx(FIXTURE_COST)
            again = httpx.post(  # single use: the same secret sets up no second call
                f"{sidecar.url}/v1/realtime/calls",
                content=OFFER,
                headers={"authorization": f"Bearer {secret}", "content-type": "application/sdp"},
            )
            assert again.status_code == 401 and len(up.setups) == 1
            assert OPENAI_CANARY not in answer.text + again.text + json.dumps(dict(answer.headers))


def test_a_call_needs_an_sdp_offer_and_a_secret(sidecar: RunningSidecar) -> None:
    secret = mint(sidecar).json()["value"]
    not_sdp = httpx.post(
        f"{sidecar.url}/v1/realtime/calls", json={"sdp": OFFER}, headers={"authorization": f"Bearer {secret}"}
    )
    assert not_sdp.status_code == 400 and "Content-Type: application/sdp" in not_sdp.json()["error"]["message"]
    no_secret = httpx.post(
        f"{sidecar.url}/v1/realtime/calls", content=OFFER, headers={"content-type": "application/sdp"}
    )
    assert no_secret.status_code == 401


def test_a_client_cannot_switch_the_sockets_model(sidecar: RunningSidecar, realtime_upstream: FakeRealtime) -> None:
    """The socket is opened, priced and its secret bound for one model: a session.update naming another (the Agents
    SDK sends its default model in every update) keeps the rest of the update and loses the model."""
    secret = mint(sidecar).json()["value"]
    update = {
        "type": "session.update",
        "session": {"type": "realtime", "model": "gpt-realtime-2.1", "instructions": "x"},
    }
    with browser(sidecar, secret) as ws:
        ws.recv(timeout=5)
        ws.recv(timeout=5)
        ws.send(json.dumps(update))
        assert json.loads(ws.recv(timeout=5))["type"] == "session.updated"
    (upstream,) = realtime_upstream.wait_closed()
    assert upstream.frames[1] == {"type": "session.update", "session": {"type": "realtime", "instructions": "x"}}
