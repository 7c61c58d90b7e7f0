"""The model routes of the other wire formats (OpenAI Chat and Responses, Anthropic Messages, the AI SDK Gateway
language-model protocol) and ``GET /v1/models``: each is a row of ``ROUTES`` served by ``GenerationService``.

Paths match without their query (Claude Code posts ``/v1/messages?beta=true``). Every refusal, including a wrong
bearer, is in the route's own error shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .errors import SidecarError
from .ingress import FORMATS
from .ingress.base import IngressFormat
from .responses import json_response
from .serving import GenerationService

ROUTES: tuple[tuple[str, str], ...] = (
    ("/v1/chat/completions", "openai-chat"),
    ("/chat/completions", "openai-chat"),  # an OpenAI base URL set without its /v1
    ("/v1/responses", "openai-responses"),
    ("/responses", "openai-responses"),  # an OpenAI base URL set without its /v1
    ("/language-model", "ai-gateway"),
    ("/{base:path}/language-model", "ai-gateway"),  # @ai-sdk/gateway appends it to any baseURL (/v4/ai …)
    ("/v1/messages", "anthropic-messages"),
)
"""``(path, format name)``: the POST routes that run one generation in that format."""


def ingress_router(service: GenerationService) -> APIRouter:
    router = APIRouter()
    for path, name in ROUTES:
        if name in FORMATS:
            router.add_api_route(path, _generation_route(service, FORMATS[name]), methods=["POST"])
    from .count_tokens import count_tokens_router  # POST /v1/messages/count_tokens

    router.include_router(count_tokens_router(service))

    @router.get("/v1/models")
    async def list_models(request: Request) -> Response:
        """The servable models in one body that both families' SDKs read: OpenAI's ``{object, data:[{id, object,
        created, owned_by}]}`` and Anthropic's ``{data:[{id, type, display_name, created_at}], has_more, first_id,
        last_id}``, plus the sidecar's own fields (``api``, limits)."""
        try:
            service.auth.authenticate_request(request.headers)
        except SidecarError as exc:
            return json_response({"error": {"type": "authentication_error", "message": exc.message}}, exc.status)
        data = [_model_row(spec) for spec in service.registry.servable()]
        body = {
            "object": "list",
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
        return json_response(body)

    return router


def _generation_route(service: GenerationService, fmt: IngressFormat) -> Any:
    async def route(request: Request) -> Response:
        try:
            caller, ingress = await service.read_request(request, fmt)
            return await service.serve(request, fmt, caller, ingress)
        except SidecarError as exc:
            return service.error(fmt, exc)

    route.__name__ = f"{fmt.name.replace('-', '_')}_route"
    return route


_EPOCH_ISO = "1970-01-01T00:00:00Z"


def _model_row(spec: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": spec.full_id,
        "object": "model",
        "type": "model",
        "created": 0,
        "created_at": _EPOCH_ISO,
        "owned_by": spec.provider,
        "display_name": spec.name or spec.full_id,  # Claude Code drops the whole list on a null display_name
        "api": spec.api,
        "input_modalities": list(spec.input),
    }
    if spec.context_window:
        row["context_length"] = spec.context_window
        row["max_input_tokens"] = spec.context_window
    if spec.max_tokens:
        row["max_output_tokens"] = spec.max_tokens
        row["max_tokens"] = spec.max_tokens
    return row
