"""The AI Gateway model listing, ``GET <baseURL>/config`` (``@ai-sdk/gateway``'s ``getAvailableModels``), under any
base path as the language-model route is: ``/config``, ``/v4/ai/config``, ``/anything/config``.

Each servable model is a ``{id, name, pricing, specification, modelType}`` entry (ingress-formats.md §4.4). Prices are
USD per token as decimal strings (the catalog's are per 1M tokens); ``specification.specificationVersion`` must be
exactly ``"v4"`` or the client rejects the whole answer.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .errors import SidecarError
from .ingress import ai_gateway
from .models import ModelSpec, Pricing
from .responses import json_response
from .serving import GenerationService

REALTIME_API = "openai-realtime"
_MILLION = Decimal(1_000_000)


def ai_gateway_router(service: GenerationService) -> APIRouter:
    router = APIRouter()

    async def config(request: Request) -> Response:
        try:
            service.auth.authenticate_request(request.headers)
        except SidecarError as exc:
            body = ai_gateway.error_body(
                exc.status,
                exc.type,
                (
                    "Invalid or missing bearer token: pass the sidecar's workload token as the gateway apiKey "
                    "(Authorization: Bearer <token>)"
                ),
            )
            return json_response(body, exc.status)
        return json_response({"models": [model_entry(spec) for spec in service.registry.servable()]})

    router.add_api_route("/config", config, methods=["GET"], name="ai_gateway_config")
    router.add_api_route("/{base:path}/config", config, methods=["GET"], name="ai_gateway_config_under_base")
    return router


def model_entry(spec: ModelSpec) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": spec.full_id,
        "name": spec.name or spec.full_id,
        "specification": {"specificationVersion": "v4", "provider": spec.provider, "modelId": spec.full_id},
        "modelType": "realtime" if spec.api == REALTIME_API else "language",
    }
    if spec.pricing is not None:
        entry["pricing"] = per_token(spec.pricing)
    return entry


def per_token(pricing: Pricing) -> dict[str, str]:
    """The catalog's USD per 1M tokens as the gateway's USD-per-token strings; cache prices only when set."""
    out = {"input": _per_token(pricing.input), "output": _per_token(pricing.output)}
    if pricing.cache_read:
        out["input_cache_read"] = _per_token(pricing.cache_read)
    if pricing.cache_write:
        out["input_cache_write"] = _per_token(pricing.cache_write)
    return out


def _per_token(per_million: float) -> str:
    # In decimal, so 0.3 per 1M is "0.0000003" and not the float quotient's 2.9999999999999997e-07.
    return format((Decimal(repr(per_million)) / _MILLION).normalize(), "f")
