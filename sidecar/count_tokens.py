"""``POST /v1/messages/count_tokens``: Anthropic's token counter, which Claude Code calls before large requests.

Authenticated and decoded as ``/v1/messages`` is (the same bearer headers, the same field checks, ``max_tokens``
optional); the query (Claude Code's ``?beta=true``) does not matter. A model on the Anthropic Messages API gets
the provider's own count: the body goes to ``{base_url}/v1/messages/count_tokens`` with the model id rewritten to the
upstream's and the sidecar's key as ``x-api-key`` (never the workload bearer). Any other model gets an estimate
(``estimate_tokens``). Counting is free, so no ledger row is written and no budget or stream slot is taken.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import httpx2
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from client.types import Context
from sidecar.errors import SidecarError, UpstreamProtocolError, map_transport_errors, redact
from sidecar.identifiers import check_header
from sidecar.ingress import anthropic_messages
from sidecar.ingress.base import IngressRequest
from sidecar.registry import Resolved
from sidecar.responses import json_response
from sidecar.serving import GenerationService

COUNT_TOKENS_FORMAT = replace(
    anthropic_messages.FORMAT, name="anthropic-count-tokens", decode=anthropic_messages.decode_count_tokens
)
_API_VERSION = "2023-06-01"
_FORWARDED = ("anthropic-version", "anthropic-beta")
CHARS_PER_TOKEN = 4
IMAGE_TOKENS = 1600
"""Anthropic's figure for a ~1.15-megapixel image (width × height / 750), the size its docs recommend."""
MESSAGE_OVERHEAD_TOKENS = 3
_MAX_ERROR_CHARS = 2000


def count_tokens_router(service: GenerationService) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/messages/count_tokens")
    async def count_tokens(request: Request) -> Response:
        fmt = COUNT_TOKENS_FORMAT
        try:
            _, ingress = await service.read_request(request, fmt)
            resolved = service.registry.resolve(ingress.model_id, prefer=fmt.preferred_provider)
            if resolved.model.api == "anthropic-messages":
                return await _forward(service, request, ingress, resolved)
            return json_response({"input_tokens": estimate_tokens(ingress.context)})
        except SidecarError as exc:
            return service.error(fmt, exc)

    return router


async def _forward(
    service: GenerationService, request: Request, ingress: IngressRequest, resolved: Resolved
) -> Response:
    model = resolved.model
    key = resolved.credential.value if resolved.credential else None
    body = {**ingress.body, "model": model.id}
    headers = {"anthropic-version": _API_VERSION, "content-type": "application/json", "accept": "application/json"}
    headers.update({name.lower(): value for name, value in model.headers.items()})
    for name in _FORWARDED:
        value = request.headers.get(name)
        if value is not None:
            check_header(name, value, "request headers")
            headers[name] = value
    if key:
        headers["x-api-key"] = key  # set last: nothing the caller sends replaces the injected credential
    url = f"{model.base_url.rstrip('/')}/v1/messages/count_tokens"
    with map_transport_errors(model.provider):
        response = await service.client().http.post(url, content=orjson.dumps(body), headers=headers)
    secrets = (key,) if key else ()
    if response.is_success:
        try:
            counted = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(f"{model.provider} sent a count_tokens reply that is not JSON") from None
        if not isinstance(counted, dict) or not isinstance(counted.get("input_tokens"), int):
            raise UpstreamProtocolError(f"{model.provider} sent a count_tokens reply without `input_tokens`")
        return json_response(counted, response.status_code)
    return _upstream_error(response, secrets)


def _upstream_error(response: httpx2.Response, secrets: tuple[str, ...]) -> Response:
    """The provider's refusal with its status, in Anthropic's error shape, redacted of the key it was sent."""
    status = response.status_code
    kind = anthropic_messages.error_type(status)
    message = response.text.strip()
    try:
        error = orjson.loads(response.content).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        error = None
    if isinstance(error, dict):  # Anthropic's own envelope: keep its type and message
        given_type, given_message = error.get("type"), error.get("message")
        kind = given_type if isinstance(given_type, str) else kind
        message = given_message if isinstance(given_message, str) else message
    message = redact(message, secrets)[:_MAX_ERROR_CHARS] or f"upstream answered {status}"
    headers = {name: response.headers[name] for name in ("retry-after", "x-should-retry") if name in response.headers}
    body = {"type": "error", "error": {"type": redact(kind, secrets), "message": message}}
    return json_response(body, status, headers or None)


def estimate_tokens(context: Context) -> int:
    """An estimate for models without a counting endpoint: one token per ``CHARS_PER_TOKEN`` (4) characters of the
    system prompt, the messages' text, thinking and tool-call arguments (as JSON) and the tool definitions (as JSON),
    ``IMAGE_TOKENS`` per image (its base64 size says little about its token cost) and ``MESSAGE_OVERHEAD_TOKENS`` per
    message for the role markers. English prose averages about 4 characters per token for the GPT and Claude
    tokenizers; code and non-Latin scripts run higher, so treat it as a ballpark for context-window decisions."""
    chars = sum(len(text) for text in context.get("systemPrompt") or ())
    tools = context.get("tools")
    if tools:
        chars += len(orjson.dumps(tools))
    images = 0
    messages = context["messages"]
    for message in messages:
        content: Any = message.get("content")
        if isinstance(content, str):
            chars += len(content)
            continue
        for block in content or ():
            kind = block.get("type")
            if kind == "image":
                images += 1
            elif kind == "text":
                chars += len(block.get("text", ""))
            elif kind == "thinking":
                chars += len(block.get("thinking", ""))
            elif kind == "toolCall":
                chars += len(block.get("name", "")) + len(orjson.dumps(block.get("arguments") or {}))
    text_tokens = math.ceil(chars / CHARS_PER_TOKEN)
    return max(1, text_tokens + images * IMAGE_TOKENS + len(messages) * MESSAGE_OVERHEAD_TOKENS)
