"""The seam between the stream contract and the upstream wire APIs.

An adapter is one module per upstream wire API exposing ``async def stream(call, client) -> AsyncIterator[Delta]``.
It translates the pi ``Context`` into the provider's request, opens the upstream stream with ``open_stream`` and
yields small ``Delta`` records. It never builds pi events: ``sidecar.stream.MessageAssembler`` owns the partial
message, the content indices and the start/end/terminal events, so the stream contract lives in one place.

Failures are *raised* (``sidecar.errors.UpstreamError`` subclasses); the stream guard turns them into the in-band
``error`` event, keeping whatever content and usage already arrived.

Block keys: an adapter names each content block with a ``key`` of its choosing (Anthropic's ``index``, OpenAI's
``("tool", index)`` …). The assembler opens a block on the first delta for a new key and closes it on ``BlockEnd``
or at the end of the stream. A new key of the *same kind* does not close the previous block, so interleaved
parallel tool calls work.
"""

from __future__ import annotations

import asyncio
import codecs
import email.utils
import time
from collections.abc import AsyncIterator, Callable, Hashable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import quote, urlencode, urlsplit

import httpx2
import orjson
from httpx_sse import ServerSentEvent
from httpx_sse._decoders import SSEDecoder, SSELineDecoder  # not re-exported; pinned as for sidecar/relay.py

from client.types import Context
from sidecar.errors import (
    ConfigError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
    map_transport_errors,
)
from sidecar.models import ModelSpec
from sidecar.upstream import Upstream, UpstreamResponse, client_timeout

# ----- deltas: what an adapter yields ---------------------------------------------------------------------------


@dataclass(slots=True)
class TextDelta:
    key: Hashable
    text: str
    signature: str | None = None
    """Replaces the block's ``textSignature`` (Vertex Gemini's ``thoughtSignature`` on a text part)."""


@dataclass(slots=True)
class ThinkingDelta:
    key: Hashable
    text: str = ""
    signature: str | None = None
    """Appended to the block's ``thinkingSignature`` (Anthropic streams it in ``signature_delta`` pieces)."""
    redacted: bool = False
    """``text`` is opaque redacted-thinking data (Anthropic ``redacted_thinking``)."""


@dataclass(slots=True)
class ToolCallDelta:
    key: Hashable
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    """A raw fragment of the arguments' JSON text; fragments are concatenated and parsed at block end."""
    thought_signature: str | None = None
    """Replaces the call's ``thoughtSignature`` (Gemini signs a function call part; the next turn sends it back)."""


@dataclass(slots=True)
class BlockEnd:
    key: Hashable


@dataclass(slots=True)
class UsageUpdate:
    """Absolute token counts seen so far; ``None`` leaves a field as it was.

    ``input`` is *non-cached* input (pi's convention): an OpenAI adapter subtracts ``cached_tokens`` from
    ``prompt_tokens``. ``reasoning`` is a subset of ``output``.
    """

    input: int | None = None
    output: int | None = None
    cache_read: int | None = None
    cache_write: int | None = None
    reasoning: int | None = None
    cost_multiplier: float | None = None
    """Scales the whole cost: the price of the service tier the provider says it used (OpenAI's flex ×0.5,
    priority ×2), from the model's ``compat.service_tier_cost``."""


@dataclass(slots=True)
class Finish:
    reason: Literal["stop", "length", "toolUse"]


@dataclass(slots=True)
class ResponseInfo:
    response_id: str | None = None
    upstream_model: str | None = None


@dataclass(slots=True)
class Raw:
    """Upstream bytes relayed to the client unchanged (``sidecar.relay``: same-family requests); the deltas parsed
    from them follow, for the ledger."""

    data: bytes


Delta = TextDelta | ThinkingDelta | ToolCallDelta | BlockEnd | UsageUpdate | Finish | ResponseInfo | Raw
Deltas = Delta | list[Delta]
"""What an adapter yields: one delta, or the deltas of one upstream read as a list, which the client then receives
in one write: one send and one idle timer per read instead of per delta (``read_deltas``)."""

# ----- the call an adapter makes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """Everything an adapter needs for one generation. ``api_key`` is the injected credential: never log it."""

    model: ModelSpec
    context: Context
    options: Mapping[str, Any]
    """The allow-listed pi options (camelCase, as on the wire)."""
    api_key: str | None
    session_id: str
    headers: Mapping[str, str] = field(default_factory=dict)
    """Pass-through request headers (``anthropic-beta``, ``openai-organization`` …) and ``options.headers``."""
    max_retries: int = 2
    first_byte_timeout: float | None = None
    """Seconds to wait for the upstream response headers; the guard applies the event timeouts."""
    on_retry: Callable[[str, str], None] | None = None
    """Told ``(provider, reason)`` before each repeated call: ``"connect"`` or the status retried (``/metrics``)."""
    hand_over_on: frozenset[int] = frozenset()
    """Statuses raised at once instead of retried: another key (or model) takes the call over (``Generation``)."""

    def __repr__(self) -> str:  # never show the key, even in a traceback's locals
        return f"UpstreamCall(model={self.model.full_id!r}, session_id={self.session_id!r}, api_key=***)"


StreamFn = Callable[[UpstreamCall, Upstream], AsyncIterator[Deltas]]

# ----- helpers every adapter uses ---------------------------------------------------------------------------------

_DEPLOYMENT_SCOPED = frozenset({"/chat/completions"})
"""The paths Azure OpenAI's classic API serves under ``/deployments/{deployment}`` (the openai SDKs' ``AzureOpenAI``
client keeps the same list); ``/responses`` is not one of them."""


def endpoint(call: UpstreamCall, path: str) -> str:
    """The upstream URL of ``path`` (``/chat/completions``, ``/responses``, ``/v1/messages``) for ``call``'s model: its
    base URL and ``path``, shaped by three compat keys that Azure OpenAI needs (vendor URL quirks as data):

    - ``base_path`` (``"/openai/v1"``) goes between the two, unless the base URL already ends with it: the base URL is
      then the resource endpoint as the Azure portal shows it and its SDKs read it (``AZURE_OPENAI_ENDPOINT``);
    - ``deployment_path = true`` puts the deployment-scoped paths under ``/deployments/{model id}`` (the classic API);
    - ``api_version`` is sent as the ``api-version`` query parameter (the classic API requires it, v1 needs none).

    A base URL on the reserved ``.invalid`` domain (RFC 2606: it never resolves) is a catalog placeholder for an
    endpoint only the operator knows; it is refused here with what to set, instead of a bare DNS failure.
    """
    model = call.model
    url = model.base_url.rstrip("/")
    if (urlsplit(url).hostname or "").endswith(".invalid"):
        raise ConfigError(
            f"{model.provider}: no endpoint is configured ({url} is the catalog's placeholder); set the provider's "
            f"endpoint environment variable (see the README's provider table) or [providers.{model.provider}] base_url"
        )
    compat = model.compat
    base_path = str(compat.get("base_path") or "").strip("/")
    if base_path and not url.endswith("/" + base_path):
        url = f"{url}/{base_path}"
    if compat.get("deployment_path") and path in _DEPLOYMENT_SCOPED:
        # One path segment whatever the id holds: "/" is escaped, and so are the dots of "." or "..", which httpx
        # would otherwise resolve away (a request-chosen id must not reach another path of the resource).
        deployment = quote(model.id, safe="")
        if not deployment.strip("."):
            deployment = deployment.replace(".", "%2E")
        url = f"{url}/deployments/{deployment}"
    url += path
    version = compat.get("api_version")
    return f"{url}?{urlencode({'api-version': version})}" if version else url


_RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
_MAX_ERROR_BODY = 64 * 1024
_MAX_DRAIN_BYTES = 64 * 1024
_DRAIN_SECONDS = 1.0


def _retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """``retry-after-ms``, ``retry-after`` (seconds or HTTP date), as OpenAI and Anthropic send them."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(raw) if raw else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def _backoff_delay(attempt: int, retry_after: float | None, cap: float) -> float:
    delay = retry_after if retry_after is not None else min(0.5 * 2**attempt, 8.0)
    return min(delay, cap) if cap > 0 else delay


async def body_text(response: UpstreamResponse) -> AsyncIterator[str]:
    """The body (``response.chunks()``, the one iterator the drain continues) as text. SSE is UTF-8 whatever the
    header says; a character split across chunks is kept."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    async for chunk in response.chunks():
        if text := decoder.decode(chunk):
            yield text
    if tail := decoder.decode(b"", final=True):
        yield tail


def _finish_body(response: UpstreamResponse) -> bool:
    """Hand the connection back once the caller stopped at its terminal event (``message_stop``, ``[DONE]``): what
    follows it (the chunked terminator, a trailing newline) must be read, or closing the response closes the socket
    and the next stream's first token pays a new TCP+TLS handshake. Whatever already arrived is read now; if the end
    is still on its way, a background task waits for it (bounded), so the generation ends (and the client gets its
    terminal event) at the terminal event, not when the upstream gets round to finishing its body. ``True`` when the
    response was handed to that task, which then closes it."""
    try:
        if response.read_buffered(_MAX_DRAIN_BYTES):
            return False
    except Exception:  # the body failed after the terminal event: the caller's close drops the connection
        return False
    task = asyncio.get_running_loop().create_task(_drain_then_close(response))
    _DRAINS.add(task)  # the loop keeps only weak references to tasks
    task.add_done_callback(_DRAINS.discard)
    return True


_DRAINS: set[asyncio.Task[None]] = set()


async def _drain_then_close(response: UpstreamResponse) -> None:
    """Read the body to its end (which releases the connection to the pool) within the byte and time bounds; past
    them, or on a failure, the close drops the connection instead."""
    try:
        async with asyncio.timeout(_DRAIN_SECONDS):
            size = 0
            async for chunk in response.chunks():
                size += len(chunk)
                if size > _MAX_DRAIN_BYTES:
                    break
    except (TimeoutError, httpx2.HTTPError):  # as sidecar.upstream raises aiohttp's failures
        pass  # the connection is simply not reused
    finally:
        await response.aclose()


async def _read_error_body(response: UpstreamResponse) -> str:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.chunks():
        chunks.append(chunk)
        size += len(chunk)
        if size >= _MAX_ERROR_BODY:
            break
    return b"".join(chunks).decode("utf-8", errors="replace")


@asynccontextmanager
async def open_stream(
    client: Upstream,
    call: UpstreamCall,
    url: str,
    *,
    headers: Mapping[str, str],
    json_body: bytes,
) -> AsyncIterator[UpstreamResponse]:
    """POST ``json_body`` and yield the 2xx streaming response; raise ``UpstreamStatusError`` otherwise.

    Retries 408/409/429/5xx/529 and connection failures up to ``call.max_retries`` times *before any byte of the
    body has been read*, honouring ``retry-after`` capped by the ``maxRetryDelayMs`` option (default 60 s).
    """
    cap_ms = call.options.get("maxRetryDelayMs", 60_000)
    cap = float(cap_ms) / 1000.0 if isinstance(cap_ms, int | float) else 60.0
    timeout = client_timeout(connect=10.0, read=call.first_byte_timeout, pool=10.0)
    attempt = 0
    while True:
        try:
            with map_transport_errors(call.model.provider):
                response = await client.post(url, headers, json_body, timeout)
        except UpstreamConnectError:
            # Not a timeout: waiting for a slow first byte again would only double the caller's wait.
            if attempt >= call.max_retries:
                raise
            if call.on_retry is not None:
                call.on_retry(call.model.provider, "connect")
            await asyncio.sleep(_backoff_delay(attempt, None, cap))
            attempt += 1
            continue
        handed_over = False
        try:
            if response.is_success:
                # The body is read under the caller's timeouts, not the first-byte one.
                yield response
                handed_over = _finish_body(response)
                return
            with map_transport_errors(call.model.provider):
                body = await _read_error_body(response)
            retry_after = _retry_after_seconds(response.headers)
            secrets = (call.api_key,) if call.api_key else ()
            error = UpstreamStatusError(response.status_code, body, retry_after, secrets)
        finally:
            if not handed_over:
                await response.aclose()
        if response.status_code not in _RETRY_STATUSES or attempt >= call.max_retries:
            raise error
        if response.status_code in call.hand_over_on:
            raise error
        if call.on_retry is not None:
            call.on_retry(call.model.provider, str(response.status_code))
        await asyncio.sleep(_backoff_delay(attempt, retry_after, cap))
        attempt += 1


def event_object(
    data: str | bytes, provider: str, *, event: str | None = None, stream: str = "the stream"
) -> dict[str, Any]:
    """One event's JSON payload, which every wire API sends as an object; ``UpstreamProtocolError`` otherwise, naming
    the provider and the event by its name (``event``) or its stream (``"the Gemini stream"``). The names are
    formatted only on failure: this runs once per event."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        where = stream if event is None else f"a {event!r} event"
        raise UpstreamProtocolError(f"{provider}: unparseable data in {where}") from None
    if not isinstance(value, dict):
        where = stream if event is None else f"a {event!r} event"
        raise UpstreamProtocolError(f"{provider}: a JSON value that is not an object in {where}")
    return value


async def sse_reads(response: UpstreamResponse, provider: str) -> AsyncIterator[list[ServerSentEvent]]:
    """The response body as SSE events (CR/LF/CRLF, multi-line data, comments skipped), the events of each read
    together, read from ``body_text`` so the drain can finish the body after the caller stops at its terminal event."""
    if "text/event-stream" not in response.headers.get("content-type", "").partition(";")[0]:
        # A 200 that is not text/event-stream: a server that ignored `stream: true` and answered with JSON.
        raise UpstreamProtocolError(
            f"{provider}: expected an event stream, got {response.headers.get('content-type', 'no content type')}"
        )
    lines, decoder = SSELineDecoder(), SSEDecoder()
    with map_transport_errors(provider):
        async for text in body_text(response):
            events = [event for line in lines.decode(text) if (event := decoder.decode(line)) is not None]
            if events:
                yield events
    if events := [event for line in lines.flush() if (event := decoder.decode(line)) is not None]:
        yield events


class EventParser(Protocol):
    """A wire API's SSE events -> deltas (``AnthropicEventParser`` …); ``done`` once its terminal event was read."""

    done: bool

    def feed(self, event: ServerSentEvent) -> Sequence[Delta]: ...


async def read_deltas(parser: EventParser, response: UpstreamResponse, provider: str) -> AsyncIterator[list[Delta]]:
    """The deltas of each read of an SSE body, as one list (see ``Deltas``), up to the parser's terminal event. An
    event the parser refuses (an upstream ``error`` event) is raised after the deltas before it in the same read
    were yielded, so the client's error still carries all the content that came."""
    async for events in sse_reads(response, provider):
        deltas: list[Delta] = []
        failure: Exception | None = None
        for event in events:
            try:
                deltas.extend(parser.feed(event))
            except Exception as exc:
                failure = exc
                break
            if parser.done:
                break
        if deltas:
            yield deltas
        if failure is not None:
            raise failure
        if parser.done:
            return
