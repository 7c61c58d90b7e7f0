"""What several ingress formats share: reading a JSON object body with the sidecar's bounds, the field checks whose
messages name the field, OpenAI's error body (Chat and Responses), and SSE framing with an ``event:`` line."""

from __future__ import annotations

from typing import Any

import orjson

from client.types import zero_usage
from sidecar.config import Limits
from sidecar.errors import BadRequest
from sidecar.identifiers import check_model_id
from sidecar.request import json_object as json_object  # re-exported: every decoder starts there


def model_field(data: dict[str, Any], limits: Limits, name: str = "model") -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"Missing `{name}`: name the model as provider/id (like openai/gpt-4o) or a bare id")
    return check_model_id(value.strip(), name, limits.max_identifier_chars)


def fail(where: str, what: str) -> BadRequest:
    return BadRequest(f"`{where}` {what}")


def optional(data: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    """``data[key]`` when present and not null, checked to be ``kind`` (booleans are not numbers)."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise fail(key, f"must be {what}")
    if not isinstance(value, kind):
        raise fail(key, f"must be {what}, got {type(value).__name__}")
    return value


def number(data: dict[str, Any], key: str) -> float | int | None:
    value: float | int | None = optional(data, key, (int, float), "a number")
    return value


def sse_event(name: str, payload: dict[str, Any]) -> bytes:
    """``event: <name>`` + ``data: <json>``: Anthropic's and OpenAI Responses' framing."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


# OpenAI's error body: {"error": {"message", "type", "param", "code"}}. Types and codes as OpenAI sends them per status;
# the SDKs raise by status (AuthenticationError, RateLimitError …) and show the message.
_OPENAI_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout_error", "timeout"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    499: ("request_aborted", "client_closed_request"),
    503: ("server_error", "overloaded"),
    504: ("timeout_error", "upstream_timeout"),
}


def openai_error(status: int, type_: str, message: str) -> dict[str, Any]:
    """The ``error`` object of OpenAI's error body; ``type_`` (the sidecar's) becomes the code where OpenAI has none."""
    kind, code = _OPENAI_ERRORS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    if type_ == "rate_limit_exceeded" and status == 429:
        code = "rate_limit_exceeded"  # the workload's budget or stream limit: not the provider's
    elif type_ == "forbidden":
        kind, code = "permission_error", "forbidden"
    return {"message": message, "type": kind, "param": None, "code": code or type_}


def openai_error_body(status: int, type_: str, message: str) -> dict[str, Any]:
    return {"error": openai_error(status, type_, message)}


def assistant_turn(content: list[dict[str, Any]]) -> dict[str, Any]:
    """A past assistant turn of the conversation as a pi ``AssistantMessage`` (the fields adapters read)."""
    calls = any(block.get("type") == "toolCall" for block in content)
    return {
        "role": "assistant",
        "content": content,
        "api": "",
        "provider": "",
        "model": "",
        "usage": zero_usage(),
        "stopReason": "toolUse" if calls else "stop",
        "timestamp": 0,
    }


def tool_result(call_id: str, name: str, content: list[dict[str, Any]], is_error: bool = False) -> dict[str, Any]:
    return {
        "role": "toolResult",
        "toolCallId": call_id,
        "toolName": name,
        "content": content,
        "isError": is_error,
        "timestamp": 0,
    }


def image_from_url(url: str) -> dict[str, Any]:
    """A pi image block from a URL; a ``data:`` URL becomes inline base64 data."""
    if url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        mime, _, encoding = header.partition(";")
        if encoding == "base64" and data:
            return {"type": "image", "data": data, "mimeType": mime or "image/png"}
    return {"type": "image", "url": url, "data": "", "mimeType": ""}


_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


def pi_tool(spec: dict[str, Any], where: str, schema_field: str, *, schema_required: bool) -> dict[str, Any]:
    """A function tool as pi takes it (``{name, description, parameters, strict?}``) from ``spec``: the format's tool
    object (OpenAI Chat's ``function``), whose JSON Schema is under ``schema_field``. A format whose schema is
    required refuses a missing one; the others get an empty object schema."""
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise fail(f"{where}.name", "must be a non-empty string")
    schema = spec.get(schema_field)
    if not isinstance(schema, dict) and (schema_required or schema is not None):
        raise fail(f"{where}.{schema_field}", 'must be a JSON Schema object such as {"type": "object"}')
    description = spec.get("description")
    tool: dict[str, Any] = {
        "name": name,
        "description": description if isinstance(description, str) else "",
        "parameters": schema if schema is not None else dict(_EMPTY_SCHEMA),
    }
    if isinstance(spec.get("strict"), bool):
        tool["strict"] = spec["strict"]
    return tool
