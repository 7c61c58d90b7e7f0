"""Every failure mode ends in exactly one terminal event within its timeout, or raises before the stream starts."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest

import client
from tests.client.events import CONTEXT, MODEL, frame, sse, start, text_turn
from tests.client.sse_server import DROP, Script, ScriptedServer

FIRST_MSG = "pi-native stream timed out while waiting for the first event"
IDLE_MSG = "pi-native stream stalled while waiting for the next event"
INCOMPLETE_MSG = "stream closed before a terminal event"
MARGIN = 0.5
"""Seconds a timeout may overrun (scheduling on a loaded 2-core machine)."""


async def run(server: ScriptedServer, options: dict[str, Any] | None = None, **kw: Any) -> tuple[list[Any], float]:
    started = time.monotonic()
    s = client.stream(MODEL, CONTEXT, options, base_url=server.url, **kw)
    events = [dict(e) async for e in s]
    elapsed = time.monotonic() - started
    assert dict(await s.result()) == (events[-1]["message"] if events[-1]["type"] == "done" else events[-1]["error"])
    return events, elapsed


def assert_synthetic_error(event: dict[str, Any], reason: str, message: str) -> None:
    """A terminal the client made: a full AssistantMessage (protocol §14.1), zero usage, no content."""
    assert event["type"] == "error" and event["reason"] == reason
    msg = event["error"]
    assert msg["role"] == "assistant" and msg["content"] == []
    assert msg["stopReason"] == reason and msg["errorMessage"] == message
    assert (msg["provider"], msg["model"]) == ("anthropic", "claude-sonnet-4-5")
    assert isinstance(msg["api"], str) and msg["api"]
    assert msg["usage"] == client.types.zero_usage()
    assert abs(msg["timestamp"] - time.time() * 1000) < 60_000


async def disconnected(server: ScriptedServer) -> bool:
    """The server saw the client go away (waited for off the loop, so the client's tasks keep running)."""
    return await asyncio.to_thread(server.wait_disconnect, 2)


def only_one_terminal(events: list[Any]) -> None:
    assert [e["type"] in ("done", "error") for e in events].count(True) == 1
    assert events[-1]["type"] in ("done", "error")


# ----- timeouts ---------------------------------------------------------------------------------------------------


async def test_stall_before_the_first_event(server: ScriptedServer) -> None:
    server.push(Script(steps=[10.0]))
    events, elapsed = await run(server, {"streamFirstEventTimeoutMs": 300})
    assert len(events) == 1
    assert_synthetic_error(events[0], "error", FIRST_MSG)
    assert 0.3 <= elapsed < 0.3 + MARGIN
    assert await disconnected(server)  # the response was closed


async def test_stall_before_the_response_headers(server: ScriptedServer) -> None:
    server.push(Script(delay_headers=10.0))
    events, elapsed = await run(server, {"streamFirstEventTimeoutMs": 300})
    assert_synthetic_error(events[-1], "error", FIRST_MSG)
    assert 0.3 <= elapsed < 0.3 + MARGIN


async def test_start_is_not_progress_first_event_timeout_still_fires(server: ScriptedServer) -> None:
    server.push(Script(steps=[frame(start()), 10.0]))
    s = client.stream(
        MODEL, CONTEXT, {"streamFirstEventTimeoutMs": 300, "streamIdleTimeoutMs": 100}, base_url=server.url
    )
    started = time.monotonic()
    events = [dict(e) async for e in s]
    elapsed = time.monotonic() - started
    assert [e["type"] for e in events] == ["start", "error"]
    assert_synthetic_error(events[-1], "error", FIRST_MSG)
    assert 0.3 <= elapsed < 0.3 + MARGIN  # the first-event budget, not the 0.1 s idle one
    assert isinstance(s.error, client.StreamTimeoutError) and isinstance(s.error, TimeoutError)
    assert str(s.error) == FIRST_MSG


async def test_sse_comments_during_a_stall_do_not_reset_the_timer(server: ScriptedServer) -> None:
    steps: list[Any] = [frame(start())]
    for _ in range(40):
        steps += [0.05, b": keep-alive\n\n"]
    server.push(Script(steps=steps))
    events, elapsed = await run(server, {"streamFirstEventTimeoutMs": 300})
    assert [e["type"] for e in events] == ["start", "error"]
    assert_synthetic_error(events[-1], "error", FIRST_MSG)
    assert 0.3 <= elapsed < 0.3 + MARGIN


async def test_stall_mid_stream_is_an_idle_timeout(server: ScriptedServer) -> None:
    turn = text_turn(["a", "b"])
    server.push(Script(steps=[sse(turn[:3], done_marker=False), 10.0]))
    started = time.monotonic()
    events, _ = await run(server, {"streamFirstEventTimeoutMs": 5000, "streamIdleTimeoutMs": 300})
    elapsed = time.monotonic() - started
    assert events[:3] == turn[:3]
    assert_synthetic_error(events[-1], "error", IDLE_MSG)
    only_one_terminal(events)
    assert 0.3 <= elapsed < 0.3 + MARGIN
    assert await disconnected(server)


async def test_comments_mid_stream_do_not_reset_the_idle_timer(server: ScriptedServer) -> None:
    turn = text_turn(["a"])
    steps: list[Any] = [sse(turn[:3], done_marker=False)]
    for _ in range(40):
        steps += [0.05, b":\n\n"]
    server.push(Script(steps=steps))
    events, elapsed = await run(server, {"streamIdleTimeoutMs": 300})
    assert_synthetic_error(events[-1], "error", IDLE_MSG)
    assert elapsed < 0.3 + MARGIN


async def test_steady_events_keep_the_stream_alive_past_the_idle_timeout(server: ScriptedServer) -> None:
    turn = text_turn([str(i) for i in range(4)])
    steps: list[Any] = []
    for event in turn:
        steps += [frame(event), 0.06]
    server.push(Script(steps=steps))
    events, elapsed = await run(server, {"streamIdleTimeoutMs": 200, "streamFirstEventTimeoutMs": 200})
    assert events == turn
    assert elapsed > 0.4  # longer than either timeout, yet no timeout


async def test_time_spent_by_the_consumer_is_not_counted(server: ScriptedServer) -> None:
    turn = text_turn(["a"])
    server.push(Script.sse(sse(turn)))
    s = client.stream(
        MODEL, CONTEXT, {"streamIdleTimeoutMs": 100, "streamFirstEventTimeoutMs": 100}, base_url=server.url
    )
    events = []
    async for event in s:
        events.append(dict(event))
        await asyncio.sleep(0.12)  # slower than the idle timeout, while the gateway is not silent
    assert events == turn


async def test_timeouts_from_env(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PI_STREAM_FIRST_EVENT_TIMEOUT_MS", "250")
    server.push(Script(steps=[10.0]))
    events, elapsed = await run(server)
    assert_synthetic_error(events[-1], "error", FIRST_MSG)
    assert 0.25 <= elapsed < 0.25 + MARGIN

    monkeypatch.setenv("PI_STREAM_FIRST_EVENT_TIMEOUT_MS", "5000")
    monkeypatch.setenv("PI_STREAM_IDLE_TIMEOUT_MS", "250")
    server.push(Script(steps=[sse(text_turn(["a"])[:3], done_marker=False), 10.0]))
    events, elapsed = await run(server)
    assert_synthetic_error(events[-1], "error", IDLE_MSG)
    assert elapsed < 0.25 + MARGIN


async def test_option_beats_env(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PI_STREAM_FIRST_EVENT_TIMEOUT_MS", "100")
    server.push(Script(steps=[0.3, sse(text_turn(["a"]))]))
    events, _ = await run(server, {"streamFirstEventTimeoutMs": 2000})
    assert events[-1]["type"] == "done"


async def test_zero_disables_the_timeouts(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PI_STREAM_IDLE_TIMEOUT_MS", "50")
    monkeypatch.setenv("PI_STREAM_FIRST_EVENT_TIMEOUT_MS", "50")
    turn = text_turn(["a"])
    server.push(Script(steps=[0.2, sse(turn[:3], done_marker=False), 0.2, sse(turn[3:])]))
    events, _ = await run(server, {"streamFirstEventTimeoutMs": 0, "streamIdleTimeoutMs": 0})
    assert events == turn


# ----- streams that end badly -------------------------------------------------------------------------------------


async def test_close_without_terminal(server: ScriptedServer) -> None:
    turn = text_turn(["a"])
    server.push(Script.sse(sse(turn[:3], done_marker=False)))
    events, _ = await run(server)
    assert events[:3] == turn[:3]
    assert_synthetic_error(events[-1], "error", INCOMPLETE_MSG)
    only_one_terminal(events)


async def test_done_marker_without_terminal(server: ScriptedServer) -> None:
    turn = text_turn(["a"])
    server.push(Script.sse(sse(turn[:3])))
    events, _ = await run(server)
    assert_synthetic_error(events[-1], "error", INCOMPLETE_MSG)


async def test_truncated_last_frame_is_an_incomplete_stream(server: ScriptedServer) -> None:
    turn = text_turn(["a"])
    server.push(Script.sse(sse(turn[:3], done_marker=False) + frame(turn[-1])[:40]))
    events, _ = await run(server)
    assert len(events) == 4
    assert_synthetic_error(events[-1], "error", INCOMPLETE_MSG)


async def test_drop_mid_body(server: ScriptedServer) -> None:
    turn = text_turn(["a"])
    server.push(Script(steps=[sse(turn[:3], done_marker=False), frame(turn[3])[:30], DROP]))
    events, elapsed = await run(server)
    assert events[:3] == turn[:3]
    last = events[-1]
    assert last["type"] == "error" and last["reason"] == "error"
    assert last["error"]["errorMessage"].startswith(INCOMPLETE_MSG)
    only_one_terminal(events)
    assert elapsed < 2


async def test_invalid_json_frame(server: ScriptedServer) -> None:
    server.push(Script(steps=[frame(start()), b"data: {not json\n\n", 10.0]))
    s = client.stream(MODEL, CONTEXT, base_url=server.url)
    events: list[Any] = [dict(e) async for e in s]
    assert [e["type"] for e in events] == ["start", "error"]
    assert events[-1]["error"]["errorMessage"].startswith(INCOMPLETE_MSG + ": invalid JSON")
    assert isinstance(s.error, client.IncompleteStreamError)
    assert await disconnected(server)


async def test_error_event_without_its_message_is_completed(server: ScriptedServer) -> None:
    # the reference server's own fallback frame, which crashes the reference client (protocol §14.1)
    bad = {"type": "error", "reason": "error", "errorMessage": "boom"}
    server.push(Script.sse(sse([start(), bad])))
    events, _ = await run(server)
    assert_synthetic_error(events[-1], "error", "boom")


# ----- errors before the stream -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "content_type", "message", "type_"),
    [
        (400, {"error": {"message": "Unknown model: x/y", "type": "invalid_request_error"}}, None, "Unknown model: x/y",
         "invalid_request_error"),
        (404, {"error": {"type": "invalid_request_error"}}, None, "auth-gateway 404", "invalid_request_error"),
        (401, b'{"error":"unauthorized"}', None, 'auth-gateway 401: {"error":"unauthorized"}', None),
        (401, {"error": "unauthorized"}, None, 'auth-gateway 401: {"error":"unauthorized"}', None),
        (500, {"error": None}, None, 'auth-gateway 500: {"error":null}', None),
        (502, "Bad gateway\n", "text/plain", "auth-gateway 502: Bad gateway", None),
        (503, [1, 2], None, "auth-gateway 503: [1,2]", None),
        (500, b"", "text/plain", "auth-gateway 500: Internal Server Error", None),
    ],
)  # fmt: skip
async def test_error_bodies(
    server: ScriptedServer, status: int, body: Any, content_type: str | None, message: str, type_: str | None
) -> None:
    server.push(Script.body(status, body, content_type or "application/json"))
    server.scripts[0].headers["x-request-id"] = "req-1"
    s = client.stream(MODEL, CONTEXT, base_url=server.url)
    with pytest.raises(client.GatewayError) as info:
        await anext(s)
    err = info.value
    assert (err.message, err.status, err.type) == (message, status, type_)
    assert str(err) == message
    assert err.headers["x-request-id"] == "req-1"
    with pytest.raises(client.GatewayError):  # result() raises the same
        await s.result()
    assert [e async for e in s] == []


async def test_empty_200_body(server: ScriptedServer) -> None:
    server.push(Script.body(200, b"", "text/event-stream"))
    with pytest.raises(client.GatewayError, match="^auth-gateway returned empty body$") as info:
        await client.complete(MODEL, CONTEXT, base_url=server.url)
    assert info.value.status == 200


async def test_error_bodies_keep_the_connection_reusable(server: ScriptedServer) -> None:
    server.push(Script.body(401, {"error": "unauthorized"}))
    server.push(Script.sse(sse(text_turn(["a"]))))
    with pytest.raises(client.GatewayError):
        await client.complete(MODEL, CONTEXT, base_url=server.url)
    assert (await client.complete(MODEL, CONTEXT, base_url=server.url))["stopReason"] == "stop"
    assert len(server.peers) == 1


async def test_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(client.GatewayConnectionError) as info:
            await client.complete(MODEL, CONTEXT, base_url=f"http://127.0.0.1:{port}")
    assert isinstance(info.value, ConnectionError)


def test_sync_twin_raises_gateway_errors(server: ScriptedServer) -> None:
    server.push(Script.body(401, {"error": "unauthorized"}))
    with pytest.raises(client.GatewayError, match="auth-gateway 401"):
        client.complete_sync(MODEL, CONTEXT, base_url=server.url)


def test_sync_twin_times_out(server: ScriptedServer) -> None:
    server.push(Script(steps=[frame(start()), 10.0]))
    started = time.monotonic()
    with client.stream_sync(MODEL, CONTEXT, {"streamFirstEventTimeoutMs": 300}, base_url=server.url) as s:
        events = list(s)
    assert time.monotonic() - started < 0.3 + MARGIN
    assert_synthetic_error(events[-1], "error", FIRST_MSG)  # type: ignore[arg-type]
    assert isinstance(s.error, client.StreamTimeoutError)


# ----- abort --------------------------------------------------------------------------------------------------------


async def test_abort_event_mid_stream(server: ScriptedServer) -> None:
    turn = text_turn(["a", "b"])
    server.push(Script(steps=[sse(turn[:3], done_marker=False), 10.0]))
    abort = asyncio.Event()
    s = client.stream(MODEL, CONTEXT, base_url=server.url, abort=abort)
    events = []
    async for event in s:
        events.append(dict(event))
        if len(events) == 3:
            asyncio.get_running_loop().call_later(0.1, abort.set)
    assert events[:3] == turn[:3]
    assert_synthetic_error(events[-1], "aborted", "Request aborted by caller")
    assert isinstance(s.error, client.StreamAbortedError)
    assert (await s.result())["stopReason"] == "aborted"
    assert await disconnected(server)


async def test_abort_while_the_consumer_is_busy_closes_at_once(server: ScriptedServer) -> None:
    turn = text_turn(["a", "b"])
    server.push(Script(steps=[sse(turn[:3], done_marker=False), 10.0]))
    abort = asyncio.Event()
    s = client.stream(MODEL, CONTEXT, base_url=server.url, abort=abort)
    assert (await anext(s))["type"] == "start"
    abort.set()
    await asyncio.sleep(0)  # the watcher closes the response while nobody reads
    assert await disconnected(server)
    rest = [dict(e) async for e in s]
    assert [e["type"] for e in rest] == ["error"] and rest[0]["reason"] == "aborted"


async def test_abort_via_options_signal(server: ScriptedServer) -> None:
    server.push(Script(steps=[frame(start()), 10.0]))
    signal = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, signal.set)
    events, elapsed = await run(server, {"signal": signal})
    assert_synthetic_error(events[-1], "aborted", "Request aborted by caller")
    assert elapsed < 1
    assert "signal" not in server.received[0].json()["options"]


async def test_abort_before_headers(server: ScriptedServer) -> None:
    server.push(Script(delay_headers=10.0))
    s = client.stream(MODEL, CONTEXT, base_url=server.url)
    asyncio.get_running_loop().call_later(0.1, s.abort)
    started = time.monotonic()
    events = [dict(e) async for e in s]
    assert time.monotonic() - started < 1
    assert_synthetic_error(events[-1], "aborted", "Request aborted by caller")
    assert await disconnected(server)


async def test_abort_already_set_sends_nothing(server: ScriptedServer) -> None:
    abort = asyncio.Event()
    abort.set()
    events, _ = await run(server, abort=abort)
    assert_synthetic_error(events[-1], "aborted", "Request aborted by caller")
    assert server.received == []


async def test_task_cancellation_mid_stream(server: ScriptedServer) -> None:
    turn = text_turn(["a", "b"])
    server.push(Script(steps=[sse(turn[:3], done_marker=False), 10.0]))
    s = client.stream(MODEL, CONTEXT, base_url=server.url)
    seen: list[Any] = []
    three = asyncio.Event()

    async def consume() -> None:
        async for event in s:
            seen.append(event)
            if len(seen) == 3:
                three.set()

    task = asyncio.create_task(consume())
    await three.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):  # never swallowed
        await task
    assert await disconnected(server)  # the response was closed at once
    result = await s.result()
    assert result["stopReason"] == "aborted"
    assert isinstance(s.error, client.StreamAbortedError)
    rest = [dict(e) async for e in s]  # the recorded terminal is still delivered, once
    assert [e["reason"] for e in rest] == ["aborted"]
    assert [e async for e in s] == []


async def test_outer_timeout_cancels_cleanly(server: ScriptedServer) -> None:
    server.push(Script(steps=[frame(start()), 10.0]))
    s = client.stream(MODEL, CONTEXT, base_url=server.url)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            async for _ in s:
                pass
    assert await disconnected(server)
    assert (await s.result())["stopReason"] == "aborted"


async def test_breaking_early_and_aclose_closes_the_response(server: ScriptedServer) -> None:
    server.push(Script(steps=[frame(start()), 10.0]))
    async with client.stream(MODEL, CONTEXT, base_url=server.url) as s:
        async for _ in s:
            break
    assert await disconnected(server)
    assert (await s.result())["stopReason"] == "aborted"


async def test_abort_after_the_terminal_changes_nothing(server: ScriptedServer) -> None:
    turn = text_turn(["a"])
    server.push(Script.sse(sse(turn)))
    abort = asyncio.Event()
    s = client.stream(MODEL, CONTEXT, base_url=server.url, abort=abort)
    events = []
    async for event in s:
        events.append(dict(event))
        if event["type"] == "done":
            abort.set()
            s.abort()
    assert events == turn
    assert (await s.result())["stopReason"] == "stop"
    assert s.error is None


async def test_aclose_from_another_task_while_reading(server: ScriptedServer) -> None:
    server.push(Script(steps=[frame(start()), 10.0]))
    s = client.stream(MODEL, CONTEXT, base_url=server.url)
    consumer = asyncio.create_task(run_to_end(s))
    await asyncio.sleep(0.1)
    await s.aclose()
    events = await asyncio.wait_for(consumer, 2)
    assert [e["type"] for e in events] == ["start", "error"]
    assert_synthetic_error(events[-1], "aborted", "Request aborted by caller")
    assert (await s.result()) == events[-1]["error"]


async def run_to_end(s: client.AsyncEventStream) -> list[Any]:
    return [dict(e) async for e in s]


async def test_abandoned_stream_is_closed_when_collected(server: ScriptedServer) -> None:
    server.push(Script(steps=[frame(start()), 10.0]))
    async for _ in client.stream(MODEL, CONTEXT, base_url=server.url):
        break  # no reference kept: the loop's async-generator finalizer closes the response
    assert await disconnected(server)


async def test_aclose_before_start_sends_nothing(server: ScriptedServer) -> None:
    s = client.stream(MODEL, CONTEXT, base_url=server.url)
    await s.aclose()
    assert (await s.result())["stopReason"] == "aborted"
    assert [e async for e in s] == []
    assert server.received == []
