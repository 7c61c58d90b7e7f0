"""The Anthropic Messages API (``POST /v1/messages``) as an ingress format: the anthropic SDKs and Claude Code.

``decode`` turns a Messages body into the pi ``Context`` and options (tool results become pi ``toolResult``
messages, ``thinking.budget_tokens`` becomes a reasoning effort plus ``thinkingBudgets`` so the Anthropic adapter
asks for the same budget); ``AnthropicEncoder`` writes the block lifecycle as Anthropic's named SSE events (the
``event:`` line is mandatory: the SDKs skip unnamed events); ``render`` and ``error_body`` give the non-streaming
``Message`` and the ``{"type":"error","error":{…}}`` envelope, typed by status as Anthropic types its own errors.

Decode runs for every request, relayed ones included (an Anthropic model gets the client's body untouched, see
``sidecar.relay``), so what the pi context cannot hold is accepted rather than refused: ``cache_control``,
citations, server tools and their blocks, ``service_tier`` … are left out of a translation, and a PDF or a Files API
source becomes a text note saying it was left out. Malformed requests (a missing field, a wrong type, a block type
Anthropic does not have) are refused with a message naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeGuard, cast

from client.types import AssistantMessage, Context, StopReason
from sidecar.config import Limits
from sidecar.errors import BadRequest
from sidecar.identifiers import check_text
from sidecar.ingress.base import IngressFormat, IngressRequest
from sidecar.ingress.common import assistant_turn, fail, json_object, model_field, pi_tool, sse_event, tool_result
from sidecar.ledger.record import MAX_ID_LENGTH, Attribution
from sidecar.models import ModelSpec
from sidecar.request import session_id_for
from sidecar.stream import BlockKind, Encoder

SESSION_HEADER = "x-claude-code-session-id"
"""Claude Code names its session; the sidecar uses it as the pi session id (prompt-cache key, sticky routing)."""

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    499: "api_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
"""Anthropic's ``error.type`` per status; the SDKs pick their exception class by status and this type."""

_EXAMPLE = '{"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [{"role": "user", "content": "Hi"}]}'
_STOP_REASONS: dict[str, str] = {"stop": "end_turn", "length": "max_tokens", "toolUse": "tool_use"}

# A thinking budget -> the smallest pi effort whose default budget covers it: the Anthropic adapter then sends the
# exact budget (from thinkingBudgets), other families get an effort of the same size.
_EFFORT_CEILINGS = (("minimal", 1024), ("low", 4096), ("medium", 10240), ("high", 20480), ("xhigh", 32000))
_ADAPTIVE_EFFORTS = frozenset({"low", "medium", "high", "max"})  # output_config.effort values pi also has
_TOOL_CHOICES = ("auto", "any", "none", "tool")
_USER_BLOCKS = ("text", "image", "tool_result", "document", "search_result")
_TOOL_RESULT_BLOCKS = ("text", "image", "document", "search_result", "tool_reference")
_ASSISTANT_BLOCKS = ("text", "thinking", "redacted_thinking", "tool_use", "server_tool_use", "*_tool_result")
_SERVER_BLOCKS = frozenset({"server_tool_use", "mcp_tool_use", "container_upload"})
"""Assistant blocks of tools Anthropic ran itself (with every ``*_tool_result``): kept, never translated."""
_ROLES = ("user", "assistant", "system")


# ----- decode ------------------------------------------------------------------------------------------------------


def decode(body: bytes, headers: Mapping[str, str], limits: Limits) -> IngressRequest:
    """A ``POST /v1/messages`` body; ``max_tokens`` is required, as Anthropic requires it."""
    return _decode(body, headers, limits, counting=False)


def decode_count_tokens(body: bytes, headers: Mapping[str, str], limits: Limits) -> IngressRequest:
    """A ``POST /v1/messages/count_tokens`` body: the same fields without ``max_tokens``."""
    return _decode(body, headers, limits, counting=True)


def _decode(body: bytes, headers: Mapping[str, str], limits: Limits, *, counting: bool) -> IngressRequest:
    data = json_object(body, limits, _EXAMPLE)
    model_id = model_field(data, limits)

    options: dict[str, Any] = {}
    max_tokens = data.get("max_tokens")
    if max_tokens is None and not counting:
        raise BadRequest("`max_tokens` is required: the most tokens the reply may have, such as 4096")
    if max_tokens is not None:
        if not _is_int(max_tokens) or max_tokens < 1:
            raise fail("max_tokens", f"must be a positive integer, got {max_tokens!r}")
        options["maxTokens"] = max_tokens
    _sampling(data, options)
    user = _metadata(data.get("metadata"), options)
    _thinking(data, options)

    context: dict[str, Any] = {"messages": _messages(data.get("messages"))}
    system = _system(data.get("system"))
    if system:
        context["systemPrompt"] = system
    tools = _tools(data.get("tools"))
    if tools:
        context["tools"] = tools
    choice = _tool_choice(data.get("tool_choice"))
    if choice is not None:
        options["toolChoice"] = choice

    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise fail("stream", f"must be true or false, got {type(stream).__name__}")
    given = headers.get(SESSION_HEADER)
    if given:
        options["sessionId"] = check_text(given, SESSION_HEADER, limits.max_identifier_chars)
    return IngressRequest(
        model_id=model_id,
        context=cast(Context, context),
        options=options,
        stream=stream and not counting,
        session_id=session_id_for(model_id, context, options),
        body=data,
        attribution=Attribution.parse({"user": ("metadata.user_id", user)}) if user is not None else Attribution(),
    )


def _sampling(data: Mapping[str, Any], options: dict[str, Any]) -> None:
    for wire, pi in (("temperature", "temperature"), ("top_p", "topP")):
        value = data.get(wire)
        if value is not None:
            if not _is_number(value):
                raise fail(wire, f"must be a number, got {type(value).__name__}")
            options[pi] = value
    top_k = data.get("top_k")
    if top_k is not None:
        if not _is_int(top_k) or top_k < 0:
            raise fail("top_k", f"must be a non-negative integer, got {top_k!r}")
        options["topK"] = top_k
    stops = data.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise fail("stop_sequences", "must be an array of strings")
        if stops:
            options["stopSequences"] = stops


def _metadata(raw: Any, options: dict[str, Any]) -> str | None:
    """``metadata.user_id``: the ledger's ``user``, and sent on to an Anthropic upstream."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise fail("metadata", 'must be an object such as {"user_id": "…"}')
    user = raw.get("user_id")
    if user is None:
        return None
    if not isinstance(user, str):
        raise fail("metadata.user_id", f"must be a string, got {type(user).__name__}")
    if len(user) > MAX_ID_LENGTH:
        raise fail("metadata.user_id", f"is {len(user)} characters long; the limit is {MAX_ID_LENGTH}")
    options["metadata"] = {"user_id": user}
    return user or None


def _thinking(data: Mapping[str, Any], options: dict[str, Any]) -> None:
    """``thinking`` → pi's ``reasoning`` effort (+ ``thinkingBudgets`` carrying the exact budget).

    ``max_tokens`` stays the client's: the Anthropic adapter adds the budget on top of it (capped at the model's
    limit), so the budget is never squeezed out of a small ``max_tokens``, and other families keep their limit."""
    thinking = data.get("thinking")
    if thinking is None:
        return
    if not isinstance(thinking, dict):
        raise fail("thinking", 'must be an object such as {"type": "enabled", "budget_tokens": 2048}')
    kind = thinking.get("type")
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if not _is_int(budget) or budget < 1:
            raise fail("thinking.budget_tokens", f"must be a positive integer, got {budget!r}")
        effort = next((name for name, ceiling in _EFFORT_CEILINGS if budget <= ceiling), "max")
        options["reasoning"] = effort
        options["thinkingBudgets"] = {effort: budget}
    elif kind == "adaptive":
        config = data.get("output_config")
        asked = config.get("effort") if isinstance(config, dict) else None
        options["reasoning"] = asked if asked in _ADAPTIVE_EFFORTS else "medium"
    elif kind != "disabled":
        raise fail("thinking.type", f"must be one of enabled, adaptive, disabled, got {kind!r}")


def _system(raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw] if raw else []
    if not isinstance(raw, list):
        raise fail("system", "must be a string or an array of text blocks")
    out: list[str] = []
    for i, block in enumerate(raw):
        out.append(_text_of(block, f"system[{i}]"))
    return out


def _tools(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise fail("tools", "must be an array of tools")
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(raw):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise fail(where, "must be an object with `name` and `input_schema`")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise fail(f"{where}.name", "must be a non-empty string")
        if tool.get("type") not in (None, "custom") and "input_schema" not in tool:
            # A server tool (web_search_20250305, bash_20250124 …): Anthropic runs it; a translation to another
            # family cannot, so it is left out of the pi context (a relayed request keeps it).
            continue
        if not isinstance(tool.get("description", ""), str):
            raise fail(f"{where}.description", "must be a string")
        out.append(pi_tool(tool, where, "input_schema", schema_required=True))
    return out


def _tool_choice(raw: Any) -> Any:
    """Anthropic's choice → pi's ``toolChoice`` as both adapters read it (``required`` = Anthropic's ``any``)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise fail("tool_choice", 'must be an object such as {"type": "auto"}')
    kind = raw.get("type")
    if kind not in _TOOL_CHOICES:
        raise fail("tool_choice.type", f"must be one of {', '.join(_TOOL_CHOICES)}, got {kind!r}")
    if kind == "tool":
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise fail("tool_choice.name", 'must name the tool to call when `type` is "tool"')
        return {"type": "function", "name": name}
    return "required" if kind == "any" else kind


# ----- messages ----------------------------------------------------------------------------------------------------


def _messages(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise fail("messages", 'is required: an array such as [{"role": "user", "content": "Hello"}]')
    out: list[dict[str, Any]] = []
    tool_names: dict[str, str] = {}  # tool_use id -> name, for the pi toolResult's toolName
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise fail(where, "must be an object with `role` and `content`")
        role = message.get("role")
        if role not in _ROLES:
            raise fail(f"{where}.role", f"must be one of {', '.join(_ROLES)}, got {role!r}")
        content = message.get("content")
        if isinstance(content, str) and role == "user":
            out.append({"role": "user", "content": content, "timestamp": 0})
            continue
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        elif not isinstance(content, list):
            raise fail(f"{where}.content", "must be a string or an array of content blocks")
        if role == "assistant":
            out.append(_assistant(content, f"{where}.content", tool_names))
        elif role == "system":  # a mid-conversation system turn: pi's developer role
            texts = [_text_of(block, f"{where}.content[{j}]") for j, block in enumerate(content)]
            out.append({"role": "developer", "content": [{"type": "text", "text": t} for t in texts], "timestamp": 0})
        else:
            out.extend(_user(content, f"{where}.content", tool_names))
    return out


def _user(content: list[Any], where: str, tool_names: Mapping[str, str]) -> list[dict[str, Any]]:
    """One Anthropic user turn → pi ``toolResult`` messages (Anthropic puts them first), then the user message."""
    results: list[dict[str, Any]] = []
    blocks: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}[{j}]"
        kind = _block_type(block, at, _USER_BLOCKS)
        if kind == "tool_result":
            results.append(_tool_result(block, at, tool_names))
        else:
            blocks.extend(_media(block, at, kind))
    if blocks or not results:
        results.append({"role": "user", "content": blocks, "timestamp": 0})
    return results


def _tool_result(block: Mapping[str, Any], where: str, tool_names: Mapping[str, str]) -> dict[str, Any]:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise fail(f"{where}.tool_use_id", "must be the id of the tool_use block this result answers")
    is_error = block.get("is_error", False)
    if not isinstance(is_error, bool | None):
        raise fail(f"{where}.is_error", "must be true or false")
    raw = block.get("content")
    parts: list[dict[str, Any]] = []
    if isinstance(raw, str):
        parts.append({"type": "text", "text": raw})
    elif isinstance(raw, list):
        for k, part in enumerate(raw):
            at = f"{where}.content[{k}]"
            parts.extend(_media(part, at, _block_type(part, at, _TOOL_RESULT_BLOCKS)))
    elif raw is not None:
        raise fail(f"{where}.content", "must be a string or an array of text/image blocks")
    return tool_result(call_id, tool_names.get(call_id, ""), parts, bool(is_error))


def _media(block: Mapping[str, Any], where: str, kind: str) -> list[dict[str, Any]]:
    """A text, image, document or search_result block → pi user content.

    What pi cannot hold (a PDF, a Files API ``file_id``) is accepted, since a request relayed to an Anthropic model
    sends it as written; translated for another family it becomes a text note saying what was left out."""
    if kind == "text":
        return [{"type": "text", "text": _text_of(block, where)}]
    if kind == "tool_reference":  # a custom tool search's answer: names a tool the client will now send
        return [{"type": "text", "text": f"[tool reference: {block.get('tool_name')}]"}]
    if kind == "search_result":
        texts = [_text_of(b, f"{where}.content[{k}]") for k, b in enumerate(_list(block, "content", where))]
        header = " ".join(str(block.get(key) or "") for key in ("title", "source")).strip()
        return [{"type": "text", "text": "\n\n".join([header, *texts]) if header else "\n\n".join(texts)}]
    source = block.get("source")
    if not isinstance(source, dict):
        raise fail(f"{where}.source", f"is required on {kind} blocks")
    source_type = source.get("type")
    if not isinstance(source_type, str):
        raise fail(f"{where}.source.type", 'must be a string such as "base64"')
    if kind == "image":
        if source_type == "base64":
            media_type, data = source.get("media_type"), source.get("data")
            if not isinstance(media_type, str) or not isinstance(data, str):
                raise fail(f"{where}.source", 'needs string `media_type` (such as "image/png") and base64 `data`')
            return [{"type": "image", "data": data, "mimeType": media_type}]
        if source_type == "url":
            if not isinstance(source.get("url"), str):
                raise fail(f"{where}.source.url", "must be a string")
            return [{"type": "image", "data": "", "mimeType": "", "url": source["url"]}]
        return [_omitted(f"an image ({source_type} source)")]
    if source_type == "text":
        if not isinstance(source.get("data"), str):
            raise fail(f"{where}.source.data", "must be a string")
        return [{"type": "text", "text": source["data"]}]
    if source_type == "content":
        inner = source.get("content")
        if isinstance(inner, str):
            return [{"type": "text", "text": inner}]
        texts = [_text_of(b, f"{where}.source.content[{k}]") for k, b in enumerate(_list(source, "content", where))]
        return [{"type": "text", "text": text} for text in texts]
    title = block.get("title")
    return [_omitted(f"a document{f' ({title})' if isinstance(title, str) and title else ''} ({source_type} source)")]


def _omitted(what: str) -> dict[str, Any]:
    return {"type": "text", "text": f"[{what} was left out: only Anthropic models can receive it through the sidecar]"}


def _list(block: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = block.get(key)
    if not isinstance(value, list):
        raise fail(f"{where}.{key}", "must be an array of text blocks")
    return value


def _assistant(content: list[Any], where: str, tool_names: dict[str, str]) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}[{j}]"
        kind = _block_type(block, at, _ASSISTANT_BLOCKS)
        if kind == "text":
            blocks.append({"type": "text", "text": _text_of(block, at)})
        elif kind == "thinking":
            thinking, signature = block.get("thinking"), block.get("signature")
            if not isinstance(thinking, str):
                raise fail(f"{at}.thinking", "must be a string")
            entry: dict[str, Any] = {"type": "thinking", "thinking": thinking}
            if isinstance(signature, str) and signature:
                entry["thinkingSignature"] = signature
            blocks.append(entry)
        elif kind == "redacted_thinking":
            if not isinstance(block.get("data"), str):
                raise fail(f"{at}.data", "must be a string")
            blocks.append({"type": "redactedThinking", "data": block["data"]})
        elif kind == "tool_use":
            call_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise fail(at, "tool_use blocks need string `id` and `name`")
            if not isinstance(arguments, dict):
                raise fail(f"{at}.input", "must be an object")
            tool_names[call_id] = name
            blocks.append({"type": "toolCall", "id": call_id, "name": name, "arguments": arguments})
        else:  # server_tool_use and its *_tool_result: ran at Anthropic, kept for the record, never re-sent
            blocks.append({"type": "anthropicServerTool", "block": dict(block)})
    return assistant_turn(blocks)


def _block_type(block: Any, where: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(block, dict):
        raise fail(where, "must be an object with a `type`")
    kind = block.get("type")
    if isinstance(kind, str):
        if kind in allowed:
            return kind
        if "*_tool_result" in allowed and (kind.endswith("_tool_result") or kind in _SERVER_BLOCKS):
            return "server_tool"
    raise fail(f"{where}.type", f"must be one of {', '.join(allowed)}, got {kind!r}")


def _text_of(block: Any, where: str) -> str:
    if not isinstance(block, dict) or block.get("type") != "text":
        raise fail(where, 'must be a text block {"type": "text", "text": "…"}')
    text = block.get("text")
    if not isinstance(text, str):
        raise fail(f"{where}.text", "must be a string")
    return text


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ----- encode ------------------------------------------------------------------------------------------------------


def _block_start(index: int, block: dict[str, Any]) -> bytes:
    return sse_event("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


def _usage(message: AssistantMessage) -> dict[str, int]:
    usage = message["usage"]
    return {
        "input_tokens": usage["input"],  # pi's input is the non-cached part, as Anthropic's input_tokens
        "output_tokens": usage["output"],
        "cache_creation_input_tokens": usage["cacheWrite"],
        "cache_read_input_tokens": usage["cacheRead"],
    }


def message_id(generation_id: str) -> str:
    """``msg_<ulid>`` from ``gen_<ulid>``: the SDK-visible id names the ledger row."""
    return "msg_" + generation_id.removeprefix("gen_")


class AnthropicEncoder:
    """Anthropic's SSE: ``message_start``, per block ``content_block_start``/``_delta``*/``_stop`` (``index`` is the
    position in ``message.content``, as the SDKs append on start and index on delta), ``message_delta``,
    ``message_stop``; failures are ``event: error``.

    ``message_start`` waits for the first block (or the end) so it carries the input tokens an Anthropic upstream
    reports up front. A redacted thinking block has no deltas, so its start (with the data) is sent at its end, or
    before any later event."""

    __slots__ = ("_id", "_model", "_started", "_redacted")

    def __init__(self, message_id: str, model: str) -> None:
        self._id = message_id
        self._model = model
        self._started = False
        self._redacted: dict[int, dict[str, Any]] = {}

    def start(self, message: AssistantMessage) -> bytes:
        return b""

    def block_start(self, kind: BlockKind, index: int, content: dict[str, Any], message: AssistantMessage) -> bytes:
        head = self._pending(message)
        if kind == "text":
            block: dict[str, Any] = {"type": "text", "text": ""}
        elif kind == "toolCall":
            block = {"type": "tool_use", "id": content["id"] or f"toolu_{self._id[4:]}_{index}"}
            block.update(name=content["name"], input={})
        elif content["type"] == "redactedThinking":
            self._redacted[index] = content
            return head
        else:
            block = {"type": "thinking", "thinking": "", "signature": ""}
        return head + _block_start(index, block)

    def block_delta(self, kind: BlockKind, index: int, delta: str, message: AssistantMessage) -> bytes:
        if kind == "text":
            body = {"type": "text_delta", "text": delta}
        elif kind == "toolCall":
            body = {"type": "input_json_delta", "partial_json": delta}
        else:
            body = {"type": "thinking_delta", "thinking": delta}
        head = self._pending(message) if self._redacted else b""
        return head + sse_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": body})

    def block_end(self, kind: BlockKind, index: int, content: dict[str, Any], message: AssistantMessage) -> bytes:
        head = self._pending(message)  # a pending redacted block, this one included, starts now
        signature = content.get("thinkingSignature") if kind == "thinking" else None
        if signature:
            delta = {"type": "signature_delta", "signature": signature}
            head += sse_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        return head + sse_event("content_block_stop", {"type": "content_block_stop", "index": index})

    def done(self, reason: StopReason, message: AssistantMessage) -> bytes:
        delta = {"stop_reason": _STOP_REASONS.get(reason, "end_turn"), "stop_sequence": None}
        return (
            self._pending(message)
            + sse_event("message_delta", {"type": "message_delta", "delta": delta, "usage": _usage(message)})
            + b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
        )

    def error(self, reason: Literal["error", "aborted"], message: AssistantMessage) -> bytes:
        if reason == "aborted":
            return b""  # the client is gone
        status = message.get("errorStatus") or 500
        error = {"type": error_type(status), "message": message.get("errorMessage") or "upstream error"}
        return self._pending(message) + sse_event("error", {"type": "error", "error": error})

    def _pending(self, message: AssistantMessage) -> bytes:
        """``message_start`` if not sent yet, and the starts of redacted thinking blocks held back."""
        out = b""
        if not self._started:
            self._started = True
            start: dict[str, Any] = {
                "id": self._id,
                "type": "message",
                "role": "assistant",
                "model": self._model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": _usage(message),
            }
            out = sse_event("message_start", {"type": "message_start", "message": start})
        for index in sorted(self._redacted):
            block = {"type": "redacted_thinking", "data": self._redacted[index]["data"]}
            out += _block_start(index, block)
        self._redacted.clear()
        return out


def encoder(request: IngressRequest, model: ModelSpec, generation_id: str) -> Encoder:
    return AnthropicEncoder(message_id(generation_id), request.model_id)


# ----- render and errors -------------------------------------------------------------------------------------------


def render(request: IngressRequest, message: AssistantMessage, generation_id: str) -> Any:
    content: list[dict[str, Any]] = []
    for block in message["content"]:
        part = cast(dict[str, Any], block)
        kind = part["type"]
        if kind == "text":
            content.append({"type": "text", "text": part["text"]})
        elif kind == "thinking":
            signature = part.get("thinkingSignature", "")  # the SDKs' types require it
            content.append({"type": "thinking", "thinking": part["thinking"], "signature": signature})
        elif kind == "redactedThinking":
            content.append({"type": "redacted_thinking", "data": part["data"]})
        elif kind == "toolCall":
            content.append({"type": "tool_use", "id": part["id"], "name": part["name"], "input": part["arguments"]})
    return {
        "id": message_id(generation_id),
        "type": "message",
        "role": "assistant",
        "model": request.model_id,
        "content": content,
        "stop_reason": _STOP_REASONS.get(message["stopReason"], "end_turn"),
        "stop_sequence": None,
        "usage": _usage(message),
    }


def error_type(status: int) -> str:
    known = ERROR_TYPES.get(status)
    if known is not None:
        return known
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def error_body(status: int, type_: str, message: str) -> Any:
    """Typed by status, not by the sidecar's type: a wrong bearer (``unauthorized``) is ``authentication_error``, an
    unknown model (404) ``not_found_error``, so the SDKs raise ``AuthenticationError``, ``NotFoundError`` …"""
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


FORMAT = IngressFormat(
    name="anthropic-messages",
    decode=decode,
    encoder=encoder,
    render=render,
    error_body=error_body,
    wire_api="anthropic-messages",
    preferred_provider="anthropic",
)
