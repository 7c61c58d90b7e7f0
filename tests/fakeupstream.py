"""A real HTTP server on 127.0.0.1 that plays recorded provider responses: the only fake in the test suite.

Tests script it with ``Reply`` objects (status, headers, body chunks, delays, a mid-body drop) and read back what it
received (``Received``: path, headers, JSON body), so key injection and request translation are checked on the wire.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_bytes(relative: str) -> bytes:
    return (FIXTURES / relative).read_bytes()


def split_every(data: bytes, size: int) -> list[bytes]:
    """``data`` in pieces of ``size`` bytes: splits land inside lines, CRLFs and UTF-8 sequences."""
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


@dataclass
class Reply:
    status: int = 200
    chunks: list[bytes] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "text/event-stream"})
    delay_before: float = 0.0
    """Seconds to wait before sending the status line (a slow first byte)."""
    delay_between: float = 0.0
    stall_after: int | None = None
    """After this many chunks, stop sending and hold the connection open for ``stall_seconds``."""
    stall_seconds: float = 0.0
    drop_after: int | None = None
    """After this many chunks, close the socket without finishing the chunked body."""

    @classmethod
    def sse(cls, body: bytes, split: int | None = None, **kw: Any) -> Reply:
        return cls(chunks=split_every(body, split) if split else [body], **kw)

    @classmethod
    def json(cls, status: int, body: bytes | dict[str, Any], headers: dict[str, str] | None = None) -> Reply:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return cls(status=status, chunks=[raw], headers={"content-type": "application/json", **(headers or {})})


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client (the sidecar) closing a kept-alive or cancelled connection is expected, not a test failure.
        pass


class FakeUpstream:
    """``with FakeUpstream() as up: up.push(Reply(...)); ... up.received``."""

    def __init__(self, port: int = 0) -> None:
        self._replies: deque[Reply] = deque()
        self.default: Reply | None = None
        self.received: list[Received] = []
        self.disconnects = 0
        """Times a client went away while a reply was still being written."""
        self.connections = 0
        """TCP connections accepted (keep-alive reuse shows as fewer connections than requests)."""
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def push(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    def __enter__(self) -> FakeUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next_reply(self) -> Reply:
        with self._lock:
            if self._replies:
                return self._replies.popleft()
        if self.default is not None:
            return self.default
        return Reply.json(500, {"error": {"message": "FakeUpstream: no reply scripted for this request"}})

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # the 44 ms Nagle/delayed-ACK artefact would dominate every timing

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with upstream._lock:
                    upstream.connections += 1

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length) if length else b""
                with upstream._lock:
                    upstream.received.append(
                        Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                self._play(upstream._next_reply())

            do_GET = do_POST

            def _play(self, reply: Reply) -> None:
                try:
                    if reply.delay_before:
                        time.sleep(reply.delay_before)
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    self.wfile.flush()
                    for i, chunk in enumerate(reply.chunks):
                        if reply.drop_after is not None and i >= reply.drop_after:
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        if reply.stall_after is not None and i == reply.stall_after:
                            time.sleep(reply.stall_seconds)
                        if chunk:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                            self.wfile.flush()
                        if reply.delay_between:
                            time.sleep(reply.delay_between)
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError, OSError):
                    with upstream._lock:
                        upstream.disconnects += 1
                    self.close_connection = True

        return Handler


def iter_fixture_splits(relative: str, sizes: tuple[int, ...] = (1, 2, 3, 7, 64)) -> Iterator[list[bytes]]:
    """The fixture split at several sizes, for feeding decoders bytes split at arbitrary boundaries."""
    data = fixture_bytes(relative)
    for size in sizes:
        yield split_every(data, size)


def main() -> None:
    """``python -m tests.fakeupstream FIXTURE [--port N]``: answer every request with a recorded stream."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("fixture", help="path under tests/fixtures, e.g. anthropic-messages/text-basic-padded.sse")
    parser.add_argument("--port", type=int, default=28080)
    args = parser.parse_args()
    upstream = FakeUpstream(port=args.port)
    upstream.default = Reply.sse(fixture_bytes(args.fixture))
    print(f"replaying {args.fixture} on {upstream.url} (Ctrl-C to stop)", flush=True)
    with upstream:
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
