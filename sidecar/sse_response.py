"""The streamed answer of every model route: pre-encoded SSE frames, a heartbeat, and disconnect handling.

A plain ASGI response instead of sse-starlette's ``EventSourceResponse``, which starts a task group of four tasks
per response and opens a cancel scope per frame (bench/README.md: a large part of the CPU per stream). Here the
request's own task pulls the frames and sends them, one ``http.response.body`` each, so a slow client slows the pull
(``send`` waits for the socket to drain) and nothing is buffered. One extra task per response (``_watch``) waits
for the client's ``http.disconnect`` (uvicorn's httptools protocol drops writes to a closed connection silently,
so only ``receive`` tells) and sends the ``: ping`` comment when no frame went out for ``heartbeat_seconds``.

When the client leaves, the watcher cancels the request's task: the cancellation lands where that task waits (in
the frames generator's ``__anext__``, or in ``send``), the generator's ``finally`` records the generation as
aborted and closes the upstream, and the response swallows its own cancellation (``Task.uncancel``). A heartbeat
never cancels anything: an async generator interrupted inside ``__anext__`` is finished for good.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Final

from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

MEDIA_TYPE: Final = "text/event-stream; charset=utf-8"
# The bytes sse-starlette sent for ServerSentEvent(comment="ping") (its default "\r\n" separator): clients and
# tests already see exactly these.
PING: Final = b": ping\r\n\r\n"
# Added after the caller's headers, in sse-starlette's order, so the response head is byte-for-byte unchanged.
_TRAILING_HEADERS: Final = ((b"connection", b"keep-alive"), (b"content-type", MEDIA_TYPE.encode("latin-1")))
_END: Final = {"type": "http.response.body", "body": b"", "more_body": False}


class LastFrame(bytes):
    """A frame nothing follows (a stream's terminal event): sent with the end of the body in one write."""

    __slots__ = ()


class SseResponse(Response):
    """200 with ``frames`` as an event stream; ``on_close`` runs when the response is over, however it ends."""

    media_type = MEDIA_TYPE

    def __init__(
        self,
        frames: AsyncIterator[bytes],
        headers: Mapping[str, str],
        *,
        heartbeat_seconds: float,
        on_close: Callable[[], None],
    ) -> None:
        # No Response.__init__: it renders a body and derives content-length, neither of which a stream has.
        self.status_code = 200
        self.background = None
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.raw_headers.extend(_TRAILING_HEADERS)
        self._frames = frames
        self._heartbeat = heartbeat_seconds if heartbeat_seconds > 0 else None
        self._on_close = on_close
        self._host: asyncio.Task[Any] | None = None
        self._last_sent = 0.0  # loop time of the last write: the heartbeat is due _heartbeat seconds after it
        self._sending = False  # a frame write is in progress (a client not reading): a ping would not help
        self._finished = False  # the frames are exhausted: a disconnect now changes nothing
        self._gone = False  # the watcher cancelled the host task because the client left
        self._pinging: asyncio.Future[None] | None = None  # set while the watcher writes a ping

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._serve(receive, send)
        finally:
            self._on_close()
        if self.background is not None:
            await self.background()

    async def _serve(self, receive: Receive, send: Send) -> None:
        host = asyncio.current_task()
        assert host is not None  # an ASGI app always runs in a task
        self._host = host
        self._sending = True  # until the head is written: no ping may go before it
        self._last_sent = asyncio.get_running_loop().time()
        watcher = asyncio.get_running_loop().create_task(self._watch(receive, send))
        try:
            try:
                await self._pump(send)
            finally:
                watcher.cancel()  # first: from here on nothing may cancel this task
                aclose = getattr(self._frames, "aclose", None)
                if aclose is not None:
                    await aclose()  # a no-op when exhausted; else the generator records the abort
        except asyncio.CancelledError:
            if self._gone and host.uncancel() == 0:
                return  # our own cancellation (the client left), not the server's
            raise
        except (OSError, ClientDisconnect):
            return  # an ASGI 2.4 server tells a closed connection by failing the send

    async def _pump(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        self._sending = False
        self._last_sent = loop.time()
        async for frame in self._frames:
            if self._pinging is not None:
                await self._pinging  # never interleave a frame with a heartbeat being written
            last = type(frame) is LastFrame
            if last:
                self._finished = True
            self._sending = True
            await send({"type": "http.response.body", "body": frame, "more_body": not last})
            self._sending = False
            self._last_sent = loop.time()
            if last:
                return
        self._finished = True
        if self._pinging is not None:
            await self._pinging
        await send(_END)

    async def _watch(self, receive: Receive, send: Send) -> None:
        """The one extra task: wait for the client's disconnect, and write the heartbeat when it is due."""
        loop = asyncio.get_running_loop()
        beat = self._heartbeat
        due = None if beat is None else self._last_sent + beat
        try:
            while True:
                try:
                    # Cancelling receive() is safe (it waits on an event); cancelling the frames' anext is not.
                    async with asyncio.timeout_at(due):
                        message = await receive()
                except TimeoutError:
                    assert beat is not None
                    if loop.time() >= self._last_sent + beat and not self._sending and not self._finished:
                        await self._ping(send, loop)
                    due = self._last_sent + beat
                    if due <= loop.time():  # a write stuck on a client that does not read: look again later
                        due = loop.time() + beat
                    continue
                if message["type"] == "http.disconnect":
                    break
        except (OSError, ClientDisconnect):
            pass  # the ping's write failed: the client is gone
        if not self._finished and self._host is not None:
            self._gone = True
            self._host.cancel()

    async def _ping(self, send: Send, loop: asyncio.AbstractEventLoop) -> None:
        self._pinging = pinging = loop.create_future()
        try:
            await send({"type": "http.response.body", "body": PING, "more_body": True})
            self._last_sent = loop.time()
        finally:
            self._pinging = None
            if not pinging.done():  # the host may have been cancelled while it waited on it
                pinging.set_result(None)
