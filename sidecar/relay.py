"""Same family, no translation: a client whose wire format is the model's own upstream API is relayed, not translated.

An Anthropic Messages request for a model on ``anthropic-messages``, a Chat Completions request for a model on
``openai-completions`` or a Responses request for a model on ``openai-responses`` goes upstream as the client wrote
it: only ``model`` is rewritten to the upstream id, the injected key and the allow-listed headers (``anthropic-beta``,
``anthropic-version``, ``x-stainless-*`` …, computed by ``sidecar.serving.upstream_headers``) are added, and the
upstream's bytes come back unchanged. So every provider feature (betas, server tools, hosted tools, cache control,
citations) works without the sidecar knowing it.

The upstream stream is still read for the ledger, without buffering it: each complete SSE event is relayed as soon
as it is complete (``Raw``), and the same event parser the adapter uses turns it into the deltas the ledger needs
(ids, usage, stop reason, and the content deltas up to the first token, which times it), which
``sidecar.stream.Generation`` records. The rest of the content is not assembled: the client has it and the ledger
never stores it, so a relayed ``Outcome.message`` holds only the first content fragments. Raw frames always end at
an event boundary, so a heartbeat comment or the sidecar's own error event never lands inside an upstream event.

- **Responses requests** go as they are: ``response.completed`` always carries the usage. ``item_reference`` and
  ``previous_response_id`` reach OpenAI unchanged, which resolves them when the client stored its responses (the
  format's decode leaves them, and hosted tools, to the relay: see ``plan``).
- **Streaming Chat requests** get ``stream_options.include_usage: true`` when the model's compat allows usage in
  streaming (the ledger needs it): such a client then also receives the final usage chunk (``choices: []``).
- **Errors.** What the upstream sent itself (an ``error`` event, a refusal, a content filter) reaches the client as
  the upstream's bytes; the sidecar adds nothing. A failure the upstream did not send (a timeout, a dropped
  connection, an unreadable event) ends the stream with the format's error event (``Family.error_frame``: the
  format's ``error_body``; for Responses a ``response.failed`` that continues the upstream's sequence). A refusal
  before the stream (HTTP 429, 529 …) is answered with the upstream's own error body, redacted, and its status.
- **Non-streaming requests** are posted as they are; the upstream's JSON body (up to ``MAX_JSON_BYTES``) is answered
  unchanged with its status and parsed for the ledger.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson
from fastapi.responses import Response
from httpx_sse import ServerSentEvent
from httpx_sse._decoders import SSEDecoder  # not re-exported by httpx-sse, but the decoder its EventSource uses

from client.types import AssistantMessage

from .errors import (
    BadRequest,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamStreamError,
    map_transport_errors,
)
from .ingress.base import IngressFormat, IngressRequest
from .models import ModelSpec
from .providers import anthropic_messages, openai_completions, openai_responses
from .providers.base import (
    BlockEnd,
    Delta,
    Raw,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    UpstreamCall,
    endpoint,
    open_stream,
)
from .redaction import redact_json
from .responses import CORS_HEADERS, json_response
from .stream import EventTimeouts, SilentEncoder
from .upstream import Upstream

MAX_JSON_BYTES = 32 * 1024 * 1024
"""A non-streaming reply larger than this is refused (502): it is held whole before it is answered."""
MAX_EVENT_BYTES = 32 * 1024 * 1024
"""One SSE event larger than this is refused (502): an event is held until it is complete."""
JSON_REPLY_TIMEOUT = 600.0
"""Seconds a non-streaming reply may take at least (the first-event timeout covers the whole reply there): the
Anthropic and OpenAI SDKs' own default request timeout."""


# ----- the two families -------------------------------------------------------------------------------------------


class EventParser(Protocol):
    """``AnthropicEventParser``, ``ChatCompletionsParser``, ``ResponsesEventParser``: a stream's events -> deltas."""

    @property
    def done(self) -> bool: ...

    def feed(self, event: ServerSentEvent) -> Sequence[Delta]: ...


ErrorBody = Callable[[int, str, str], Any]
"""An ingress format's ``error_body``: ``(status, sidecar error type, message)`` -> its JSON error body."""


@dataclass(frozen=True, slots=True)
class Family:
    """What differs between the relayed wire APIs, as data."""

    path: str
    """The endpoint path, given to ``providers.base.endpoint`` as its adapter does (base URL, Azure's URL shape)."""
    headers: Callable[[UpstreamCall], dict[str, str]]
    """The adapter's headers: the injected key, the model's and the caller's pass-through headers."""
    body: Callable[[Mapping[str, Any], UpstreamCall, bool], dict[str, Any]]
    parser: Callable[[UpstreamCall], EventParser]
    end: Callable[[Any], Sequence[Delta]]
    """The deltas (or the error) at the end of the stream, from the parser."""
    parse_json: Callable[[Any, UpstreamCall], list[Delta]]
    error_frame: Callable[[Any, ErrorBody, int, str], bytes]
    """``(parser, the format's error_body, status, message)`` -> the format's in-band error event, for a failure the
    upstream did not send itself."""


def _error_event(event_line: bytes) -> Callable[[Any, ErrorBody, int, str], bytes]:
    """The format's ``error_body`` as one SSE event, after ``event_line`` (Anthropic names its events, Chat not)."""
    prefix = event_line + b"data: "

    def frame(parser: Any, error_body: ErrorBody, status: int, message: str) -> bytes:
        return prefix + orjson.dumps(error_body(status, "upstream_error", message)) + b"\n\n"

    return frame


def _with_model(body: Mapping[str, Any], call: UpstreamCall, streaming: bool) -> dict[str, Any]:
    return {**body, "model": call.model.id}


def _checked_end(
    parser: anthropic_messages.AnthropicEventParser | openai_responses.ResponsesEventParser,
) -> Sequence[Delta]:
    """The parser's ``end`` raises for a stream cut before its terminal event; the Finish came with that event."""
    parser.end()
    return ()


def _chat_body(body: Mapping[str, Any], call: UpstreamCall, streaming: bool) -> dict[str, Any]:
    out = {**body, "model": call.model.id}
    if streaming and openai_completions.usage_in_streaming(call):
        options = body.get("stream_options")
        if not (isinstance(options, Mapping) and options.get("include_usage") is True):
            out["stream_options"] = {**(options if isinstance(options, Mapping) else {}), "include_usage": True}
    return out


_FAILURE_CODES = {400: "invalid_prompt", 429: "rate_limit_exceeded"}
"""``response.error.code`` by status (codes the SDK types list; anything else is server_error), as the Responses
format's own encoder sends them."""


def _responses_failed(
    parser: openai_responses.ResponsesEventParser, error_body: ErrorBody, status: int, message: str
) -> bytes:
    """``response.failed`` with the upstream's own response (from ``response.created``) and the next
    ``sequence_number``, so the SDK stream helpers, which check both, take it as the stream's end."""
    error = {"code": _FAILURE_CODES.get(status, "server_error"), "message": message}
    sequence = parser.sequence + 1
    if parser.response is None:  # nothing came before the failure: the format's plain error event
        payload: dict[str, Any] = {"type": "error", **error, "param": None, "sequence_number": sequence}
        return b"event: error\ndata: " + orjson.dumps(payload) + b"\n\n"
    response = {**parser.response, "status": "failed", "error": error}
    payload = {"type": "response.failed", "sequence_number": sequence, "response": response}
    return b"event: response.failed\ndata: " + orjson.dumps(payload) + b"\n\n"


FAMILIES: dict[str, Family] = {
    "anthropic-messages": Family(
        path="/v1/messages",
        headers=lambda call: anthropic_messages.build_headers(call, thinking=False),  # the client chose its betas
        body=_with_model,
        parser=lambda call: anthropic_messages.AnthropicEventParser(anthropic_messages.secrets_of(call)),
        end=_checked_end,
        parse_json=lambda data, call: anthropic_messages.parse_message(data, anthropic_messages.secrets_of(call)),
        error_frame=_error_event(b"event: error\n"),
    ),
    "openai-completions": Family(
        path="/chat/completions",
        headers=openai_completions.build_headers,
        body=_chat_body,
        parser=lambda call: openai_completions.ChatCompletionsParser(
            call.model.provider, openai_completions.secrets_of(call)
        ),
        end=lambda parser: (parser.end(),),
        parse_json=lambda data, call: openai_completions.parse_completion(
            data, call.model.provider, openai_completions.secrets_of(call)
        ),
        error_frame=_error_event(b""),
    ),
    "openai-responses": Family(
        path="/responses",
        headers=openai_responses.build_headers,
        body=_with_model,  # nothing added: response.completed always carries the usage
        parser=lambda call: openai_responses.ResponsesEventParser(
            call.model.provider, openai_responses.secrets_of(call), openai_responses.tier_costs(call)
        ),
        end=_checked_end,
        parse_json=lambda data, call: openai_responses.parse_response(
            data, call.model.provider, openai_responses.secrets_of(call), openai_responses.tier_costs(call)
        ),
        error_frame=_responses_failed,
    ),
}


def plan(fmt: IngressFormat, ingress: IngressRequest, model: ModelSpec) -> Relay | None:
    """A relay when ``fmt`` is ``model``'s own wire API (and the model is a real upstream), else ``None``.

    A request its format's decode marked ``relay_only`` (one that names what only the upstream has: a hosted tool, a
    response it stored) gets that refusal here when it is to be translated."""
    family = FAMILIES.get(model.api)
    if family is None or fmt.wire_api != model.api or model.provider == "echo":
        if ingress.relay_only:
            raise BadRequest(ingress.relay_only)
        return None
    return Relay(family, fmt, ingress)


# ----- one relayed generation -------------------------------------------------------------------------------------


class Relay:
    """One relayed generation: ``stream`` is the ``StreamFn`` ``Generation`` runs, ``encoder`` its encoder, and
    ``answer`` what ``serve`` sends instead of the format's rendering (the upstream's JSON or error body)."""

    def __init__(self, family: Family, fmt: IngressFormat, ingress: IngressRequest) -> None:
        self._family = family
        self._body = ingress.body
        self.streaming = ingress.stream
        self._error_body = fmt.error_body
        self._parser: EventParser | None = None
        self.encoder = RelayEncoder(self) if self.streaming else SilentEncoder()
        self.upstream_ended = False
        """The upstream ended the stream itself (its terminal or error event was relayed): nothing may follow."""
        self.reply: tuple[int, bytes] | None = None
        """Non-streaming: the upstream's status and JSON body."""
        self.refusal: tuple[UpstreamStatusError, Any] | None = None
        """The upstream's non-2xx before any byte, and its error body (parsed, redacted) if it has the format's
        shape."""
        self.stream = self._stream if self.streaming else self._json

    def error_frame(self, status: int, message: str) -> bytes:
        """The format's in-band error event for a failure the upstream did not send itself."""
        return self._family.error_frame(self._parser, self._error_body, status, message)

    def timeouts(self, base: EventTimeouts) -> EventTimeouts:
        """Non-streaming, the first event is the whole reply: give it at least ``JSON_REPLY_TIMEOUT``."""
        if self.streaming or base.first_event is None:
            return base
        return EventTimeouts(first_event=max(base.first_event, JSON_REPLY_TIMEOUT), idle=base.idle)

    def answer(self, ids: Mapping[str, str]) -> Response | None:
        """The upstream's own answer, when there is one to send instead of the format's: its JSON reply, or its error
        body from before the stream."""
        if self.reply is not None:
            status, body = self.reply
            headers = {"cache-control": "no-store", **CORS_HEADERS, **ids}
            return Response(body, status, headers=headers, media_type="application/json")
        if self.refusal is not None and self.refusal[1] is not None:
            exc, body = self.refusal
            return json_response(body, exc.status, {**ids, **exc.headers})
        return None

    def _post(self, call: UpstreamCall, accept: str) -> tuple[str, dict[str, str], bytes]:
        family = self._family
        headers = family.headers(call)
        headers["accept"] = accept
        body = orjson.dumps(family.body(self._body, call, self.streaming))
        return endpoint(call, family.path), headers, body

    async def _stream(self, call: UpstreamCall, client: Upstream) -> AsyncIterator[Delta]:
        family = self._family
        # The parser first: the format's error event reads it, for a failure in building the request too.
        parser = self._parser = family.parser(call)
        self.refusal = None  # another key or model may be taking over from a refused call
        url, headers, body = self._post(call, "text/event-stream")
        framer = _Framer(parser)
        try:
            async with open_stream(client, call, url, headers=headers, json_body=body) as response:
                # The body's shared iterator: open_stream's drain continues it after the terminal event.
                chunks = response.chunks()
                with map_transport_errors(call.model.provider):
                    while not parser.done:
                        chunk = await anext(chunks, None)
                        relayed, deltas, failure = framer.feed(chunk or b"", eof=chunk is None)
                        if relayed:
                            yield Raw(relayed)
                        for delta in deltas:
                            yield delta
                        if failure is not None:
                            self.upstream_ended = isinstance(failure, UpstreamStreamError)
                            raise failure
                        if chunk is None:
                            break
                self.upstream_ended = parser.done
        except UpstreamStatusError as exc:
            self.refusal = (exc, _error_body(exc, call))
            raise
        if parser.done:
            for delta in family.end(parser):
                yield delta
            return
        # The body ended without the terminal event. A complete stream (a Chat server that sends no [DONE]) gets
        # its last bytes; a cut one does not, so the sidecar's error event follows a complete upstream event.
        last = family.end(parser)
        if framer.held:
            yield Raw(bytes(framer.held))
        for delta in last:
            yield delta

    async def _json(self, call: UpstreamCall, client: Upstream) -> AsyncIterator[Delta]:
        self.refusal = None  # another key or model may be taking over from a refused call
        url, headers, body = self._post(call, "application/json")
        try:
            async with open_stream(client, call, url, headers=headers, json_body=body) as response:
                chunks = response.chunks()
                reply = bytearray()
                with map_transport_errors(call.model.provider):
                    async for chunk in chunks:
                        reply += chunk
                        if len(reply) > MAX_JSON_BYTES:
                            raise UpstreamProtocolError(
                                f"{call.model.provider}: the reply is larger than {MAX_JSON_BYTES} bytes; stream it "
                                "(`stream: true`) instead"
                            )
                self.reply = (response.status_code, bytes(reply))
        except UpstreamStatusError as exc:
            self.refusal = (exc, _error_body(exc, call))
            raise
        yield Raw(self.reply[1])
        try:
            data = orjson.loads(self.reply[1])
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(f"{call.model.provider}: the reply is not JSON") from None
        for delta in self._family.parse_json(data, call):
            yield delta


def _error_body(exc: UpstreamStatusError, call: UpstreamCall) -> Any:
    """The upstream's error body from the refusal's (already redacted) excerpt, when it is a JSON object with an
    ``error`` object (Anthropic's ``{"type":"error","error":{…}}``, OpenAI's ``{"error":{…}}``): the client's own
    format. Redacted once more as parsed JSON, so no string in it can carry the key."""
    _, _, excerpt = exc.message.partition(" ")
    try:
        body = orjson.loads(excerpt)
    except orjson.JSONDecodeError:
        return None  # not JSON, or cut at the excerpt's length: the format's own error body is sent instead
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return None
    return redact_json(body, (call.api_key,) if call.api_key else ())


# ----- splitting the upstream bytes at event boundaries -----------------------------------------------------------

_EOL = re.compile(rb"\r\n|\r|\n")
_CONTENT = frozenset({TextDelta, ThinkingDelta, ToolCallDelta, BlockEnd})
"""Content deltas: the client has the content and the ledger never stores it, so they are passed on only up to the
first token (which the assembler times); assembling the rest would cost a ``Generation`` step per event for
nothing."""


def _is_token(delta: Delta) -> bool:
    """Whether the assembler counts ``delta`` as the first token (``MessageAssembler._mark_first_token``)."""
    if isinstance(delta, ToolCallDelta):
        return True
    if isinstance(delta, ThinkingDelta):
        return bool(delta.text) and not delta.redacted
    return isinstance(delta, TextDelta) and bool(delta.text)


_CR = 13


class _Framer:
    """Incremental SSE decoding over the raw bytes (httpx-sse's ``SSEDecoder`` on lines split here, CR/LF/CRLF):
    each chunk gives the bytes that can be relayed now (every event completed in it), the deltas the parser makes of
    those events, and the failure that stops the stream. The bytes of an incomplete event are held until its blank
    line arrives; nothing is held past an event boundary."""

    __slots__ = ("_parser", "_decoder", "held", "_line", "_seek", "_content_seen")

    def __init__(self, parser: EventParser) -> None:
        self._parser = parser
        self._decoder = SSEDecoder()
        self.held = bytearray()
        """Bytes after the last event boundary, not relayed yet."""
        self._line = 0
        """Where in ``held`` the unfinished line starts."""
        self._seek = 0
        """Where in ``held`` the search for its end resumes."""
        self._content_seen = False

    def feed(self, chunk: bytes, eof: bool = False) -> tuple[bytes, list[Delta], UpstreamError | None]:
        """``eof``: the body ended after ``chunk``, so a CR at its very end ends a line."""
        held = self.held
        data: bytes | bytearray = chunk
        if held:
            held += chunk
            data = held
        size = len(data)
        pos, seek = self._line, self._seek
        boundary = 0  # the end of the last complete event: data[:boundary] can be relayed
        deltas: list[Delta] = []
        failure: UpstreamError | None = None
        decode = self._decoder.decode
        feed = self._parser.feed
        crs = data.find(b"\r", seek) >= 0
        while True:
            if crs:
                match = _EOL.search(data, seek)
                # A CR at the very end may be the first half of a CRLF: wait for the next byte.
                if match is None or (match.end() == size and data[size - 1] == _CR and not eof):
                    break
                end, after = match.start(), match.end()
            else:
                end = data.find(b"\n", seek)
                if end < 0:
                    break
                after = end + 1
            if end > pos:
                decode(data[pos:end].decode("utf-8", "replace"))
            else:  # a blank line ends an event
                event = decode("")
                if event is not None:
                    try:
                        parsed = feed(event)
                    except UpstreamStreamError as exc:  # the upstream's own error event: relayed, then raised
                        return self._last(data[:after]), deltas, exc
                    except UpstreamError as exc:  # unreadable: not relayed, the format's error event follows
                        return self._last(data[:boundary]), deltas, exc
                    for delta in parsed:
                        if type(delta) not in _CONTENT:
                            deltas.append(delta)
                        elif not self._content_seen:  # up to the first token, which the assembler times
                            self._content_seen = _is_token(delta)
                            deltas.append(delta)
                    if self._parser.done:
                        return self._last(data[:after]), deltas, None
                boundary = after
            pos = seek = after
        if boundary == size:  # the common case: the chunk ends at an event boundary
            relayed = chunk if data is chunk else bytes(data)
            held.clear()
            self._line = self._seek = 0
            return relayed, deltas, None
        relayed = bytes(data[:boundary])
        if data is chunk:
            held += memoryview(chunk)[boundary:]
        else:
            del held[:boundary]
        self._line = pos - boundary
        self._seek = max(pos, size - 1) - boundary  # a trailing CR is looked at again
        if len(held) > MAX_EVENT_BYTES:
            failure = UpstreamProtocolError(f"an upstream event is larger than {MAX_EVENT_BYTES} bytes")
        return relayed, deltas, failure

    def _last(self, relayed: bytes | bytearray) -> bytes:
        """The stream stops here: what is relayed of it, and nothing held."""
        out = bytes(relayed)
        self.held.clear()
        self._line = self._seek = 0
        return out


# ----- the encoder: the raw bytes are the frames ------------------------------------------------------------------


class RelayEncoder(SilentEncoder):
    """The relayed bytes are the frames, so the block lifecycle encodes nothing. ``error`` is the format's error
    event (``Family.error_frame``) for failures the upstream did not send itself; nothing when the upstream ended the
    stream (its error event or terminal event was relayed) or the client is gone."""

    __slots__ = ("_relay",)

    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    def error(self, reason: Literal["error", "aborted"], message: AssistantMessage) -> bytes:
        if reason == "aborted" or self._relay.upstream_ended:
            return b""
        return self._relay.error_frame(
            message.get("errorStatus") or 502, message.get("errorMessage") or "upstream error"
        )
