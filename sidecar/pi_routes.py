"""``POST /v1/pi/stream``: the pi-native route (protocol §2). Thin: check, admit, hand the work to ``Generation``.

Order of checks, cheapest and least revealing first: bearer, content type, body size, JSON shape and bounds, model,
budget, admission. Every refusal happens before the 200 and before any upstream call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import Response
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send
from ulid import ULID

from client.types import AssistantMessage

from .admission import Admission
from .auth import BearerAuth, Caller
from .config import Settings
from .errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, classify_status
from .identifiers import check_header, shown
from .ledger import Ledger
from .ledger.budget import Budgets
from .ledger.record import Attribution, now_ms, record_from_outcome
from .providers import ADAPTERS
from .providers.base import UpstreamCall
from .registry import ModelRegistry
from .request import parse_request
from .responses import SSE_HEADERS, error_envelope, json_response
from .stream import EventTimeouts, Generation, Outcome

T = TypeVar("T")

# Request headers the reference gateway forwards upstream (protocol §12); x-omp-* are attribution only.
PASSTHROUGH_HEADERS = (
    "anthropic-beta",
    "anthropic-version",
    "openai-organization",
    "openai-project",
    "openai-beta",
    "chatgpt-account-id",
    "originator",
    "session_id",
    "conversation_id",
    "x-prompt-cache-key",
    "x-session-id",
    "x-conversation-id",
)
# Never let a caller's options.headers replace the injected credential or break the framing.
_FORBIDDEN_OVERRIDES = frozenset(
    {
        "authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "cookie",
    }
)


class ClientGone(Exception):
    """The client closed the connection while sending its request: nothing to answer, nothing went wrong."""


def pi_router(
    settings: Settings,
    *,
    auth: BearerAuth,
    registry: ModelRegistry,
    ledger: Ledger,
    budgets: Budgets,
    admission: Admission,
    client: Callable[[], httpx.AsyncClient],
    on_finish: Callable[[str, Caller, Outcome], None],
) -> APIRouter:
    router = APIRouter()
    limits = settings.limits

    @router.post("/v1/pi/stream")
    async def pi_stream(request: Request) -> Response:
        caller = auth.authenticate(request.headers.get("authorization"))
        require_json(request)
        body = await read_body(request, settings.max_body_bytes)
        started_ms = now_ms()
        pi = parse_request(body, limits)
        attribution = Attribution.from_pi_options(pi.options)
        resolved = registry.resolve(pi.model_id)
        stream_fn = ADAPTERS.get(resolved.model.api)
        if stream_fn is None:
            raise BadRequest(
                f"Model {resolved.model.full_id} uses wire API {resolved.model.api!r}, which this sidecar does not "
                f"implement (supported: {', '.join(sorted(ADAPTERS))})"
            )
        headers = upstream_headers(request, pi.options)
        await budgets.check(caller, resolved.model)  # 429 / 403 before any upstream call
        slot = admission.admit(caller)  # 503 / 429 with retry-after, before the 200
        try:
            generation_id = f"gen_{ULID()}"
            credential_source = resolved.credential.source if resolved.credential else None

            def finish(outcome: Outcome) -> None:
                # Free the slot before the terminal frame reaches the client: a client that sends its next request
                # on [DONE] must find it free. (The response's own end releases it too, for streams never started.)
                slot.release()
                ledger.record(
                    record_from_outcome(
                        generation_id=generation_id,
                        created_at_ms=started_ms,
                        identity=caller.identity,
                        model=resolved.model,
                        streamed=pi.stream,
                        credential_source=credential_source,
                        attribution=attribution,
                        outcome=outcome,
                    )
                )
                on_finish(generation_id, caller, outcome)

            call = UpstreamCall(
                model=resolved.model,
                context=pi.context,
                options=pi.options,
                api_key=resolved.credential.value if resolved.credential else None,
                session_id=pi.session_id,
                headers=headers,
                max_retries=settings.max_retries,
            )
            generation = Generation(
                call=call,
                stream_fn=stream_fn,
                client=client(),
                timeouts=EventTimeouts.from_options(pi.options),
                on_finish=finish,
            )
            ids = {"x-generation-id": generation_id, "x-request-id": generation_id, "request-id": generation_id}
            if pi.stream:
                return SlotReleasingEventSource(
                    generation.frames(),
                    headers={**SSE_HEADERS, **ids},
                    media_type="text/event-stream; charset=utf-8",
                    ping=settings.heartbeat_seconds,
                    ping_message_factory=lambda: ServerSentEvent(comment="ping"),
                    on_close=slot.release,
                )
        except BaseException:
            slot.release()
            raise
        try:
            message = await unless_client_leaves(generation.run(), request.receive)
        finally:
            slot.release()
        return json_mode_response(message, ids)

    return router


def json_mode_response(message: AssistantMessage | None, ids: dict[str, str]) -> Response:
    """``"stream": false``: the final message, or the error envelope with the provider's status."""
    if message is None or message["stopReason"] == "aborted":
        return error_envelope(499, "request_aborted", "client closed request", ids)
    if message["stopReason"] == "error":
        status = message.get("errorStatus") or 502
        return error_envelope(status, classify_status(status), message.get("errorMessage", "upstream error"), ids)
    return json_response({"message": message}, 200, ids)


async def unless_client_leaves(work: Awaitable[T], receive: Receive) -> T | None:
    """Run ``work`` until it finishes or the client disconnects; then cancel it and return ``None``.

    JSON mode answers only at the end, so without this a client that gave up would keep the upstream generating (and
    billed) to completion. Cancelling ``Generation.run`` closes the upstream and records the generation as aborted,
    as the streaming path does."""
    run = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((run, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not run.done():
            run.cancel()
            await asyncio.wait((run,))  # its cleanup closes the upstream response and records the abort
    return None if run.cancelled() else run.result()


async def _disconnected(receive: Receive) -> None:
    # The body has been read, so the server's next message is the disconnect (uvicorn also sends it once the
    # response is complete, which is after this task is cancelled).
    while (await receive())["type"] != "http.disconnect":
        pass


class SlotReleasingEventSource(EventSourceResponse):
    """An SSE response that frees the admission slot when the response is over, however it ends (done, error,
    client gone, or never started because the client left before the first frame)."""

    def __init__(self, *args: Any, on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


def require_json(request: Request) -> None:
    """The body must be JSON: ``application/json`` (any parameters), ``application/*+json``, or no content type."""
    content_type = request.headers.get("content-type")
    if content_type is None:
        return
    media = content_type.partition(";")[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return
    raise UnsupportedMediaType(
        f"Content-Type {shown(content_type)} is not JSON: send the body with Content-Type: application/json"
    )


def upstream_headers(request: Request, options: dict[str, Any]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        if name in PASSTHROUGH_HEADERS or name.startswith("x-stainless-"):
            check_header(name, value, "request headers")  # non-ASCII bytes would fail only when sent upstream
            headers[name] = value
    extra = options.get("headers")
    if isinstance(extra, dict):
        for name, value in extra.items():  # checked by parse_request
            if name.lower() not in _FORBIDDEN_OVERRIDES:
                headers[name.lower()] = value
    return headers


async def read_body(request: Request, limit: int) -> bytes:
    too_large = PayloadTooLarge(
        f"Request body is larger than the {limit}-byte limit; raise [server] max_body_bytes in the config if needed"
    )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone from None
    return b"".join(chunks)
