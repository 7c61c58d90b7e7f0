"""The event streams: :class:`AsyncEventStream` (asyncio) and its synchronous twin :class:`EventStream`.

How one stream runs (pull-based: nothing happens until the first ``__anext__`` or ``result()``):

1. The request is sent on the caller's task. The first-event deadline starts now, so it also bounds connecting
   and waiting for the response headers.
2. Non-2xx → :class:`GatewayError` is raised (body decoded as the reference ``decodeGatewayError``); a 2xx whose
   body ends without a single byte → ``GatewayError("auth-gateway returned empty body")``.
3. Body bytes go through :class:`~client._sse.SSEDecoder`; each ``data`` payload is one ``orjson.loads`` and is
   yielded as is (no validation). ``[DONE]`` or EOF ends the reading.
4. Deadlines. Until the first event that is not ``start``, the first-event deadline applies; after it, each
   non-``start`` event moves the idle deadline to ``now + idle``. SSE comments yield nothing, so they never move
   a deadline. Reads run inside one ``asyncio.timeout_at(deadline)`` per network wait (never per event, never
   across a ``yield``, so a timeout can only ever interrupt our own read). Time the consumer spends between two
   pulls is not counted: the deadline is pushed back by it, so only the gateway's silence is measured, as with
   the reference's background reader.
5. Every way the stream can end after the request went out gives exactly one terminal event:
   the gateway's ``done``/``error``; or a synthesized ``error`` event with a full ``AssistantMessage`` (zero
   usage, empty content, ``timestamp`` in ms) for a timeout (reason ``error``, the reference messages), an abort
   (reason ``aborted``), or a stream that ends, breaks or carries an unreadable frame first (reason ``error``,
   ``"stream closed before a terminal event"``). The matching :class:`~client.errors.StreamError` is kept in
   ``stream.error``. The response is closed before a synthesized terminal is yielded. A synthesized message takes
   ``api``/``provider``/``model`` from the stream's ``start`` partial when one arrived, else from the ``model``
   argument (``api`` is then the model dict's ``api``, or ``"pi-native"``).
6. The terminal is yielded at once; on the next pull (or ``result()``, ``aclose()``, or the collection of an
   abandoned stream) the rest of the body (``[DONE]``, the chunked-encoding end) is drained, for at most
   ``DRAIN_GRACE_SECONDS``, so the connection goes back to the pool.

Abort: an ``asyncio.Event``/``threading.Event`` passed as ``abort=`` (or ``options["signal"]``), or
``stream.abort()``. If a read is in flight the current timeout is fired at once, which closes the response;
otherwise the response is closed straight away. The next pull yields the ``error``/``aborted`` terminal.
Cancelling the task that iterates also closes the response at once; the ``CancelledError`` propagates (it is never
swallowed) and the ``aborted`` terminal is recorded: ``result()`` returns it and a later pull yields it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Literal, cast

import httpx
import orjson

from ._request import AbortHandle, PreparedRequest
from ._sse import SSEDecoder
from ._transport import background_loop, pooled_client
from .errors import (
    ClientError,
    GatewayConnectionError,
    GatewayError,
    IncompleteStreamError,
    StreamAbortedError,
    StreamError,
    StreamTimeoutError,
)
from .types import AssistantMessage, AssistantMessageEvent, ErrorEvent, TerminalEvent, zero_usage

FIRST_EVENT_TIMEOUT_MESSAGE = "pi-native stream timed out while waiting for the first event"
IDLE_TIMEOUT_MESSAGE = "pi-native stream stalled while waiting for the next event"
INCOMPLETE_MESSAGE = "stream closed before a terminal event"
ABORTED_MESSAGE = "Request aborted by caller"

DRAIN_GRACE_SECONDS = 1.0
"""After a real terminal event: how long to wait for ``[DONE]`` and the end of the body before closing."""
ABORT_POLL_SECONDS = 0.02
"""How often a ``threading.Event`` abort handle is checked (an ``asyncio.Event`` is awaited directly)."""


def message_of(event: TerminalEvent) -> AssistantMessage:
    if event["type"] == "done":
        return event["message"]
    return event["error"]


def decode_gateway_error(status: int, reason: str, headers: Mapping[str, str], raw: bytes) -> GatewayError:
    """A non-2xx answer as the reference ``decodeGatewayError`` reads it."""
    body: Any
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = raw.decode("utf-8", "replace").strip()
    if isinstance(body, dict) and "error" in body:
        err = body["error"]
        if isinstance(err, dict):
            message = err.get("message")
            type_ = err.get("type")
            return GatewayError(
                message if isinstance(message, str) and message else f"auth-gateway {status}",
                status,
                headers,
                type_ if isinstance(type_, str) else None,
            )
    text = body if isinstance(body, str) else orjson.dumps(body).decode()
    return GatewayError(f"auth-gateway {status}: {text or reason}", status, headers)


async def _wait_threading_event(event: threading.Event) -> None:
    # A threading.Event cannot wake a loop; polling it costs one timer per interval and never blocks a thread.
    while not event.is_set():  # noqa: ASYNC110
        await asyncio.sleep(ABORT_POLL_SECONDS)


class _Engine:
    """One stream's state and the generator that reads it. It never refers to its :class:`AsyncEventStream`, so a
    stream the caller drops is freed at once (no reference cycle), and the loop's async-generator finalizer then
    closes the response: an abandoned stream does not hold a pooled connection until the next GC cycle."""

    def __init__(self, request: PreparedRequest, http_client: httpx.AsyncClient | None) -> None:
        self.req = request
        self.http_client = http_client
        self.terminal: TerminalEvent | None = None
        self.pending: TerminalEvent | None = None
        """A terminal recorded while the task was being cancelled: the next pull yields it."""
        self.error: StreamError | None = None
        self.response: httpx.Response | None = None
        self.chunks: AsyncIterator[bytes] | None = None
        self.cm: asyncio.Timeout | None = None
        self.aborted = False
        self.closer: asyncio.Task[None] | None = None
        self.synthesized = False
        self.api = request.model.api
        self.provider = request.model.provider
        self.model = request.model.id

    def abort(self) -> None:
        if self.aborted or self.terminal is not None:
            return
        self.aborted = True
        cm = self.cm
        if cm is not None:
            if not cm.expired():
                cm.reschedule(asyncio.get_running_loop().time())
        elif self.response is not None and not self.response.is_closed:
            self.closer = asyncio.get_running_loop().create_task(self.close_response())

    def synthesize(self, reason: Literal["error", "aborted"], message: str, error: StreamError) -> ErrorEvent:
        msg: AssistantMessage = {
            "role": "assistant",
            "content": [],
            "api": self.api,
            "provider": self.provider,
            "model": self.model,
            "usage": zero_usage(),
            "stopReason": reason,
            "errorMessage": message,
            "timestamp": int(time.time() * 1000),
        }
        event: ErrorEvent = {"type": "error", "reason": reason, "error": msg}
        self.terminal = event
        self.synthesized = True
        self.error = error
        return event

    def aborted_terminal(self) -> ErrorEvent:
        return self.synthesize("aborted", ABORTED_MESSAGE, StreamAbortedError(ABORTED_MESSAGE))

    def repair_terminal(self, event: dict[str, Any]) -> TerminalEvent:
        """A terminal as received; one without its message (a known server bug, protocol §14.1) is rebuilt."""
        if event["type"] == "done":
            if type(event.get("message")) is dict:
                return cast(TerminalEvent, event)
            text = "auth-gateway sent a done event without a message"
            return self.synthesize("error", text, IncompleteStreamError(text))
        err = event.get("error")
        if type(err) is dict:
            return cast(TerminalEvent, event)
        reason: Literal["error", "aborted"] = "aborted" if event.get("reason") == "aborted" else "error"
        missing = "auth-gateway sent an error event without a message"
        given = event.get("errorMessage") or err
        terminal = self.synthesize(
            reason, given if isinstance(given, str) and given else missing, IncompleteStreamError(missing)
        )
        self.error = None  # the gateway did report an error; the client only completed the message
        self.synthesized = False
        return terminal

    def timed_out(self, awaiting_first: bool) -> ErrorEvent:
        if self.aborted:
            return self.aborted_terminal()
        text = FIRST_EVENT_TIMEOUT_MESSAGE if awaiting_first else IDLE_TIMEOUT_MESSAGE
        return self.synthesize("error", text, StreamTimeoutError(text))

    def incomplete(self, detail: str | None = None) -> ErrorEvent:
        if self.aborted:
            return self.aborted_terminal()
        text = INCOMPLETE_MESSAGE if detail is None else f"{INCOMPLETE_MESSAGE}: {detail}"
        return self.synthesize("error", text, IncompleteStreamError(text))

    async def close_response(self) -> None:
        response = self.response
        if response is not None and not response.is_closed:
            await response.aclose()

    async def release(self) -> None:
        """Give the connection back: after a real terminal drain the body's end (briefly), then close."""
        response = self.response
        if response is None or response.is_closed:
            return
        chunks = self.chunks
        if chunks is not None and self.terminal is not None and not self.synthesized and not self.aborted:
            try:
                async with asyncio.timeout(DRAIN_GRACE_SECONDS) as cm:
                    self.cm = cm
                    async for _ in chunks:
                        pass
            except (TimeoutError, httpx.HTTPError):
                pass
            finally:
                self.cm = None
        await response.aclose()

    def start_watcher(self, handle: AbortHandle) -> asyncio.Task[Any]:
        if isinstance(handle, asyncio.Event):
            task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(handle.wait())
        else:
            task = asyncio.get_running_loop().create_task(_wait_threading_event(handle))
        task.add_done_callback(self.on_abort_handle)
        return task

    def on_abort_handle(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is None:
            self.abort()

    async def run(self) -> AsyncGenerator[AssistantMessageEvent, None]:
        req = self.req
        loop = asyncio.get_running_loop()
        handle = req.abort
        watcher = None
        if handle is not None:
            if handle.is_set():
                self.aborted = True
            else:
                watcher = self.start_watcher(handle)
        try:
            if self.aborted:
                yield self.aborted_terminal()
                return
            first = req.first_event_timeout
            idle = req.idle_timeout
            deadline = loop.time() + first if first is not None else None

            # ----- send, wait for the headers (bounded by the first-event deadline) -----
            try:
                async with asyncio.timeout_at(deadline) as cm:
                    self.cm = cm
                    client = self.http_client or await pooled_client(req.base_url)
                    request = client.build_request("POST", req.url, headers=req.headers, content=req.body)
                    response = await client.send(request, stream=True)
            except TimeoutError:
                yield self.timed_out(True)
                return
            except httpx.TransportError as exc:
                if self.aborted:
                    yield self.aborted_terminal()
                    return
                raise GatewayConnectionError(f"cannot reach the auth-gateway at {req.url}: {exc!r}") from exc
            finally:
                self.cm = None
            self.response = response

            if not response.is_success:
                raw = b""
                try:
                    async with asyncio.timeout_at(deadline) as cm:
                        self.cm = cm
                        raw = await response.aread()
                except (TimeoutError, httpx.HTTPError):
                    pass
                finally:
                    self.cm = None
                    await response.aclose()
                raise decode_gateway_error(response.status_code, response.reason_phrase, response.headers, raw)

            # ----- read the events -----
            chunks = self.chunks = response.aiter_bytes()
            decoder = SSEDecoder()
            payloads: list[bytes] = []
            index = 0
            eof = False
            got_bytes = False
            awaiting_first = True
            while True:
                if self.aborted:
                    await self.close_response()
                    yield self.aborted_terminal()
                    return
                if index >= len(payloads):
                    if eof:
                        await self.close_response()
                        yield self.incomplete()
                        return
                    try:
                        async with asyncio.timeout_at(deadline) as cm:
                            self.cm = cm
                            while True:
                                chunk = await anext(chunks, None)
                                if chunk is None:
                                    eof = True
                                    payloads = decoder.flush()
                                    break
                                got_bytes = True
                                payloads = decoder.feed(chunk)
                                if payloads:
                                    break
                    except TimeoutError:
                        await self.close_response()
                        yield self.timed_out(awaiting_first)
                        return
                    except httpx.HTTPError as exc:
                        await self.close_response()
                        yield self.incomplete(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
                        return
                    finally:
                        self.cm = None
                    if eof and not got_bytes:
                        raise GatewayError("auth-gateway returned empty body", response.status_code, response.headers)
                    index = 0
                    continue

                payload = payloads[index]
                index += 1
                if payload == b"[DONE]":
                    payloads = []
                    index = 0
                    eof = True
                    continue
                try:
                    event = orjson.loads(payload)
                except orjson.JSONDecodeError as exc:
                    await self.close_response()
                    trailing = eof and index == len(payloads)
                    if trailing and payload.lstrip()[:1] in (b"{", b"["):
                        yield self.incomplete()  # a cut-off last frame: the stream ended early
                    else:
                        yield self.incomplete(f"invalid JSON in an event: {exc}")
                    return
                if type(event) is not dict:
                    await self.close_response()
                    yield self.incomplete(f"an event is not a JSON object: {payload[:80]!r}")
                    return
                etype = event.get("type")
                if etype == "done" or etype == "error":
                    terminal = self.repair_terminal(event)
                    self.terminal = terminal
                    yield terminal
                    return
                if etype == "start":
                    partial = event.get("partial")
                    if type(partial) is dict:
                        self.api = partial.get("api") or self.api
                        self.provider = partial.get("provider") or self.provider
                        self.model = partial.get("model") or self.model
                    paused = loop.time()
                else:
                    awaiting_first = False
                    paused = loop.time()
                    deadline = paused + idle if idle is not None else None
                yield cast(AssistantMessageEvent, event)
                if deadline is not None:
                    deadline += loop.time() - paused  # the consumer's time between pulls does not count
        except asyncio.CancelledError:
            if self.terminal is None:
                self.pending = self.aborted_terminal()
            self.aborted = True
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
            await self.release()


class AsyncEventStream:
    """The events of one ``POST /v1/pi/stream`` call: ``async for event in s``, then ``await s.result()``.

    Also an async context manager (``async with stream(...) as s``) that closes the response on exit.
    """

    def __init__(self, request: PreparedRequest, http_client: httpx.AsyncClient | None = None) -> None:
        self._engine = _Engine(request, http_client)
        self._gen: AsyncGenerator[AssistantMessageEvent, None] | None = None
        self._running = False
        self._exception: BaseException | None = None
        self._finished: asyncio.Event | None = None

    @property
    def error(self) -> StreamError | None:
        """Why the client ended the stream itself (:class:`StreamTimeoutError`, :class:`StreamAbortedError`,
        :class:`IncompleteStreamError`), or ``None``."""
        return self._engine.error

    @property
    def response_headers(self) -> httpx.Headers | None:
        """The gateway's response headers (e.g. ``x-request-id``) once they have arrived."""
        response = self._engine.response
        return response.headers if response is not None else None

    def __aiter__(self) -> AsyncEventStream:
        return self

    async def __anext__(self) -> AssistantMessageEvent:
        engine = self._engine
        pending = engine.pending
        if pending is not None:
            engine.pending = None
            return pending
        gen = self._gen
        if gen is None:
            if engine.terminal is not None or self._exception is not None:
                raise StopAsyncIteration
            gen = self._gen = engine.run()
        self._running = True
        try:
            return await gen.__anext__()
        except (StopAsyncIteration, asyncio.CancelledError):
            self._set_finished()
            raise
        except BaseException as exc:
            self._exception = exc
            self._set_finished()
            raise
        finally:
            self._running = False

    async def result(self) -> AssistantMessage:
        """The final message: ``done.message`` or ``error.error`` (also for the terminals the client synthesizes).

        Reads the rest of the stream if nobody else is. Raises only what the stream raised before it started
        (``GatewayError``, ``GatewayConnectionError``).
        """
        engine = self._engine
        while True:
            if engine.terminal is not None:
                return message_of(engine.terminal)
            if self._exception is not None:
                raise self._exception
            if self._running:
                if self._finished is None:
                    self._finished = asyncio.Event()
                await self._finished.wait()
                continue
            async for _ in self:
                pass
            if engine.terminal is None and self._exception is None:  # pragma: no cover - defensive
                engine.incomplete()

    def abort(self) -> None:
        """Abort (call it on the stream's loop): the response is closed now, the next pull yields
        ``error``/``aborted``. No effect once a terminal event has been produced."""
        self._engine.abort()

    async def aclose(self) -> None:
        """Stop reading and close the response. Before a terminal, ``result()`` then gives ``aborted``."""
        engine = self._engine
        gen = self._gen
        if gen is not None and self._running:
            engine.abort()  # another task is reading: it yields the aborted terminal
            return
        if gen is not None:
            await gen.aclose()
        if engine.terminal is None and self._exception is None:
            engine.aborted_terminal()
        self._set_finished()

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _set_finished(self) -> None:
        if self._finished is not None:
            self._finished.set()


# ----- the synchronous twin -------------------------------------------------------------------------------------


class _Raised:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


async def _pump(astream: AsyncEventStream, put: Callable[[object], None], stopped: threading.Event) -> None:
    """Read ``astream`` on the private loop into the sync side's queue. It holds no reference to the
    :class:`EventStream`, so a sync stream the caller drops is collected and its ``__del__`` aborts the read."""
    try:
        async for event in astream:
            put(event)
        put(_END)
    except asyncio.CancelledError:
        if astream._engine.pending is not None:
            put(astream._engine.pending)
        put(_END)
        raise
    except BaseException as exc:
        put(_Raised(exc))
    finally:
        stopped.set()


class EventStream:
    """The synchronous twin of :class:`AsyncEventStream`: ``for event in s``, then ``s.result()``.

    The async stream runs on a private event loop in a daemon thread (shared by all sync streams, with its own
    connection pool), so the sync twin has the same timeouts, abort and terminal guarantee. Events are read
    ahead into a queue as they arrive. Use it as a context manager, or call :meth:`close` when stopping early.
    """

    def __init__(self, make: Callable[[], AsyncEventStream]) -> None:
        self._make = make
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._future: Future[None] | None = None
        self._astream: AsyncEventStream | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._finished = False
        self._terminal: TerminalEvent | None = None
        self._exception: BaseException | None = None

    @property
    def error(self) -> StreamError | None:
        """As :attr:`AsyncEventStream.error`."""
        return self._astream.error if self._astream is not None else None

    @property
    def response_headers(self) -> httpx.Headers | None:
        return self._astream.response_headers if self._astream is not None else None

    def _start(self) -> None:
        with self._lock:
            if self._future is None:
                astream = self._astream = self._make()
                loop = self._loop = background_loop()
                pump = _pump(astream, self._queue.put, self._stopped)
                self._future = asyncio.run_coroutine_threadsafe(pump, loop)

    def __iter__(self) -> Iterator[AssistantMessageEvent]:
        return self

    def __next__(self) -> AssistantMessageEvent:
        if self._finished:
            raise StopIteration
        self._start()
        item = self._queue.get()
        if item is _END:
            self._finished = True
            raise StopIteration
        if isinstance(item, _Raised):
            self._finished = True
            self._exception = item.exc
            raise item.exc
        event = cast(AssistantMessageEvent, item)
        if event["type"] == "done" or event["type"] == "error":
            self._terminal = event
        return event

    def result(self) -> AssistantMessage:
        """As :meth:`AsyncEventStream.result`: reads the rest of the stream, returns the final message."""
        for _ in self:
            pass
        if self._terminal is None and self._astream is not None and self._astream._engine.terminal is not None:
            self._terminal = self._astream._engine.terminal
        if self._terminal is not None:
            return message_of(self._terminal)
        if self._exception is not None:
            raise self._exception
        raise ClientError(INCOMPLETE_MESSAGE)  # pragma: no cover - the async stream always ends with a terminal

    def close(self, timeout: float = 5.0) -> None:
        """Abort if still running (closing the response) and wait up to ``timeout`` s for that to finish.

        Before a terminal event, ``result()`` then returns the ``aborted`` message.
        """
        with self._lock:
            if self._future is None:  # never started: no request is sent
                astream = self._make()
                self._astream = astream
                self._terminal = astream._engine.aborted_terminal()
                self._finished = True
                self._future = Future()
                self._future.set_result(None)
                return
        loop, running = self._loop, self._astream
        if self._stopped.is_set() or loop is None or running is None:
            return
        loop.call_soon_threadsafe(running.abort)
        if timeout > 0:
            self._stopped.wait(timeout)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        loop, astream = self._loop, self._astream
        if loop is not None and astream is not None and not self._stopped.is_set():
            try:
                loop.call_soon_threadsafe(astream.abort)
            except RuntimeError:  # pragma: no cover - the loop is gone at interpreter exit
                pass
