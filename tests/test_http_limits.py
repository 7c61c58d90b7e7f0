"""HTTP-level limits of the real server (``sidecar.http_server``), on raw sockets against a running sidecar.

Unauthenticated clients must not hold memory or connections: the head is bounded in size and count, the head and the
body have deadlines, idle kept-alive connections are closed. Every protocol-level refusal is the JSON envelope with
``connection: close``. Responses that end the connection carry one ``connection`` header, and HTTP/1.0 gets no
chunked encoding.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from sidecar import cli
from sidecar.auth import MAX_AUTHORIZATION_CHARS, BearerAuth, Caller
from sidecar.errors import Unauthorized
from tests.conftest import pi_body
from tests.sidecar_server import TOKEN, RunningSidecar, run_sidecar, sidecar_environ, write_config

MAX_HEADER_BYTES = 4096
MAX_HEADERS = 20
DEADLINE = 0.5  # header, body and keep-alive seconds
SLACK = 0.5  # the deadline's timer plus a loaded test machine
CONFIG = f"""
[server]
max_header_bytes = {MAX_HEADER_BYTES}
max_headers = {MAX_HEADERS}
header_timeout_seconds = {DEADLINE}
body_timeout_seconds = {DEADLINE}
keepalive_seconds = {DEADLINE}
"""
ECHO_BODY = orjson.dumps(pi_body("echo/echo", "ping pong"))


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSidecar]:
    tmp = tmp_path_factory.mktemp("http-limits")
    # echo/echo needs no upstream; nothing listens on port 9.
    with run_sidecar(sidecar_environ("http://127.0.0.1:9", tmp), write_config(tmp, CONFIG)) as running:
        yield running


class Response:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = [(name.strip().lower(), value.strip()) for name, value in (ln.split(":", 1) for ln in lines)]

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    def one(self, name: str) -> str:
        values = self.all(name)
        assert len(values) == 1, (name, self.headers)
        return values[0]


async def exchange(port: int, data: bytes) -> tuple[float, bytes]:
    """Send ``data`` and read until the server closes: (seconds from connecting to the close, what was read)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        if data:
            writer.write(data)
            await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 5)
        return time.monotonic() - started, raw
    finally:
        writer.close()


def assert_refusal(raw: bytes, status: int, fragment: str) -> None:
    response = Response(raw)
    assert response.status == status, raw[:300]
    assert response.one("content-type") == "application/json"
    assert response.one("connection") == "close"
    assert int(response.one("content-length")) == len(response.body)
    error = orjson.loads(response.body)["error"]
    assert error["type"] == "invalid_request_error"
    assert fragment in error["message"], error["message"]


def head(*fields: str, request_line: str = "GET /healthz HTTP/1.1") -> bytes:
    return "\r\n".join((request_line, "Host: sidecar", *fields)).encode() + b"\r\n"


def pi_stream_head(http_version: str, *fields: str) -> bytes:
    return head(
        f"Authorization: Bearer {TOKEN}",
        "Content-Type: application/json",
        f"Content-Length: {len(ECHO_BODY)}",
        *fields,
        request_line=f"POST /v1/pi/stream HTTP/{http_version}",
    )


def current_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def wait_until_no_connections(sidecar: RunningSidecar) -> None:
    """The server has let go of every connection (and so of whatever they buffered) and every request task."""
    state = sidecar.server.server_state
    deadline = time.monotonic() + 3  # a refused client may linger up to LINGER_SECONDS
    while state.connections or state.tasks:
        assert time.monotonic() < deadline, f"{len(state.connections)} connections, {len(state.tasks)} tasks left"
        await asyncio.sleep(0.01)


async def test_an_oversize_head_gets_431(sidecar: RunningSidecar) -> None:
    elapsed, raw = await exchange(sidecar.port, head("X-Fill: " + "a" * MAX_HEADER_BYTES))  # unfinished head
    assert_refusal(raw, 431, f"larger than {MAX_HEADER_BYTES} bytes ([server] max_header_bytes)")
    assert elapsed < SLACK  # refused on arrival, not at the head deadline
    # The same head, finished and arriving in one read, is measured exactly.
    _, raw = await exchange(sidecar.port, head("X-Fill: " + "a" * MAX_HEADER_BYTES) + b"\r\n")
    assert_refusal(raw, 431, "[server] max_header_bytes")


async def test_too_many_header_fields_get_431(sidecar: RunningSidecar) -> None:
    fields = [f"X-Field-{n}: {n}" for n in range(MAX_HEADERS)]
    _, raw = await exchange(sidecar.port, head(*fields) + b"\r\n")
    assert_refusal(raw, 431, f"More than {MAX_HEADERS} request header fields ([server] max_headers)")
    _, raw = await exchange(sidecar.port, head(*fields[: MAX_HEADERS - 2], "Connection: close") + b"\r\n")
    assert Response(raw).status == 200


async def test_a_small_head_with_a_large_body_in_one_read_is_not_an_oversize_head(sidecar: RunningSidecar) -> None:
    body = orjson.dumps(pi_body("echo/echo", "x" * (8 * MAX_HEADER_BYTES)))
    request = head(
        f"Authorization: Bearer {TOKEN}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        request_line="POST /v1/pi/stream HTTP/1.1",
    )
    _, raw = await exchange(sidecar.port, request + b"\r\n" + body)
    assert Response(raw).status == 200 and raw.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")


async def test_oversize_heads_are_refused_without_holding_memory(sidecar: RunningSidecar) -> None:
    """10 clients each pushing 8 MiB of one unfinished header (the finding: 50 MiB each took RSS to 628 MB). What
    comes after the refusal is dropped unread, so every client can still read its 431."""
    per_client = 8 * 1024 * 1024
    chunk = b"a" * 65536

    async def push() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
        writer.write(head() + b"X-Fill: ")
        for _ in range(per_client // len(chunk)):
            writer.write(chunk)
            await writer.drain()
        return reader, writer

    before = current_rss_bytes()
    clients = await asyncio.gather(*(push() for _ in range(10)))
    grown = current_rss_bytes() - before  # measured while every client still holds its socket open
    try:
        assert grown < 32 * 1024 * 1024, f"RSS grew by {grown / 2**20:.0f} MiB"
        for reader, _ in clients:
            assert_refusal(await asyncio.wait_for(reader.read(), 5), 431, "[server] max_header_bytes")
    finally:
        for _, writer in clients:
            writer.close()
    await wait_until_no_connections(sidecar)


async def test_a_connection_that_sends_nothing_gets_408(sidecar: RunningSidecar) -> None:
    elapsed, raw = await exchange(sidecar.port, b"")
    assert_refusal(raw, 408, f"did not arrive within {DEADLINE:g} s ([server] header_timeout_seconds)")
    assert DEADLINE - 0.05 <= elapsed < DEADLINE + SLACK  # timers may fire a little early


async def test_a_head_trickling_in_is_cut_at_the_deadline(sidecar: RunningSidecar) -> None:
    """The deadline runs from the first byte: a client sending a byte now and then does not keep it alive."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    received: list[bytes] = []

    async def read_until_closed() -> None:
        while chunk := await reader.read(65536):
            received.append(chunk)

    reading = asyncio.create_task(read_until_closed())
    started = time.monotonic()
    try:
        for byte in head("X-Slow: " + "s" * 1000):
            if reading.done() or received or time.monotonic() - started > DEADLINE + SLACK:
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(0.02)
        await asyncio.wait_for(reading, DEADLINE + SLACK)
    finally:
        writer.close()
    assert time.monotonic() - started < DEADLINE + SLACK
    assert_refusal(b"".join(received), 408, "[server] header_timeout_seconds")


async def test_a_stalled_body_gets_408_and_the_app_sees_a_disconnect(
    sidecar: RunningSidecar, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    request = pi_stream_head("1.1").replace(b"Content-Length: %d" % len(ECHO_BODY), b"Content-Length: 5000")
    elapsed, raw = await exchange(sidecar.port, request + b"\r\n" + ECHO_BODY[:40])
    assert_refusal(raw, 408, f"did not arrive within {DEADLINE:g} s ([server] body_timeout_seconds)")
    assert DEADLINE - 0.05 <= elapsed < DEADLINE + SLACK  # timers may fire a little early
    await wait_until_no_connections(sidecar)  # the handler's read ended: it was told the client is gone
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "Traceback" not in caplog.text


async def test_an_idle_kept_alive_connection_is_closed(sidecar: RunningSidecar) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    try:
        writer.write(head() + b"\r\n")
        response_head = await reader.readuntil(b"\r\n\r\n")
        length = int(Response(response_head).one("content-length"))
        await reader.readexactly(length)
        answered = time.monotonic()
        assert await asyncio.wait_for(reader.read(), DEADLINE + SLACK) == b""  # closed, without a response
        assert time.monotonic() - answered >= DEADLINE - 0.05
    finally:
        writer.close()


async def test_a_connection_is_closed_when_idle_after_an_early_response(sidecar: RunningSidecar) -> None:
    """A 401 sent before the body was read, then the body: the connection is idle again and must still time out."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    try:
        writer.write(
            head(
                "Authorization: Bearer wrong-token", "Content-Length: 1000", request_line="POST /v1/pi/stream HTTP/1.1"
            )
            + b"\r\n"
        )
        response = Response(await reader.readuntil(b"\r\n\r\n"))
        assert response.status == 401
        await reader.readexactly(int(response.one("content-length")))
        writer.write(b"x" * 1000)
        sent = time.monotonic()
        assert await asyncio.wait_for(reader.read(), DEADLINE + SLACK) == b""
        assert time.monotonic() - sent >= DEADLINE - 0.05
    finally:
        writer.close()


async def test_a_huge_bearer_is_refused_at_once(sidecar: RunningSidecar) -> None:
    started = time.monotonic()
    _, raw = await exchange(sidecar.port, head("Authorization: Bearer " + "t" * (8 * 1024 * 1024)) + b"\r\n")
    assert time.monotonic() - started < SLACK
    assert_refusal(raw, 431, "[server] max_header_bytes")


def test_an_oversize_authorization_value_is_refused_before_it_is_scanned() -> None:
    token = "w" * 43
    auth = BearerAuth([(token, Caller("bearer:test"))])
    assert auth.authenticate(f"Bearer {token}").identity == "bearer:test"
    padded = f"Bearer {token}".ljust(MAX_AUTHORIZATION_CHARS + 1)  # would match once stripped
    with pytest.raises(Unauthorized):
        auth.authenticate(padded)
    huge = "Bearer " + "x" * (64 * 1024 * 1024)
    started = time.perf_counter()
    with pytest.raises(Unauthorized):
        auth.authenticate(huge)
    assert time.perf_counter() - started < 0.01  # the regex and the comparison over 64 MB take ~0.1 s


async def test_malformed_http_gets_400_json(sidecar: RunningSidecar) -> None:
    _, raw = await exchange(sidecar.port, b"GET\x01 / HTTP/1.1\r\n\r\n")
    assert_refusal(raw, 400, "Malformed HTTP/1.1 request")
    _, raw = await exchange(sidecar.port, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
    assert_refusal(raw, 400, "Malformed HTTP/1.1 request")


def sse_data(body: bytes) -> list[bytes]:
    return [frame[len(b"data: ") :] for frame in body.split(b"\n\n") if frame.startswith(b"data: ")]


async def test_an_http_1_0_stream_is_close_delimited_with_one_connection_header(sidecar: RunningSidecar) -> None:
    _, raw = await exchange(sidecar.port, pi_stream_head("1.0") + b"\r\n" + ECHO_BODY)
    response = Response(raw)
    assert response.status == 200
    assert response.one("connection") == "close"
    assert not response.all("transfer-encoding") and not response.all("content-length")
    frames = sse_data(response.body)  # the body is the raw stream, read until the close
    assert frames[-1] == b"[DONE]"
    done = orjson.loads(frames[-2])
    assert done["type"] == "done" and done["message"]["content"][0]["text"] == "ping pong"


async def test_a_stream_on_a_closing_http_1_1_connection_has_one_connection_header(sidecar: RunningSidecar) -> None:
    _, raw = await exchange(sidecar.port, pi_stream_head("1.1", "Connection: close") + b"\r\n" + ECHO_BODY)
    response = Response(raw)
    assert response.status == 200
    assert response.one("connection") == "close"
    assert response.one("transfer-encoding") == "chunked"
    assert response.body.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")


async def test_healthz_answers_while_slow_and_oversize_clients_hold_connections(sidecar: RunningSidecar) -> None:
    stalled_head = [await asyncio.open_connection("127.0.0.1", sidecar.port) for _ in range(20)]
    for _, writer in stalled_head:
        writer.write(head("X-Slow: 1"))
    stalled_body = [await asyncio.open_connection("127.0.0.1", sidecar.port) for _ in range(20)]
    for _, writer in stalled_body:
        writer.write(pi_stream_head("1.1") + b"\r\n" + ECHO_BODY[:10])
    flood = [
        asyncio.create_task(exchange(sidecar.port, head("X-Fill: " + "a" * (16 * 1024 * 1024)) + b"\r\n"))
        for _ in range(4)
    ]
    try:
        for _ in range(5):
            elapsed, raw = await exchange(sidecar.port, head("Connection: close") + b"\r\n")
            assert Response(raw).status == 200
            assert elapsed < 0.5  # the finding: 4.5 s behind one 64 MiB header
            await asyncio.sleep(0.02)
        # Every slow client is cut off at its deadline.
        for reader, _ in stalled_head + stalled_body:
            assert Response(await asyncio.wait_for(reader.read(), 2 * DEADLINE + SLACK)).status == 408
    finally:
        for _, writer in stalled_head + stalled_body:
            writer.close()
        await asyncio.gather(*flood, return_exceptions=True)
    await wait_until_no_connections(sidecar)


@pytest.mark.parametrize("port", ["80000", "0", "-1", "http"])
def test_serve_refuses_a_port_outside_1_to_65535(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    # parse_args only: before the check, "--port 0" fell through to the default port and served.
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(["serve", "--port", port])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --port" in err and "1-65535" in err and "Traceback" not in err


def test_serve_with_port_80000_exits_with_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["serve", "--port", "80000"])
    assert exit_.value.code == 2
    assert "sidecar serve: error: argument --port: 80000 is not a port number: use 1-65535" in capsys.readouterr().err
