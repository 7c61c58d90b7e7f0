"""A scripted HTTP/1.1 server on 127.0.0.1 for the client tests: the gateway side of every failure mode.

It runs its own event loop in a thread (so sync and async client tests use it alike, and its timing never depends
on the test's loop). Each request takes the next :class:`Script`: a status, headers and steps played in order:
``bytes`` are written as one chunk, a ``float`` pauses that many seconds while watching for the client to go
away, :data:`DROP` resets the socket mid-body. Connections are kept alive between requests. The server records
the requests (path, headers, JSON body), the client connections it accepted (by peer port) and the
disconnects it saw while a reply was still being played.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tests.background import BackgroundServer
from tests.fakeupstream import Received

DROP = object()
"""A step: reset the connection here (no chunked-encoding end)."""

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 500: "Internal Server Error"}


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@dataclass
class Script:
    status: int = 200
    steps: list[Any] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "text/event-stream"})
    delay_headers: float = 0.0
    """Seconds before the status line (watching for a disconnect)."""
    chunked: bool = True
    """Else the body is the concatenated ``bytes`` steps with a Content-Length."""

    @classmethod
    def sse(cls, body: bytes, split: int | None = None, **kw: Any) -> Script:
        return cls(steps=split_every(body, split) if split else [body], **kw)

    @classmethod
    def body(cls, status: int, raw: bytes | str | dict[str, Any], content_type: str = "application/json") -> Script:
        data = raw if isinstance(raw, bytes) else raw.encode() if isinstance(raw, str) else json.dumps(raw).encode()
        return cls(status=status, steps=[data], headers={"content-type": content_type}, chunked=False)


class ScriptedServer(BackgroundServer):
    timeout_s = 5.0

    def __init__(self) -> None:
        self.scripts: deque[Script] = deque()
        self.default: Script | None = None
        self.received: list[Received] = []
        self.peers: list[int] = []
        """Client ports, one per accepted connection."""
        self.disconnects = 0
        self._disconnected = threading.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def push(self, *scripts: Script) -> None:
        self.scripts.extend(scripts)

    def wait_disconnect(self, timeout: float) -> bool:
        """True once the server has seen a client go away mid-reply (within ``timeout`` seconds)."""
        return self._disconnected.wait(timeout)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peers.append(writer.get_extra_info("peername")[1])
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.received.append(Received(method, path, headers, body))
                script = self.scripts.popleft() if self.scripts else self.default
                if script is None:
                    script = Script.body(500, {"error": {"message": "no reply scripted", "type": "test_error"}})
                if not await self._play(script, reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            self._saw_disconnect()
        except asyncio.CancelledError:
            pass
        finally:
            writer.transport.abort()
            self._tasks.discard(task)

    def _saw_disconnect(self) -> None:
        self.disconnects += 1
        self._disconnected.set()

    async def _pause(self, reader: asyncio.StreamReader, seconds: float) -> bool:
        """Sleep; True (and recorded) if the client closed the connection meanwhile."""
        try:
            data = await asyncio.wait_for(reader.read(1), seconds)
        except TimeoutError:
            return False
        except ConnectionError:
            data = b""
        if data:
            return False
        self._saw_disconnect()
        return True

    async def _play(self, script: Script, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Play one reply; False when the connection is finished."""
        if script.delay_headers and await self._pause(reader, script.delay_headers):
            return False
        reason = _REASONS.get(script.status, "Whatever")
        head = [f"HTTP/1.1 {script.status} {reason}"]
        head += [f"{k}: {v}" for k, v in script.headers.items()]
        if script.chunked:
            head.append("transfer-encoding: chunked")
        else:
            body = b"".join(step for step in script.steps if isinstance(step, bytes))
            head.append(f"content-length: {len(body)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if not script.chunked:
            writer.write(body)
            await writer.drain()
            return True
        await writer.drain()
        for step in script.steps:
            if step is DROP:
                writer.transport.abort()
                return False
            if isinstance(step, int | float):
                if await self._pause(reader, float(step)):
                    return False
                continue
            if step:
                writer.write(b"%x\r\n%s\r\n" % (len(step), step))
                await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True
