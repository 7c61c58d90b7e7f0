"""The upstream client (``sidecar.upstream``) against real servers on 127.0.0.1: what goes on the wire, connection
reuse, and each failure named as what happened (the retry logic and the client's error status depend on it)."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest

from sidecar.errors import UpstreamConnectError, UpstreamTimeout, map_transport_errors
from sidecar.upstream import Upstream, client_timeout
from tests.certificates import self_signed_certificate
from tests.fakeupstream import FakeUpstream, Reply

LIMITS = client_timeout(connect=2.0, read=2.0, pool=2.0)


async def read_all(upstream: Upstream, url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    response = await upstream.post(url, headers or {"content-type": "application/json"}, b"{}", LIMITS)
    try:
        return response.status_code, b"".join([chunk async for chunk in response.chunks()])
    finally:
        await response.aclose()


async def test_the_request_goes_out_as_built_and_the_body_comes_back_whole(upstream: FakeUpstream) -> None:
    upstream.push(Reply.sse(b"data: one\n\ndata: two\n\n", split=3))
    async with Upstream() as client:
        # %3A (Bedrock signs it) and an escaped dot segment (a request-chosen model id) must arrive as written.
        status, body = await read_all(client, f"{upstream.url}/model/a%3A0/%2E%2E/x?alt=sse")
    assert (status, body) == (200, b"data: one\n\ndata: two\n\n")
    (received,) = upstream.received
    assert received.path == "/model/a%3A0/%2E%2E/x?alt=sse"
    assert received.headers["user-agent"].startswith("pi-sidecar/")
    assert "accept-encoding" not in received.headers  # nothing asks for a compressed stream
    assert received.headers["content-type"] == "application/json" and received.body == b"{}"


async def test_a_given_user_agent_wins_and_no_cookie_travels_to_the_next_request(upstream: FakeUpstream) -> None:
    set_cookie = Reply.sse(b"data: x\n\n", headers={"content-type": "text/event-stream", "set-cookie": "cf=abc"})
    upstream.push(set_cookie, Reply.sse(b"data: y\n\n"))
    # By name: a cookie jar ignores cookies of IP-address hosts, which would hide a kept cookie.
    base = upstream.url.replace("127.0.0.1", "localhost")
    async with Upstream() as client:
        await read_all(client, f"{base}/a", {"user-agent": "vendor-sdk/1"})
        await read_all(client, f"{base}/b")
        # The cold path (httpx2 on the same pool) keeps none either.
        upstream.push(Reply.json(200, {"ok": True}))
        assert (await client.http.post(f"{base}/c", content=b"{}")).json() == {"ok": True}
    first, second, third = upstream.received
    assert first.headers["user-agent"] == "vendor-sdk/1"
    assert "cookie" not in second.headers and "cookie" not in third.headers


async def test_a_body_read_to_its_end_returns_its_connection_to_the_pool(upstream: FakeUpstream) -> None:
    upstream.default = Reply.sse(b"data: x\n\n")
    async with Upstream() as client:
        for _ in range(5):
            assert await read_all(client, f"{upstream.url}/v1/messages") == (200, b"data: x\n\n")
    assert (len(upstream.received), upstream.connections) == (5, 1)


async def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    async with Upstream() as client:
        with pytest.raises(httpx2.ConnectError):
            await client.post(f"http://127.0.0.1:{port}/x", {}, b"{}", LIMITS)
        with pytest.raises(UpstreamConnectError, match=r"upstream connection failed \(ConnectError\)"):
            with map_transport_errors("anthropic"):
                await client.post(f"http://127.0.0.1:{port}/x", {}, b"{}", LIMITS)


async def test_a_body_cut_mid_stream_is_a_protocol_error_not_a_timeout(upstream: FakeUpstream) -> None:
    upstream.push(Reply(chunks=[b"data: one\n\n", b"data: two\n\n"], drop_after=1))
    async with Upstream() as client:
        response = await client.post(f"{upstream.url}/x", {}, b"{}", LIMITS)
        chunks = response.chunks()
        assert await anext(chunks) == b"data: one\n\n"
        with pytest.raises(httpx2.RemoteProtocolError):
            await anext(chunks)
        await response.aclose()


@contextmanager
def raw_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A TCP server on 127.0.0.1 that runs ``handle`` on each accepted connection, then closes it; yields the port."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                try:
                    handle(conn)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        server.close()


@pytest.fixture
def closing_server() -> Iterator[str]:
    """Reads the request and closes without a byte of response (a server dropping a kept-alive socket)."""

    def read_the_request(conn: socket.socket) -> None:
        conn.recv(65536)

    with raw_server(read_the_request) as port:
        yield f"http://127.0.0.1:{port}"


async def test_a_server_that_closes_without_answering_is_a_retryable_connection_failure(closing_server: str) -> None:
    async with Upstream() as client:
        with pytest.raises(UpstreamConnectError, match=r"\(RemoteProtocolError\)"):
            with map_transport_errors("openai"):
                await client.post(f"{closing_server}/x", {}, b"{}", LIMITS)


async def test_no_byte_within_the_read_limit_is_a_read_timeout(upstream: FakeUpstream) -> None:
    upstream.push(Reply(chunks=[b"data: one\n\n", b"data: two\n\n"], stall_after=1, stall_seconds=1.0))
    async with Upstream() as client:
        response = await client.post(f"{upstream.url}/x", {}, b"{}", client_timeout(connect=2.0, read=0.2))
        chunks = response.chunks()
        assert await anext(chunks) == b"data: one\n\n"
        with pytest.raises(UpstreamTimeout, match=r"upstream timed out \(ReadTimeout\)"):
            with map_transport_errors("anthropic"):
                await anext(chunks)
        await response.aclose()


@pytest.fixture
def self_signed_server(tmp_path: Path) -> Iterator[str]:
    """An HTTPS server on 127.0.0.1 whose certificate no CA signed: what a provider impersonator would present."""
    cert, key = self_signed_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def handshake(conn: socket.socket) -> None:
        try:
            context.wrap_socket(conn, server_side=True).close()  # the client refuses the handshake
        except ssl.SSLError:
            pass

    with raw_server(handshake) as port:
        yield f"https://127.0.0.1:{port}"


async def test_a_certificate_no_ca_signed_is_refused(self_signed_server: str) -> None:
    """TLS is verified (against certifi's bundle): the key is never sent to a server that cannot prove it is the
    provider."""
    async with Upstream() as client:
        with pytest.raises(UpstreamConnectError, match=r"\(ConnectError\)"):
            with map_transport_errors("anthropic"):
                await client.post(f"{self_signed_server}/v1/messages", {"x-api-key": "sk-canary"}, b"{}", LIMITS)
