"""OpenAI Chat Completions in (``POST /v1/chat/completions``): the OpenAI SDKs, LangChain, @ai-sdk/openai ``.chat``.

Request: ``messages`` (system/developer/user/assistant/tool), ``tools``, ``tool_choice`` and the sampling fields
become the pi ``Context`` and options. Response: ``chat.completion.chunk`` events ending in ``data: [DONE]``
(ingress-formats.md §2.2), the usage chunk (``choices: []``) only when ``stream_options.include_usage`` asked for
it, or one ``chat.completion`` body. Reasoning streams as ``delta.reasoning_content`` (DeepSeek's field, which the
AI SDK and LangChain read; the OpenAI SDKs keep unknown fields).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

import orjson

from client.types import AssistantMessage, StopReason
from sidecar.config import Limits
from sidecar.identifiers import check_text
from sidecar.ingress.base import IngressFormat, IngressRequest
from sidecar.ingress.common import (
    assistant_turn,
    fail,
    image_from_url,
    json_object,
    model_field,
    number,
    openai_error,
    openai_error_body,
    optional,
    pi_tool,
    tool_result,
)
from sidecar.ledger.record import Attribution
from sidecar.models import ModelSpec
from sidecar.request import session_id_for
from sidecar.stream import BlockKind, Encoder

_EXAMPLE = '{"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}'
_FINISH = {"stop": "stop", "length": "length", "toolUse": "tool_calls"}
_EFFORTS = frozenset({"minimal", "low", "medium", "high", "xhigh", "max"})
_ROLES = ("system", "developer", "user", "assistant", "tool")
DONE = b"data: [DONE]\n\n"


# ----- request ----------------------------------------------------------------------------------------------------


def decode(body: bytes, headers: Mapping[str, str], limits: Limits) -> IngressRequest:
    data = json_object(body, limits, _EXAMPLE)
    model_id = model_field(data, limits)
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise fail("messages", "must be a non-empty array of {role, content} messages")
    n = optional(data, "n", int, "an integer")
    if n not in (None, 1):
        raise fail("n", f"must be 1: the sidecar returns one choice per request (got {n})")

    system: list[str] = []
    turns: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> tool name, for the results that answer them
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise fail(where, "must be an object with a `role`")
        role = message.get("role")
        if role not in _ROLES:
            raise fail(f"{where}.role", f"must be one of {', '.join(_ROLES)}, got {role!r}")
        if role in ("system", "developer"):
            text = _text(message.get("content"), f"{where}.content")
            if turns:  # an instruction in mid-conversation stays where it was said
                turns.append({"role": "developer", "content": text, "timestamp": 0})
            elif text:
                system.append(text)
        elif role == "user":
            turns.append({"role": "user", "content": _user_content(message.get("content"), where), "timestamp": 0})
        elif role == "assistant":
            turns.append(_assistant(message, where, names))
        else:
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise fail(f"{where}.tool_call_id", "must be the id of the tool call this message answers")
            text = _text(message.get("content"), f"{where}.content")
            turns.append(tool_result(call_id, names.get(call_id, ""), [{"type": "text", "text": text}]))

    context: dict[str, Any] = {"messages": turns}
    if system:
        context["systemPrompt"] = system
    tools = _tools(data.get("tools"))
    if tools:
        context["tools"] = tools
    options = _options(data, limits)
    stream = optional(data, "stream", bool, "true or false") or False
    user = optional(data, "user", str, "a string")
    attribution = Attribution.parse({"user": ("user", user)}) if user else Attribution()
    return IngressRequest(
        model_id=model_id,
        context=context,  # type: ignore[arg-type]  # built above, block by block
        options=options,
        stream=stream,
        session_id=session_id_for(model_id, context, options),
        body=data,
        attribution=attribution,
    )


def _text(content: Any, where: str) -> str:
    """String content, or the text of an array of parts (system, developer and tool messages)."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise fail(where, "must be a string or an array of text parts")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise fail(f"{where}[{j}]", 'must be a text part {"type": "text", "text": "…"}')
        texts.append(part["text"])
    return "\n".join(texts)


def _user_content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise fail(f"{where}.content", "must be a string or an array of text/image_url parts")
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url:
                raise fail(f"{at}.image_url.url", "must be an https or data: URL")
            block = image_from_url(url)
            if isinstance(image, dict) and image.get("detail") in ("auto", "low", "high"):
                block["detail"] = image["detail"]
            blocks.append(block)
        else:
            raise fail(at, 'must be {"type": "text", "text"} or {"type": "image_url", "image_url": {"url"}}')
    return blocks


def _assistant(message: dict[str, Any], where: str, names: dict[str, str]) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning})
    raw = message.get("content")
    if isinstance(raw, list):  # text and refusal parts
        text = "".join(p.get("text") or p.get("refusal") or "" for p in raw if isinstance(p, dict))
    else:
        text = _text(raw, f"{where}.content")
    if text:
        content.append({"type": "text", "text": text})
    calls = message.get("tool_calls")
    if calls is not None and not isinstance(calls, list):
        raise fail(f"{where}.tool_calls", "must be an array")
    for k, call in enumerate(calls or ()):
        at = f"{where}.tool_calls[{k}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str):
            raise fail(at, 'must be {"id", "type": "function", "function": {"name", "arguments"}}')
        name, arguments = function.get("name"), function.get("arguments") or "{}"
        if not isinstance(name, str) or not name:
            raise fail(f"{at}.function.name", "must be the name of the tool that was called")
        if not isinstance(arguments, str):
            raise fail(f"{at}.function.arguments", "must be the arguments' JSON text (a string)")
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            raise fail(f"{at}.function.arguments", "is not valid JSON") from None
        names[call["id"]] = name
        content.append({"type": "toolCall", "id": call["id"], "name": name, "arguments": _object(parsed)})
    return assistant_turn(content)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _tools(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise fail("tools", "must be an array of function tools")
    tools = []
    for i, tool in enumerate(raw):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            raise fail(f"tools[{i}]", 'must be {"type": "function", "function": {"name", "parameters"}}')
        tools.append(pi_tool(function, f"tools[{i}].function", "parameters", schema_required=False))
    return tools


def _options(data: dict[str, Any], limits: Limits) -> dict[str, Any]:
    options: dict[str, Any] = {}
    max_tokens = optional(data, "max_completion_tokens", int, "an integer")
    if max_tokens is None:
        max_tokens = optional(data, "max_tokens", int, "an integer")
    if max_tokens is not None:
        options["maxTokens"] = max_tokens
    for wire, pi in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        value = number(data, wire)
        if value is not None:
            options[pi] = value
    stop = data.get("stop")
    if isinstance(stop, str):
        options["stopSequences"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        options["stopSequences"] = stop
    elif stop is not None:
        raise fail("stop", "must be a string or an array of strings")
    effort = optional(data, "reasoning_effort", str, "a string")
    if effort == "none":
        options["disableReasoning"] = True
    elif effort is not None:
        if effort not in _EFFORTS:
            raise fail("reasoning_effort", f"must be one of none, {', '.join(sorted(_EFFORTS))}, got {effort!r}")
        options["reasoning"] = effort
    choice = data.get("tool_choice")
    if choice is not None:
        if choice not in ("auto", "none", "required") and not (
            isinstance(choice, dict) and isinstance(choice.get("function"), dict)
        ):
            raise fail("tool_choice", 'must be "auto", "none", "required" or {"type": "function", "function": {…}}')
        options["toolChoice"] = choice
    cache_key = optional(data, "prompt_cache_key", str, "a string")
    if cache_key:
        options["promptCacheKey"] = check_text(cache_key, "prompt_cache_key", limits.max_identifier_chars)
    tier = optional(data, "service_tier", str, "a string")
    if tier:
        options["serviceTier"] = tier
    return options


# ----- response ---------------------------------------------------------------------------------------------------


def usage_body(message: AssistantMessage) -> dict[str, Any]:
    """pi usage → OpenAI's: ``prompt_tokens`` counts cached input too (pi's ``input`` is the uncached part)."""
    usage = message["usage"]
    prompt = usage["input"] + usage["cacheRead"] + usage["cacheWrite"]
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage["output"],
        "total_tokens": prompt + usage["output"],
        "prompt_tokens_details": {"cached_tokens": usage["cacheRead"]},
        "completion_tokens_details": {"reasoning_tokens": usage.get("reasoningTokens", 0)},
    }


def _finish_reason(reason: StopReason) -> str:
    return _FINISH.get(reason, "stop")


class ChatEncoder:
    """``chat.completion.chunk`` frames. Every chunk shares one pre-encoded head (id, created, model), so a text
    delta costs one small ``orjson.dumps`` of the delta itself."""

    def __init__(self, completion_id: str, model: str, include_usage: bool) -> None:
        self.include_usage = include_usage
        fixed = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        head = orjson.dumps(fixed)[:-1]  # the object without its closing brace
        self._head = b"data: " + head + b","
        self._choice = self._head + b'"choices":[{"index":0,"delta":'
        self._tool_index: dict[int, int] = {}  # content index -> position in delta.tool_calls

    def _delta(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        tail = (
            b',"finish_reason":null}]}\n\n' if finish is None else b',"finish_reason":"' + finish.encode() + b'"}]}\n\n'
        )
        return self._choice + orjson.dumps(delta) + tail

    def start(self, message: AssistantMessage) -> bytes:
        return self._delta({"role": "assistant", "content": ""})

    def block_start(self, kind: BlockKind, index: int, content: dict[str, Any], message: AssistantMessage) -> bytes:
        if kind != "toolCall":
            return b""
        position = self._tool_index[index] = len(self._tool_index)
        call = {"index": position, "id": content["id"], "type": "function"}
        call["function"] = {"name": content["name"], "arguments": ""}
        return self._delta({"tool_calls": [call]})

    def block_delta(self, kind: BlockKind, index: int, delta: str, message: AssistantMessage) -> bytes:
        if kind == "text":
            return self._delta({"content": delta})
        if kind == "thinking":
            return self._delta({"reasoning_content": delta})
        return self._delta({"tool_calls": [{"index": self._tool_index[index], "function": {"arguments": delta}}]})

    def block_end(self, kind: BlockKind, index: int, content: dict[str, Any], message: AssistantMessage) -> bytes:
        return b""

    def done(self, reason: StopReason, message: AssistantMessage) -> bytes:
        frames = self._delta({}, _finish_reason(reason))
        if self.include_usage:
            frames += self._head + b'"choices":[],"usage":' + orjson.dumps(usage_body(message)) + b"}\n\n"
        return frames + DONE

    def error(self, reason: Literal["error", "aborted"], message: AssistantMessage) -> bytes:
        if reason == "aborted":
            return b""  # the client is gone
        status = message.get("errorStatus") or 502
        error = openai_error(status, "upstream_error", message.get("errorMessage", "upstream error"))
        return b"data: " + orjson.dumps({"error": error}) + b"\n\n"


def encoder(request: IngressRequest, model: ModelSpec, generation_id: str) -> Encoder:
    options = request.body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return ChatEncoder(completion_id(generation_id), request.model_id, include_usage)


def completion_id(generation_id: str) -> str:
    return "chatcmpl-" + generation_id.removeprefix("gen_")


def render(request: IngressRequest, message: AssistantMessage, generation_id: str) -> Any:
    text = "".join(b["text"] for b in message["content"] if b["type"] == "text")
    reasoning = "".join(b["thinking"] for b in message["content"] if b["type"] == "thinking")
    calls = [
        {
            "id": b["id"],
            "type": "function",
            "function": {"name": b["name"], "arguments": orjson.dumps(b["arguments"]).decode()},
        }
        for b in message["content"]
        if b["type"] == "toolCall"
    ]
    reply: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if reasoning:
        reply["reasoning_content"] = reasoning
    if calls:
        reply["tool_calls"] = calls
    return {
        "id": completion_id(generation_id),
        "object": "chat.completion",
        "created": message["timestamp"] // 1000,
        "model": request.model_id,
        "choices": [
            {"index": 0, "message": reply, "finish_reason": _finish_reason(message["stopReason"]), "logprobs": None}
        ],
        "usage": usage_body(message),
    }


FORMAT = IngressFormat(
    name="openai-chat",
    decode=decode,
    encoder=encoder,
    render=render,
    error_body=openai_error_body,
    wire_api="openai-completions",
    preferred_provider="openai",
)
