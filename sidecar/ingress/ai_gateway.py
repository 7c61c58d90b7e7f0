"""The AI SDK Gateway language-model protocol (``@ai-sdk/gateway``: ``POST <baseURL>/language-model``) as an ingress
format: what ``generateText``/``streamText`` send when an app points ``createGateway({baseURL})`` at the sidecar.

The body is the AI SDK's ``LanguageModelV4CallOptions`` untranslated (ingress-formats.md §4.1); the model and the mode
ride in headers (``ai-language-model-id``, ``ai-language-model-streaming``). The stream is one
``LanguageModelV4StreamPart`` JSON per ``data:`` line (§4.2), the non-streaming body a ``LanguageModelV4GenerateResult``
(§4.3), errors the gateway's ``{"error": {"message", "type", "param"?}}`` (§4.5), whose ``type`` (not the status) picks
the client's error class. ``providerMetadata.gateway.generationId`` goes on the first content part and on ``finish``
(or on the generate result): the id ``GET /v1/generation?id=`` looks up.

Anthropic thinking signatures round-trip the way ``@ai-sdk/anthropic`` carries them: out as
``providerMetadata.anthropic.signature`` (``redactedData`` for redacted thinking) on the reasoning part, back in as the
same key under the prompt's reasoning part ``providerOptions``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

import orjson

from client.types import AssistantMessage, StopReason, Usage
from sidecar.config import Limits
from sidecar.errors import BadRequest
from sidecar.identifiers import check_model_id, shown
from sidecar.ingress.base import IngressFormat, IngressRequest
from sidecar.ingress.common import assistant_turn, fail, json_object, pi_tool, tool_result
from sidecar.ledger.record import Attribution
from sidecar.models import ModelSpec
from sidecar.request import MAX_MODEL_CHOICES, model_choices, session_id_for
from sidecar.stream import BlockKind, frame

MODEL_HEADER = "ai-language-model-id"
STREAMING_HEADER = "ai-language-model-streaming"
_EXAMPLE = '{"prompt": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]} (LanguageModelV4CallOptions)'

# Call options pi takes under the same name; numbers only (AP `language-model-v4-call-options.ts`).
_NUMBER_OPTIONS = ("temperature", "topP", "topK", "presencePenalty", "frequencyPenalty")
_EFFORTS = frozenset({"minimal", "low", "medium", "high", "xhigh", "max"})
_REASONING_VALUES = ("provider-default", "none", *sorted(_EFFORTS))
_TOOL_CHOICES = frozenset({"auto", "none", "required"})
_FINISH: dict[str, str] = {
    "stop": "stop",
    "length": "length",
    "toolUse": "tool-calls",
    "error": "error",
    "aborted": "interrupted",
}
# Call options the upstream adapters have no field for: reported as `unsupported` warnings (stream-start / result).
_UNSUPPORTED = {
    "seed": "seed is not forwarded to the upstream provider",
    "responseFormat": "JSON response format is not enforced; the model is asked in plain text",
}
_IMAGE_MAGIC = (
    (b"\x89PNG", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
)
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+*-]+);base64,(.*)", re.DOTALL)
_UNKNOWN_MODEL = re.compile(r"Unknown model: (\S+?)\. ")


# ----- request ---------------------------------------------------------------------------------------------------


def decode(body: bytes, headers: Mapping[str, str], limits: Limits) -> IngressRequest:
    data = json_object(body, limits, _EXAMPLE)
    model_id = headers.get(MODEL_HEADER)
    if not model_id or not model_id.strip():
        raise BadRequest(
            f"Missing header {MODEL_HEADER}: point @ai-sdk/gateway's createGateway({{baseURL}}) at this sidecar, "
            "or send the model id (e.g. anthropic/claude-sonnet-4-5) in that header"
        )
    model_id = check_model_id(model_id.strip(), MODEL_HEADER, limits.max_identifier_chars)
    stream = _streaming(headers.get(STREAMING_HEADER))

    prompt = data.get("prompt")
    if not isinstance(prompt, list) or not prompt:
        raise BadRequest("`prompt` must be a non-empty array of messages (LanguageModelV4Prompt)")
    system, messages = _messages(prompt)
    context: dict[str, Any] = {"messages": messages}
    if system:
        context["systemPrompt"] = system
    tools = _tools(data.get("tools"))
    if tools:
        context["tools"] = tools

    options = _options(data)
    model_id, fallbacks = _routing(data.get("providerOptions"), model_id, limits)
    return IngressRequest(
        model_id=model_id,
        context=context,  # type: ignore[arg-type]  # built block by block above
        options=options,
        stream=stream,
        session_id=session_id_for(model_id, context, options),
        body=data,
        attribution=_attribution(data.get("providerOptions")),
        fallbacks=fallbacks,
    )


def _streaming(value: str | None) -> bool:
    if value is None:
        return True  # @ai-sdk/gateway always sends it; a bare curl gets the stream
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise BadRequest(f'Header {STREAMING_HEADER} must be "true" or "false", got {shown(value)}')
    return lowered == "true"


def _messages(prompt: list[Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """The prompt as pi's system prompt and messages; system messages may appear anywhere and are kept in order."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(prompt):
        where = f"prompt[{i}]"
        if not isinstance(message, dict):
            raise fail(where, "must be a message object with a `role`")
        role, content = message.get("role"), message.get("content")
        if role == "system":
            if not isinstance(content, str):
                raise fail(f"{where}.content", "must be a string for a system message")
            system.append(content)
            continue
        if not isinstance(content, list):
            raise fail(f"{where}.content", "must be an array of parts")
        parts = [_part(part, f"{where}.content[{j}]") for j, part in enumerate(content)]
        if role == "user":
            messages.append({"role": "user", "content": [_user_block(p, w) for p, w in _typed(parts, where)]})
        elif role == "assistant":
            blocks = [b for p, w in _typed(parts, where) if (b := _assistant_block(p, w)) is not None]
            messages.append(assistant_turn(blocks))
        elif role == "tool":
            messages.extend(_tool_result(p, w) for p, w in _typed(parts, where) if p["type"] == "tool-result")
        else:
            raise fail(f"{where}.role", f"must be one of system, user, assistant, tool, got {shown(str(role))}")
    return system, messages


def _part(part: Any, where: str) -> dict[str, Any]:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise fail(where, "must be a part object with a string `type`")
    return part


def _typed(parts: list[dict[str, Any]], where: str) -> list[tuple[dict[str, Any], str]]:
    return [(p, f"{where}.content[{j}]") for j, p in enumerate(parts)]


def _text(part: dict[str, Any], where: str, key: str = "text") -> str:
    value = part.get(key)
    if not isinstance(value, str):
        raise fail(f"{where}.{key}", "must be a string")
    return value


def _user_block(part: dict[str, Any], where: str) -> dict[str, Any]:
    kind = part["type"]
    if kind == "text":
        return {"type": "text", "text": _text(part, where)}
    if kind == "file":
        return _file_block(part, where)
    raise fail(f"{where}.type", f"must be text or file in a user message, got {shown(kind)}")


def _file_block(part: dict[str, Any], where: str) -> dict[str, Any]:
    """A file part as a pi image block (or a text block for inline text files): pi's messages carry nothing else."""
    media = part.get("mediaType")
    if not isinstance(media, str):
        raise fail(f"{where}.mediaType", 'must be a string such as "image/png"')
    data = part.get("data")
    if not isinstance(data, dict):
        raise fail(f"{where}.data", 'must be {"type": "data", "data": <base64>} or {"type": "url", "url": …}')
    source = data.get("type")
    if source == "text" and media.startswith("text/"):
        return {"type": "text", "text": _text(data, f"{where}.data")}
    if not media.startswith("image/"):
        raise fail(
            f"{where}.mediaType",
            f"is {shown(media)}: this sidecar forwards image files only (send other documents as text)",
        )
    if source == "data":
        b64 = _text(data, f"{where}.data", "data")
        return {"type": "image", "data": b64, "mimeType": _image_type(media, b64)}
    if source == "url":
        url = _text(data, f"{where}.data", "url")
        inline = _DATA_URL.fullmatch(url)
        if inline:
            return {"type": "image", "data": inline[2], "mimeType": _image_type(inline[1], inline[2])}
        return {"type": "image", "data": "", "url": url, "mimeType": media}
    raise fail(f"{where}.data.type", f"must be data or url, got {shown(str(source))}")


def _image_type(media: str, b64: str) -> str:
    """A concrete image type: the AI SDK sends ``image/*`` when the app named none; providers need the real one."""
    if media != "image/*":
        return media
    try:
        head = base64.b64decode(b64[:24] + "=" * (-len(b64[:24]) % 4))
    except (binascii.Error, ValueError):
        head = b""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in _IMAGE_MAGIC if head.startswith(magic)), "image/png")


def _assistant_block(part: dict[str, Any], where: str) -> dict[str, Any] | None:
    kind = part["type"]
    if kind == "text":
        return {"type": "text", "text": _text(part, where)}
    if kind == "reasoning":
        return _reasoning_block(part, where)
    if kind == "tool-call":
        if part.get("providerExecuted"):
            return None  # a provider-executed call (web search …) is the provider's own history, not replayable here
        call_id, name = part.get("toolCallId"), part.get("toolName")
        if not isinstance(call_id, str) or not isinstance(name, str):
            raise fail(where, "tool calls need string `toolCallId` and `toolName`")
        return {"type": "toolCall", "id": call_id, "name": name, "arguments": _arguments(part.get("input"), where)}
    if kind == "file" and isinstance(part.get("mediaType"), str) and part["mediaType"].startswith("image/"):
        return _file_block(part, where)
    # Provider-executed tool results, custom parts, reasoning files and other files have no pi equivalent upstream.
    return None


def _reasoning_block(part: dict[str, Any], where: str) -> dict[str, Any]:
    text = _text(part, where)
    options = part.get("providerOptions")
    anthropic = options.get("anthropic") if isinstance(options, dict) else None
    anthropic = anthropic if isinstance(anthropic, dict) else {}
    if isinstance(anthropic.get("redactedData"), str):
        return {"type": "redactedThinking", "data": anthropic["redactedData"]}
    block: dict[str, Any] = {"type": "thinking", "thinking": text}
    if isinstance(anthropic.get("signature"), str):
        block["thinkingSignature"] = anthropic["signature"]
    return block


def _arguments(value: Any, where: str) -> dict[str, Any]:
    if isinstance(value, str):  # some apps replay the JSON text the stream gave them
        try:
            value = orjson.loads(value) if value.strip() else {}
        except orjson.JSONDecodeError:
            raise fail(f"{where}.input", "is a string that is not JSON; send the tool input object") from None
    if not isinstance(value, dict):
        raise fail(f"{where}.input", "must be the tool input object")
    return value


def _tool_result(part: dict[str, Any], where: str) -> dict[str, Any]:
    call_id, name = part.get("toolCallId"), part.get("toolName")
    if not isinstance(call_id, str):
        raise fail(f"{where}.toolCallId", "must be the string id of the tool call this result answers")
    output = part.get("output")
    if not isinstance(output, dict):
        raise fail(f"{where}.output", 'must be an object such as {"type": "text", "value": "…"}')
    content, is_error = _tool_output(output, f"{where}.output")
    return tool_result(call_id, name if isinstance(name, str) else "", content, is_error)


def _tool_output(output: dict[str, Any], where: str) -> tuple[list[dict[str, Any]], bool]:
    kind, value = output.get("type"), output.get("value")
    if kind in ("text", "error-text"):
        if not isinstance(value, str):
            raise fail(f"{where}.value", "must be a string")
        return [{"type": "text", "text": value}], kind == "error-text"
    if kind in ("json", "error-json"):
        return [{"type": "text", "text": orjson.dumps(value).decode()}], kind == "error-json"
    if kind == "execution-denied":
        reason = output.get("reason")
        text = f"Tool execution denied: {reason}" if isinstance(reason, str) and reason else "Tool execution denied"
        return [{"type": "text", "text": text}], True
    if kind == "content":
        if not isinstance(value, list):
            raise fail(f"{where}.value", "must be an array of text and file parts")
        blocks = []
        for i, item in enumerate(value):
            item = _part(item, f"{where}.value[{i}]")
            if item["type"] == "text":
                blocks.append({"type": "text", "text": _text(item, f"{where}.value[{i}]")})
            elif item["type"] == "file":
                blocks.append(_file_block(item, f"{where}.value[{i}]"))
        return blocks, False
    raise fail(
        f"{where}.type", f"must be text, json, error-text, error-json, execution-denied or content, got {kind!r}"
    )


def _tools(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise fail("tools", "must be an array of function tools")
    tools = []
    for i, tool in enumerate(raw):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise fail(where, "must be a tool object")
        if tool.get("type") != "function":
            raise fail(
                where,
                f"is a {shown(str(tool.get('type')))} tool ({shown(str(tool.get('id')))}): this sidecar runs "
                "function tools only; provider-defined tools (web search, code execution …) are not supported",
            )
        tools.append(pi_tool(tool, where, "inputSchema", schema_required=True))
    return tools


def _options(data: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    max_tokens = data.get("maxOutputTokens")
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise fail("maxOutputTokens", "must be a whole number of at least 1")
        options["maxTokens"] = max_tokens
    for name in _NUMBER_OPTIONS:
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail(name, f"must be a number, got {type(value).__name__}")
        options[name] = value
    stops = data.get("stopSequences")
    if stops is not None:
        if not (isinstance(stops, list) and all(isinstance(s, str) for s in stops)):
            raise fail("stopSequences", "must be an array of strings")
        if stops:
            options["stopSequences"] = stops
    choice = _tool_choice(data.get("toolChoice"))
    if choice is not None:
        options["toolChoice"] = choice
    reasoning = data.get("reasoning")
    if reasoning is not None and reasoning not in _REASONING_VALUES:
        raise fail("reasoning", f"must be one of {', '.join(_REASONING_VALUES)}, got {shown(str(reasoning))}")
    if reasoning in _EFFORTS:
        options["reasoning"] = reasoning
    elif reasoning == "none":
        options["disableReasoning"] = True
    # `headers` (the call's own headers) are not read from the body: @ai-sdk/gateway also sends them as HTTP headers,
    # where the passthrough list of sidecar.serving applies to them as to every route.
    return options


def _tool_choice(raw: Any) -> Any:
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind in _TOOL_CHOICES:
        return kind
    if kind == "tool":
        name = raw.get("toolName")
        if not isinstance(name, str) or not name:
            raise fail("toolChoice.toolName", "must name one of `tools`")
        return {"type": "tool", "name": name}
    raise fail("toolChoice", 'must be {"type": "auto" | "none" | "required"} or {"type": "tool", "toolName": …}')


def _routing(provider_options: Any, model_id: str, limits: Limits) -> tuple[str, tuple[str, ...]]:
    """The model to try first and the fallbacks, from ``providerOptions.gateway``: ``order`` names providers to try
    the model on, in that order (``<provider>/<id>``, where that provider catalogs it), before the one the model id
    names; ``models`` names fallback models, tried after them."""
    gateway = provider_options.get("gateway") if isinstance(provider_options, dict) else None
    if not isinstance(gateway, dict):
        return model_id, ()  # a wrong shape is refused by _attribution
    candidates = [model_id]
    order = gateway.get("order")
    if order is not None:
        if not isinstance(order, list) or not all(isinstance(p, str) and p and "/" not in p for p in order):
            raise fail("providerOptions.gateway.order", 'must be an array of provider names, e.g. ["bedrock"]')
        bare = model_id.partition("/")[2] or model_id
        where = "providerOptions.gateway.order"
        candidates = [check_model_id(f"{p}/{bare}", where, limits.max_identifier_chars) for p in order] + candidates
    if gateway.get("models") is not None:
        candidates += model_choices(gateway["models"], "providerOptions.gateway.models", limits)
    candidates = list(dict.fromkeys(candidates))
    if len(candidates) > MAX_MODEL_CHOICES + 1:
        raise fail("providerOptions.gateway", f"names more than {MAX_MODEL_CHOICES} providers and models to try")
    return candidates[0], tuple(candidates[1:])


def _attribution(provider_options: Any) -> Attribution:
    if provider_options is None:
        return Attribution()
    if not isinstance(provider_options, dict):
        raise fail("providerOptions", "must be an object keyed by provider")
    gateway = provider_options.get("gateway")
    if gateway is None:
        return Attribution()
    if not isinstance(gateway, dict):
        raise fail("providerOptions.gateway", "must be an object")
    return Attribution.from_gateway_options(gateway, "providerOptions.gateway")


def warnings(body: Mapping[str, Any]) -> list[dict[str, str]]:
    """``SharedV4Warning``s for call options the sidecar accepts but does not apply."""
    out = [
        {"type": "unsupported", "feature": name, "details": details}
        for name, details in _UNSUPPORTED.items()
        if body.get(name) is not None and not (name == "responseFormat" and _is_text_format(body[name]))
    ]
    gateway = (body.get("providerOptions") or {}).get("gateway")
    if isinstance(gateway, dict) and gateway.get("byok"):
        out.append(
            {
                "type": "unsupported",
                "feature": "providerOptions.gateway.byok",
                "details": "the sidecar calls the provider with the key it holds",
            }
        )
    return out


def _is_text_format(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") == "text"


# ----- response --------------------------------------------------------------------------------------------------


def usage_v4(usage: Usage) -> dict[str, Any]:
    """pi's usage (``input`` excludes cached tokens; reasoning is part of ``output``) as ``LanguageModelV4Usage``."""
    reasoning = usage.get("reasoningTokens", 0)
    return {
        "inputTokens": {
            "total": usage["input"] + usage["cacheRead"] + usage["cacheWrite"],
            "noCache": usage["input"],
            "cacheRead": usage["cacheRead"],
            "cacheWrite": usage["cacheWrite"],
        },
        "outputTokens": {"total": usage["output"], "text": max(usage["output"] - reasoning, 0), "reasoning": reasoning},
    }


def finish_reason(reason: StopReason) -> dict[str, str]:
    return {"unified": _FINISH.get(reason, "other"), "raw": reason}


def usd(value: float) -> str:
    """A USD amount as the gateway writes it: a decimal string, never an exponent (``3e-07`` → ``0.0000003``), rounded
    to 12 decimals so float sums print as ``0.002106`` rather than ``0.0021060000000000002``."""
    return format(Decimal(repr(round(value, 12))).normalize(), "f")


def gateway_metadata(generation_id: str, message: AssistantMessage | None = None) -> dict[str, Any]:
    gateway: dict[str, Any] = {"generationId": generation_id}
    if message is not None:
        gateway["cost"] = usd(message["usage"]["cost"]["total"])
    return {"gateway": gateway}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _reasoning_metadata(content: Mapping[str, Any]) -> dict[str, Any] | None:
    """What @ai-sdk/anthropic puts on a reasoning part, so the app's next turn sends the signature back."""
    if content.get("type") == "redactedThinking":
        return {"anthropic": {"redactedData": content.get("data", "")}}
    signature = content.get("thinkingSignature")
    return {"anthropic": {"signature": signature}} if signature else None


def _tool_input(content: Mapping[str, Any]) -> str:
    return orjson.dumps(content.get("arguments") or {}).decode()


class GatewayEncoder:
    """The block lifecycle as ``LanguageModelV4StreamPart``s. Part ids are per content index (``t0``, ``r1``); tool
    parts use the call id, fixed at ``block_start`` so every part of one call agrees."""

    def __init__(self, request: IngressRequest, model: ModelSpec, generation_id: str) -> None:
        self.generation_id = generation_id
        self.model_id = model.full_id
        self.warnings = warnings(request.body)
        self._ids: dict[int, str] = {}
        self._first_content = True

    def start(self, message: AssistantMessage) -> bytes:
        metadata = {
            "type": "response-metadata",
            "id": self.generation_id,
            "modelId": self.model_id,
            "timestamp": _iso(message["timestamp"]),
        }
        return frame({"type": "stream-start", "warnings": self.warnings}) + frame(metadata)

    def _id(self, kind: BlockKind, index: int, content: Mapping[str, Any]) -> str:
        if kind == "toolCall":
            return content.get("id") or f"call_{self.generation_id}_{index}"
        return f"{'t' if kind == 'text' else 'r'}{index}"

    def block_start(self, kind: BlockKind, index: int, content: dict[str, Any], message: AssistantMessage) -> bytes:
        part_id = self._ids[index] = self._id(kind, index, content)
        if kind == "text":
            part: dict[str, Any] = {"type": "text-start", "id": part_id}
        elif kind == "thinking":
            part = {"type": "reasoning-start", "id": part_id}
        else:
            part = {"type": "tool-input-start", "id": part_id, "toolName": content.get("name", "")}
        if self._first_content:
            self._first_content = False
            part["providerMetadata"] = gateway_metadata(self.generation_id)
        return frame(part)

    def block_delta(self, kind: BlockKind, index: int, delta: str, message: AssistantMessage) -> bytes:
        kind_name = "text-delta" if kind == "text" else "reasoning-delta" if kind == "thinking" else "tool-input-delta"
        return frame({"type": kind_name, "id": self._ids[index], "delta": delta})

    def block_end(self, kind: BlockKind, index: int, content: dict[str, Any], message: AssistantMessage) -> bytes:
        part_id = self._ids.pop(index)
        if kind == "text":
            return frame({"type": "text-end", "id": part_id})
        if kind == "thinking":
            part: dict[str, Any] = {"type": "reasoning-end", "id": part_id}
            metadata = _reasoning_metadata(content)
            if metadata is not None:
                part["providerMetadata"] = metadata
            return frame(part)
        call = {"type": "tool-call", "toolCallId": part_id, "toolName": content["name"], "input": _tool_input(content)}
        return frame({"type": "tool-input-end", "id": part_id}) + frame(call)

    def done(self, reason: StopReason, message: AssistantMessage) -> bytes:
        return self._finish(reason, message)

    def error(self, reason: Literal["error", "aborted"], message: AssistantMessage) -> bytes:
        status = message.get("errorStatus") or 502
        error = {
            "message": message.get("errorMessage", "upstream error"),
            "type": gateway_type(status),
            "statusCode": status,
        }
        return frame({"type": "error", "error": error}) + self._finish(reason, message)

    def _finish(self, reason: StopReason, message: AssistantMessage) -> bytes:
        part = {
            "type": "finish",
            "finishReason": finish_reason(reason),
            "usage": usage_v4(message["usage"]),
            "providerMetadata": gateway_metadata(self.generation_id, message),
        }
        return frame(part)


def encoder(request: IngressRequest, model: ModelSpec, generation_id: str) -> GatewayEncoder:
    return GatewayEncoder(request, model, generation_id)


def render(request: IngressRequest, message: AssistantMessage, generation_id: str) -> Any:
    """The ``LanguageModelV4GenerateResult``. @ai-sdk/gateway overwrites ``response`` with the HTTP headers and body;
    it is sent for other readers of the JSON."""
    content: list[dict[str, Any]] = []
    blocks: list[dict[str, Any]] = message["content"]  # type: ignore[assignment]  # read field by field
    for block in blocks:
        kind = block["type"]
        if kind == "text":
            content.append({"type": "text", "text": block["text"]})
        elif kind in ("thinking", "redactedThinking"):
            part: dict[str, Any] = {"type": "reasoning", "text": block.get("thinking", "")}
            metadata = _reasoning_metadata(block)
            if metadata is not None:
                part["providerMetadata"] = metadata
            content.append(part)
        elif kind == "toolCall":
            content.append(
                {
                    "type": "tool-call",
                    "toolCallId": block["id"],
                    "toolName": block["name"],
                    "input": _tool_input(block),
                }
            )
    return {
        "content": content,
        "finishReason": finish_reason(message["stopReason"]),
        "usage": usage_v4(message["usage"]),
        "providerMetadata": gateway_metadata(generation_id, message),
        "warnings": warnings(request.body),
        "response": {
            "id": generation_id,
            "modelId": f"{message['provider']}/{message['model']}",
            "timestamp": _iso(message["timestamp"]),
        },
    }


# ----- errors ----------------------------------------------------------------------------------------------------

# The gateway's error types (AG `errors/create-gateway-error.ts`) by the status the sidecar answers with.
_TYPES_BY_STATUS = {
    400: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    401: "authentication_error",
    403: "forbidden",
    404: "model_not_found",
    424: "failed_dependency",
    429: "rate_limit_exceeded",
}


def gateway_type(status: int, sidecar_type: str = "") -> str:
    if sidecar_type == "not_found":
        return "not_found"
    if status in (401, 403) and sidecar_type == "authentication_error":
        # Not the caller's bearer (that is `unauthorized`) but the provider refusing, or missing, the sidecar's key:
        # a failed dependency. As `authentication_error` the client would replace the message with "Invalid API key".
        return "failed_dependency"
    return _TYPES_BY_STATUS.get(status, "internal_server_error")


def error_body(status: int, type_: str, message: str) -> Any:
    kind = gateway_type(status, type_)
    error: dict[str, Any] = {"message": message, "type": kind}
    if kind == "model_not_found":
        unknown = _UNKNOWN_MODEL.match(message)
        if unknown:
            error["param"] = {"modelId": unknown[1]}
    return {"error": error}


FORMAT = IngressFormat(name="ai-gateway", decode=decode, encoder=encoder, render=render, error_body=error_body)
