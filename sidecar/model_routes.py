"""The model routes: every ``POST`` that runs one generation, in its wire format, served by ``GenerationService``.

They are the hot path (every model call of every agent), so they are dispatched before FastAPI's middleware stack,
router and dependency machinery, which cost about a third of the sidecar's CPU per stream (bench/README.md, "The
model routes skip FastAPI"). Everything else (the ledger lookups, ``/v1/models``, the realtime mint, health,
preflight, 404s) stays a FastAPI route. Paths match without their query (Claude Code posts
``/v1/messages?beta=true``); every refusal, including a wrong bearer, is in the route's own error shape.

Adding a format means one module in ``sidecar.ingress``, one row in ``FORMATS`` and its paths in ``ROUTES``.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .errors import SidecarError
from .ingress import FORMATS
from .ingress.base import IngressFormat
from .metrics import Metrics
from .responses import json_response
from .serving import ClientGone, GenerationService

log = logging.getLogger("sidecar")

ROUTES: tuple[tuple[str, str], ...] = (
    ("/v1/pi/stream", "pi"),
    ("/v1/chat/completions", "openai-chat"),
    ("/chat/completions", "openai-chat"),  # an OpenAI base URL set without its /v1
    ("/v1/responses", "openai-responses"),
    ("/responses", "openai-responses"),  # an OpenAI base URL set without its /v1
    ("/v1/messages", "anthropic-messages"),
)
"""``(path, format name)``: the exact paths of the routes that run one generation in that format."""

SUFFIX_ROUTES: tuple[tuple[str, str], ...] = (("/language-model", "ai-gateway"),)
"""``(suffix, format name)``: ``@ai-sdk/gateway`` appends ``/language-model`` to any base URL (``/v4/ai`` …)."""

Route = tuple[str, IngressFormat]
"""A model route: its path template (the ``route`` label of ``/metrics``) and its format."""


class ModelRoutes:
    """Finds the format of a model route's request and serves it; ``match`` is a dict lookup per request."""

    def __init__(self, service: GenerationService, metrics: Metrics | None = None) -> None:
        self._service = service
        self._metrics = metrics
        self._exact = {path: (path, FORMATS[name]) for path, name in ROUTES}
        self._suffixes = tuple((suffix, ("{base}" + suffix, FORMATS[name])) for suffix, name in SUFFIX_ROUTES)

    def match(self, scope: Scope) -> Route | None:
        """The route (its path template and format) of a ``POST`` to a model route; ``None`` hands the request to
        the FastAPI app."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path: str = scope["path"]
        route = self._exact.get(path)
        if route is None:
            for suffix, candidate in self._suffixes:
                if path.endswith(suffix):
                    return candidate
        return route

    async def serve(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        template, fmt = route
        request = Request(scope, receive)
        service = self._service
        response: Response
        try:
            try:
                caller, ingress = await service.read_request(request, fmt)
                response = await service.serve(request, fmt, caller, ingress)
            except SidecarError as exc:
                response = service.error(fmt, exc)
        except ClientGone:
            # An ordinary event (a client timed out or was killed mid-upload): one line, no traceback.
            log.info("client disconnected while sending POST %s", scope["path"])
            response = Response(status_code=499)
        except Exception as exc:
            log.error("internal error on POST %s: %s", scope["path"], type(exc).__name__, exc_info=exc)
            response = json_response({"error": "internal error"}, 500)
        if self._metrics is not None:
            self._metrics.request(template, "POST", response.status_code)
        await response(scope, receive, send)
