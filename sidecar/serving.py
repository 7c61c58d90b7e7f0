"""Serving one generation for any route, whatever its wire format: the machinery every model route shares.

Order of checks, cheapest and least revealing first: bearer, content type, body size, the format's decode (JSON shape
and bounds), model, budget, admission. Every refusal happens before the 200 and before any upstream call, in the
route's own error shape. Then one ``Generation``: ``x-generation-id``, a ledger row (also on disconnect), retries
before the first byte, heartbeats, disconnect cancels upstream, redaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect
from starlette.types import Receive
from ulid import ULID

from . import relay
from .admission import Admission
from .auth import BearerAuth, Caller
from .config import Settings
from .errors import (
    BadRequest,
    MissingCredential,
    PayloadTooLarge,
    SidecarError,
    UnknownModel,
    UnsupportedMediaType,
    classify_status,
)
from .failover import Candidate, Failover
from .identifiers import check_header, shown
from .ingress.base import IngressFormat, IngressRequest
from .key_pool import HAND_OVER_STATUSES, KeyPool
from .ledger import Ledger
from .ledger.budget import Budgets
from .ledger.record import now_ms, record_from_outcome
from .metrics import Metrics
from .policy import Policy, unrestricted
from .providers import ADAPTERS
from .providers.base import UpstreamCall
from .registry import ModelRegistry, Resolved
from .responses import SSE_HEADERS, json_response
from .sse_response import SseResponse
from .stream import EventTimeouts, Generation, Outcome, SilentEncoder
from .upstream import Upstream

T = TypeVar("T")
log = logging.getLogger("sidecar")

# Request headers forwarded upstream (the reference gateway's list, protocol §12); x-omp-* are attribution only.
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
FORBIDDEN_OVERRIDES = frozenset(
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


@dataclass
class GenerationService:
    settings: Settings
    auth: BearerAuth
    registry: ModelRegistry
    ledger: Ledger
    budgets: Budgets
    admission: Admission
    client: Callable[[], Upstream]
    on_finish: Callable[[str, Caller, Outcome], None]
    metrics: Metrics | None = None
    policy: Policy = field(default_factory=unrestricted)
    keys: KeyPool = field(default_factory=KeyPool)
    """Allowed models and rate limits per caller (``[limits]``, ``[[workloads]]``)."""

    def error(self, fmt: IngressFormat, exc: SidecarError) -> Response:
        """``exc`` in ``fmt``'s error shape, with its status and ``retry-after``."""
        return json_response(fmt.error_body(exc.status, exc.type, exc.message), exc.status, exc.headers or None)

    async def read_request(self, request: Request, fmt: IngressFormat) -> tuple[Caller, IngressRequest]:
        """Authenticate (the bearer wherever the format's SDKs put their key), then read and decode the body."""
        caller = self.auth.authenticate_request(request.headers)
        require_json(request)
        body = await read_body(request, self.settings.max_body_bytes)
        return caller, fmt.decode(body, request.headers, self.settings.limits)

    async def serve(
        self,
        request: Request,
        fmt: IngressFormat,
        caller: Caller,
        ingress: IngressRequest,
    ) -> Response:
        """Run ``ingress`` for ``caller`` and answer in ``fmt``: an SSE stream or one JSON body."""
        started_ms = now_ms()
        resolved, fallbacks = self._resolve(ingress, fmt)
        stream_fn = ADAPTERS.get(resolved.model.api)
        if stream_fn is None:
            raise BadRequest(
                f"Model {resolved.model.full_id} uses wire API {resolved.model.api!r}, which this sidecar does not "
                f"implement (supported: {', '.join(sorted(ADAPTERS))})"
            )
        relayed = relay.plan(fmt, ingress, resolved.model)  # same family: the client's body and bytes, untranslated
        if relayed is not None:
            stream_fn = relayed.stream
        headers = upstream_headers(request, ingress.options)
        await self.budgets.check(caller, resolved.model)  # 429 / 403 before any upstream call
        await self.policy.check(caller, resolved.model)  # 403 model_not_allowed / 429 + retry-after, likewise
        failover = Failover(
            caller=caller,
            registry=self.registry,
            keys=self.keys,
            budgets=self.budgets,
            policy=self.policy,
            metrics=self.metrics,
            first=Candidate(resolved, stream_fn),
            fallbacks=fallbacks,
            relayed_api=resolved.model.api if relayed is not None else None,
            translatable=ingress.relay_only is None,
        )
        await failover.open()  # every key rate-limited or refused and no fallback: 429 / the refusal, likewise
        slot = self.admission.admit(caller)  # 503 / 429 with retry-after, before the 200
        try:
            generation_id = f"gen_{ULID()}"

            def finish(outcome: Outcome) -> None:
                # Free the slot before the terminal frame reaches the client: a client that sends its next request
                # on the terminal event must find it free. (The response's end releases it too.)
                slot.release()
                served_by = failover.credential  # the model and key that served: after a hand-over, not the first
                record = record_from_outcome(
                    generation_id=generation_id,
                    created_at_ms=started_ms,
                    identity=caller.identity,
                    model=failover.model,
                    streamed=ingress.stream,
                    credential_source=served_by.source if served_by is not None else None,
                    attribution=ingress.attribution,
                    outcome=outcome,
                )
                self.ledger.record(record)
                self.policy.count(caller, record)  # tokens per minute; never blocks the stream's end
                if self.metrics is not None:
                    self.metrics.generation(fmt.name, record)
                self.on_finish(generation_id, caller, outcome)

            model, key = failover.model, failover.credential
            call = UpstreamCall(
                model=model,
                context=ingress.context,
                options=ingress.options,
                api_key=key.value if key is not None else None,
                session_id=ingress.session_id,
                headers=headers,
                max_retries=self.settings.max_retries,
                on_retry=self.metrics.retry if self.metrics is not None else None,
                hand_over_on=HAND_OVER_STATUSES if failover.rotation.has_next else frozenset(),
            )
            timeouts = EventTimeouts.from_options(ingress.options)
            generation = Generation(
                call=call,
                stream_fn=failover.candidate.stream_fn,
                client=self.client(),
                timeouts=relayed.timeouts(timeouts) if relayed else timeouts,
                on_finish=finish,
                encoder=(
                    relayed.encoder
                    if relayed
                    else (fmt.encoder(ingress, model, generation_id) if ingress.stream else SilentEncoder())
                ),
                hand_over=failover.hand_over,
            )
            ids = {"x-generation-id": generation_id, "x-request-id": generation_id, "request-id": generation_id}
            if ingress.stream:
                if fmt.prime:
                    try:
                        primed = await unless_client_leaves(generation.prime(), request.receive)
                    except SidecarError as exc:
                        if relayed is not None and (answer := relayed.answer(ids)) is not None:
                            return answer  # the upstream's own error body and status
                        return json_response(
                            fmt.error_body(exc.status, exc.type, exc.message), exc.status, {**ids, **exc.headers}
                        )
                    if primed is _LEFT:
                        return Response(status_code=499)
                return SseResponse(
                    generation.frames(),
                    {**SSE_HEADERS, **ids},
                    heartbeat_seconds=self.settings.heartbeat_seconds,
                    on_close=slot.release,  # however the response ends: done, error, client gone, never started
                )
        except BaseException:
            slot.release()
            raise
        try:
            message = await unless_client_leaves(generation.run(), request.receive)
        finally:
            slot.release()
        if message is _LEFT or message["stopReason"] == "aborted":  # type: ignore[index]
            return json_response(fmt.error_body(499, "request_aborted", "client closed request"), 499, ids)
        assert not isinstance(message, _Left)
        if relayed is not None and (answer := relayed.answer(ids)) is not None:
            return answer  # the upstream's JSON reply (or error body), unchanged
        if message["stopReason"] == "error":
            status = message.get("errorStatus") or 502
            body = fmt.error_body(status, classify_status(status), message.get("errorMessage", "upstream error"))
            return json_response(body, status, {**ids, **generation.error_headers})
        return json_response(fmt.render(ingress, message, generation_id), 200, ids)

    def _resolve(self, ingress: IngressRequest, fmt: IngressFormat) -> tuple[Resolved, tuple[str, ...]]:
        """The requested model and its fallbacks (the request's, else the config's). A requested model that cannot
        be served at all (unknown here, or its provider has no key) is skipped for the first fallback that can; with
        none, its error stands."""
        fallbacks = ingress.fallbacks
        try:
            resolved = self.registry.resolve(ingress.model_id, prefer=fmt.preferred_provider)
        except (UnknownModel, MissingCredential) as first_error:
            for i, model_id in enumerate(fallbacks):
                try:
                    return self.registry.resolve(model_id), fallbacks[i + 1 :]
                except (UnknownModel, MissingCredential):
                    continue
            raise first_error from None
        return resolved, fallbacks or resolved.model.fallbacks


class _Left:
    """What ``unless_client_leaves`` returns when the client disconnected first."""


_LEFT = _Left()


async def unless_client_leaves(work: Awaitable[T], receive: Receive) -> T | _Left:
    """Run ``work`` until it finishes or the client disconnects; then cancel it and return ``_LEFT``.

    A JSON answer (or a primed stream) starts only at the end of ``work``, so without this a client that gave up
    would keep the upstream generating (and billed) to completion. Cancelling ``Generation.run`` closes the
    upstream and records the generation as aborted, as the streaming path does."""
    run = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((run, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not run.done():
            run.cancel()
            await asyncio.wait((run,))  # its cleanup closes the upstream response and records the abort
    return _LEFT if run.cancelled() else run.result()


async def _disconnected(receive: Receive) -> None:
    # The body has been read, so the server's next message is the disconnect (uvicorn also sends it once the
    # response is complete, which is after this task is cancelled).
    while (await receive())["type"] != "http.disconnect":
        pass


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
        for name, value in extra.items():  # checked by the format's decode
            if name.lower() not in FORBIDDEN_OVERRIDES:
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
