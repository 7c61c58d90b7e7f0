"""Adapter for OpenAI Chat Completions (``POST {base_url}/chat/completions``) and every server that copies it.

One module serves OpenAI, Azure-style deployments, DeepSeek, xAI, Groq, OpenRouter, Mistral, Ollama, vLLM, llama.cpp
and Gemini's OpenAI endpoint. Their request-side differences are data in ``call.model.compat`` (see ``_flag``);
their response-side differences are tolerated by the parser, with the vendor named next to each quirk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

import orjson
from httpx_sse import ServerSentEvent

from client.types import ImageContent, Message
from sidecar.errors import UpstreamProtocolError, UpstreamStreamError, redact
from sidecar.providers.base import (
    Delta,
    Deltas,
    Finish,
    ResponseInfo,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    UpstreamCall,
    UsageUpdate,
    endpoint,
    event_object,
    open_stream,
    read_deltas,
)
from sidecar.providers.history import repair_tool_history
from sidecar.upstream import Upstream

_Reason = Literal["stop", "length", "toolUse"]

_COMPAT_DEFAULTS: Mapping[str, Any] = {
    "max_tokens_field": "max_completion_tokens",
    "system_role": "system",
    "supports_usage_in_streaming": True,
    "supports_reasoning_effort": False,
    "supports_store": False,
    "supports_service_tier": False,
    "supports_prompt_cache_key": False,
    "auth_header": "authorization",
    "image_detail": True,
}
_EFFORTS = {"minimal": "minimal", "low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
_FINISH: dict[str, _Reason] = {"stop": "stop", "length": "length", "tool_calls": "toolUse", "function_call": "toolUse"}
_SIMPLE_OPTIONS = (
    ("temperature", "temperature"),
    ("topP", "top_p"),
    ("presencePenalty", "presence_penalty"),
    ("frequencyPenalty", "frequency_penalty"),
    ("stopSequences", "stop"),
)


def _flag(call: UpstreamCall, name: str) -> Any:
    return call.model.compat.get(name, _COMPAT_DEFAULTS[name])


def usage_in_streaming(call: UpstreamCall) -> bool:
    """Whether the server accepts ``stream_options.include_usage`` (some OpenAI-compatible servers reject it)."""
    return bool(_flag(call, "supports_usage_in_streaming"))


# ----- request ---------------------------------------------------------------------------------------------------


def build_headers(call: UpstreamCall) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept": "text/event-stream"}
    if call.api_key is not None:  # Ollama and llama.cpp run without a key: send no auth header at all
        if _flag(call, "auth_header") == "api-key":  # Azure OpenAI
            headers["api-key"] = call.api_key
        else:
            headers["authorization"] = f"Bearer {call.api_key}"
    # Lower-cased so an "Authorization" in model or call headers replaces ours instead of being sent twice.
    for extra in (call.model.headers, call.headers):
        headers.update({name.lower(): value for name, value in extra.items()})
    return headers


def _image_part(call: UpstreamCall, image: ImageContent) -> dict[str, Any]:
    data = image.get("data")
    url = f"data:{image.get('mimeType', 'image/png')};base64,{data}" if data else image.get("url", "")
    part: dict[str, Any] = {"url": url}
    if "detail" in image and _flag(call, "image_detail"):
        part["detail"] = image["detail"]
    return {"type": "image_url", "image_url": part}


def _user_content(call: UpstreamCall, content: Any) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for block in content:
        if block.get("type") == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif block.get("type") == "image":
            parts.append(_image_part(call, block))
    return parts


def _images_message(call: UpstreamCall, images: list[ImageContent]) -> dict[str, Any]:
    # Tool and system messages cannot carry images, so they travel in a user message right after.
    return {"role": "user", "content": [_image_part(call, image) for image in images]}


def _messages(call: UpstreamCall) -> list[dict[str, Any]]:
    system_role = _flag(call, "system_role")
    out: list[dict[str, Any]] = []
    system = "\n\n".join(part for part in call.context.get("systemPrompt", []) if part)
    if system:
        out.append({"role": system_role, "content": system})
    tool_images: list[ImageContent] = []

    def flush_tool_images() -> None:
        if tool_images:
            out.append(_images_message(call, tool_images))
            tool_images.clear()

    message: Message
    # Unanswered calls and orphan results are repaired first: OpenAI rejects both with a 400.
    for message in repair_tool_history(call.context["messages"]):
        if message["role"] == "toolResult":
            texts = [b["text"] for b in message["content"] if b["type"] == "text"]
            images = [b for b in message["content"] if b["type"] == "image"]
            tool_images.extend(images)
            text = "\n".join(texts) if texts else ("(see attached image)" if images else "")
            out.append({"role": "tool", "tool_call_id": message["toolCallId"], "content": text})
            continue
        flush_tool_images()
        if message["role"] == "user":
            content = message["content"]
            if content or isinstance(content, str):
                out.append({"role": "user", "content": _user_content(call, content)})
        elif message["role"] == "developer":
            dev = message["content"]
            if isinstance(dev, str):
                out.append({"role": system_role, "content": dev})
            else:
                dev_text = "\n".join(b["text"] for b in dev if b["type"] == "text")
                out.append({"role": system_role, "content": dev_text})
                dev_images = [b for b in dev if b["type"] == "image"]
                if dev_images:
                    out.append(_images_message(call, dev_images))
        elif message["role"] == "assistant":
            # Thinking is not replayed: Chat Completions has no field for it.
            text = "".join(b["text"] for b in message["content"] if b["type"] == "text")
            calls: list[dict[str, Any]] = [
                {
                    "id": b["id"],
                    "type": "function",
                    "function": {"name": b["name"], "arguments": orjson.dumps(b.get("arguments", {})).decode()},
                }
                for b in message["content"]
                if b["type"] == "toolCall"
            ]
            if not text and not calls:
                continue
            entry: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                entry["tool_calls"] = calls
            out.append(entry)
    flush_tool_images()
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if choice == "any":
        return "required"
    if isinstance(choice, Mapping):
        if isinstance(choice.get("function"), Mapping):
            return dict(choice)
        if choice.get("type") in ("function", "tool") and isinstance(choice.get("name"), str):
            return {"type": "function", "function": {"name": choice["name"]}}
    return None  # {"type": "computer"} and anything unknown: let the server use its default


def _request_body(call: UpstreamCall) -> dict[str, Any]:
    options = call.options
    body: dict[str, Any] = {"model": call.model.id, "stream": True, "messages": _messages(call)}
    if usage_in_streaming(call):
        body["stream_options"] = {"include_usage": True}
    if options.get("maxTokens") is not None:
        body[_flag(call, "max_tokens_field")] = options["maxTokens"]
    for pi_name, wire_name in _SIMPLE_OPTIONS:
        if options.get(pi_name) is not None:
            body[wire_name] = options[pi_name]
    tools = call.context.get("tools") or []
    if tools:
        wire_tools = []
        for tool in tools:
            function: dict[str, Any] = {"name": tool["name"], "description": tool.get("description", "")}
            function["parameters"] = tool.get("parameters") or {"type": "object", "properties": {}}
            if "strict" in tool:
                function["strict"] = tool["strict"]
            wire_tools.append({"type": "function", "function": function})
        body["tools"] = wire_tools
        # OpenAI answers 400 to a tool_choice without tools, so it is only sent alongside them.
        choice = _tool_choice(options.get("toolChoice"))
        if choice is not None:
            body["tool_choice"] = choice
    effort = _EFFORTS.get(str(options.get("reasoning")))
    if effort and _flag(call, "supports_reasoning_effort") and not options.get("disableReasoning"):
        body["reasoning_effort"] = effort
    if _flag(call, "supports_store"):
        body["store"] = False
    if _flag(call, "supports_service_tier") and options.get("serviceTier") is not None:
        body["service_tier"] = options["serviceTier"]
    if _flag(call, "supports_prompt_cache_key"):
        body["prompt_cache_key"] = options.get("promptCacheKey") or call.session_id
    return body


# ----- response --------------------------------------------------------------------------------------------------


def _usage(raw: Mapping[str, Any]) -> UsageUpdate:
    prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
    details = raw.get("prompt_tokens_details")
    if isinstance(details, Mapping) and isinstance(details.get("cached_tokens"), int):
        cached = details["cached_tokens"]
    else:  # DeepSeek reports its cache hits outside the details object
        hit = raw.get("prompt_cache_hit_tokens")
        cached = hit if isinstance(hit, int) else 0
    out_details = raw.get("completion_tokens_details")
    reasoning = out_details.get("reasoning_tokens") if isinstance(out_details, Mapping) else None
    reasoning = reasoning if isinstance(reasoning, int) else None
    if isinstance(completion, int) and isinstance(prompt, int) and reasoning:
        # xAI counts reasoning outside completion_tokens (total = prompt + completion + reasoning); pi's
        # reasoningTokens is a subset of output, so it is added back when the totals show it is missing.
        if raw.get("total_tokens") == prompt + completion + reasoning:
            completion += reasoning
    return UsageUpdate(
        input=prompt - cached if isinstance(prompt, int) else None,
        output=completion if isinstance(completion, int) else None,
        cache_read=cached,
        reasoning=reasoning,
    )


def _stream_error(provider: str, error: Mapping[str, Any], secrets: tuple[str, ...]) -> UpstreamStreamError:
    code, kind = error.get("code"), error.get("type")
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    if isinstance(code, int) and 400 <= code <= 599:
        status = code
    else:
        # OpenRouter puts a string in `code`; OpenAI's rate-limit errors say so in `code` or `type`.
        tags = f"{kind} {code}"
        status = 429 if "rate_limit" in tags or "insufficient_quota" in tags else 500
    # Every field taken from the provider goes through the redaction, not only the message.
    text = f"{provider} stream error ({kind or code or 'error'}): {error.get('message') or 'no message'}"
    message = redact(text, secrets)
    return UpstreamStreamError(message, status)


def secrets_of(call: UpstreamCall) -> tuple[str, ...]:
    """The values an upstream error text is redacted of: the injected key."""
    return (call.api_key,) if call.api_key else ()


class ChatCompletionsParser:
    """One Chat Completions stream's events -> deltas: the adapter's ``stream`` and the same-family relay
    (``sidecar.relay``) both feed it. Chunk-by-chunk state, plain dict lookups, no validation (this is the per-event
    hot path). ``done`` is set by ``data: [DONE]``; ``end()`` gives the ``Finish`` once the stream is over.

    Raises ``UpstreamStreamError`` for what the server itself reported (an ``error`` chunk, a content filter) and
    ``UpstreamProtocolError`` for what cannot be read."""

    __slots__ = ("provider", "_secrets", "finish", "saw_id", "saw_tool", "done")

    def __init__(self, provider: str, secrets: tuple[str, ...] = ()) -> None:
        self.provider = provider
        self._secrets = secrets
        self.finish: str | None = None
        self.saw_id = self.saw_tool = False
        self.done = False

    def feed(self, event: ServerSentEvent) -> list[Delta]:
        data = event.data.strip()
        if not data:
            return []
        if data == "[DONE]":
            self.done = True
            return []
        chunk = event_object(data, self.provider, stream="the OpenAI-compatible stream")
        error = chunk.get("error")
        if isinstance(error, Mapping):  # OpenAI SDK shape; OpenRouter also sends it beside `choices`
            raise _stream_error(self.provider, error, self._secrets)
        try:
            return self.feed_chunk(chunk)
        except (AttributeError, TypeError) as exc:  # a list or string where an object belongs
            raise UpstreamProtocolError(f"{self.provider}: malformed OpenAI-compatible chunk ({exc})") from None

    def feed_chunk(self, chunk: Mapping[str, Any]) -> list[Delta]:
        out: list[Delta] = []
        if not self.saw_id and chunk.get("id"):  # Azure's first chunk has id "" (prompt_filter_results only)
            self.saw_id = True
            out.append(ResponseInfo(response_id=str(chunk["id"]), upstream_model=chunk.get("model") or None))
        # The pi message has one choice, so only index 0 is read: with n > 1 the other choices are dropped.
        choice: Mapping[str, Any] | None = None
        for position, candidate in enumerate(chunk.get("choices") or ()):
            if candidate.get("index", position) == 0:
                choice = candidate
                break
        usage = chunk.get("usage")
        if choice is not None:
            delta = choice.get("delta") or {}
            # DeepSeek, xAI, llama.cpp: reasoning_content; OpenRouter, Ollama, newer vLLM: reasoning.
            # Servers that send both send the same text, so only one of them is used.
            thinking = delta.get("reasoning_content") or delta.get("reasoning")
            if thinking and isinstance(thinking, str):
                out.append(ThinkingDelta(key="thinking", text=thinking))
            for field in ("content", "refusal"):  # a gateway must not drop a refusal
                text = delta.get(field)
                if text and isinstance(text, str):
                    out.append(TextDelta(key="text", text=text))
            for position, tc in enumerate(delta.get("tool_calls") or ()):
                function = tc.get("function") or {}
                arguments = function.get("arguments") or ""
                if not isinstance(arguments, str):  # a few local servers send the arguments as an object
                    arguments = orjson.dumps(arguments).decode()
                call_id, name = tc.get("id") or None, function.get("name") or None
                if call_id or name or arguments:
                    self.saw_tool = True
                    index = tc.get("index")  # xAI and Mistral send whole calls; some servers omit the index
                    key = ("tool", index if isinstance(index, int) else position)
                    out.append(ToolCallDelta(key=key, id=call_id, name=name, arguments=arguments))
            if choice.get("finish_reason"):
                self.finish = str(choice["finish_reason"])
            if usage is None:  # Moonshot puts usage inside the choice
                usage = choice.get("usage")
        if isinstance(usage, Mapping):  # OpenAI sends "usage": null on every chunk until the last one
            out.append(_usage(usage))
        return out

    def end(self) -> Finish:
        if self.finish == "content_filter":
            raise UpstreamStreamError(f"{self.provider}: the response was blocked by the upstream content filter", 400)
        if self.finish is None:
            raise UpstreamProtocolError(f"{self.provider}: OpenAI-compatible stream ended before finish_reason", 502)
        reason = _FINISH.get(self.finish, "stop")
        if reason == "stop" and self.saw_tool:
            # Gemini's OpenAI endpoint (and some Ollama builds) end a tool-calling turn with "stop"; the agent loop
            # only runs tools on toolUse.
            reason = "toolUse"
        return Finish(reason)


def parse_completion(data: Any, provider: str, secrets: tuple[str, ...] = ()) -> list[Delta]:
    """A non-streaming ``chat.completion`` body as the deltas its stream would have given, for the relay's ledger row;
    raises as the stream parser does (an error body, a content filter, no finish_reason)."""
    if not isinstance(data, dict):
        raise UpstreamProtocolError(f"{provider}: the OpenAI-compatible response is not a JSON object")
    error = data.get("error")
    if isinstance(error, Mapping):
        raise _stream_error(provider, error, secrets)
    parser = ChatCompletionsParser(provider, secrets)
    # A choice's `message` has the fields of a stream's `delta` (content, refusal, reasoning_content, tool_calls), so
    # the whole completion reads as one chunk.
    choices = [
        {"index": c.get("index", i), "delta": c.get("message"), "finish_reason": c.get("finish_reason")}
        for i, c in enumerate(data.get("choices") or ())
        if isinstance(c, Mapping)
    ]
    chunk = {"id": data.get("id"), "model": data.get("model"), "choices": choices, "usage": data.get("usage")}
    try:
        deltas = parser.feed_chunk(chunk)
    except (AttributeError, TypeError) as exc:
        raise UpstreamProtocolError(f"{provider}: malformed OpenAI-compatible response ({exc})") from None
    deltas.append(parser.end())
    return deltas


async def stream(call: UpstreamCall, client: Upstream) -> AsyncIterator[Deltas]:
    """Stream one Chat Completions generation as deltas (see ``sidecar.providers.base``)."""
    provider = call.model.provider
    url = endpoint(call, "/chat/completions")  # the base URL, and Azure's URL shape when its compat says so
    body = orjson.dumps(_request_body(call))
    parser = ChatCompletionsParser(provider, secrets_of(call))
    async with open_stream(client, call, url, headers=build_headers(call), json_body=body) as response:
        async for deltas in read_deltas(parser, response, provider):
            yield deltas
    yield parser.end()
