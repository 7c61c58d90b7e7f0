"""The client against a scripted local SSE server: the happy path, SSE framing, the request on the wire."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import httpx
import pytest

import client
from client import _transport
from tests.client.events import CONTEXT, MODEL, error_event, frame, message, sse, start, text_turn
from tests.client.sse_server import Script, ScriptedServer, split_every

PARTS = ["Hel", "lo ", "wörld ", "😀 ✓"]


async def collect(s: client.AsyncEventStream) -> list[dict[str, Any]]:
    return [dict(e) async for e in s]


# ----- happy path -------------------------------------------------------------------------------------------------


async def test_happy_path_yields_exactly_the_events_and_result(server: ScriptedServer) -> None:
    events = text_turn(PARTS)
    server.push(Script.sse(sse(events)))
    s = client.stream(MODEL, CONTEXT, base_url=server.url, token="tok")
    assert await collect(s) == events
    assert await s.result() == events[-1]["message"]
    assert s.error is None
    assert s.response_headers is not None and s.response_headers["content-type"] == "text/event-stream"
    [req] = server.received
    assert (req.method, req.path) == ("POST", "/v1/pi/stream")
    body = req.json()
    assert set(body) == {"modelId", "context", "options", "stream"}
    assert body["modelId"] == MODEL and body["context"] == CONTEXT and body["stream"] is True
    assert req.headers["content-type"] == "application/json"
    assert req.headers["accept"] == "text/event-stream"
    assert req.headers["authorization"] == "Bearer tok"


async def test_result_without_iterating_reads_the_stream(server: ScriptedServer) -> None:
    events = text_turn(PARTS)
    server.push(Script.sse(sse(events)))
    s = client.stream(MODEL, CONTEXT, base_url=server.url)
    assert await s.result() == events[-1]["message"]
    assert await collect(s) == []  # already read to the end


async def test_result_after_partial_iteration_reads_the_rest(server: ScriptedServer) -> None:
    events = text_turn(PARTS)
    server.push(Script.sse(sse(events)))
    async with client.stream(MODEL, CONTEXT, base_url=server.url) as s:
        first = await anext(s)
        assert first["type"] == "start"
        assert await s.result() == events[-1]["message"]


async def test_result_while_another_task_iterates(server: ScriptedServer) -> None:
    events = text_turn(PARTS)
    server.push(Script(steps=[sse(events[:2], done_marker=False), 0.1, sse(events[2:])]))
    s = client.stream(MODEL, CONTEXT, base_url=server.url)
    consumer = asyncio.create_task(collect(s))
    await asyncio.sleep(0.02)
    assert await s.result() == events[-1]["message"]
    assert await consumer == events


async def test_in_band_gateway_error_is_the_terminal(server: ScriptedServer) -> None:
    events = [start(), error_event("429 rate limited", 429)]
    server.push(Script.sse(sse(events)))
    s = client.stream(MODEL, CONTEXT, base_url=server.url)
    assert await collect(s) == events
    result = await s.result()
    assert result["stopReason"] == "error" and result["errorMessage"] == "429 rate limited"
    assert result.get("errorStatus") == 429
    assert s.error is None  # reported by the gateway, not made up by the client


async def test_complete_returns_the_final_message(server: ScriptedServer) -> None:
    events = text_turn(PARTS)
    server.push(Script.sse(sse(events)))
    assert await client.complete(MODEL, CONTEXT, base_url=server.url) == events[-1]["message"]


async def test_model_dict_gives_model_id_base_url_and_headers(server: ScriptedServer) -> None:
    server.push(Script.sse(sse(text_turn(["x"]))))
    model: dict[str, Any] = {"provider": "openai", "id": "gpt-4.1", "api": "openai-responses"}
    model |= {"baseUrl": server.url + "/", "headers": {"x-model-header": "m"}}
    await client.complete(model, CONTEXT)
    [req] = server.received
    assert req.json()["modelId"] == "openai/gpt-4.1"
    assert req.headers["x-model-header"] == "m"


# ----- SSE framing -------------------------------------------------------------------------------------------------


async def test_crlf_framing(server: ScriptedServer) -> None:
    events = text_turn(PARTS)
    server.push(Script.sse(sse(events, crlf=True)))
    assert await collect(client.stream(MODEL, CONTEXT, base_url=server.url)) == events


async def test_bare_cr_framing(server: ScriptedServer) -> None:
    events = text_turn(PARTS)
    server.push(Script.sse(sse(events).replace(b"\n", b"\r"), split=5))
    assert await collect(client.stream(MODEL, CONTEXT, base_url=server.url)) == events


async def test_multi_line_data_is_joined_with_newlines(server: ScriptedServer) -> None:
    events = text_turn(["multi", "line"])
    body = b"".join(b"data: " + frame(e)[6:-2].replace(b", ", b",\ndata: ") + b"\n\n" for e in events)
    assert body.count(b"\ndata: ") > len(events)  # really split over several data lines
    server.push(Script.sse(body + frame("[DONE]")))
    assert await collect(client.stream(MODEL, CONTEXT, base_url=server.url)) == events


async def test_comments_event_id_retry_lines_are_ignored(server: ScriptedServer) -> None:
    events = text_turn(PARTS)
    body = b": hello\n\nretry: 1000\n\n"
    for i, e in enumerate(events):
        body += b": keep-alive\nevent: message\nid: %d\n" % i + frame(e) + b"id: only-an-id\n\n"
    server.push(Script.sse(body + b"event: end\ndata:\n\n" + frame("[DONE]")))
    assert await collect(client.stream(MODEL, CONTEXT, base_url=server.url)) == events


@pytest.mark.parametrize("size", [1, 3, 7])
@pytest.mark.parametrize("crlf", [False, True])
async def test_bytes_split_anywhere_including_inside_utf8(server: ScriptedServer, size: int, crlf: bool) -> None:
    events = text_turn(PARTS)
    body = sse(events, crlf=crlf)
    pieces = split_every(body, size)
    # some split lands inside a multi-byte UTF-8 sequence (continuation bytes start with 0b10)
    assert size == 1 or any(p[:1] and 0x80 <= p[0] < 0xC0 for p in pieces)
    server.push(Script(steps=pieces))
    assert await collect(client.stream(MODEL, CONTEXT, base_url=server.url)) == events


async def test_done_marker_ends_the_stream_and_later_frames_are_ignored(server: ScriptedServer) -> None:
    events = text_turn(["a"])
    junk = frame({"type": "text_delta", "contentIndex": 0, "delta": "late", "partial": message()})
    server.push(Script.sse(sse(events) + junk))
    assert await collect(client.stream(MODEL, CONTEXT, base_url=server.url)) == events


async def test_missing_done_marker_after_terminal_is_fine(server: ScriptedServer) -> None:
    events = text_turn(["a"])
    server.push(Script.sse(sse(events, done_marker=False)))
    assert await collect(client.stream(MODEL, CONTEXT, base_url=server.url)) == events


async def test_last_event_without_blank_line_is_dispatched_at_eof(server: ScriptedServer) -> None:
    events = text_turn(["a"])
    server.push(Script.sse(sse(events, done_marker=False)[:-2]))  # ends "...}" with no line ending at all
    assert await collect(client.stream(MODEL, CONTEXT, base_url=server.url)) == events


async def test_content_type_is_not_required(server: ScriptedServer) -> None:
    events = text_turn(["a"])
    server.push(Script.sse(sse(events), headers={"content-type": "text/plain"}))
    assert await collect(client.stream(MODEL, CONTEXT, base_url=server.url)) == events


# ----- the request: options, token, URL ---------------------------------------------------------------------------


async def test_options_stripping_and_token_only_in_header(server: ScriptedServer) -> None:
    server.push(Script.sse(sse(text_turn(["x"]))))
    options = {
        "maxTokens": 2048,
        "reasoning": "high",
        "temperature": 0.5,
        "toolChoice": "auto",
        "metadata": {"user_id": "u1", "nested": None},
        "headers": {"anthropic-beta": "x"},
        "streamIdleTimeoutMs": 60_000,
        "signal": asyncio.Event(),
        "apiKey": "secret-bearer-from-options",
        "api_key": "other",
        "fetch": object(),
        "onPayload": lambda p: p,
        "on_response": print,
        "someCallback": lambda: None,
        "execHandlers": {"a": 1},
        "providerSessionState": {"s": 1},
        "onBeforeRequest": None,
        "topP": None,
    }
    await client.complete(MODEL, CONTEXT, options, base_url=server.url)
    [req] = server.received
    wire = req.json()["options"]
    session_id = wire.pop("sessionId")
    assert uuid.UUID(session_id).version == 4
    assert wire == {
        "maxTokens": 2048,
        "reasoning": "high",
        "temperature": 0.5,
        "toolChoice": "auto",
        "metadata": {"user_id": "u1", "nested": None},
        "headers": {"anthropic-beta": "x"},
        "streamIdleTimeoutMs": 60_000,
    }
    # options["apiKey"] is the gateway bearer, as in the reference: header only, never the body
    assert req.headers["authorization"] == "Bearer secret-bearer-from-options"
    assert b"secret-bearer" not in req.body


async def test_caller_session_id_is_kept_blank_is_replaced(server: ScriptedServer) -> None:
    server.default = Script.sse(sse(text_turn(["x"])))
    await client.complete(MODEL, CONTEXT, {"sessionId": "conv-42"}, base_url=server.url)
    await client.complete(MODEL, CONTEXT, {"sessionId": "  "}, base_url=server.url)
    assert server.received[0].json()["options"] == {"sessionId": "conv-42"}
    assert uuid.UUID(server.received[1].json()["options"]["sessionId"])


async def test_token_argument_wins_and_caller_headers_are_sent(server: ScriptedServer) -> None:
    server.default = Script.sse(sse(text_turn(["x"])))
    await client.complete(MODEL, CONTEXT, {"apiKey": "opt"}, base_url=server.url, token="arg", headers={"x-a": "1"})
    await client.complete(MODEL, CONTEXT, base_url=server.url, token="arg", headers={"authorization": "Bearer mine"})
    assert server.received[0].headers["authorization"] == "Bearer arg"
    assert server.received[0].headers["x-a"] == "1"
    assert server.received[1].headers["authorization"] == "Bearer mine"
    assert b"arg" not in server.received[0].body


async def test_no_token_no_authorization_header(server: ScriptedServer) -> None:
    server.push(Script.sse(sse(text_turn(["x"]))))
    await client.complete(MODEL, CONTEXT, base_url=server.url)
    assert "authorization" not in server.received[0].headers


async def test_env_url_and_token_with_prefix_and_trailing_slashes(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIDECAR_URL", server.url + "/gw/prefix///")
    monkeypatch.setenv("SIDECAR_TOKEN", "env-token")
    server.push(Script.sse(sse(text_turn(["x"]))))
    assert (await client.complete(MODEL, CONTEXT))["stopReason"] == "stop"
    [req] = server.received
    assert req.path == "/gw/prefix/v1/pi/stream"
    assert req.headers["authorization"] == "Bearer env-token"


async def test_base_url_argument_beats_env(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_URL", "http://127.0.0.1:9/never")
    server.push(Script.sse(sse(text_turn(["x"]))))
    await client.complete(MODEL, CONTEXT, base_url=server.url + "/p/")
    assert server.received[0].path == "/p/v1/pi/stream"


def test_configuration_error_without_url() -> None:
    with pytest.raises(client.ConfigurationError, match="SIDECAR_URL"):
        client.stream(MODEL, CONTEXT)
    with pytest.raises(client.ConfigurationError):
        client.stream_sync(MODEL, CONTEXT, base_url="  ")
    with pytest.raises(client.ConfigurationError):
        client.stream({"provider": "anthropic"}, CONTEXT, base_url="http://x")
    for bad in ("127.0.0.1:4000", "ftp://gw", "http://"):
        with pytest.raises(client.ConfigurationError, match="invalid auth-gateway URL"):
            client.stream(MODEL, CONTEXT, base_url=bad)


def test_unserializable_context_fails_at_the_call() -> None:
    with pytest.raises(TypeError):
        client.stream(MODEL, {"messages": [object()]}, base_url="http://127.0.0.1:9")


async def test_injected_http_client_is_used_and_not_closed(server: ScriptedServer) -> None:
    server.push(Script.sse(sse(text_turn(["x"]))))
    seen: list[str] = []

    async def hook(request: httpx.Request) -> None:
        seen.append(str(request.url))

    async with httpx.AsyncClient(event_hooks={"request": [hook]}) as http:
        message = await client.complete(MODEL, CONTEXT, base_url=server.url, http_client=http)
        assert message["stopReason"] == "stop"
        assert not http.is_closed
    assert seen == [server.url + "/v1/pi/stream"]


# ----- connection reuse --------------------------------------------------------------------------------------------


async def test_1000_sequential_calls_reuse_one_connection(server: ScriptedServer) -> None:
    events = text_turn(["a", "b"])
    server.default = Script.sse(sse(events))
    started = time.monotonic()
    for _ in range(1000):
        got = [e async for e in client.stream(MODEL, CONTEXT, base_url=server.url)]
        assert got[-1]["type"] == "done"
    elapsed = time.monotonic() - started
    assert len(server.received) == 1000
    assert len(server.peers) <= 2, server.peers
    assert elapsed < 15


async def test_pooled_client_is_shared_per_base_url_and_closed_with_the_loop(server: ScriptedServer) -> None:
    a = await _transport.pooled_client(server.url)
    assert await _transport.pooled_client(server.url) is a
    assert await _transport.pooled_client(server.url + "/other") is not a
    await _transport.aclose_pooled_clients()
    assert a.is_closed
    assert await _transport.pooled_client(server.url) is not a


def test_pooled_clients_close_when_asyncio_run_ends(server: ScriptedServer) -> None:
    server.default = Script.sse(sse(text_turn(["x"])))

    async def call() -> httpx.AsyncClient:
        await client.complete(MODEL, CONTEXT, base_url=server.url)
        return await _transport.pooled_client(server.url)

    first = asyncio.run(call())
    second = asyncio.run(call())
    assert first is not second
    assert first.is_closed and second.is_closed


# ----- the sync twin -----------------------------------------------------------------------------------------------


def test_sync_stream_yields_the_events_and_result(server: ScriptedServer) -> None:
    events = text_turn(PARTS)
    server.push(Script.sse(sse(events), split=3))
    with client.stream_sync(MODEL, CONTEXT, base_url=server.url, token="t") as s:
        assert [dict(e) for e in s] == events
        assert s.result() == events[-1]["message"]
        assert s.error is None
    assert server.received[0].headers["authorization"] == "Bearer t"


def test_sync_complete_and_reuse(server: ScriptedServer) -> None:
    events = text_turn(["x"])
    server.default = Script.sse(sse(events))
    for _ in range(50):
        assert client.complete_sync(MODEL, CONTEXT, base_url=server.url) == events[-1]["message"]
    assert len(server.peers) <= 2


def test_sync_stream_from_inside_a_running_loop_does_not_deadlock(server: ScriptedServer) -> None:
    events = text_turn(["x"])
    server.push(Script.sse(sse(events)))

    async def caller() -> Any:
        return client.complete_sync(MODEL, CONTEXT, base_url=server.url)  # blocks this loop, runs on another

    assert asyncio.run(caller()) == events[-1]["message"]


def test_sync_close_before_start_sends_nothing(server: ScriptedServer) -> None:
    s = client.stream_sync(MODEL, CONTEXT, base_url=server.url)
    s.close()
    assert list(s) == []
    assert s.result()["stopReason"] == "aborted"
    assert server.received == []


def test_sync_abort_event_from_another_thread(server: ScriptedServer) -> None:
    events = text_turn(PARTS)
    server.push(Script(steps=[sse(events[:3], done_marker=False), 10.0]))
    abort = threading.Event()
    s = client.stream_sync(MODEL, CONTEXT, base_url=server.url, abort=abort)
    got = [next(s), next(s), next(s)]
    timer = threading.Timer(0.1, abort.set)
    timer.start()
    started = time.monotonic()
    rest: list[Any] = [dict(e) for e in s]
    assert time.monotonic() - started < 2
    assert got == events[:3]
    assert [e["type"] for e in rest] == ["error"]
    assert rest[0]["reason"] == "aborted" and rest[0]["error"]["stopReason"] == "aborted"
    assert isinstance(s.error, client.StreamAbortedError)
    assert server.wait_disconnect(2)  # a sync test: nothing runs on this thread's loop


def test_abandoned_sync_stream_is_aborted_when_collected(server: ScriptedServer) -> None:
    server.push(Script(steps=[frame(start()), 10.0]))
    s = client.stream_sync(MODEL, CONTEXT, base_url=server.url)
    assert next(s)["type"] == "start"
    del s  # no cycle keeps it alive: __del__ aborts the read on the private loop
    assert server.wait_disconnect(2)
