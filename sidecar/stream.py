"""The stream contract, enforced in one place: exactly one ``start``, block events, exactly one ``done``/``error``.

``MessageAssembler`` turns adapter ``Delta``s into one live pi ``AssistantMessage`` and a block lifecycle (start,
deltas, end per content block, then one terminal), which an ``Encoder`` writes in a client's wire format:
``PiEncoder`` for the pi-native protocol (the ``partial`` on every non-terminal event), one encoder per ingress
format in ``sidecar.ingress``. ``Generation`` runs an adapter under the first-event and idle timeouts, converts every
failure after the 200 into the format's in-band error that keeps the partial content and usage, and reports the
outcome exactly once, also when the client disconnects.

Frames are pre-encoded SSE bytes (orjson), which ``sidecar.sse_response.SseResponse`` sends untouched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import anyio
import orjson

from client.types import AssistantMessage, StopReason, zero_usage

from .cost import apply_cost
from .errors import SidecarError, UpstreamTimeout, redact
from .models import ModelSpec
from .providers.base import (
    BlockEnd,
    Delta,
    Deltas,
    Finish,
    Raw,
    ResponseInfo,
    StreamFn,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    UpstreamCall,
    UsageUpdate,
)
from .sse_response import LastFrame
from .upstream import Upstream

log = logging.getLogger("sidecar.stream")

DONE_FRAME = b"data: [DONE]\n\n"
DEFAULT_EVENT_TIMEOUT_MS = 300_000  # the reference client's default for both timeouts


BlockKind = Literal["text", "thinking", "toolCall"]


def frame(event: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"


class Encoder(Protocol):
    """Writes the block lifecycle of one generation in a client's wire format; every method returns the bytes to
    send (``b""`` for nothing). ``message`` is the live ``AssistantMessage``: content, usage and ``responseId`` so
    far; ``content`` is the block's entry in ``message["content"]`` (``{"type":"toolCall","id","name",…}`` …).

    Called in contract order: ``start`` once, then per block ``block_start``, ``block_delta``*, ``block_end``
    (blocks of one kind may interleave, each by its own ``index``), then exactly one of ``done`` or ``error``.
    ``error`` also ends a stream whose blocks are still open (``message["errorMessage"]``/``errorStatus`` set)."""

    def start(self, message: AssistantMessage) -> bytes: ...

    def block_start(self, kind: BlockKind, index: int, content: dict[str, Any], message: AssistantMessage) -> bytes: ...

    def block_delta(self, kind: BlockKind, index: int, delta: str, message: AssistantMessage) -> bytes: ...

    def block_end(self, kind: BlockKind, index: int, content: dict[str, Any], message: AssistantMessage) -> bytes: ...

    def done(self, reason: StopReason, message: AssistantMessage) -> bytes: ...

    def error(self, reason: Literal["error", "aborted"], message: AssistantMessage) -> bytes: ...


_PI_STARTS = {"text": "text_start", "thinking": "thinking_start", "toolCall": "toolcall_start"}
_PI_DELTAS = {"text": "text_delta", "thinking": "thinking_delta", "toolCall": "toolcall_delta"}


class PiEncoder:
    """The pi-native protocol (§3): ``data: <AssistantMessageEvent>`` with the partial message on every
    non-terminal event, and ``data: [DONE]`` after the terminal one."""

    def start(self, message: AssistantMessage) -> bytes:
        return frame({"type": "start", "partial": message})

    def block_start(self, kind: BlockKind, index: int, content: dict[str, Any], message: AssistantMessage) -> bytes:
        return frame({"type": _PI_STARTS[kind], "contentIndex": index, "partial": message})

    def block_delta(self, kind: BlockKind, index: int, delta: str, message: AssistantMessage) -> bytes:
        return frame({"type": _PI_DELTAS[kind], "contentIndex": index, "delta": delta, "partial": message})

    def block_end(self, kind: BlockKind, index: int, content: dict[str, Any], message: AssistantMessage) -> bytes:
        if kind == "text":
            event = {"type": "text_end", "contentIndex": index, "content": content["text"], "partial": message}
        elif kind == "thinking":
            event = {"type": "thinking_end", "contentIndex": index, "content": content.get("thinking", "")}
            event["partial"] = message
        else:
            event = {"type": "toolcall_end", "contentIndex": index, "toolCall": content, "partial": message}
        return frame(event)

    def done(self, reason: StopReason, message: AssistantMessage) -> bytes:
        return frame({"type": "done", "reason": reason, "message": message}) + DONE_FRAME

    def error(self, reason: Literal["error", "aborted"], message: AssistantMessage) -> bytes:
        return frame({"type": "error", "reason": reason, "error": message}) + DONE_FRAME


class SilentEncoder:
    """Encodes nothing: a non-streaming answer needs only the final message (and a pi partial per delta would be
    quadratic in the output's length)."""

    def start(self, message: AssistantMessage) -> bytes:
        return b""

    def block_start(self, kind: BlockKind, index: int, content: dict[str, Any], message: AssistantMessage) -> bytes:
        return b""

    def block_delta(self, kind: BlockKind, index: int, delta: str, message: AssistantMessage) -> bytes:
        return b""

    def block_end(self, kind: BlockKind, index: int, content: dict[str, Any], message: AssistantMessage) -> bytes:
        return b""

    def done(self, reason: StopReason, message: AssistantMessage) -> bytes:
        return b""

    def error(self, reason: Literal["error", "aborted"], message: AssistantMessage) -> bytes:
        return b""


class _Block:
    __slots__ = ("index", "kind", "content", "args")

    def __init__(self, index: int, kind: BlockKind, content: dict[str, Any]) -> None:
        self.index = index
        self.kind = kind
        self.content = content
        self.args: list[str] = []


class MessageAssembler:
    """Owns the live partial message and the content indices; ``encoder`` turns its lifecycle into frames."""

    def __init__(self, model: ModelSpec, started: float | None = None, encoder: Encoder | None = None) -> None:
        self.model = model
        self.encoder: Encoder = encoder if encoder is not None else PiEncoder()
        self.started = time.perf_counter() if started is None else started
        self.message: AssistantMessage = {
            "role": "assistant",
            "content": [],
            "api": model.api,
            "provider": model.provider,
            "model": model.id,
            "usage": zero_usage(),
            "stopReason": "stop",
            "timestamp": int(time.time() * 1000),
        }
        self.ttft_ms: float | None = None
        self.finish_reason: Literal["stop", "length", "toolUse"] | None = None
        self.upstream_model: str | None = None
        self.reasoning_tokens: int | None = None
        self.cost_multiplier = 1.0
        self._open: dict[Hashable, _Block] = {}
        self._partial_event: dict[str, Any] = {}

    def switch_model(self, model: ModelSpec) -> None:
        """Another model serves the generation (a fallback, before its first delta): the message names it, its
        prices apply."""
        self.model = model
        message = self.message
        message["api"], message["provider"], message["model"] = model.api, model.provider, model.id

    # ----- events -----------------------------------------------------------------------------------------------

    def start(self) -> bytes:
        return self.encoder.start(self.message)

    def feed(self, delta: Delta) -> list[bytes]:
        kind = type(delta)
        if kind is TextDelta:
            return self._text(delta)  # type: ignore[arg-type]
        if kind is ToolCallDelta:
            return self._tool_call(delta)  # type: ignore[arg-type]
        if kind is ThinkingDelta:
            return self._thinking(delta)  # type: ignore[arg-type]
        if kind is UsageUpdate:
            self._usage(delta)  # type: ignore[arg-type]
        elif kind is BlockEnd:
            block = self._open.pop(delta.key, None)  # type: ignore[union-attr]
            return [self._end(block)] if block is not None else []
        elif kind is Finish:
            self.finish_reason = delta.reason  # type: ignore[union-attr]
        elif kind is Raw:
            return [delta.data]  # type: ignore[union-attr]
        elif kind is ResponseInfo:
            if delta.response_id:  # type: ignore[union-attr]
                self.message["responseId"] = delta.response_id  # type: ignore[union-attr]
            if delta.upstream_model:  # type: ignore[union-attr]
                self.upstream_model = delta.upstream_model  # type: ignore[union-attr]
        return []

    def feed_all(self, deltas: Deltas) -> list[bytes]:
        """``feed`` for one delta or an upstream read's list of them: their frames, in order."""
        if type(deltas) is not list:
            return self.feed(deltas)  # type: ignore[arg-type]
        frames: list[bytes] = []
        for delta in deltas:
            frames += self.feed(delta)
        return frames

    def done(self) -> bytes:
        """Close open blocks and emit ``done``; the frames for block ends come first."""
        frames = self._close_all()
        reason = self.finish_reason or "stop"
        if reason == "stop" and any(b.get("type") == "toolCall" for b in self.message["content"]):
            # Some OpenAI-compatible servers (older Ollama, llama.cpp) say "stop" after tool calls; agents loop on
            # toolUse, so report what the content shows.
            reason = "toolUse"
        self._finalize(reason)
        frames.append(self.encoder.done(reason, self.message))
        return b"".join(frames)

    def error(self, message: str, status: int | None, reason: Literal["error", "aborted"] = "error") -> bytes:
        """The terminal ``error`` event: a full ``AssistantMessage`` keeping the content and usage so far."""
        for block in self._open.values():
            if block.kind == "toolCall":
                block.content["arguments"] = _parse_arguments(block.args)
        self._open.clear()
        self._finalize(reason)
        self.message["errorMessage"] = message
        if status is not None:
            self.message["errorStatus"] = status
        return self.encoder.error(reason, self.message)

    # ----- deltas -----------------------------------------------------------------------------------------------

    def _open_block(self, key: Hashable, kind: BlockKind, content: dict[str, Any]) -> tuple[_Block, list[bytes]]:
        # A block of a new kind closes the open blocks of other kinds (text after thinking, tool calls after text);
        # blocks of the same kind stay open so interleaved parallel tool calls keep their own indices.
        frames = [self._end(self._open.pop(k)) for k, b in list(self._open.items()) if b.kind != kind]
        self._open.pop(key, None)
        contents = self.message["content"]
        block = _Block(len(contents), kind, content)
        contents.append(content)  # type: ignore[arg-type]
        self._open[key] = block
        frames.append(self.encoder.block_start(kind, block.index, content, self.message))
        return block, frames

    def _text(self, delta: TextDelta) -> list[bytes]:
        block = self._open.get(delta.key)
        frames: list[bytes] = []
        if block is None or block.kind != "text":
            block, frames = self._open_block(delta.key, "text", {"type": "text", "text": ""})
        if delta.signature:
            block.content["textSignature"] = delta.signature
        if delta.text:
            self._mark_first_token()
            block.content["text"] += delta.text
            frames.append(self.encoder.block_delta("text", block.index, delta.text, self.message))
        return frames

    def _thinking(self, delta: ThinkingDelta) -> list[bytes]:
        block = self._open.get(delta.key)
        frames: list[bytes] = []
        if block is None or block.kind != "thinking":
            content: dict[str, Any] = (
                {"type": "redactedThinking", "data": ""} if delta.redacted else {"type": "thinking", "thinking": ""}
            )
            block, frames = self._open_block(delta.key, "thinking", content)
        if delta.redacted:
            block.content["data"] += delta.text
            return frames
        if delta.signature:
            block.content["thinkingSignature"] = block.content.get("thinkingSignature", "") + delta.signature
        if delta.text:
            self._mark_first_token()
            block.content["thinking"] += delta.text
            frames.append(self.encoder.block_delta("thinking", block.index, delta.text, self.message))
        return frames

    def _tool_call(self, delta: ToolCallDelta) -> list[bytes]:
        block = self._open.get(delta.key)
        frames: list[bytes] = []
        if block is None or block.kind != "toolCall":
            content = {"type": "toolCall", "id": delta.id or "", "name": delta.name or "", "arguments": {}}
            block, frames = self._open_block(delta.key, "toolCall", content)
            self._mark_first_token()
        else:
            if delta.id and not block.content["id"]:
                block.content["id"] = delta.id
            if delta.name and not block.content["name"]:
                block.content["name"] = delta.name
        if delta.thought_signature:
            block.content["thoughtSignature"] = delta.thought_signature
        if delta.arguments:
            block.args.append(delta.arguments)
            frames.append(self.encoder.block_delta("toolCall", block.index, delta.arguments, self.message))
        return frames

    def _usage(self, delta: UsageUpdate) -> None:
        usage = self.message["usage"]
        if delta.input is not None:
            usage["input"] = delta.input
        if delta.output is not None:
            usage["output"] = delta.output
        if delta.cache_read is not None:
            usage["cacheRead"] = delta.cache_read
        if delta.cache_write is not None:
            usage["cacheWrite"] = delta.cache_write
        if delta.reasoning is not None:
            usage["reasoningTokens"] = delta.reasoning
        if delta.cost_multiplier is not None:
            self.cost_multiplier = delta.cost_multiplier
        apply_cost(usage, self.model.pricing, self.cost_multiplier)

    def _end(self, block: _Block) -> bytes:
        if block.kind == "toolCall":
            block.content["arguments"] = _parse_arguments(block.args)
        return self.encoder.block_end(block.kind, block.index, block.content, self.message)

    def _close_all(self) -> list[bytes]:
        blocks = sorted(self._open.values(), key=lambda b: b.index)
        self._open.clear()
        return [self._end(b) for b in blocks]

    def _mark_first_token(self) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = (time.perf_counter() - self.started) * 1000.0

    def _finalize(self, reason: StopReason) -> None:
        self.message["stopReason"] = reason
        apply_cost(self.message["usage"], self.model.pricing, self.cost_multiplier)
        self.message["duration"] = round((time.perf_counter() - self.started) * 1000.0, 3)
        if self.ttft_ms is not None:
            self.message["ttft"] = round(self.ttft_ms, 3)


def _parse_arguments(fragments: list[str]) -> dict[str, Any]:
    text = "".join(fragments).strip()
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        log.warning("tool call arguments are not valid JSON (%d bytes); passing {}", len(text))
        return {}
    return value if isinstance(value, dict) else {}


# ----- running one generation -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """What happened, reported once per generation (the ledger records it)."""

    message: AssistantMessage
    reason: StopReason
    ttft_ms: float | None
    duration_ms: float
    upstream_model: str | None
    error_type: str | None = None
    error_status: int | None = None


@dataclass(slots=True)
class EventTimeouts:
    first_event: float | None
    """Seconds until the first delta from upstream; ``None`` disables."""
    idle: float | None

    @classmethod
    def from_options(cls, options: dict[str, Any] | Any) -> EventTimeouts:
        def pick(name: str, default: float | None) -> float | None:
            value = options.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return None if value <= 0 else value / 1000.0
            return default

        idle = pick("streamIdleTimeoutMs", DEFAULT_EVENT_TIMEOUT_MS / 1000.0)
        default_first = max(DEFAULT_EVENT_TIMEOUT_MS / 1000.0, idle) if idle is not None else None
        return cls(first_event=pick("streamFirstEventTimeoutMs", default_first), idle=idle)


@dataclass
class Generation:
    """One generation: iterate ``frames()`` (SSE) or await ``run()`` (JSON mode). ``encoder`` is the client's wire
    format (pi-native by default); ``prime()`` first, to answer upstream refusals with an HTTP status."""

    call: UpstreamCall
    stream_fn: StreamFn
    client: Upstream
    timeouts: EventTimeouts
    on_finish: Callable[[Outcome], None]
    encoder: Encoder | None = None
    hand_over: Callable[[Exception, UpstreamCall], Awaitable[tuple[UpstreamCall, StreamFn] | None]] | None = None
    """Asked when the upstream fails before the first delta: the call (another key, another model) and the adapter
    to try instead, or ``None`` to let the failure stand (``sidecar.failover``)."""
    assembler: MessageAssembler = field(init=False)
    _reported: bool = field(default=False, init=False)
    _deltas: AsyncIterator[Deltas] | None = field(default=None, init=False)
    _primed: list[Deltas] = field(default_factory=list, init=False)
    """The first delta, read by ``prime()`` before the response started (empty: not primed, or nothing came)."""
    _ended: bool = field(default=False, init=False)
    error_headers: dict[str, str] = field(default_factory=dict, init=False)
    """The failure's response headers (``retry-after``), for a JSON-mode error answer."""

    def __post_init__(self) -> None:
        self.assembler = MessageAssembler(self.call.model, encoder=self.encoder)

    async def prime(self) -> None:
        """Wait for the upstream's first delta before the response is committed.

        A provider refusal before any byte (401, 429 or 529 once retries are spent, a first-event timeout) then
        reaches the client as the HTTP status of its format's error body, which SDKs retry and report by status,
        instead of as an in-band error after a 200. A failure is recorded (ledger row, ``on_finish``) and re-raised,
        as is a cancellation (the client left while waiting)."""
        try:
            delta = await self._first()
        except BaseException as exc:
            if isinstance(exc, SidecarError):
                exc.message = redact(exc.message, (self.call.api_key or "",))
            self._fail(exc)
            if self._deltas is not None:
                await self._close(self._deltas)
            raise
        if delta is None:
            self._ended = True
        else:
            self._primed.append(delta)

    async def _first(self) -> Deltas | None:
        """The first delta (or read), ``None`` for an empty stream. A failure before it is offered to ``hand_over``:
        while that names another call, the failed stream is closed and the other one opened."""
        while True:
            self._deltas = deltas = self.stream_fn(self.call, self.client)  # nothing runs until anext
            try:
                return await self._next(deltas, self.timeouts.first_event, "first event")
            except Exception as exc:
                instead = await self.hand_over(exc, self.call) if self.hand_over is not None else None
                if instead is None:
                    raise
                await self._close(deltas)
                self.call, self.stream_fn = instead
                self.assembler.switch_model(self.call.model)

    async def frames(self) -> AsyncIterator[bytes]:
        asm = self.assembler
        terminal: bytes
        try:
            opening = asm.start()
            if opening:
                yield opening  # inside the try: a client gone already is still recorded, as aborted
            first = self._primed.pop() if self._primed else None if self._ended else await self._first()
            if first is None:
                self._ended = True
            else:
                frames = asm.feed_all(first)
                if frames:
                    yield b"".join(frames)
            deltas = self._deltas
            while not self._ended and deltas is not None:
                item = await self._next(deltas, self.timeouts.idle, "next event")
                if item is None:
                    break
                frames = asm.feed_all(item)
                if frames:
                    yield frames[0] if len(frames) == 1 else b"".join(frames)
            terminal = asm.done()
            self._report(asm.message["stopReason"])
        except SidecarError as exc:
            # Some OpenAI-compatible servers echo the key they were given; no key shape is assumed here.
            terminal = asm.error(redact(exc.message, (self.call.api_key or "",)), exc.status)
            self.error_headers = exc.headers
            self._report("error", exc.type, exc.status)
        except Exception:
            log.exception("internal error while streaming %s", self.call.model.full_id)
            terminal = asm.error("internal error in the sidecar (see its log)", 500)
            self._report("error", "internal_error", 500)
        finally:
            if not self._reported:
                # Cancelled: the client went away. Nothing more can be sent; record what was generated.
                self._fail(asyncio.CancelledError())
            if self._deltas is not None:
                await self._close(self._deltas)
        if terminal:
            yield LastFrame(terminal)

    async def _next(self, deltas: AsyncIterator[Deltas], limit: float | None, waiting_for: str) -> Deltas | None:
        """The next delta (or an upstream read's list of them), ``None`` at the end of the stream; ``UpstreamTimeout``
        past ``limit`` seconds."""
        loop = asyncio.get_running_loop()
        try:
            # A fresh deadline per upstream read (a Timeout object and a timer handle, no task); the caller's yield
            # stays outside it so a slow client socket is never mistaken for a slow upstream.
            async with asyncio.timeout_at(None if limit is None else loop.time() + limit):
                return await anext(deltas)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise UpstreamTimeout(
                f"upstream {self.call.model.provider} timed out while waiting for the {waiting_for} ({limit:g} s)"
            ) from None

    def _fail(self, exc: BaseException) -> None:
        """Record a generation that did not finish: an upstream error, a crash, or the client leaving."""
        asm = self.assembler
        if isinstance(exc, SidecarError):
            asm.error(exc.message, exc.status)
            self._report("error", exc.type, exc.status)
        elif isinstance(exc, Exception):
            log.error("internal error while streaming %s", self.call.model.full_id, exc_info=exc)
            asm.error("internal error in the sidecar (see its log)", 500)
            self._report("error", "internal_error", 500)
        else:
            asm.error("client closed the stream", 499, "aborted")
            self._report("aborted", "request_aborted", 499)

    @staticmethod
    async def _close(deltas: AsyncIterator[Deltas]) -> None:
        aclose = getattr(deltas, "aclose", None)  # adapters are async generators
        if aclose is None:
            return
        task = asyncio.current_task()
        if task is None or not task.cancelling():
            await aclose()  # the common case, a stream that ended: returns at once (a late body end drains apart)
            return
        # Being cancelled (the client left, the server stops): a cancellation that is level-triggered (anyio's)
        # would cancel this cleanup too; shield it (bounded) so the upstream response is really closed.
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await aclose()

    async def run(self) -> AssistantMessage:
        async for _ in self.frames():
            pass
        return self.assembler.message

    def _report(self, reason: StopReason, error_type: str | None = None, status: int | None = None) -> None:
        self._reported = True
        asm = self.assembler
        try:
            self.on_finish(
                Outcome(
                    message=asm.message,
                    reason=reason,
                    ttft_ms=asm.ttft_ms,
                    duration_ms=asm.message.get("duration", 0.0),
                    upstream_model=asm.upstream_model,
                    error_type=error_type,
                    error_status=status,
                )
            )
        except Exception:  # recording must never break the stream it records
            log.exception("on_finish hook failed")
