"""The ASGI app: ``create_app(settings)``. Handlers are thin; the work is in ``stream``/``providers``.

The lifespan owns the one shared upstream client (``sidecar.upstream``: aiohttp's pool); tests may inject their own.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, nullcontext

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive, Scope, Send

from . import __version__
from .admission import Admission
from .ai_gateway_routes import ai_gateway_router
from .auth import BearerAuth, Caller
from .config import Settings
from .credential_routes import credential_router
from .credentials import CredentialStore
from .errors import BadRequest, SidecarError
from .gateway_routes import gateway_router
from .ingress_routes import ingress_router
from .ledger import Ledger, ledger_for
from .ledger.budget import Budgets
from .metrics import Metrics, StateSources
from .metrics_routes import metrics_router
from .model_routes import ModelRoutes
from .policy import Policy
from .rate_limits import RateCounters
from .realtime.openai import OpenAIRealtime, openai_browser_router, openai_mint_router
from .realtime.routes import RealtimeGateway, realtime_router, realtime_socket_router
from .realtime.tokens import store_for as token_store_for
from .registry import ModelRegistry
from .responses import PREFLIGHT_HEADERS, error_response, json_response
from .serving import ClientGone, GenerationService
from .stream import Outcome
from .ui_api import ui_api_router
from .ui_routes import ui_router
from .upstream import Upstream

log = logging.getLogger("sidecar")


def log_outcome(generation_id: str, caller: Caller, outcome: Outcome) -> None:
    usage = outcome.message["usage"]
    log.info(
        "generation %s caller=%s model=%s/%s reason=%s in=%d out=%d cacheRead=%d cacheWrite=%d cost=%.6f "
        "ttft_ms=%s duration_ms=%.1f%s",
        generation_id,
        caller.identity,
        outcome.message["provider"],
        outcome.message["model"],
        outcome.reason,
        usage["input"],
        usage["output"],
        usage["cacheRead"],
        usage["cacheWrite"],
        usage["cost"]["total"],
        f"{outcome.ttft_ms:.1f}" if outcome.ttft_ms is not None else "-",
        outcome.duration_ms,
        f" error={outcome.error_type}/{outcome.error_status}" if outcome.error_type else "",
        # The same values as fields of their own, for the JSON log format (the text format writes only the line).
        extra={
            "fields": {
                "generation_id": generation_id,
                "workload": caller.identity,  # as the ledger and the metrics' label name the caller
                "provider": outcome.message["provider"],
                "model": outcome.message["model"],
                "reason": outcome.reason,
                "input_tokens": usage["input"],
                "output_tokens": usage["output"],
                "cache_read_tokens": usage["cacheRead"],
                "cache_write_tokens": usage["cacheWrite"],
                "cost_usd": usage["cost"]["total"],
                "ttft_ms": outcome.ttft_ms,
                "duration_ms": outcome.duration_ms,
                "status": outcome.error_status or (499 if outcome.reason == "aborted" else 200),
                "error_type": outcome.error_type,
                "error_status": outcome.error_status,
            }
        },
    )


class _DenialResponseNoise(logging.Filter):
    """uvicorn 0.54's websockets-sansio protocol logs "ASGI callable returned without completing handshake" after
    every WebSocket denial response (the refused realtime upgrades), although the response was sent in full and its
    500 fallback is skipped (``send_500_response`` returns when a response was started). Drop that one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


def create_app(
    settings: Settings,
    *,
    upstream: Upstream | None = None,
    on_finish: Callable[[str, Caller, Outcome], None] = log_outcome,
    ledger: Ledger | None = None,
    rate_counters: RateCounters | None = None,
) -> FastAPI:
    """``on_finish`` observes every generation once (after it is handed to the ledger); tests may inject the
    ``upstream`` client, their own ``ledger`` and the ``rate_counters`` (a clock, a Redis key prefix)."""
    # uvicorn hands its "uvicorn.error" logger to websockets, which logs every handshake header at DEBUG (the realtime
    # client secret rides in Sec-WebSocket-Protocol) and every frame (the user's words). Never below INFO.
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.setLevel(logging.INFO)
    if not any(isinstance(f, _DenialResponseNoise) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(_DenialResponseNoise())
    credentials = CredentialStore(settings)
    credentials.check_locations()
    registry = ModelRegistry(settings, credentials)
    # Resolve every provider once now: probing for a keyring backend can take tens of milliseconds, which must not
    # land on the first request.
    servable_at_start = sum(1 for _ in registry.servable())
    log.debug("%d models servable at startup", servable_at_start)
    auth = BearerAuth.from_settings(settings)
    admission = Admission(
        settings.limits.max_streams,
        settings.limits.max_streams_per_workload,
        {f"workload:{w.name}": w.max_streams for w in settings.workloads if w.max_streams is not None},
        trim_memory=True,
    )
    ledger = ledger or ledger_for(settings)
    budgets = Budgets(ledger, settings.budget_period, allow_unpriced=settings.allow_unpriced)
    metrics = Metrics(settings.metrics.multiprocess_dir) if settings.metrics.enabled else None
    policy = Policy.from_settings(settings, rate_counters)
    realtime = RealtimeGateway(
        settings,
        auth,
        registry,
        token_store_for(settings.realtime.token_store_url, settings.token_store_file),
        ledger,
        budgets,
        metrics,
        policy,
    )
    if metrics is not None:
        metrics.watch(
            StateSources(
                streams_in_flight=lambda: admission.in_flight,
                streams_refused=lambda: admission.refused,
                ledger_pending=lambda: ledger.pending,
                ledger_written=lambda: ledger.written,
                ledger_write_errors=lambda: ledger.write_errors,
                ledger_dropped=lambda: ledger.dropped,
                realtime_sessions=lambda: sum(realtime.sessions.values()),
            )
        )
    state: dict[str, Upstream] = {}
    openai_realtime = OpenAIRealtime(realtime, lambda: state["client"])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await ledger.start()
        try:
            await realtime.tokens.open()
            try:
                async with (
                    upstream or Upstream(proxy=settings.upstream_proxy) as client,
                    metrics.publishing() if metrics is not None else nullcontext(),
                ):
                    state["client"] = client
                    # What start-up made (modules, the catalog, price tables: ~100k objects) lives as long as the
                    # process; out of the collector's sight, a full collection no longer walks it (~100 ms: a stall
                    # of every open stream, seen in the bench's TTFT p99).
                    gc.collect()
                    gc.freeze()
                    yield
            finally:
                state.clear()
                if admission.memory is not None:
                    admission.memory.close()
                await openai_realtime.close()  # the WebRTC calls' side-band observers
                await realtime.tokens.close()
                await policy.close()
        finally:
            await ledger.stop()  # after the server stopped taking requests: every finished generation is written

    app = SidecarApp(
        title="pi-sidecar", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )

    @app.exception_handler(SidecarError)
    async def _sidecar_error(request: Request, exc: SidecarError) -> Response:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return json_response({"error": f"No route: {request.method} {request.url.path}"}, 404)
        if exc.status_code == 405:
            return json_response({"error": f"Method not allowed: {request.method} {request.url.path}"}, 405)
        return json_response({"error": str(exc.detail)}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error_response(BadRequest("Invalid request"))

    @app.exception_handler(ClientGone)
    async def _client_gone(request: Request, exc: ClientGone) -> Response:
        # An ordinary event (a client timed out or was killed mid-upload): one line, no traceback.
        log.info("client disconnected while sending %s %s", request.method, request.url.path)
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Response:
        log.error("internal error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return json_response({"error": "internal error"}, 500)

    @app.options("/{path:path}")
    async def preflight(path: str) -> Response:
        return Response(status_code=204, headers=PREFLIGHT_HEADERS)

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response(
            {
                "ok": True,
                "version": __version__,
                "pid": os.getpid(),  # which worker answered (serve --workers)
                "ledger": {"pending": ledger.pending, "written": ledger.written, "ok": ledger.last_error is None},
                "streams": admission.snapshot(),
            }
        )

    app.include_router(gateway_router(auth, ledger, budgets, json_response))
    app.include_router(ui_api_router(settings, auth, ledger, budgets, admission, metrics, json_response))
    app.include_router(credential_router(settings, credentials, auth, lambda: state["client"]))
    app.include_router(realtime_router(realtime, json_response))
    app.include_router(realtime_socket_router(realtime))
    app.include_router(openai_mint_router(openai_realtime))
    app.include_router(openai_browser_router(openai_realtime))
    app.include_router(ui_router())  # GET /ui: the spend page's files; never on the public listener
    app.state.openai_realtime = openai_realtime
    app.state.realtime = realtime
    app.state.admission = admission
    if metrics is not None and settings.metrics.port is None:
        app.include_router(metrics_router(auth, metrics))
    app.metrics = metrics
    app.path_prefix = settings.path_prefix

    service = GenerationService(
        settings=settings,
        auth=auth,
        registry=registry,
        ledger=ledger,
        budgets=budgets,
        admission=admission,
        client=lambda: state["client"],
        on_finish=on_finish,
        metrics=metrics,
        policy=policy,
    )
    app.model_routes = ModelRoutes(service, metrics)
    app.include_router(ingress_router(service))
    app.include_router(ai_gateway_router(service))  # GET <base>/config: before the catch-all no_route

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def no_route(request: Request, path: str) -> Response:
        return json_response({"error": f"No route: {request.method} {request.url.path}"}, 404)

    return app


def create_public_app(private: FastAPI) -> FastAPI:
    """The optional public listener (``[realtime] public_host/public_port``): only the realtime WebSocket and
    ``/healthz``, for exposure through an Ingress. The mint, the lookups and ``/v1/pi/stream`` stay private.

    It shares the private app's token store and ledger, whose lifecycle the private app's lifespan owns.
    """
    realtime: RealtimeGateway = private.state.realtime
    app = FastAPI(title="pi-sidecar (public)", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"ok": True, "version": __version__})

    app.include_router(realtime_socket_router(realtime))
    app.include_router(openai_browser_router(private.state.openai_realtime))

    @app.options("/{path:path}")
    async def preflight(path: str) -> Response:  # a browser's WebRTC call setup is a cross-origin POST
        return Response(status_code=204, headers=PREFLIGHT_HEADERS)

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def no_route(request: Request, path: str) -> Response:
        return json_response({"error": f"No route: {request.method} {request.url.path}"}, 404)

    return app


class SidecarApp(FastAPI):
    """FastAPI, with the model routes served before its middleware stack and router (``sidecar.model_routes``), and
    every route answering both at the root and under ``path_prefix`` (``/sidecar/v1/pi/stream`` =
    ``/v1/pi/stream``).

    The AI Gateway client resolves ``/v1/generation``, ``/v1/credits`` and ``/v1/report`` against the origin of its
    base URL, so those must keep answering at the root when the rest is reached through a prefix.
    """

    model_routes: ModelRoutes | None = None
    path_prefix: str = ""
    metrics: Metrics | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.path_prefix and scope["type"] in ("http", "websocket"):
            scope = without_prefix(scope, self.path_prefix)
        if self.model_routes is not None and (route := self.model_routes.match(scope)) is not None:
            await self.model_routes.serve(route, scope, receive, send)
            return
        if self.metrics is None or scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        await self._counted(self.metrics, scope, receive, send)

    async def _counted(self, metrics: Metrics, scope: Scope, receive: Receive, send: Send) -> None:
        """A FastAPI route, counted by its path template (``/v1/generation``; ``/{path:path}`` for the 404s and the
        preflights, so an unknown path never becomes a label of its own) and the status it answered."""
        status = 500  # what the server sends when the app raises before starting its response

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await super().__call__(scope, receive, send_status)
        finally:
            route = scope.get("route")
            metrics.request(getattr(route, "path", "unmatched"), scope["method"], status)


def without_prefix(scope: Scope, prefix: str) -> Scope:
    path: str = scope["path"]
    if path != prefix and not path.startswith(prefix + "/"):
        return scope
    scope = {**scope, "path": path[len(prefix) :] or "/"}
    raw: bytes | None = scope.get("raw_path")
    if raw is not None and raw.startswith(prefix.encode()):
        scope["raw_path"] = raw[len(prefix) :] or b"/"
    return scope
