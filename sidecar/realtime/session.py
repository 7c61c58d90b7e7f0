"""One realtime session: a browser socket relayed to OpenAI's Realtime API.

The browser speaks a ``Dialect``: the AI SDK Gateway's normalized events, translated with ``mapping`` (normalized →
OpenAI on the way up, OpenAI → normalized with ``raw`` on the way down; the ledger's id is added to ``response-done``
as ``generationId``), or OpenAI's own events, relayed untranslated. ``first_events`` (the session config a client
secret was minted with) go upstream before any browser frame. The provider key goes only into the upstream
handshake's ``Authorization`` header. Every ``response.done`` is priced from the catalog (text and audio rates) and
recorded in the ledger as a generation.

Either side closing closes the other:

    browser closes                   → upstream closed with 1000
    upstream closes cleanly          → browser closed with the same code (1000)
    upstream fails / drops           → normalized ``error`` event, then browser closed with 1011
    a browser frame over the limit   → ``error`` event, then both closed with 1009
    idle timeout / session too long  → ``error`` event, then both closed with 1008
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect
from ulid import ULID
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from sidecar.auth import Caller
from sidecar.config import RealtimeSettings
from sidecar.errors import BadRequest, BudgetExceeded, LedgerUnavailable
from sidecar.ledger.budget import Budgets
from sidecar.ledger.record import Attribution, GenerationRecord, now_ms
from sidecar.ledger.service import Ledger
from sidecar.metrics import Metrics
from sidecar.models import ModelSpec, Pricing
from sidecar.redaction import redact, redact_json

from .dialects import Dialect, GatewayDialect
from .mapping import RealtimeEventError, get_path, usage_from_response_done

log = logging.getLogger("sidecar.realtime")
# websockets logs the handshake headers (with the provider key) and every frame (the user's words and audio) at
# DEBUG. Its logger for our upstream connections never goes below INFO, whatever the sidecar's log level.
_UPSTREAM_WS_LOG = logging.getLogger("sidecar.realtime.upstream")
_UPSTREAM_WS_LOG.setLevel(logging.INFO)

UPSTREAM_MAX_FRAME = 16 * 1024 * 1024  # what OpenAI sends (audio deltas) is trusted; only the browser side is limited
_STATUS_REASONS = {"completed": "stop", "cancelled": "aborted", "incomplete": "length", "failed": "error"}
_FIRST_OUTPUT = frozenset(
    {
        "response.output_text.delta",
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.function_call_arguments.delta",
        "response.text.delta",
        "response.audio.delta",
        "response.audio_transcript.delta",
    }
)
# Browser-bound events are redacted, but for the dialect's output deltas (``Dialect.unredacted``: they carry only what
# the model generated, and the model never sees the provider key). Redacted: error events (message and raw),
# response.done (a failed response's status_details carry provider text), unknown upstream events (a failed
# transcription), session events, and the sidecar's own error events.
_MAX_CLOSE_REASON_BYTES = 123  # RFC 6455: the close frame's payload is at most 125 bytes, 2 of them the code


def realtime_url(model: ModelSpec, call_id: str | None = None) -> str:
    """``https://api.openai.com/v1`` → ``wss://api.openai.com/v1/realtime?model=<id>``; with ``call_id``, the
    WebRTC call's side-band connection ``…/realtime?call_id=<id>``."""
    parts = urlsplit(model.base_url)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/") + "/realtime"
    query = f"call_id={quote(call_id, safe='')}" if call_id else f"model={quote(model.id, safe='')}"
    return urlunsplit((scheme, parts.netloc, path, query, ""))


@dataclass(slots=True)
class _Response:
    generation_id: str
    created_ms: int
    started: float
    first_output: float | None = None


@dataclass
class RealtimeSession:
    browser: WebSocket | None
    """``None`` for a WebRTC call's side-band observer (``observe``)."""
    model: ModelSpec
    api_key: str | None
    credential_source: str | None
    caller: Caller
    ledger: Ledger
    budgets: Budgets
    limits: RealtimeSettings
    proxy: str | None = None
    connector: Callable[..., Any] = connect
    metrics: Metrics | None = None
    attribution: Attribution = field(default_factory=Attribution)
    dialect: Dialect = field(default_factory=GatewayDialect)
    first_events: list[dict[str, Any]] = field(default_factory=list)
    """Sent upstream before any browser frame: the ``session.update`` of the config a client secret was minted with."""
    _responses: dict[str, _Response] = field(default_factory=dict)
    _last_activity: float = field(default_factory=time.monotonic)
    _configured: bool = False
    _closing: bool = False
    _last_parsed: Any = None
    """Set when the sidecar closes the upstream itself, so its closing is not reported as an upstream failure."""

    async def run(self) -> None:
        """Relay until either side ends; the browser socket has already been accepted."""
        try:
            upstream = await self._connect()
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            await self._fail_browser(self._connect_error(exc), "upstream_unavailable", 1011)
            return
        try:
            for event in self.first_events:
                await upstream.send(orjson.dumps(event).decode())
            await self._relay(upstream)
        finally:
            self._record_unfinished()  # also when the server shuts down mid-session

    async def observe(self, call_id: str) -> None:
        """A WebRTC call's side-band connection: no browser socket (media flows between the browser and the
        provider), only the provider's events, read to record each ``response.done`` in the ledger, until the call
        ends or the session limits are reached."""
        try:
            upstream = await self._connect(call_id)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            log.warning("realtime call %s: no side-band connection, its usage is not recorded (%s)", call_id, exc)
            return
        try:
            async with upstream, asyncio.timeout(self.limits.max_session_seconds):
                async for frame in upstream:
                    try:
                        event = orjson.loads(frame)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(event, dict):
                        self._track(event, None)
        except (ConnectionClosed, TimeoutError):
            pass
        finally:
            self._record_unfinished()

    async def _relay(self, upstream: ClientConnection) -> None:
        async with upstream:
            tasks = {
                asyncio.create_task(self._browser_to_upstream(upstream), name="realtime-up"),
                asyncio.create_task(self._upstream_to_browser(upstream), name="realtime-down"),
                asyncio.create_task(self._watchdog(upstream), name="realtime-watchdog"),
            }
            try:
                done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for task in done:
                failure = None if task.cancelled() else task.exception()
                if failure is not None:
                    log.error("realtime relay failed: %s", type(failure).__name__)
                    await self._fail_browser("internal error in the sidecar's realtime relay", "internal_error", 1011)

    # ----- the two directions ---------------------------------------------------------------------------------------

    async def _connect(self, call_id: str | None = None) -> ClientConnection:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        headers.update(self.model.headers)
        conn: ClientConnection = await self.connector(
            realtime_url(self.model, call_id),
            additional_headers=headers,
            max_size=UPSTREAM_MAX_FRAME,
            open_timeout=15,
            proxy=self.proxy,
            user_agent_header="pi-sidecar",
            logger=_UPSTREAM_WS_LOG,
        )
        return conn

    @property
    def _secrets(self) -> tuple[str, ...]:
        return (self.api_key,) if self.api_key else ()

    def _connect_error(self, exc: BaseException) -> str:
        if isinstance(exc, InvalidStatus):
            status = exc.response.status_code
            # Redacted before it is cut, so no part of the key survives the cut (``_send`` redacts it again).
            body = redact(exc.response.body.decode(errors="replace"), self._secrets)[:500]
            return f"upstream {self.model.provider} refused the realtime connection: {status} {body}".strip()
        return f"upstream {self.model.provider} realtime connection failed ({type(exc).__name__})"

    async def _browser_to_upstream(self, upstream: ClientConnection) -> None:
        while True:
            try:
                assert self.browser is not None  # only observe() runs without one, and it never reads
                message = await self.browser.receive()
            except WebSocketDisconnect:
                break
            if message["type"] == "websocket.disconnect":
                break
            self._last_activity = time.monotonic()
            text = message.get("text")
            raw = text.encode() if text is not None else message.get("bytes") or b""
            if len(raw) > self.limits.max_frame_bytes:
                await self._send(
                    self.dialect.error(
                        f"frame of {len(raw)} bytes is over the {self.limits.max_frame_bytes}-byte limit",
                        "frame_too_large",
                    )
                )
                self._closing = True
                await upstream.close(1009, "client frame too large")
                await self._close_browser(1009, "frame too large")
                return
            outgoing = await self._translate_up(raw)
            if outgoing is None:
                continue
            # An event the dialect passed on as it came goes up as the browser sent it.
            await upstream.send(
                text if text is not None and outgoing is self._last_parsed else orjson.dumps(outgoing).decode()
            )
        self._closing = True
        await upstream.close(1000, "client closed")

    async def _translate_up(self, raw: bytes) -> dict[str, Any] | None:
        """The OpenAI event for one browser frame, or ``None`` (dropped, or answered with an ``error`` event)."""
        dialect = self.dialect
        try:
            event = self._last_parsed = orjson.loads(raw)
            if not isinstance(event, dict):
                raise RealtimeEventError("a client event must be a JSON object with a `type`")
            attribution = dialect.attribution(event, self.attribution, self._configured)
            if attribution is not None:
                self.attribution, self._configured = attribution, True
            if event.get("type") == dialect.creates_response:
                await self.budgets.check(self.caller)
            return dialect.up(event, self.model.id)
        except orjson.JSONDecodeError:
            await self._send(dialect.error("client frame is not JSON", "invalid_event"))
        except RealtimeEventError as exc:
            await self._send(dialect.error(str(exc), "invalid_event"))
        except BadRequest as exc:
            await self._send(dialect.error(exc.message, "invalid_event"))
        except BudgetExceeded as exc:
            await self._send(dialect.error(exc.message, exc.type))
        except LedgerUnavailable as exc:
            await self._send(dialect.error(exc.message, "ledger_unavailable"))
        return None

    async def _upstream_to_browser(self, upstream: ClientConnection) -> None:
        try:
            async for frame in upstream:
                self._last_activity = time.monotonic()
                try:
                    event = orjson.loads(frame)
                except orjson.JSONDecodeError:
                    log.warning("realtime: upstream sent a frame that is not JSON (%d bytes); dropped", len(frame))
                    continue
                if not isinstance(event, dict):
                    continue
                outgoing = self.dialect.down(event)
                self._track(event, outgoing)
                if outgoing is None and event.get("type") in self.dialect.unredacted:
                    await self._send_text(frame if isinstance(frame, str) else frame.decode())
                else:
                    await self._send(event if outgoing is None else outgoing)
        except ConnectionClosed as exc:
            if self._closing:
                return
            await self._fail_browser(
                f"upstream {self.model.provider} realtime connection lost ({exc.rcvd.code if exc.rcvd else 1006})",
                "upstream_disconnected",
                1011,
            )
            return
        if self._closing:
            return  # the sidecar closed the upstream itself and closes the browser with its own code
        code = upstream.close_code or 1000
        await self._close_browser(code if code in (1000, 1001) else 1011, upstream.close_reason or "")

    async def _watchdog(self, upstream: ClientConnection) -> None:
        deadline = time.monotonic() + self.limits.max_session_seconds
        while True:
            now = time.monotonic()
            idle_until = self._last_activity + self.limits.idle_timeout_seconds
            if now >= deadline:
                reason = f"session reached its maximum duration ({self.limits.max_session_seconds:g} s)"
                break
            if now >= idle_until:
                reason = f"no frames for {self.limits.idle_timeout_seconds:g} s"
                break
            await asyncio.sleep(min(deadline, idle_until) - now)
        await self._send(self.dialect.error(reason, "session_limit"))
        self._closing = True
        await upstream.close(1000, "session limit")
        await self._close_browser(1008, reason)

    # ----- usage → ledger ---------------------------------------------------------------------------------------

    def _track(self, event: dict[str, Any], outgoing: dict[str, Any] | None) -> None:
        kind = event.get("type")
        if kind == "response.created":
            response_id = str(get_path(event, "response", "id") or "")
            self._responses[response_id] = _Response(f"gen_{ULID()}", now_ms(), time.perf_counter())
        elif kind in _FIRST_OUTPUT:
            tracked = self._responses.get(str(event.get("response_id") or ""))
            if tracked is not None and tracked.first_output is None:
                tracked.first_output = time.perf_counter()
        elif kind == "response.done":
            response_id = str(get_path(event, "response", "id") or "")
            tracked = self._responses.pop(response_id, None)
            if tracked is None and len(self._responses) == 1:
                # One response open under another id (the docs' examples do not chain ids): it is this one.
                tracked = self._responses.pop(next(iter(self._responses)))
            if tracked is None:  # no response.created seen: start now
                tracked = _Response(f"gen_{ULID()}", now_ms(), time.perf_counter())
            status = str(get_path(event, "response", "status") or "completed")
            record = self._record(tracked, usage_from_response_done(event) or {}, status, response_id)
            self.dialect.generation_done(outgoing, record)

    def _record(self, tracked: _Response, usage: dict[str, Any], status: str, response_id: str) -> GenerationRecord:
        now = time.perf_counter()
        reason = _STATUS_REASONS.get(status, "stop")
        record = GenerationRecord(
            id=tracked.generation_id,
            created_at_ms=tracked.created_ms,
            identity=self.caller.identity,
            model=self.model.full_id,
            provider=self.model.provider,
            api=self.model.api,
            streamed=True,
            finish_reason=reason,
            ttft_ms=(tracked.first_output - tracked.started) * 1000 if tracked.first_output is not None else None,
            generation_ms=(now - tracked.started) * 1000,
            credential_source=self.credential_source,
            user=self.attribution.user,
            tags=self.attribution.tags,
            quota_entity_id=self.attribution.quota_entity_id,
            upstream_response_id=response_id or None,
            upstream_model=self.model.id,
            error_type="upstream_error" if reason == "error" else ("request_aborted" if reason == "aborted" else None),
        )
        price_usage(record, usage, self.model.pricing, self.model.audio_pricing)
        self.ledger.record(record)
        if self.metrics is not None:
            self.metrics.generation("realtime", record)
        return record

    def _record_unfinished(self) -> None:
        """Responses still running when the session ended are recorded as aborted (their usage never arrived)."""
        for response_id, tracked in list(self._responses.items()):
            self._record(tracked, {}, "cancelled", response_id)
        self._responses.clear()

    # ----- browser side -----------------------------------------------------------------------------------------

    # Every frame and close reason for the browser passes these two methods: the one place provider text is redacted
    # on this path, with the live key as a known secret.

    async def _send(self, event: dict[str, Any]) -> None:
        if event.get("type") not in self.dialect.unredacted:
            event = redact_json(event, self._secrets)
        await self._send_text(orjson.dumps(event).decode())

    async def _send_text(self, text: str) -> None:
        try:
            if self.browser is not None:
                await self.browser.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the browser is gone; its side of the relay ends on its own

    async def _close_browser(self, code: int, reason: str = "") -> None:
        reason = redact(reason, self._secrets)
        reason = reason.encode()[:_MAX_CLOSE_REASON_BYTES].decode(errors="ignore")  # cut after redacting, never before
        try:
            if self.browser is not None:
                await self.browser.close(code, reason)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # already closed

    async def _fail_browser(self, message: str, code: str, close_code: int) -> None:
        await self._send(self.dialect.error(message, code))
        await self._close_browser(close_code, message)


def price_usage(record: GenerationRecord, usage: dict[str, Any], text: Pricing | None, audio: Pricing | None) -> None:
    """Fill the record's tokens and cost from a normalized realtime usage (input buckets include cached tokens)."""

    def n(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) else 0

    cached_text, cached_audio = n("cachedInputTextTokens"), n("cachedInputAudioTokens")
    cached = n("cachedInputTokens") or cached_text + cached_audio
    text_in, audio_in = n("inputTextTokens"), n("inputAudioTokens")
    if not text_in and not audio_in:  # no split reported: treat it all as text
        text_in = n("inputTokens")
    text_out, audio_out = n("outputTextTokens"), n("outputAudioTokens")
    if not text_out and not audio_out:
        text_out = n("outputTokens")
    if cached and not cached_text and not cached_audio:
        cached_text = cached
    record.input_tokens = (n("inputTokens") or text_in + audio_in) - cached
    record.cache_read_tokens = cached
    record.output_tokens = n("outputTokens") or text_out + audio_out
    t = text or Pricing(0.0, 0.0)
    a = audio or t
    record.cost_input = ((text_in - cached_text) * t.input + (audio_in - cached_audio) * a.input) / 1e6
    record.cost_cache_read = (cached_text * t.cache_read + cached_audio * a.cache_read) / 1e6
    record.cost_output = (text_out * t.output + audio_out * a.output) / 1e6
    record.cost_total = record.cost_input + record.cost_cache_read + record.cost_output
