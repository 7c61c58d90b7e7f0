"""Audit findings on the pi-native route (issue #9, items 2, 5, 10-13): every one reproduced on a real sidecar over
real sockets, each answered with the documented envelope before any upstream call."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from sidecar.config import load_settings
from sidecar.errors import ConfigError
from tests.conftest import pi_body
from tests.fakeupstream import FakeUpstream, Reply, fixture_bytes
from tests.sidecar_server import TOKEN, RunningSidecar, run_sidecar, sidecar_environ, write_config
from tests.test_bad_input import assert_envelope, post_raw

HEADERS = {"authorization": f"Bearer {TOKEN}"}
TEXT_FIXTURE = "anthropic-messages/text-basic-padded.sse"


def post_json(sidecar: RunningSidecar, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return post_raw(sidecar, json.dumps(body).encode(), headers)  # the stdlib encoder: orjson stops at 254 levels


def nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        node = {"type": "object", "properties": {"p": node}}
    return node


# ----- 2: identifiers are bounded in length and charset at parse time -------------------------------------------


def test_huge_and_distinct_model_ids_are_refused_small_and_leave_nothing_behind(
    sidecar: RunningSidecar, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for i in range(20):
        model = f"openai/{i:04d}" + "m" * 1_000_000
        response = post_json(sidecar, pi_body(model))
        assert_envelope(
            response, 400, "invalid_request_error", "`modelId` is 1000011 characters long; the limit is 256"
        )
        assert len(response.content) < 600  # the echo is truncated
    assert upstream.received == []
    assert max(len(r.getMessage()) for r in caplog.records) < 2000  # no id was logged whole
    health = httpx.get(f"{sidecar.url}/healthz").json()
    assert health["ledger"]["pending"] == 0 and health["ledger"]["written"] == 0  # no ledger row per bad id


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (pi_body("openai/gpt-4o\n2026-11-30 ERROR forged"), "`modelId` may contain only letters, digits"),
        (pi_body("echo/echo\x00"), "`modelId` may contain only"),
        (pi_body("echo/echo", sessionId="a\r\nb"), "`options.sessionId` must not contain control characters"),
        (pi_body("echo/echo", sessionId="s" * 300), "`options.sessionId` is 300 characters long; the limit is 256"),
        (pi_body("echo/echo", metadata={"user": "bob\nERROR"}), "`options.metadata.user` must not contain control"),
        (pi_body("echo/echo", metadata={"tags": ["ok", "t\x00"]}), "`options.metadata.tags` must not contain"),
    ],
)
def test_identifiers_with_control_characters_or_too_long_are_400(
    sidecar: RunningSidecar, body: dict[str, Any], message: str
) -> None:
    response = post_json(sidecar, body)
    assert_envelope(response, 400, "invalid_request_error", message)
    assert "\n" not in response.json()["error"]["message"] and "\x00" not in response.json()["error"]["message"]


# ----- 11: deep nesting and non-ASCII header values are 400s naming the field ------------------------------------


def test_deeply_nested_tool_schema_is_400_naming_the_field(sidecar: RunningSidecar) -> None:
    body = pi_body("echo/echo")
    body["context"]["tools"] = [{"name": "t", "description": "d", "parameters": nested(150)}]  # type: ignore[index]
    response = post_json(sidecar, body)
    assert_envelope(response, 400, "invalid_request_error", "`context.tools[0].parameters.properties.p")
    assert "deeper than 64 levels" in response.json()["error"]["message"]


def test_deeply_nested_message_is_400_naming_the_field(sidecar: RunningSidecar) -> None:
    arguments: Any = 1
    for _ in range(300):
        arguments = [arguments]
    body = pi_body("echo/echo")
    body["context"]["messages"].append(  # type: ignore[index]
        {"role": "assistant", "content": [{"type": "toolCall", "id": "c1", "name": "t", "arguments": {"a": arguments}}]}
    )
    response = post_json(sidecar, body)
    assert_envelope(response, 400, "invalid_request_error", "`context.messages[1].content[0].arguments.a[0]")


def test_a_schema_of_ordinary_depth_is_served(sidecar: RunningSidecar) -> None:
    body = pi_body("echo/echo")
    body["context"]["tools"] = [{"name": "t", "description": "d", "parameters": nested(20)}]  # type: ignore[index]
    assert post_json(sidecar, body).status_code == 200


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"x-note": "café"}, 'header "x-note" has a value with line breaks, NUL, other control or non-ASCII'),
        ({"x-note": "a\r\nx-injected: 1"}, 'header "x-note" has a value with line breaks'),
        ({"x-note": "a\x00b"}, 'header "x-note" has a value'),
        ({"": "v"}, 'has an invalid header name ""'),
        ({"x-api-key ": "v"}, 'has an invalid header name "x-api-key "'),
        ({"x y": "v"}, "has an invalid header name"),
    ],
)
def test_bad_option_headers_are_400_at_once_and_nothing_goes_upstream(
    sidecar: RunningSidecar, upstream: FakeUpstream, headers: dict[str, str], message: str
) -> None:
    started = time.monotonic()
    response = post_json(sidecar, pi_body("anthropic/claude-sonnet-4-5", headers=headers))
    assert_envelope(response, 400, "invalid_request_error", message)
    assert response.json()["error"]["message"].startswith("`options.headers`")
    assert time.monotonic() - started < 1.0  # no retries against the upstream
    assert upstream.received == []


def test_non_ascii_passthrough_request_header_is_400(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    response = httpx.post(
        f"{sidecar.url}/v1/pi/stream",
        content=orjson.dumps(pi_body("anthropic/claude-sonnet-4-5")),
        headers=[(b"authorization", f"Bearer {TOKEN}".encode()), (b"anthropic-beta", "tést".encode("latin-1"))],
        timeout=10,
    )
    assert_envelope(response, 400, "invalid_request_error", '`request headers` header "anthropic-beta"')
    assert upstream.received == []


def test_valid_option_headers_still_go_upstream(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    upstream.push(Reply.sse(fixture_bytes(TEXT_FIXTURE)))
    headers = {"X-Trace": "abc 123", "authorization": "Bearer stolen"}
    response = post_json(sidecar, pi_body("anthropic/claude-sonnet-4-5", headers=headers))
    assert response.status_code == 200
    sent = upstream.received[0].headers
    assert sent["x-trace"] == "abc 123"
    assert "authorization" not in sent and sent["x-api-key"].startswith("sk-ant-canary")


# ----- 13: stream must be a boolean; the body must be JSON --------------------------------------------------------


def test_huge_timeouts_are_400_and_zero_or_negative_still_disable(sidecar: RunningSidecar) -> None:
    # A timeout of more than a day would let a stuck upstream hold an admission slot; 0 or less means "none".
    huge = pi_body("echo/echo", streamIdleTimeoutMs=1e300)
    assert_envelope(post_json(sidecar, huge), 400, "invalid_request_error", "`options.streamIdleTimeoutMs` must be at")
    for value in (0, -1, -5):
        body = pi_body("echo/echo", streamIdleTimeoutMs=value, maxRetryDelayMs=value)
        assert post_json(sidecar, body).status_code == 200


@pytest.mark.parametrize("value", ["no", 0, 1, [], {}])
def test_stream_must_be_a_boolean(sidecar: RunningSidecar, value: Any) -> None:
    body = {**pi_body("echo/echo"), "stream": value}
    assert_envelope(post_json(sidecar, body), 400, "invalid_request_error", "`stream` must be true or false")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_non_json_content_type_is_415(sidecar: RunningSidecar, content_type: str) -> None:
    response = post_json(sidecar, pi_body("echo/echo"), {"content-type": content_type})
    assert_envelope(response, 415, "invalid_request_error", "send the body with Content-Type: application/json")


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "application/x+json"])
def test_json_content_types_are_accepted(sidecar: RunningSidecar, content_type: str) -> None:
    assert post_json(sidecar, pi_body("echo/echo"), {"content-type": content_type}).status_code == 200


def test_a_client_leaving_mid_body_is_one_info_line(sidecar: RunningSidecar, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    head = (
        f"POST /v1/pi/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", sidecar.port)) as sock:
        sock.sendall(head.encode() + b'{"modelId": "echo/echo", ')
        time.sleep(0.2)
    deadline = time.monotonic() + 3
    while not any("client disconnected while sending" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
        time.sleep(0.02)
    time.sleep(0.1)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert not any(r.exc_info for r in caplog.records)
    assert httpx.get(f"{sidecar.url}/healthz").status_code == 200


def test_port_out_of_range_is_a_config_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[server]\nport = 80000\n")
    with pytest.raises(ConfigError, match="port must be between 1 and 65535, got 80000"):
        load_settings(config, {"HOME": str(tmp_path)})


# ----- 10: JSON mode stops the upstream when the client leaves ----------------------------------------------------


def test_json_mode_client_disconnect_cancels_the_upstream_and_records_aborted(
    sidecar: RunningSidecar, upstream: FakeUpstream
) -> None:
    upstream.push(Reply.sse(fixture_bytes(TEXT_FIXTURE), split=40, delay_between=0.1))  # many seconds to the end
    body = {**pi_body("anthropic/claude-sonnet-4-5"), "stream": False}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{sidecar.url}/v1/pi/stream", json=body, headers=HEADERS, timeout=httpx.Timeout(10, read=1.5))
    left = time.monotonic()
    while upstream.disconnects == 0 and time.monotonic() - left < 3:
        time.sleep(0.02)
    assert upstream.disconnects == 1, "the upstream kept generating after the JSON-mode client left"
    assert time.monotonic() - left < 1.5
    ((_, outcome),) = sidecar.wait_for_outcomes(1)
    assert outcome.reason == "aborted" and outcome.error_status == 499
    assert outcome.message["usage"]["input"] > 0  # what was generated before the disconnect is still recorded
    assert httpx.get(f"{sidecar.url}/healthz").json()["streams"]["inFlight"] == 0


def test_json_mode_still_answers_a_client_that_waits(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    upstream.push(Reply.sse(fixture_bytes(TEXT_FIXTURE), split=400, delay_between=0.02))
    body = {**pi_body("anthropic/claude-sonnet-4-5"), "stream": False}
    response = httpx.post(f"{sidecar.url}/v1/pi/stream", json=body, headers=HEADERS, timeout=10)
    assert response.status_code == 200 and response.json()["message"]["stopReason"] == "stop"
    ((_, outcome),) = sidecar.wait_for_outcomes(1)
    assert outcome.reason == "stop"


# ----- 5: admission control answers 503/429 with retry-after before the 200 ---------------------------------------

ADMISSION_CONFIG = """
[upstream]
max_retries = 0

[server]
max_streams = 3
max_streams_per_workload = 2

[[workloads]]
name = "solo"
token = "env:SOLO_TOKEN"
max_streams = 1

[[workloads]]
name = "other"
token = "env:OTHER_TOKEN"
"""
SOLO = "solo-workload-token-0123456789"
OTHER = "other-workload-token-0123456789"


def test_admission_limits_per_workload_and_per_process(upstream: FakeUpstream, tmp_path: Path) -> None:
    environ = sidecar_environ(upstream.url, tmp_path, SOLO_TOKEN=SOLO, OTHER_TOKEN=OTHER)
    upstream.default = Reply.sse(fixture_bytes(TEXT_FIXTURE), delay_before=30)  # holds each stream open
    with run_sidecar(environ, write_config(tmp_path, ADMISSION_CONFIG)) as running:
        asyncio.run(_exercise_admission(running, upstream))


async def _exercise_admission(running: RunningSidecar, upstream: FakeUpstream) -> None:
    body = orjson.dumps(pi_body("anthropic/claude-sonnet-4-5"))
    async with httpx.AsyncClient(base_url=running.url, timeout=10) as client:

        async def open_stream(token: str) -> httpx.Response:
            request = client.build_request("POST", "/v1/pi/stream", content=body, headers=_bearer(token))
            return await client.send(request, stream=True)

        async def refused(token: str) -> httpx.Response:
            response = await client.post("/v1/pi/stream", content=body, headers=_bearer(token))
            await response.aclose()
            return response

        held = [await open_stream(SOLO)]
        assert held[0].status_code == 200
        # The workload's own limit ([[workloads]] max_streams = 1): 429 with retry-after, no upstream call.
        over = await refused(SOLO)
        assert_envelope(over, 429, "rate_limit_exceeded", "workload:solo already has 1 generations in flight")
        assert over.headers["retry-after"] == "1"
        # The default per-workload limit (2) for the default bearer.
        held += [await open_stream(TOKEN), await open_stream(TOKEN)]
        assert all(r.status_code == 200 for r in held)
        # The process is full (max_streams = 3): another workload gets 503 overloaded with retry-after.
        full = await refused(OTHER)
        assert_envelope(full, 503, "overloaded", "its limit ([server] max_streams)")
        assert full.headers["retry-after"] == "1"
        health = (await client.get("/healthz")).json()
        assert health["streams"] == {"inFlight": 3, "max": 3, "saturated": True, "refused": 2}
        deadline = time.monotonic() + 5
        while len(upstream.received) < 3 and time.monotonic() < deadline:  # noqa: ASYNC110  (another thread's list)
            await asyncio.sleep(0.02)
        assert len(upstream.received) == 3  # the refused requests never reached the upstream
        # Closing the streams (clients going away) frees their slots.
        for response in held:
            await response.aclose()
        deadline = time.monotonic() + 5
        while (await client.get("/healthz")).json()["streams"]["inFlight"] != 0:
            assert time.monotonic() < deadline, "slots were not released when the clients left"
            await asyncio.sleep(0.05)
        again = await open_stream(OTHER)
        assert again.status_code == 200
        await again.aclose()


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "content-type": "application/json"}


def test_json_mode_and_finished_streams_release_their_slot(upstream: FakeUpstream, tmp_path: Path) -> None:
    config = write_config(tmp_path, "[server]\nmax_streams = 1\n")
    with run_sidecar(sidecar_environ(upstream.url, tmp_path), config) as running:
        for stream in (True, False, True, False):
            body = {**pi_body("echo/echo"), "stream": stream}
            assert post_json(running, body).status_code == 200
        # Refusals before admission (bad body, unknown model) never take a slot either.
        assert post_json(running, pi_body("nope/none")).status_code == 404
        assert post_json(running, {"modelId": "echo/echo"}).status_code == 400
        assert httpx.get(f"{running.url}/healthz").json()["streams"]["inFlight"] == 0
        assert post_json(running, pi_body("echo/echo")).status_code == 200


def test_the_slot_is_free_before_the_terminal_frame_is_sent(upstream: FakeUpstream, tmp_path: Path) -> None:
    """A client that sends its next request the moment it reads ``[DONE]`` must find its slot free. Under load the
    response winds up several loop turns after the terminal frame (the bench at c=128 got 803 spurious 429s when the
    slot was freed only then), so the slot is freed when the generation finishes: ``on_finish`` runs right before
    the terminal frame is written, and by then nothing is in flight."""
    in_flight_at_finish: list[int] = []
    config = write_config(tmp_path, "[server]\nmax_streams_per_workload = 1\n")
    environ = sidecar_environ(upstream.url, tmp_path)
    with run_sidecar(environ, config, on_finish=lambda *_: in_flight_at_finish.append(admission.in_flight)) as running:
        admission = running.server.config.app.state.admission
        for stream in (True, False, True):
            assert post_json(running, {**pi_body("echo/echo"), "stream": stream}).status_code == 200
    assert in_flight_at_finish == [0, 0, 0]
