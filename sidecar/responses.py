"""The JSON bodies and headers every HTTP route answers with: one place for the envelope and the CORS headers."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response

from .errors import SidecarError, Unauthorized

CORS_HEADERS = {
    "access-control-allow-origin": "*",
    "access-control-expose-headers": "x-generation-id, x-request-id, request-id",
}
"""On every response: a browser reads only these outside a preflight, and each header costs the server per response."""
PREFLIGHT_HEADERS = {
    **CORS_HEADERS,
    "access-control-allow-methods": "GET, POST, OPTIONS",
    "access-control-allow-headers": "authorization, x-api-key, x-goog-api-key, content-type, accept, "
    "x-omp-install-id, x-omp-hostname, x-omp-app, anthropic-beta, anthropic-version, "
    "anthropic-dangerous-direct-browser-access, openai-organization, openai-project, openai-beta, "
    "ai-language-model-specification-version, ai-language-model-id, ai-language-model-streaming, "
    "ai-gateway-protocol-version, ai-gateway-auth-method, x-openai-agents-sdk",
    "access-control-max-age": "86400",
}
"""The answer to a CORS preflight (``OPTIONS``): what a browser may send, and for how long it may remember that."""
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no", **CORS_HEADERS}
_JSON_HEADERS = {"cache-control": "no-store", **CORS_HEADERS}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body),
        status,
        headers={**_JSON_HEADERS, **(headers or {})},
        media_type="application/json; charset=utf-8",
    )


def error_envelope(status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """The documented pre-stream error body: ``{"error": {"type", "message"}}``."""
    return json_response({"error": {"type": type_, "message": message}}, status, headers)


def error_response(exc: SidecarError) -> Response:
    if isinstance(exc, Unauthorized):
        return json_response({"error": "unauthorized"}, 401)  # a string, as the reference gateway sends it
    return error_envelope(exc.status, exc.type, exc.message, exc.headers or None)
