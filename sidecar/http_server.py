"""The HTTP server: uvicorn on httptools, plus the ``[server]`` limits uvicorn does not enforce itself.

uvicorn's httptools protocol buffers a request head of any size (httptools concatenates an unfinished header value
in memory), waits forever for the rest of a head or a body, and answers a malformed request in ``text/plain``.
``LimitedHttpToolsProtocol`` adds, per connection:

* a bound on the head (``max_header_bytes``, ``max_headers``): 431;
* a deadline for the head, from the connection or the first byte of the next request (``header_timeout_seconds``),
  and one for the body, from the end of the head (``body_timeout_seconds``): 408;
* the keep-alive idle time (``keepalive_seconds``, exact: uvicorn's own setting is an ``int``);
* the sidecar's JSON error envelope for these and for malformed HTTP (400);
* responses that close the connection (HTTP/1.0, ``Connection: close``) carry one ``connection`` header, and an
  HTTP/1.0 stream is delimited by the close instead of chunked encoding, which HTTP/1.0 does not have.

The kept-alive HTTP/1.1 response path is uvicorn's own, untouched: the work added per request is a few attribute
writes; nothing is added per body chunk. ``server_config`` builds the ``uvicorn.Config`` every listener uses.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Literal

import httptools
import orjson
import uvicorn
from starlette.types import ASGIApp
from uvicorn._types import ASGI3Application, ASGISendEvent, HTTPResponseBodyEvent, HTTPResponseStartEvent
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from .config import Limits, Settings

log = logging.getLogger("sidecar")

_REQUEST_LINE_OVERHEAD = len(b"DELETE  HTTP/1.1\r\n\r\n")
_HEADER_LINE_OVERHEAD = len(b": \r\n")
LINGER_SECONDS = 2.0
"""After a refusal, what the client still sends is read and dropped for up to this long before the close."""


def reject_response(status: int, message: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A complete ``connection: close`` response with the documented envelope, written by the protocol itself."""
    body = orjson.dumps({"error": {"type": "invalid_request_error", "message": message}})
    head = [STATUS_LINE[status]]
    for name, value in default_headers:
        head += [name, b": ", value, b"\r\n"]
    head += [
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n\r\n",
    ]
    return b"".join(head) + body


class _HeadRejected(Exception):
    """Raised from a parser callback to stop parsing a head that breaks a limit (httptools re-raises it as the
    ``__context__`` of an ``HttpParserCallbackError``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits in ``limits`` (set by ``protocol_for``)."""

    limits: Limits = Limits()

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # uvicorn annotates this int; loop.call_later takes the exact float.
        self.timeout_keep_alive = self.limits.keepalive_seconds  # type: ignore[assignment]
        self._awaiting_head = True
        """Between the first byte of a request (or the connection) and the end of its head."""
        self._head_received = 0
        """Bytes received while the head was incomplete; a bound on the head's size."""
        self._in_body = False
        """Between the end of the head and the end of the body."""
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._refused = False

    # Connection life

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.limits.header_timeout_seconds, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadlines()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a refusal: dropped unread
        self._unset_keepalive_if_required()
        if self._awaiting_head:
            self._head_received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            rejected = exc.__context__
            if isinstance(rejected, _HeadRejected):
                log.warning("request head refused with %d: %s", rejected.status, rejected.message)
                self._reject(rejected.status, rejected.message)
            else:
                log.warning("malformed HTTP request refused with 400 (%s)", exc)
                self._reject(400, f"Malformed HTTP/1.1 request ({exc}): send a well-formed HTTP/1.1 request")
            return
        # Deadlines are armed after the feed, so a request that arrives whole in one read arms none.
        if self._awaiting_head:
            if self._head_received > self.limits.max_header_bytes:
                log.warning("request head refused with 431: larger than %d bytes", self.limits.max_header_bytes)
                self._reject(431, self._head_too_large())
            elif self._head_timer is None:
                self._head_timer = self.loop.call_later(self.limits.header_timeout_seconds, self._head_timed_out)
        elif self._in_body:
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(self.limits.body_timeout_seconds, self._body_timed_out)
        elif self.timeout_keep_alive_task is None and self.cycle.response_complete and not self.pipeline:
            # Idle again: the rest of a body came after an early response (a 401 before the body was read). uvicorn
            # armed its keep-alive timer at that response and cancelled it when these bytes came; nothing re-arms it.
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def handle_websocket_upgrade(self) -> None:
        # From here on the WebSocket protocol owns the transport, with its own ping and size limits.
        self._cancel_deadlines()
        self._awaiting_head = self._in_body = False
        super().handle_websocket_upgrade()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        if not cycle.keep_alive:
            # Only responses that end the connection need the changes; kept-alive ones keep uvicorn's class.
            cycle.__class__ = ClosingCycle
        super()._start_asgi_task(cycle, app)

    # Parser callbacks

    def on_message_begin(self) -> None:
        self._awaiting_head = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        limits = self.limits
        if len(self.headers) > limits.max_headers:
            raise _HeadRejected(
                431, f"More than {limits.max_headers} request header fields ([server] max_headers): send fewer"
            )
        # The byte count can include the start of the body when both came in one read: measure the head itself.
        if self._head_received > limits.max_header_bytes and self._head_size() > limits.max_header_bytes:
            raise _HeadRejected(431, self._head_too_large())
        self._awaiting_head = False
        self._head_received = 0
        self._in_body = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # Limits

    def _head_size(self) -> int:
        fields = sum(len(name) + len(value) + _HEADER_LINE_OVERHEAD for name, value in self.headers)
        return len(self.url) + _REQUEST_LINE_OVERHEAD + fields

    def _head_too_large(self) -> str:
        return (
            f"The request head is larger than {self.limits.max_header_bytes} bytes ([server] max_header_bytes): "
            "send fewer or shorter headers"
        )

    def _head_timed_out(self) -> None:
        self._head_timer = None
        self._reject(
            408,
            f"The request head did not arrive within {self.limits.header_timeout_seconds:g} s "
            "([server] header_timeout_seconds): send the whole request without pausing",
        )

    def _body_timed_out(self) -> None:
        self._body_timer = None
        log.info("request body not complete within %g s: connection closed", self.limits.body_timeout_seconds)
        self._reject(
            408,
            f"The request body did not arrive within {self.limits.body_timeout_seconds:g} s "
            "([server] body_timeout_seconds): send the whole body without pausing",
        )

    def _cancel_deadlines(self) -> None:
        for timer in (self._head_timer, self._body_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._linger_timer = None

    def _reject(self, status: int, message: str) -> None:
        """Answer ``status`` if no other response is under way on this connection, then close it. The request being
        read, if the app has it, sees a disconnect."""
        self._cancel_deadlines()
        self._unset_keepalive_if_required()
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        cycle = self.cycle
        busy = cycle is not None and not cycle.response_complete
        answered = not busy or (self._in_body and not self.pipeline and not cycle.response_started)
        if busy:
            # Set now, not when connection_lost runs: the app's next send must not reach the transport.
            cycle.disconnected = True
            cycle.message_event.set()
        if not answered:
            self.transport.close()
            return
        self.transport.write(reject_response(status, message, self.server_state.default_headers))
        if self.transport.can_write_eof():
            # A close with unread bytes makes the kernel send a reset, which can destroy the refusal before the
            # client reads it: send our end, drop what still comes for a while, close when the client does.
            self.transport.write_eof()
            self._linger_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()


class ClosingCycle(RequestResponseCycle):
    """A response after which the connection closes (HTTP/1.0, or ``Connection: close``).

    uvicorn adds its own ``connection: close`` to the app's headers, so a response that already says
    ``connection: keep-alive`` (sse-starlette always does) would carry both: the app's is dropped. For HTTP/1.0 a body
    without ``content-length`` is sent as is and ended by the close, instead of in chunks.
    """

    _close_delimited = False

    async def send(self, message: ASGISendEvent) -> None:
        if message["type"] == "http.response.start" and not self.response_started:
            await super().send(self._start_for_close(message))
        elif message["type"] == "http.response.body" and self._close_delimited:
            await self._send_close_delimited(message)
        else:
            await super().send(message)

    def _start_for_close(self, message: HTTPResponseStartEvent) -> HTTPResponseStartEvent:
        dropped = (b"connection", b"transfer-encoding") if self.scope["http_version"] == "1.0" else (b"connection",)
        headers = [(name, value) for name, value in message.get("headers", ()) if name.lower() not in dropped]
        if (
            self.scope["http_version"] == "1.0"
            and self.scope["method"] != "HEAD"
            and message["status"] not in (204, 304)
            and not any(name.lower() == b"content-length" for name, _ in headers)
        ):
            self._close_delimited = True
            self.chunked_encoding = False  # uvicorn then adds no transfer-encoding
        return {"type": "http.response.start", "status": message["status"], "headers": headers}

    async def _send_close_delimited(self, message: HTTPResponseBodyEvent) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if self.response_complete:
            raise RuntimeError("Unexpected ASGI message 'http.response.body' sent, after response already completed.")
        self.transport.write(message.get("body", b""))
        if not message.get("more_body", False):
            self.response_complete = True
            self.message_event.set()
            self.transport.close()
            self.on_response()


def protocol_for(limits: Limits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to ``limits``."""

    class ConfiguredProtocol(LimitedHttpToolsProtocol):
        pass

    ConfiguredProtocol.limits = limits
    return ConfiguredProtocol


GRACEFUL_SHUTDOWN_SECONDS = 20


def server_config(
    app: ASGIApp,
    settings: Settings,
    *,
    host: str,
    port: int,
    access_log: bool = False,
    lifespan: Literal["auto", "on", "off"] = "auto",
) -> uvicorn.Config:
    """The uvicorn configuration of every sidecar listener (the private one, the public realtime one, the tests')."""
    limits = settings.limits
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_for(limits),
        timeout_keep_alive=math.ceil(limits.keepalive_seconds),  # informative: the protocol uses the exact value
        # Room above [realtime] max_frame_bytes, so the relay sees an oversize frame and answers it with its error
        # event and 1009; only a frame over twice the limit is cut by websockets itself (also 1009).
        ws_max_size=2 * settings.realtime.max_frame_bytes,
        server_header=False,
        # On SIGTERM, streams in flight get this long to finish; then uvicorn cancels them, and each is recorded as
        # aborted with its usage so far (its slot freed). Below Kubernetes' default 30 s grace period.
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        log_config=None,
        access_log=access_log,
        lifespan=lifespan,
    )
