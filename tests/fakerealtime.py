"""A fake OpenAI Realtime upstream: a real WebSocket server (``websockets``) on 127.0.0.1, for sync or async tests.

It runs its own event loop in a background thread, so a plain sync test can use it::

    with FakeRealtime(drop_after=2) as up:
        ...  # point the code under test at f"{up.url}/realtime?model=gpt-realtime"
        record = up.wait_closed()[0]  # path, headers, frames received, close code

What it does, per connection: it sends ``session.created``, answers each ``session.update`` with
``session.updated``, and answers each ``response.create`` by replaying the scripted server events. By default the
script is the recorded ``ga-text-turn`` fixture, sent byte for byte. Options let it fail the way OpenAI can: reject
the HTTP upgrade, answer with an ``error`` event, close with a code, or drop the TCP connection mid-response.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

REALTIME_FIXTURES = Path(__file__).parent / "fixtures" / "openai-realtime"


def fixture_lines(name: str) -> list[str]:
    """The frames of a ``*.jsonl`` realtime fixture, one JSON text per line, exactly as stored."""
    return (REALTIME_FIXTURES / name).read_text(encoding="utf-8").splitlines()


GA_TEXT_TURN = "ga-text-turn.DOCS.server.jsonl"
INVALID_EVENT_ERROR: dict[str, Any] = json.loads(
    (REALTIME_FIXTURES / "errors" / "error-event-invalid-event.DOCS.json").read_text(encoding="utf-8")
)
"""OpenAI's documented ``error`` event (``invalid_event``, naming the client ``event_id`` it refers to)."""


@dataclass
class Connection:
    """What one client did: the upgrade request, the frames it sent, and how the socket ended."""

    path: str
    """Request path with the query string, e.g. ``/v1/realtime?model=gpt-realtime``."""
    headers: dict[str, str]
    """Upgrade request headers, names lower-cased."""
    status: int = 101
    """The HTTP status the upgrade got: 101, or ``reject_status``."""
    frames: list[Any] = field(default_factory=list)
    """Frames from the client, parsed as JSON (a frame that is not JSON is kept as it came)."""
    sent: list[str] = field(default_factory=list)
    """Frames the fake sent, as text."""
    close_code: int | None = None
    """The close code the server saw (1006 for an abnormal closure); None while open or when rejected."""


class FakeRealtime:
    """``with FakeRealtime(script=[...]) as up: ... up.url, up.connections, up.wait_closed()``.

    * ``script``: server events replayed on each ``response.create``. Strings are sent verbatim; dicts are
      JSON-encoded. The default is the lines of ``ga-text-turn.DOCS.server.jsonl``.
    * ``drop_after``: after sending this many scripted events, abort the TCP connection with no close frame. The
      client sees 1006.
    * ``close_code``: after the scripted events, close the WebSocket cleanly with this code.
    * ``reject_status``: answer the HTTP upgrade with this status (e.g. 401) and an OpenAI-style JSON error body.
    * ``error_event``: answer ``response.create`` with this OpenAI ``error`` event instead of the script. It
      combines with ``close_code``.
    """

    def __init__(
        self,
        script: Sequence[str | dict[str, Any]] | None = None,
        *,
        drop_after: int | None = None,
        close_code: int | None = None,
        reject_status: int | None = None,
        error_event: dict[str, Any] | None = None,
    ) -> None:
        self.script: list[str | dict[str, Any]] = list(fixture_lines(GA_TEXT_TURN) if script is None else script)
        self.drop_after = drop_after
        self.close_code = close_code
        self.reject_status = reject_status
        self.error_event = error_event
        self._records: list[Connection] = []
        self._changed = threading.Condition()  # guards _records and every record's fields
        self._by_socket: dict[ServerConnection, Connection] = {}  # loop thread only
        self._event_ids = 0  # loop thread only
        self._port = 0
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="FakeRealtime", daemon=True)

    # ----- test-facing API -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The fake's OpenAI base URL, including ``/v1``, as ``OPENAI_BASE_URL`` would be (with the scheme ws)."""
        return f"ws://127.0.0.1:{self._port}/v1"

    @property
    def connections(self) -> list[Connection]:
        """A snapshot of every connection so far, in arrival order. Later frames don't change it."""
        with self._changed:
            return [
                replace(r, headers=dict(r.headers), frames=list(r.frames), sent=list(r.sent)) for r in self._records
            ]

    def wait_closed(self, count: int = 1, timeout: float = 5.0) -> list[Connection]:
        """Block until ``count`` WebSocket connections have ended, then return the snapshot."""

        def done() -> bool:
            return sum(r.close_code is not None for r in self._records) >= count

        with self._changed:
            if not self._changed.wait_for(done, timeout):
                raise TimeoutError(f"FakeRealtime: {count} connection(s) did not close within {timeout}s")
        return self.connections

    def __enter__(self) -> FakeRealtime:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("FakeRealtime: the server did not start within 10s")
        if self._startup_error is not None:
            raise self._startup_error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    # ----- server (runs on the background loop) ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to __enter__; after startup there is nothing to report to
            self._startup_error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            ping_interval=None,  # no keepalive traffic to interleave with the scripted frames
            max_size=None,  # clients send large base64 audio frames
            write_limit=0,  # send() returns once the frame is written to the socket, so drop_after loses nothing
        ) as server:
            self._port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        record = Connection(path=request.path, headers={k.lower(): v for k, v in request.headers.raw_items()})
        with self._changed:
            self._records.append(record)
            self._changed.notify_all()
        if self.reject_status is None:
            self._by_socket[ws] = record
            return None
        record.status = self.reject_status
        body = {
            "error": {
                "message": f"FakeRealtime: upgrade rejected with {self.reject_status}",
                "type": "invalid_request_error",
                "code": None,
                "param": None,
            }
        }
        response = ws.respond(self.reject_status, json.dumps(body))
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    def _event_id(self) -> str:
        self._event_ids += 1
        return f"event_fake_{self._event_ids}"

    async def _send(self, ws: ServerConnection, record: Connection, frame: str | dict[str, Any]) -> None:
        text = frame if isinstance(frame, str) else json.dumps(frame)
        await ws.send(text)
        with self._changed:
            record.sent.append(text)

    async def _handle(self, ws: ServerConnection) -> None:
        record = self._by_socket.pop(ws)
        model = _query_param(record.path, "model") or "gpt-realtime"
        session: dict[str, Any] = {"object": "realtime.session", "type": "realtime", "id": "sess_fake", "model": model}
        try:
            await self._send(ws, record, {"type": "session.created", "event_id": self._event_id(), "session": session})
            async for message in ws:
                frame = _parse(message)
                with self._changed:
                    record.frames.append(frame)
                kind = frame.get("type") if isinstance(frame, dict) else None
                if kind == "session.update":
                    update = frame.get("session")
                    session.update(update if isinstance(update, dict) else {})
                    updated = {"type": "session.updated", "event_id": self._event_id(), "session": dict(session)}
                    await self._send(ws, record, updated)
                elif kind == "response.create" and not await self._respond(ws, record):
                    break
        except ConnectionClosed:
            pass
        finally:
            await ws.wait_closed()
            with self._changed:
                record.close_code = ws.close_code
                self._changed.notify_all()

    async def _respond(self, ws: ServerConnection, record: Connection) -> bool:
        """Answer a ``response.create``. False when the fake has ended the connection."""
        frames = [self.error_event] if self.error_event is not None else self.script
        for frame in frames if self.drop_after is None else frames[: self.drop_after]:
            await self._send(ws, record, frame)
        if self.drop_after is not None:
            # abort() discards buffered bytes, but with write_limit=0 every send() has already reached the kernel.
            ws.transport.abort()
            return False
        if self.close_code is not None:
            await ws.close(self.close_code, "FakeRealtime: scripted close")
            return False
        return True


def _parse(message: str | bytes) -> Any:
    try:
        return json.loads(message)
    except ValueError:
        return message


def _query_param(path: str, name: str) -> str | None:
    values = parse_qs(urlsplit(path).query).get(name)
    return values[0] if values else None
