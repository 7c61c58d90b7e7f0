"""The model routes' cold neighbours: ``GET /v1/models`` (one body both families' SDKs read) and ``POST
/v1/messages/count_tokens``. The routes that run a generation are ``sidecar.model_routes``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .errors import SidecarError
from .responses import json_response
from .serving import GenerationService


def ingress_router(service: GenerationService) -> APIRouter:
    router = APIRouter()
    from .count_tokens import count_tokens_router  # POST /v1/messages/count_tokens

    router.include_router(count_tokens_router(service))

    @router.get("/v1/models")
    async def list_models(request: Request) -> Response:
        """The servable models in one body that both families' SDKs read: OpenAI's ``{object, data:[{id, object,
        created, owned_by}]}`` and Anthropic's ``{data:[{id, type, display_name, created_at}], has_more, first_id,
        last_id}``, plus the sidecar's own fields (``api``, limits)."""
        try:
            caller = service.auth.authenticate_request(request.headers)
        except SidecarError as exc:
            return json_response({"error": {"type": "authentication_error", "message": exc.message}}, exc.status)
        allowed = service.policy.allows_model  # only the models this caller may use
        data = [_model_row(spec) for spec in service.registry.servable() if allowed(caller, spec.full_id)]
        body = {
            "object": "list",
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
        return json_response(body)

    return router


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
