"""``GET /metrics``: the Prometheus text format (``sidecar.metrics``).

By default it is a route of the main listener, behind the workload bearer (Prometheus sends it with
``authorization: {credentials_file: …}``). With ``[metrics] port`` it is served instead by a listener of its own
(``MetricsApp``), without the bearer, for a scraper inside the pod's network; never by the public realtime listener.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from .auth import BearerAuth
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .responses import json_response


def metrics_router(auth: BearerAuth, metrics: Metrics) -> APIRouter:
    router = APIRouter()

    @router.get("/metrics")
    async def scrape(request: Request) -> Response:
        auth.authenticate_request(request.headers)
        return Response(metrics.exposition(), headers={"content-type": CONTENT_TYPE_LATEST})

    return router


class MetricsApp:
    """The ``[metrics] port`` listener: ``GET /metrics`` and ``GET /healthz``, nothing else (a plain ASGI app: it
    shares the main app's ``Metrics`` and needs no lifespan of its own)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # run with lifespan="off"; a WebSocket upgrade is refused by the server
            return
        if scope["method"] not in ("GET", "HEAD"):
            response = json_response({"error": f"Method not allowed: {scope['method']} {scope['path']}"}, 405)
        elif scope["path"] == "/metrics":
            response = Response(self._metrics.exposition(), headers={"content-type": CONTENT_TYPE_LATEST})
        elif scope["path"] == "/healthz":
            response = json_response({"ok": True})
        else:
            response = json_response(
                {"error": f"No route: {scope['method']} {scope['path']} (this listener serves only /metrics)"}, 404
            )
        await response(scope, receive, send)
