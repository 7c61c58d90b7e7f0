"""The streamed response (sidecar/sse_response.py): head and frame bytes, heartbeats, disconnects, slot release,
backpressure. In-process against a scripted ASGI server for the timings and endings; over real sockets for the wire
bytes and for a disconnect reaching the upstream."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from sidecar.responses import SSE_HEADERS
from sidecar.sse_response import PING, LastFrame, SseResponse
from tests.conftest import pi_body
from tests.fakeupstream import FakeUpstream, Reply, fixture_bytes
from tests.sidecar_server import TOKEN, RunningSidecar, run_sidecar, sidecar_environ, write_config

TEXT_FIXTURE = "anthropic-messages/text-basic-padded.sse"
SCOPE: dict[str, Any] = {"type": "http", "method": "POST", "path": "/v1/pi/stream"}


class Script:
    """A frames generator that records how far it was pulled and how it ended."""

    def __init__(self, *steps: bytes | float) -> None:
        self.steps = steps  # bytes: yield them; a float: sleep that long
        self.pulled = 0
        self.ended: str | None = None  # "done", "closed" (aclose/GeneratorExit) or "cancelled"

    async def frames(self) -> AsyncIterator[bytes]:
        try:
            for step in self.steps:
                if isinstance(step, bytes):
                    self.pulled += 1
                    yield step
                else:
                    await asyncio.sleep(step)
            self.ended = "done"
        except GeneratorExit:
            self.ended = "closed"
            raise
        except asyncio.CancelledError:
            self.ended = "cancelled"
            raise


class Client:
    """The server side of one connection: records what is sent, and when; ``leave()`` makes receive() answer
    ``http.disconnect`` (uvicorn's httptools protocol then drops further writes silently, as here)."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, dict[str, Any]]] = []
        self.left = asyncio.Event()
        self.gate = asyncio.Event()  # released: sends past stall_after wait for it (a full socket)
        self.stall_after: int | None = None
        self.fail_after: int | None = None  # sends after this many raise, as an ASGI 2.4 server does
        self.started = time.monotonic()

    async def receive(self) -> dict[str, Any]:
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise ConnectionResetError("client closed the connection")  # what an ASGI 2.4 server raises
        if self.stall_after is not None and len(self.sent) >= self.stall_after:
            await self.gate.wait()
        if not self.left.is_set():
            self.sent.append((time.monotonic() - self.started, message))

    def leave(self) -> None:
        self.left.set()

    @property
    def bodies(self) -> list[bytes]:
        return [m["body"] for _, m in self.sent if m["type"] == "http.response.body"]

    @property
    def completed(self) -> bool:
        last = self.sent[-1][1] if self.sent else {}
        return last.get("type") == "http.response.body" and last.get("more_body") is False


class Closes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def response_for(script: Script, closes: Closes, heartbeat: float = 15.0) -> SseResponse:
    return SseResponse(
        script.frames(), {**SSE_HEADERS, "x-generation-id": "gen_1"}, heartbeat_seconds=heartbeat, on_close=closes
    )


async def test_head_frames_and_end_are_sent_as_they_come() -> None:
    script, closes, client = Script(b"data: 1\n\n", 0.05, b"data: 2\n\n"), Closes(), Client()
    await response_for(script, closes)(SCOPE, client.receive, client.send)
    start = client.sent[0][1]
    assert start["type"] == "http.response.start" and start["status"] == 200
    assert start["headers"] == [
        *((k.encode(), v.encode()) for k, v in SSE_HEADERS.items()),
        (b"x-generation-id", b"gen_1"),
        (b"connection", b"keep-alive"),
        (b"content-type", b"text/event-stream; charset=utf-8"),
    ]
    # One body message per frame, sent when it is produced (not gathered), then the empty final body.
    assert [(m["body"], m["more_body"]) for _, m in client.sent[1:]] == [
        (b"data: 1\n\n", True),
        (b"data: 2\n\n", True),
        (b"", False),
    ]
    assert client.sent[2][0] - client.sent[1][0] >= 0.04
    assert script.ended == "done" and closes.count == 1


async def test_a_last_frame_goes_out_with_the_end_of_the_body() -> None:
    """The terminal event and the chunked terminator in one body message: one write instead of two per stream."""
    script, closes, client = Script(b"data: 1\n\n", LastFrame(b"data: done\n\n")), Closes(), Client()
    await response_for(script, closes)(SCOPE, client.receive, client.send)
    assert [(m["body"], m["more_body"]) for _, m in client.sent[1:]] == [
        (b"data: 1\n\n", True),
        (b"data: done\n\n", False),
    ]
    assert script.ended == "closed" and closes.count == 1  # the generator is closed after it, never left open


async def test_heartbeat_is_sent_after_heartbeat_seconds_without_a_frame() -> None:
    script, closes, client = Script(b"a\n\n", 0.55, b"b\n\n"), Closes(), Client()
    await response_for(script, closes, heartbeat=0.2)(SCOPE, client.receive, client.send)
    assert PING == b": ping\r\n\r\n"  # sse-starlette's ServerSentEvent(comment="ping") bytes, kept identical
    assert client.bodies == [b"a\n\n", PING, PING, b"b\n\n", b""]  # at 0.2 s and 0.4 s of silence
    times = [t for t, m in client.sent if m.get("body") == PING]
    first_frame = client.sent[1][0]
    assert 0.18 <= times[0] - first_frame <= 0.35 and 0.18 <= times[1] - times[0] <= 0.35
    assert script.ended == "done", "a heartbeat must not interrupt the frames generator"
    assert closes.count == 1


async def test_no_heartbeat_while_frames_flow_or_when_disabled() -> None:
    busy = Script(*[step for _ in range(10) for step in (b"x\n\n", 0.05)])  # a frame every 50 ms for 0.5 s
    client = Client()
    await response_for(busy, Closes(), heartbeat=0.15)(SCOPE, client.receive, client.send)
    assert PING not in client.bodies and client.completed
    quiet, client = Script(b"a\n\n", 0.3, b"b\n\n"), Client()
    await response_for(quiet, Closes(), heartbeat=0)(SCOPE, client.receive, client.send)
    assert client.bodies == [b"a\n\n", b"b\n\n", b""]


async def test_disconnect_closes_the_generator_promptly_and_releases_the_slot() -> None:
    script, closes, client = Script(b"a\n\n", 30.0, b"never\n\n"), Closes(), Client()
    serving = asyncio.ensure_future(response_for(script, closes, heartbeat=0.05)(SCOPE, client.receive, client.send))
    await asyncio.sleep(0.12)  # a frame and a couple of heartbeats out; the generator waits for its next frame
    client.leave()
    left = time.monotonic()
    await asyncio.wait_for(serving, 1.0)  # returns normally: the response swallows its own cancellation
    assert time.monotonic() - left < 0.5, "the generator was not closed at the disconnect"
    assert script.ended == "cancelled" and script.pulled == 1
    assert closes.count == 1 and not client.completed
    assert asyncio.current_task() is not None and asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_client_gone_before_the_first_frame() -> None:
    script, closes, client = Script(30.0, b"never\n\n"), Closes(), Client()
    client.leave()
    left = time.monotonic()
    await asyncio.wait_for(response_for(script, closes)(SCOPE, client.receive, client.send), 1.0)
    assert time.monotonic() - left < 0.5, "the generator was not closed at the disconnect"
    assert script.ended == "cancelled" and script.pulled == 0 and closes.count == 1


async def test_failing_send_closes_the_generator() -> None:
    script, closes, client = Script(b"a\n\n", b"b\n\n", b"c\n\n"), Closes(), Client()
    client.fail_after = 2  # the head and the first frame reach the client; the second frame's send fails
    await asyncio.wait_for(response_for(script, closes)(SCOPE, client.receive, client.send), 1.0)
    assert script.ended == "closed" and script.pulled == 2 and closes.count == 1


async def test_slot_released_when_the_generator_fails_or_the_server_cancels() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"a\n\n"
        raise RuntimeError("bug")

    closes, client = Closes(), Client()
    response = SseResponse(broken(), {}, heartbeat_seconds=15, on_close=closes)
    with pytest.raises(RuntimeError, match="bug"):
        await response(SCOPE, client.receive, client.send)
    assert closes.count == 1

    script, closes, client = Script(b"a\n\n", 30.0), Closes(), Client()
    serving = asyncio.ensure_future(response_for(script, closes)(SCOPE, client.receive, client.send))
    await asyncio.sleep(0.05)
    serving.cancel()  # the server's own cancellation (shutdown) is not swallowed
    with pytest.raises(asyncio.CancelledError):
        await serving
    assert script.ended == "cancelled" and closes.count == 1


async def test_a_client_that_does_not_read_stops_the_pull() -> None:
    """Backpressure: each frame waits for its send, so a stalled socket holds one frame, not the whole stream."""
    script, closes, client = Script(*[b"frame\n\n"] * 100), Closes(), Client()
    client.stall_after = 4  # the head and three frames fit; then the socket is full
    serving = asyncio.ensure_future(response_for(script, closes, heartbeat=0.02)(SCOPE, client.receive, client.send))
    await asyncio.sleep(0.2)  # many heartbeat periods: no ping may be sent beside a stalled frame either
    assert not serving.done()
    assert script.pulled == 4, "frames were pulled while the client was not reading"  # 3 sent, 1 waiting on send
    client.gate.set()
    await asyncio.wait_for(serving, 1.0)
    assert script.pulled == 100 and client.completed and closes.count == 1
    assert client.bodies[:4] == [b"frame\n\n"] * 4 and PING not in client.bodies[:5]


# ----- over real sockets: the pi route through uvicorn, with the fake upstream ----------------------------------------


def raw_stream(url: str, body: dict[str, object]) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    payload = orjson.dumps(body)
    sock.sendall(
        b"POST /v1/pi/stream HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + f"authorization: Bearer {TOKEN}\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def test_wire_bytes_with_heartbeats(upstream: FakeUpstream, tmp_path: Any) -> None:
    config = write_config(tmp_path, "[server]\nheartbeat_seconds = 0.1\n[upstream]\nmax_retries = 0\n")
    with run_sidecar(sidecar_environ(upstream.url, tmp_path), config) as running:
        # 0.6 s of silence at a 0.1 s heartbeat: room for a busy host's scheduling jitter while still asking for two.
        upstream.push(Reply.sse(fixture_bytes(TEXT_FIXTURE), delay_before=0.6))
        with raw_stream(running.url, pi_body("anthropic/claude-sonnet-4-5")) as sock:
            wire = read_until(sock, b"\r\n0\r\n\r\n")
    head, _, body = wire.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK"
    names = [line.partition(b":")[0] for line in lines[2:]]  # after the date header
    assert names == [
        *(k.encode() for k in SSE_HEADERS),
        b"x-generation-id",
        b"x-request-id",
        b"request-id",
        b"connection",
        b"content-type",
        b"transfer-encoding",
    ]
    assert b"content-type: text/event-stream; charset=utf-8" in lines
    # Chunked: each ping is its own chunk, byte for byte sse-starlette's comment.
    assert body.count(b"\r\na\r\n: ping\r\n\r\n\r\n") >= 2, body[:600]  # 0xa = 10 bytes: the whole comment
    assert b'"type":"done"' in body


def test_disconnect_reaches_the_upstream_and_is_recorded(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    data = fixture_bytes(TEXT_FIXTURE)
    upstream.push(Reply.sse(data, split=40, delay_between=0.1))  # many seconds if read to the end
    with raw_stream(sidecar.url, pi_body("anthropic/claude-sonnet-4-5")) as sock:
        read_until(sock, b'"text_delta"')
    left = time.monotonic()
    while upstream.disconnects == 0 and time.monotonic() < left + 3:
        time.sleep(0.01)
    assert upstream.disconnects == 1, "the upstream request was not closed after the client left"
    assert time.monotonic() - left < 1.0  # promptly: at the disconnect, not at the upstream's next event or end
    ((_, outcome),) = sidecar.wait_for_outcomes(1)
    assert outcome.reason == "aborted" and outcome.error_status == 499
