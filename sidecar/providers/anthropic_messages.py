"""Anthropic Messages API (``POST {base_url}/v1/messages``, ``stream: true``) -> ``Delta`` records.

Request: the pi ``Context`` and options become a Messages body (system blocks, user/assistant turns, tool results
merged per turn, extended thinking, prompt-cache markers). Response: ``event: <type>`` / ``data: <json>`` frames,
one ``content_block_*`` triple per block keyed by Anthropic's ``index``, which is also our block key.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

import orjson
from httpx_sse import ServerSentEvent

from sidecar.errors import UpstreamProtocolError, UpstreamStreamError, redact
from sidecar.providers.base import (
    BlockEnd,
    Delta,
    Deltas,
    Finish,
    ResponseInfo,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    UpstreamCall,
    UsageUpdate,
    event_object,
    open_stream,
    read_deltas,
)
from sidecar.providers.history import repair_tool_history
from sidecar.upstream import Upstream

_API_VERSION = "2023-06-01"
_INTERLEAVED_THINKING_BETA = "interleaved-thinking-2025-05-14"
_DEFAULT_MAX_TOKENS = 8192
_MIN_THINKING_BUDGET = 1024
"""Anthropic rejects ``budget_tokens`` below 1024."""
_THINKING_BUDGETS = {"minimal": 1024, "low": 4096, "medium": 10240, "high": 20480, "xhigh": 32000, "max": 32000}

# Anthropic requires tool_use ids to match ^[a-zA-Z0-9_-]+$ (max 64); ids minted by other providers (OpenAI
# Responses' "call_…|fc_…", 450+ chars) are rewritten the same way in tool_use and tool_result so they still pair.
_TOOL_ID_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_-]")

_STOP_REASONS: dict[str, Literal["stop", "length", "toolUse"]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",  # a server-tool turn paused; the caller resubmits it, as pi does
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "toolUse",
}
_REFUSALS = frozenset({"refusal", "sensitive"})

_ERROR_STATUS = {  # an in-stream error's type -> the HTTP status Anthropic gives it before a stream starts
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
# cacheRetention -> cache_control; "short" and unset get the default 5-minute ephemeral cache.
_CACHE_CONTROL: dict[str, dict[str, str] | None] = {"none": None, "long": {"type": "ephemeral", "ttl": "1h"}}


async def stream(call: UpstreamCall, client: Upstream) -> AsyncIterator[Deltas]:
    """Send ``call`` to the Messages API and yield its stream as deltas."""
    body, thinking = _build_body(call)
    url = f"{call.model.base_url.rstrip('/')}/v1/messages"
    parser = AnthropicEventParser(secrets_of(call))
    async with open_stream(client, call, url, headers=build_headers(call, thinking), json_body=orjson.dumps(body)) as r:
        # read_deltas stops at message_stop; open_stream's drain then reads the rest of the body (the chunked
        # terminator) from the same iterator, so the connection is pooled.
        async for deltas in read_deltas(parser, r, call.model.provider):
            yield deltas
        if parser.done:
            return
    parser.end()


def secrets_of(call: UpstreamCall) -> tuple[str, ...]:
    """The values an upstream error text is redacted of: the injected key."""
    return (call.api_key,) if call.api_key else ()


_NOTHING: tuple[Delta, ...] = ()


class AnthropicEventParser:
    """One Messages stream's events -> deltas: the adapter's ``stream`` and the same-family relay (``sidecar.relay``)
    both feed it, so both read a stream the same way. Plain dict lookups, no validation: this is the per-event hot
    path. ``feed`` returns a tuple (``()`` for the many events that carry nothing), no generator per event.

    Raises ``UpstreamStreamError`` for what Anthropic itself reported (an ``error`` event, a refusal) and
    ``UpstreamProtocolError`` for what cannot be read."""

    __slots__ = ("_secrets", "_blocks", "_opened", "_stop_reason", "done")

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        self._secrets = secrets
        # Indices of the blocks we translate. Any other block (server_tool_use, web_search_tool_result,
        # bash_code_execution_tool_result, …) ran server-side; it is skipped together with its deltas and stop.
        self._blocks: set[Any] = set()
        self._opened: set[Any] = set()  # blocks that produced a delta, so the assembler has opened them
        self._stop_reason: str | None = None
        self.done = False
        """``message_stop`` was read: the stream is complete."""

    def feed(self, sse: ServerSentEvent) -> tuple[Delta, ...]:
        if not sse.data:
            return _NOTHING
        data = event_object(sse.data, "Anthropic", event=sse.event)
        # The payload's own "type" is authoritative; some Anthropic-compatible proxies omit `event:` lines.
        kind = data.get("type")

        if kind == "content_block_delta":
            index = data.get("index")
            if index not in self._blocks:
                return _NOTHING
            delta = data.get("delta") or {}
            delta_type = delta.get("type")
            if delta_type == "text_delta":
                if text := delta.get("text"):
                    self._opened.add(index)
                    return (TextDelta(index, text),)
            elif delta_type == "input_json_delta":
                # The first fragment of every tool_use is "": nothing to append.
                if fragment := delta.get("partial_json"):
                    return (ToolCallDelta(index, arguments=fragment),)
            elif delta_type == "thinking_delta":
                if text := delta.get("thinking"):
                    return (ThinkingDelta(index, text),)
            elif delta_type == "signature_delta":
                if signature := delta.get("signature"):
                    return (ThinkingDelta(index, signature=signature),)
            # citations_delta and future delta types carry nothing pi's content blocks can hold.
            return _NOTHING

        if kind == "content_block_start":
            index = data.get("index")
            started = _start_deltas(index, data.get("content_block") or {})
            if started is None:
                return _NOTHING
            self._blocks.add(index)
            if started:
                self._opened.add(index)
            return started

        if kind == "content_block_stop":
            index = data.get("index")
            # An empty text block never produced a delta, so the assembler never opened it: no BlockEnd.
            self._blocks.discard(index)
            if index in self._opened:
                self._opened.discard(index)
                return (BlockEnd(index),)
            return _NOTHING

        if kind == "message_delta":
            reason = (data.get("delta") or {}).get("stop_reason")
            if reason:
                self._stop_reason = str(reason)
            # Cumulative counts; Anthropic may restate input/cache counts here (prompt caching updates
            # cache_read_input_tokens only in the final message_delta).
            if usage := data.get("usage"):
                return (_usage(usage),)
            return _NOTHING

        if kind == "message_start":
            message = data.get("message") or {}
            info = ResponseInfo(response_id=message.get("id"), upstream_model=message.get("model"))
            if usage := message.get("usage"):
                return (info, _usage(usage))
            return (info,)

        if kind == "message_stop":
            self.done = True
            return (_finish(self._stop_reason),)

        if kind == "error":
            # A mid-stream error (overloaded_error after HTTP 200) ends the stream with no message_stop.
            raise _stream_error(data.get("error"), self._secrets)
        # ping and unknown event types are ignored.
        return _NOTHING

    def end(self) -> None:
        """The upstream body ended: fine after ``message_stop``, a truncated stream otherwise."""
        if not self.done:
            raise UpstreamProtocolError("Anthropic stream ended before message_stop", 502)


def _start_deltas(index: Any, block: Any) -> tuple[Delta, ...] | None:
    """The deltas a block's start carries; ``()`` for an empty text block (opened by its first delta), ``None`` for
    a block pi's content cannot hold."""
    block_type = block.get("type")
    if block_type == "text":
        text = block.get("text")
        return (TextDelta(index, text),) if text else _NOTHING
    if block_type == "thinking":
        return (ThinkingDelta(index, block.get("thinking") or "", signature=block.get("signature") or None),)
    if block_type == "redacted_thinking":
        return (ThinkingDelta(index, block.get("data") or "", redacted=True),)
    if block_type == "tool_use":
        return (ToolCallDelta(index, id=block.get("id"), name=block.get("name")),)
    return None


def _finish(stop_reason: str | None) -> Finish:
    if stop_reason in _REFUSALS:
        raise UpstreamStreamError(f"Anthropic refused the request (stop_reason: {stop_reason})", 400)
    # Unknown future stop reasons end a turn that did complete, so they map to "stop".
    return Finish(_STOP_REASONS.get(stop_reason or "end_turn", "stop"))


def _stream_error(error: Any, secrets: tuple[str, ...]) -> UpstreamStreamError:
    error = error if isinstance(error, dict) else {}
    error_type = str(error.get("type") or "api_error")
    message = redact(f"Anthropic stream error ({error_type}): {error.get('message', '')}", secrets)
    return UpstreamStreamError(message, _ERROR_STATUS.get(error_type, 500))


def parse_message(data: Any, secrets: tuple[str, ...] = ()) -> list[Delta]:
    """A non-streaming Messages response (``Message`` JSON) as the deltas its stream would have given, for the
    relay's ledger row; raises as the stream parser does (an error body, a refusal)."""
    if not isinstance(data, dict):
        raise UpstreamProtocolError("Anthropic sent a non-object response body")
    if data.get("type") == "error":
        raise _stream_error(data.get("error"), secrets)
    deltas: list[Delta] = [ResponseInfo(response_id=data.get("id"), upstream_model=data.get("model"))]
    content = data.get("content")
    for index, block in enumerate(content if isinstance(content, list) else ()):
        started = _start_deltas(index, block) if isinstance(block, dict) else None
        if not started:
            continue
        deltas.extend(started)
        if block.get("type") == "tool_use" and (arguments := block.get("input")):
            deltas.append(ToolCallDelta(index, arguments=orjson.dumps(arguments).decode()))
        deltas.append(BlockEnd(index))
    if isinstance(usage := data.get("usage"), dict):
        deltas.append(_usage(usage))
    deltas.append(_finish(data.get("stop_reason")))
    return deltas


def _usage(usage: Mapping[str, Any]) -> UsageUpdate:
    details = usage.get("output_tokens_details")
    return UsageUpdate(
        input=usage.get("input_tokens"),
        output=usage.get("output_tokens"),
        cache_read=usage.get("cache_read_input_tokens"),
        cache_write=usage.get("cache_creation_input_tokens"),
        reasoning=details.get("thinking_tokens") if isinstance(details, dict) else None,
    )


# ----- request ----------------------------------------------------------------------------------------------------


def build_headers(call: UpstreamCall, thinking: bool) -> dict[str, str]:
    headers = {"anthropic-version": _API_VERSION, "content-type": "application/json", "accept": "text/event-stream"}
    # Lower-cased so that a caller's "Anthropic-Beta" replaces the model's "anthropic-beta" instead of doubling it.
    for source in (call.model.headers, call.headers):
        for name, value in source.items():
            headers[name.lower()] = value
    if thinking:
        betas = [b.strip() for b in headers.get("anthropic-beta", "").split(",") if b.strip()]
        if _INTERLEAVED_THINKING_BETA not in betas:
            betas.append(_INTERLEAVED_THINKING_BETA)
        headers["anthropic-beta"] = ",".join(betas)
    # Set last: the injected credential is the sidecar's job, a pass-through header must not replace it.
    if call.api_key:
        headers["x-api-key"] = call.api_key
    return headers


def _thinking_budget(call: UpstreamCall) -> int | None:
    options, model = call.options, call.model
    effort = str(options.get("reasoning"))  # str(): an odd option value must not break the set lookup
    if effort not in _THINKING_BUDGETS or options.get("disableReasoning") or options.get("forceReasoningOff"):
        return None
    if not (model.reasoning or model.compat.get("supports_thinking")):
        return None
    budgets = options.get("thinkingBudgets")
    custom = budgets.get(effort) if isinstance(budgets, Mapping) else None
    return int(custom) if isinstance(custom, int | float) and custom > 0 else _THINKING_BUDGETS[effort]


def _build_body(call: UpstreamCall) -> tuple[dict[str, Any], bool]:
    """The Messages body, and whether extended thinking is on."""
    options, model, context = call.options, call.model, call.context
    max_tokens = options.get("maxTokens") or model.max_tokens or _DEFAULT_MAX_TOKENS
    budget = _thinking_budget(call)
    if budget is not None:
        # Thinking tokens count against max_tokens, so the budget is added on top of the requested output (as the
        # reference gateway does), capped at the model's limit; Anthropic also needs budget_tokens < max_tokens.
        max_tokens += budget
        if model.max_tokens and max_tokens > model.max_tokens:
            max_tokens = model.max_tokens
            budget = min(budget, max_tokens - _MIN_THINKING_BUDGET)
            if budget < _MIN_THINKING_BUDGET:
                budget = None

    cache = _CACHE_CONTROL.get(str(options.get("cacheRetention")), {"type": "ephemeral"})
    body: dict[str, Any] = {"model": model.id, "stream": True, "max_tokens": max_tokens}
    system: list[dict[str, Any]] = [{"type": "text", "text": t} for t in context.get("systemPrompt") or () if t.strip()]
    if system:
        if cache:
            system[-1]["cache_control"] = cache
        body["system"] = system
    body["messages"] = _convert_messages(context["messages"], cache)

    tools = context.get("tools")
    if tools:
        body["tools"] = [_convert_tool(tool) for tool in tools]
        choice = _tool_choice(options.get("toolChoice"))
        if choice:
            body["tool_choice"] = choice
    if budget is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    elif options.get("temperature") is not None:
        # Anthropic rejects temperature (and top_k) while extended thinking is on.
        body["temperature"] = options["temperature"]
    if options.get("topP") is not None:
        body["top_p"] = options["topP"]
    if options.get("topK") is not None and budget is None:
        body["top_k"] = options["topK"]
    if options.get("stopSequences"):
        body["stop_sequences"] = list(options["stopSequences"])
    metadata = options.get("metadata")
    # Anthropic's metadata accepts only user_id and rejects any other key.
    if isinstance(metadata, Mapping) and isinstance(metadata.get("user_id"), str):
        body["metadata"] = {"user_id": metadata["user_id"]}
    return body, budget is not None


def _convert_messages(messages: Any, cache: dict[str, str] | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    tool_results: list[dict[str, Any]] | None = None  # the user turn consecutive tool results are merged into
    # Unanswered calls and orphan results are repaired first: Anthropic rejects both with a 400.
    for message in repair_tool_history(messages):
        role = message["role"]
        if message["role"] == "toolResult":
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": _tool_id(message["toolCallId"]),
                "is_error": bool(message.get("isError")),
            }
            if content := _user_blocks(message.get("content")):
                block["content"] = content
            if tool_results is None:
                tool_results = []
                out.append({"role": "user", "content": tool_results})
            tool_results.append(block)
            continue
        if role in ("user", "developer"):
            # Anthropic has no developer role; its text goes in as a user turn.
            blocks = _user_blocks(message.get("content"))
        elif role == "assistant":  # errored and aborted turns were dropped by the repair
            blocks = _assistant_blocks(message.get("content") or ())
        else:
            continue
        if blocks:
            out.append({"role": "user" if role != "assistant" else "assistant", "content": blocks})
            tool_results = None
    if cache:
        # Mark the end of the conversation so the whole prefix is cached, on the last user turn as pi does.
        for message in reversed(out):
            if message["role"] == "user":
                message["content"][-1]["cache_control"] = cache
                break
    return out


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    blocks: list[dict[str, Any]] = []
    for part in content or ():
        kind = part.get("type")
        if kind == "text":
            text = part.get("text") or ""
            # Anthropic rejects text blocks that are empty or whitespace-only.
            if text.strip():
                blocks.append({"type": "text", "text": text})
        elif kind == "image":
            if part.get("data"):
                source = {"type": "base64", "media_type": part.get("mimeType"), "data": part["data"]}
            elif part.get("url"):
                source = {"type": "url", "url": part["url"]}
            else:
                continue
            blocks.append({"type": "image", "source": source})
    return blocks


def _assistant_blocks(content: Any) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            text = part.get("text") or ""
            if text.strip():
                blocks.append({"type": "text", "text": text})
        elif kind == "thinking":
            text, signature = part.get("thinking") or "", part.get("thinkingSignature")
            if signature:
                blocks.append({"type": "thinking", "thinking": text, "signature": signature})
            elif text.strip():
                # Unsigned thinking (an aborted stream, another provider) cannot be replayed as thinking:
                # Anthropic verifies the signature. Keep the reasoning as plain text instead.
                blocks.append({"type": "text", "text": text})
        elif kind == "redactedThinking":
            if part.get("data"):
                blocks.append({"type": "redacted_thinking", "data": part["data"]})
        elif kind == "toolCall":
            arguments = part.get("arguments")
            blocks.append(
                {
                    "type": "tool_use",
                    "id": _tool_id(part.get("id", "")),
                    "name": part.get("name", ""),
                    "input": arguments if isinstance(arguments, dict) else {},
                }
            )
        # image, fallback and anthropicServerTool blocks are not sent back upstream.
    return blocks


def _tool_id(raw: str) -> str:
    return _TOOL_ID_BAD_CHARS.sub("_", raw)[:64] or "_"


def _convert_tool(tool: Any) -> dict[str, Any]:
    schema = tool.get("parameters") or {}
    # input_schema must be an object schema; a bare {"properties": …} is accepted by pi but not by Anthropic.
    if "type" not in schema:
        schema = {"type": "object", "properties": {}, **schema}
    converted: dict[str, Any] = {"name": tool.get("name", ""), "input_schema": schema}
    if tool.get("description"):
        converted["description"] = tool["description"]
    return converted


def _tool_choice(choice: Any) -> dict[str, str] | None:
    if choice == "auto" or choice == "none":
        return {"type": choice}
    if choice in ("any", "required"):
        return {"type": "any"}
    if isinstance(choice, Mapping) and choice.get("type") in ("function", "tool"):
        name = choice.get("name")
        function = choice.get("function")
        if name is None and isinstance(function, Mapping):
            name = function.get("name")
        if isinstance(name, str) and name:
            return {"type": "tool", "name": name}
    return None  # {"type": "computer"} and unknown shapes: leave the choice to the model
