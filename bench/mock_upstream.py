"""A fast mock of the Anthropic Messages API for the benchmark: ``POST /v1/messages`` -> a canned SSE stream.

Raw asyncio ``Protocol`` (uvloop when installed), HTTP/1.1 keep-alive, TCP_NODELAY, chunked transfer-encoding with
one HTTP chunk per SSE event, as the real API flushes them. The body is the recorded bytes of
``tests/fixtures/anthropic-messages/text-basic-padded.sse`` (message_start, content_block_start, ping,
content_block_delta x4, content_block_stop, message_delta with usage, message_stop); ``--deltas 5`` (the default)
repeats the last recorded ``content_block_delta`` frame so the stream carries five text deltas.

With no ``--delay-ms`` the whole response is one pre-built byte string written with a single ``transport.write``:
per request the server only finds the end of the headers, reads ``content-length`` and writes. Nothing is logged or
recorded per request (two integer counters, streams served and connections accepted, are served at
``GET /stats``).

Routes: ``POST /v1/messages`` (401 when ``--api-key`` is set and ``x-api-key`` does not match), ``GET /healthz``,
``GET /stats``; anything else is 404. Prints ``READY <port>`` on stdout once listening on 127.0.0.1.

    python bench/mock_upstream.py [--port 0] [--delay-ms 0] [--deltas 5] [--api-key sk-ant-bench]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FIXTURE = ROOT / "tests" / "fixtures" / "anthropic-messages" / "text-basic-padded.sse"
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024


def load_events(path: Path, deltas: int) -> list[bytes]:
    """The fixture split into SSE events (each ending in a blank line), with ``deltas`` text deltas if > 0."""
    raw = path.read_bytes()
    events = [e + b"\n\n" for e in raw.split(b"\n\n") if e.strip()]
    delta_at = [i for i, e in enumerate(events) if e.startswith(b"event: content_block_delta")]
    if deltas > 0 and delta_at:
        last = delta_at[-1]
        have = len(delta_at)
        if deltas > have:
            events[last + 1 : last + 1] = [events[last]] * (deltas - have)
        elif deltas < have:
            drop = set(delta_at[deltas:])
            events = [e for i, e in enumerate(events) if i not in drop]
    return events


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def simple_response(status: bytes, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: " + content_type + b"\r\ncontent-length: %d\r\n\r\n" % len(body)
    ) + body


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\n"
    b"request-id: req_bench_mock\r\n"
    b"transfer-encoding: chunked\r\n"
    b"\r\n"
)
CHUNKED_END = b"0\r\n\r\n"
NOT_FOUND = simple_response(b"404 Not Found", b'{"type":"error","error":{"type":"not_found_error","message":"no"}}')
UNAUTHORIZED = simple_response(
    b"401 Unauthorized", b'{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}'
)
BAD_REQUEST = simple_response(b"400 Bad Request", b'{"type":"error","error":{"type":"invalid_request_error"}}')
HEALTHZ = simple_response(b"200 OK", b'{"ok":true}')


class Server:
    def __init__(self, events: list[bytes], delay: float, api_key: str | None) -> None:
        self.events = [chunk(e) for e in events]
        self.full = SSE_HEAD + b"".join(self.events) + CHUNKED_END
        self.delay = delay
        self.key_header = b"\r\nx-api-key: " + api_key.encode().lower() + b"\r\n" if api_key else None
        self.requests = 0
        self.connections = 0


class MockProtocol(asyncio.Protocol):
    __slots__ = ("server", "transport", "buf", "busy", "handle", "closing")

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False
        self.handle: asyncio.TimerHandle | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport is no asyncio.Transport
        self.server.connections += 1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self.process()

    def process(self) -> None:
        """Answer every complete request in the buffer (pipelining allowed); stop while a delayed reply runs."""
        transport, server, buf = self.transport, self.server, self.buf
        while transport is not None and not self.closing:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    self.fail(BAD_REQUEST)
                return
            head = bytes(buf[:end]).lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 17)
                try:
                    length = int(head[at + 17 : stop if stop >= 0 else len(head)])
                except ValueError:
                    return self.fail(BAD_REQUEST)
            elif b"\r\ntransfer-encoding:" in head or length > MAX_BODY_BYTES:
                return self.fail(BAD_REQUEST)  # a chunked request body: not needed by any client here
            need = end + 4 + length
            if len(buf) < need:
                return
            del buf[:need]
            close = b"\r\nconnection: close" in head or head.find(b" http/1.0\r\n", 0, 300) >= 0
            if head.startswith(b"post /v1/messages"):
                if server.key_header is not None and server.key_header not in head + b"\r\n":
                    transport.write(UNAUTHORIZED)
                else:
                    server.requests += 1
                    if server.delay > 0:
                        self.busy = True
                        transport.write(SSE_HEAD + server.events[0])
                        self.handle = asyncio.get_running_loop().call_later(server.delay, self.next_event, 1, close)
                        return
                    transport.write(server.full)
            elif head.startswith(b"get /healthz"):
                transport.write(HEALTHZ)
            elif head.startswith(b"get /stats"):
                stats = b'{"requests":%d,"connections":%d}' % (server.requests, server.connections)
                transport.write(simple_response(b"200 OK", stats))
            else:
                transport.write(NOT_FOUND)
            if close:
                self.closing = True
                transport.close()

    def next_event(self, index: int, close: bool) -> None:
        self.handle = None
        transport, server = self.transport, self.server
        if transport is None:
            return
        if index < len(server.events):
            transport.write(server.events[index])
            self.handle = asyncio.get_running_loop().call_later(server.delay, self.next_event, index + 1, close)
            return
        transport.write(CHUNKED_END)
        self.busy = False
        if close:
            self.closing = True
            transport.close()
        else:
            self.process()

    def fail(self, response: bytes) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.write(response)
            self.transport.close()


async def serve(args: argparse.Namespace) -> None:
    events = load_events(Path(args.fixture), args.deltas)
    server = Server(events, args.delay_ms / 1000.0, args.api_key)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(
        lambda: MockProtocol(server), "127.0.0.1", args.port, reuse_address=True, backlog=1024
    )
    port = listener.sockets[0].getsockname()[1]
    sys.stdout.write(f"READY {port}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()
    # Bounded: exits on a signal, when the parent that started it is gone, or after --max-seconds.
    deadline = loop.time() + args.max_seconds
    while not stop.is_set() and loop.time() < deadline:
        if args.watch_parent and os.getppid() != parent:
            break
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass
    listener.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Fast mock Anthropic Messages upstream (benchmark only)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="delay between SSE events (default 0)")
    parser.add_argument("--deltas", type=int, default=5, help="text deltas per stream (0 = the fixture as recorded)")
    parser.add_argument("--fixture", default=str(DEFAULT_FIXTURE), help="recorded Anthropic SSE body")
    parser.add_argument("--api-key", default=None, help="require this x-api-key (401 otherwise)")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="exit after this long at the latest")
    parser.add_argument("--watch-parent", action="store_true", help="exit when the parent process goes away")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(args))


if __name__ == "__main__":
    main()
