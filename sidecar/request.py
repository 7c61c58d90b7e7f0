"""Parse and validate a ``POST /v1/pi/stream`` body (protocol §2.2), with messages that say what to fix.

Validation runs once per request, never per event. It checks what the upstream translation relies on (roles,
block types, the fields each block needs) and lets through the optional fields newer clients add.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from client.types import Context

from .config import Limits
from .errors import BadRequest
from .identifiers import check_header, check_model_id, check_text, depth_exceeded, shown

# Protocol §2.2 (18.2.11 ``ALLOWED_OPTION_KEYS``): anything else the client sends is dropped silently.
ALLOWED_OPTION_KEYS = frozenset(
    "temperature topP topK minP presencePenalty frequencyPenalty repetitionPenalty stopSequences maxTokens "
    "cacheRetention cachedContent headers initiatorOverride maxRetryDelayMs metadata sessionId promptCacheKey "
    "promptCache statefulResponses streamFirstEventTimeoutMs streamIdleTimeoutMs reasoning disableReasoning "
    "forceReasoningOff hideThinkingSummary thinkingBudgets toolChoice serviceTier guardrailIdentifier "
    "guardrailVersion guardrailTrace requestMetadata kimiApiFormat syntheticApiFormat preferWebsockets "
    "openrouterVariant loopGuard acceptEmptyResponse anthropicCompaction".split()
) | {"models"}  # the sidecar's own: fallback models (sidecar.failover)
_NUMBER_OPTIONS = frozenset(
    "temperature topP topK minP presencePenalty frequencyPenalty repetitionPenalty maxTokens maxRetryDelayMs "
    "streamFirstEventTimeoutMs streamIdleTimeoutMs".split()
)
_BOOL_OPTIONS = frozenset(
    "statefulResponses disableReasoning forceReasoningOff hideThinkingSummary preferWebsockets "
    "acceptEmptyResponse".split()
)
_STRING_OPTIONS = frozenset("sessionId promptCacheKey cacheRetention reasoning serviceTier initiatorOverride".split())
_OBJECT_OPTIONS = frozenset("headers metadata thinkingBudgets requestMetadata".split())
_MAX_DURATION_MS = 86_400_000  # a day: a longer timeout is a mistake, and would let a stuck upstream hold its slot
_EFFORTS = frozenset({"minimal", "low", "medium", "high", "xhigh", "max"})

_USER_BLOCKS = frozenset({"text", "image"})
_ASSISTANT_BLOCKS = frozenset(
    {"text", "thinking", "redactedThinking", "toolCall", "image", "fallback", "anthropicServerTool"}
)
_ROLES = ("user", "developer", "assistant", "toolResult")


@dataclass(frozen=True, slots=True)
class PiRequest:
    model_id: str
    context: Context
    options: dict[str, Any]
    stream: bool
    session_id: str


def json_object(body: bytes, limits: Limits, example: str) -> dict[str, Any]:
    """The body as a JSON object nested no deeper than ``limits.max_json_depth``; ``example`` shows the shape. Every
    route's decoder starts here."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Invalid JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"Invalid JSON body: expected an object like {example}")
    too_deep = depth_exceeded(data, limits.max_json_depth)
    if too_deep is not None:
        where = too_deep if len(too_deep) <= 80 else too_deep[:80] + "…"
        raise BadRequest(
            f"`{where}` nests arrays/objects deeper than {limits.max_json_depth} levels; flatten it (or raise "
            "[server] max_json_depth)"
        )
    return data


def parse_request(body: bytes, limits: Limits) -> PiRequest:
    data = json_object(body, limits, '{"modelId": "provider/model", "context": {"messages": [...]}, "options": {}}')

    model_id = check_model_id(_model_id(data), "modelId", limits.max_identifier_chars)
    context = data.get("context")
    if not isinstance(context, dict):
        raise BadRequest("Missing `context` object")
    messages = context.get("messages")
    if not isinstance(messages, list):
        raise BadRequest("`context.messages` must be an array")
    system = context.get("systemPrompt")
    if system is not None and not (isinstance(system, list) and all(isinstance(s, str) for s in system)):
        raise BadRequest("`context.systemPrompt` must be an array of strings when present")
    tools = context.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise BadRequest("`context.tools` must be an array when present")
        for i, tool in enumerate(tools):
            _check_tool(tool, f"context.tools[{i}]")
    for i, message in enumerate(messages):
        _check_message(message, f"context.messages[{i}]")

    options = _options(data.get("options"), limits)
    stream = data.get("stream")
    if stream is None:
        stream = True
    elif not isinstance(stream, bool):
        raise BadRequest(f"`stream` must be true or false, got {type(stream).__name__}")
    return PiRequest(
        model_id=model_id,
        context=context,  # type: ignore[arg-type]  # checked above, field by field
        options=options,
        stream=stream,
        session_id=session_id_for(model_id, context, options),
    )


MAX_MODEL_CHOICES = 8
"""Fallback models a request may name (``options.models``, ``providerOptions.gateway.models``)."""


def model_choices(value: Any, where: str, limits: Limits) -> tuple[str, ...]:
    """A request's list of model ids (its fallbacks, in order), each checked like ``modelId``."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise BadRequest(f'`{where}` must be an array of model ids, e.g. ["openai/gpt-4o"]')
    if len(value) > MAX_MODEL_CHOICES:
        raise BadRequest(f"`{where}` names {len(value)} models; at most {MAX_MODEL_CHOICES} are allowed")
    return tuple(check_model_id(v.strip(), f"{where}[{i}]", limits.max_identifier_chars) for i, v in enumerate(value))


def _model_id(data: dict[str, Any]) -> str:
    value = data.get("modelId")
    if isinstance(value, str) and value.strip():
        return value.strip()
    model = data.get("model")
    if isinstance(model, str) and model.strip():
        return model.strip()
    if isinstance(model, dict) and isinstance(model.get("id"), str) and model["id"].strip():
        provider = model.get("provider")
        mid = model["id"].strip()
        return f"{provider}/{mid}" if isinstance(provider, str) and provider and "/" not in mid else mid
    raise BadRequest("Missing `modelId` (or `model.id`) field")


def _options(raw: Any, limits: Limits) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadRequest("`options` must be an object when present")
    options: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in ALLOWED_OPTION_KEYS or value is None:
            continue
        if key in _NUMBER_OPTIONS and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise BadRequest(f"`options.{key}` must be a number, got {type(value).__name__}")
        if key in _BOOL_OPTIONS and not isinstance(value, bool):
            raise BadRequest(f"`options.{key}` must be true or false")
        if key in _STRING_OPTIONS and not isinstance(value, str):
            raise BadRequest(f"`options.{key}` must be a string")
        if key in _OBJECT_OPTIONS and not isinstance(value, dict):
            raise BadRequest(f"`options.{key}` must be an object")
        if key == "stopSequences" and not (isinstance(value, list) and all(isinstance(s, str) for s in value)):
            raise BadRequest("`options.stopSequences` must be an array of strings")
        options[key] = value
    if "reasoning" in options and options["reasoning"] not in _EFFORTS:
        raise BadRequest(f"`options.reasoning` must be one of {', '.join(sorted(_EFFORTS))}")
    if "maxTokens" in options and options["maxTokens"] < 1:
        raise BadRequest("`options.maxTokens` must be at least 1")
    for key in ("streamFirstEventTimeoutMs", "streamIdleTimeoutMs", "maxRetryDelayMs"):
        if key in options and options[key] > _MAX_DURATION_MS:  # 0 or less disables the timeout or cap
            raise BadRequest(f"`options.{key}` must be at most {_MAX_DURATION_MS} milliseconds (0 disables it)")
    for key in ("sessionId", "promptCacheKey"):
        if key in options:
            check_text(options[key], f"options.{key}", limits.max_identifier_chars)
    if "models" in options:
        options["models"] = list(model_choices(options["models"], "options.models", limits))
    headers = options.get("headers")
    if headers is not None:
        size = 0
        for name, value in headers.items():
            if not isinstance(value, str):
                raise BadRequest(f"`options.headers` values must be strings; {shown(name)} is {type(value).__name__}")
            check_header(name, value, "options.headers")
            size += len(name) + len(value)
        if size > limits.max_header_bytes:
            raise BadRequest(f"`options.headers` add up to {size} bytes; the limit is {limits.max_header_bytes}")
    return options


def session_id_for(model_id: str, context: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    """The client's ``sessionId``, else a UUID derived from the conversation's stable prefix (as the reference)."""
    given = options.get("sessionId")
    if isinstance(given, str) and given.strip():
        return given.strip()
    first = context["messages"][0] if context["messages"] else None
    seed = b"\0".join(
        [
            model_id.encode(),
            "\n\n".join(context.get("systemPrompt") or []).encode(),
            orjson.dumps(context.get("tools") or []),
            orjson.dumps({"role": first.get("role"), "content": first.get("content")} if first else None),
        ]
    )
    digest = hashlib.sha256(seed).hexdigest()
    # str(uuid.UUID(digest[:32])), without building the UUID object on every request.
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def _fail(where: str, what: str) -> BadRequest:
    return BadRequest(f"`{where}` {what}")


def _check_tool(tool: Any, where: str) -> None:
    if not isinstance(tool, dict):
        raise _fail(where, "must be an object with `name`, `description` and `parameters` (JSON Schema)")
    if not isinstance(tool.get("name"), str) or not tool["name"]:
        raise _fail(where, "needs a non-empty string `name`")
    if "parameters" in tool and not isinstance(tool["parameters"], dict):
        raise _fail(f"{where}.parameters", "must be a JSON Schema object")


def _check_message(message: Any, where: str) -> None:
    if not isinstance(message, dict):
        raise _fail(where, "must be an object with a `role`")
    role = message.get("role")
    if role not in _ROLES:
        raise _fail(f"{where}.role", f"must be one of {', '.join(_ROLES)}, got {role!r}")
    content = message.get("content")
    if role in ("user", "developer"):
        if isinstance(content, str):
            return
        _check_blocks(content, f"{where}.content", _USER_BLOCKS, "a string or an array of text/image blocks")
    elif role == "assistant":
        _check_blocks(content, f"{where}.content", _ASSISTANT_BLOCKS, "an array of content blocks")
    else:
        if not isinstance(message.get("toolCallId"), str):
            raise _fail(f"{where}.toolCallId", "must be the string id of the tool call this result answers")
        _check_blocks(content, f"{where}.content", _USER_BLOCKS, "an array of text/image blocks")


def _check_blocks(content: Any, where: str, allowed: frozenset[str], shape: str) -> None:
    if not isinstance(content, list):
        raise _fail(where, f"must be {shape}")
    for i, block in enumerate(content):
        at = f"{where}[{i}]"
        if not isinstance(block, dict):
            raise _fail(at, "must be an object with a `type`")
        kind = block.get("type")
        if kind not in allowed:
            raise _fail(f"{at}.type", f"must be one of {', '.join(sorted(allowed))}, got {kind!r}")
        if kind == "text" and not isinstance(block.get("text"), str):
            raise _fail(f"{at}.text", "must be a string")
        elif kind == "image" and not (isinstance(block.get("data"), str) or isinstance(block.get("url"), str)):
            raise _fail(at, "image blocks need base64 `data` (or a `url`) and a `mimeType`")
        elif kind == "image" and isinstance(block.get("data"), str) and not isinstance(block.get("mimeType"), str):
            raise _fail(f"{at}.mimeType", 'must be a string such as "image/png"')
        elif kind == "thinking" and not isinstance(block.get("thinking"), str):
            raise _fail(f"{at}.thinking", "must be a string")
        elif kind == "toolCall":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise _fail(at, "tool calls need string `id` and `name`")
            if not isinstance(block.get("arguments", {}), dict):
                raise _fail(f"{at}.arguments", "must be an object")
