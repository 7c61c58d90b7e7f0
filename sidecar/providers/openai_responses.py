"""OpenAI Responses API (``POST {base_url}/responses``, ``stream: true``) -> ``Delta`` records.

Request: the pi ``Context`` becomes ``instructions`` and ``input`` items, stateless (``store: false``), in pi-ai's
conventions so a conversation moves between pi-ai and the sidecar unchanged:

- a tool call's pi id is ``"{call_id}|{item id}"``: both halves go back as the ``function_call``'s ``call_id`` and
  ``id``, the first as its ``function_call_output``'s ``call_id``;
- a thinking block's ``thinkingSignature`` is the whole ``reasoning`` output item as JSON (id, summary,
  ``encrypted_content``); it is replayed as that item. A thinking block without one (another provider's, an
  aborted stream's) cannot be: OpenAI only accepts its own encrypted reasoning, so it is dropped.

Response: ``event: <type>`` / ``data: <json>`` frames, no ``[DONE]``; the stream ends with ``response.completed``,
``.incomplete`` or ``.failed``. Each output item is one content block keyed by the item's ``id``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import orjson
from httpx_sse import ServerSentEvent

from client.types import ImageContent
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
    endpoint,
    event_object,
    open_stream,
    read_deltas,
)
from sidecar.providers.history import repair_tool_history
from sidecar.upstream import Upstream

_EFFORTS = {"minimal": "minimal", "low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh", "max": "xhigh"}
_ERROR_STATUS = {  # an in-stream error's code (or type) -> the HTTP status OpenAI gives it before a stream starts
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "tokens": 429,  # the `type` of a tokens-per-minute rate limit
    "requests": 429,
    "invalid_prompt": 400,
    "invalid_request_error": 400,
    "context_length_exceeded": 400,
    "invalid_image": 400,
    "server_error": 500,
    "server_is_overloaded": 503,
}
# OpenAI limits call_id and item ids to [a-zA-Z0-9_-]{1,64}; ids minted elsewhere are rewritten the same way in the
# call and its output, so they still pair.
_ID_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_NOTHING: tuple[Delta, ...] = ()


def secrets_of(call: UpstreamCall) -> tuple[str, ...]:
    """The values an upstream error text is redacted of: the injected key."""
    return (call.api_key,) if call.api_key else ()


async def stream(call: UpstreamCall, client: Upstream) -> AsyncIterator[Deltas]:
    """Send ``call`` to the Responses API and yield its stream as deltas."""
    url = endpoint(call, "/responses")  # the base URL, and Azure's URL shape when its compat says so
    body = orjson.dumps(request_body(call))
    parser = ResponsesEventParser(call.model.provider, secrets_of(call), tier_costs(call))
    async with open_stream(client, call, url, headers=build_headers(call), json_body=body) as response:
        async for deltas in read_deltas(parser, response, call.model.provider):
            yield deltas
        if parser.done:
            return
    parser.end()


# ----- request ----------------------------------------------------------------------------------------------------


def build_headers(call: UpstreamCall) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept": "text/event-stream"}
    # Lower-cased so that a caller's "OpenAI-Beta" replaces the model's "openai-beta" instead of doubling it.
    for source in (call.model.headers, call.headers):
        for name, value in source.items():
            headers[name.lower()] = value
    # Set last: the injected credential is the sidecar's job, a pass-through header must not replace it.
    if call.api_key is not None:
        if call.model.compat.get("auth_header") == "api-key":  # Azure OpenAI
            headers["api-key"] = call.api_key
        else:
            headers["authorization"] = f"Bearer {call.api_key}"
    return headers


def request_body(call: UpstreamCall) -> dict[str, Any]:
    options, model = call.options, call.model
    body: dict[str, Any] = {"model": model.id, "input": _input_items(call), "stream": True, "store": False}
    system = "\n\n".join(part for part in call.context.get("systemPrompt") or () if part)
    if system:
        body["instructions"] = system
    if options.get("maxTokens") is not None:
        body["max_output_tokens"] = options["maxTokens"]
    for pi_name, wire_name in (("temperature", "temperature"), ("topP", "top_p"), ("serviceTier", "service_tier")):
        if options.get(pi_name) is not None:
            body[wire_name] = options[pi_name]
    tools = call.context.get("tools") or []
    if tools:
        body["tools"] = [_tool(tool) for tool in tools]
        choice = _tool_choice(options.get("toolChoice"))
        if choice is not None:
            body["tool_choice"] = choice
    if model.reasoning:
        # Stateless (store: false), so reasoning can only be replayed from its encrypted content: always ask for it.
        body["include"] = ["reasoning.encrypted_content"]
        effort = _EFFORTS.get(str(options.get("reasoning")))
        if effort and not (options.get("disableReasoning") or options.get("forceReasoningOff")):
            if effort == "xhigh" and not model.compat.get("supports_xhigh"):
                effort = "high"  # only a few models accept xhigh; the others answer 400
            body["reasoning"] = {"effort": effort, "summary": "auto"}
    if options.get("cacheRetention") != "none":
        body["prompt_cache_key"] = options.get("promptCacheKey") or call.session_id
    return body


def _tool(tool: Any) -> dict[str, Any]:
    return {
        "type": "function",
        "name": tool["name"],
        "description": tool.get("description", ""),
        "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
        # The Responses API defaults `strict` to true, which rejects most hand-written schemas (every property must be
        # required, additionalProperties false): strict only when the tool asks for it, as in Chat Completions.
        "strict": bool(tool.get("strict", False)),
    }


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if choice == "any":
        return "required"
    if isinstance(choice, Mapping):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else choice.get("name")
        if choice.get("type") in ("function", "tool") and isinstance(name, str) and name:
            return {"type": "function", "name": name}
    return None  # {"type": "computer"} and unknown shapes: leave the choice to the model


def _clean_id(raw: str) -> str:
    return _ID_BAD_CHARS.sub("_", raw)[:64].rstrip("_") or "_"


def split_tool_id(pi_id: str) -> tuple[str, str | None]:
    """A pi tool-call id as ``(call_id, item id)``: pi-ai's ``"call_…|fc_…"``, or another provider's id alone."""
    call_id, bar, item_id = pi_id.partition("|")
    if not bar or not item_id:
        return _clean_id(pi_id), None
    item_id = _clean_id(item_id)
    return _clean_id(call_id), item_id if item_id.startswith("fc") else f"fc_{item_id}"[:64]


def _image(image: ImageContent) -> dict[str, Any]:
    data = image.get("data")
    url = f"data:{image.get('mimeType') or 'image/png'};base64,{data}" if data else image.get("url", "")
    return {"type": "input_image", "image_url": url, "detail": image.get("detail") or "auto"}


def _user_content(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "input_text", "text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for block in content:
        if block.get("type") == "text" and block.get("text"):
            parts.append({"type": "input_text", "text": block["text"]})
        elif block.get("type") == "image":
            parts.append(_image(block))
    return parts


def _reasoning_item(signature: Any) -> dict[str, Any] | None:
    """The reasoning item a thinking signature holds, when it is one OpenAI can take back (its encrypted content:
    with ``store: false`` an id alone names nothing)."""
    if not isinstance(signature, str) or not signature.startswith("{"):
        return None  # an Anthropic signature, or none
    try:
        item = orjson.loads(signature)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(item, dict) or item.get("type") != "reasoning" or not item.get("encrypted_content"):
        return None
    return item


def _assistant_items(content: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    reasonings = {
        id(b): r for b in content if b.get("type") == "thinking" and (r := _reasoning_item(b.get("thinkingSignature")))
    }
    for block in content:
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            items.append({"role": "assistant", "content": [{"type": "output_text", "text": block["text"]}]})
        elif kind == "thinking":
            if (reasoning := reasonings.get(id(block))) is not None:
                items.append(reasoning)
        elif kind == "toolCall":
            call_id, item_id = split_tool_id(block.get("id", ""))
            item = {
                "type": "function_call",
                "call_id": call_id,
                "name": block.get("name", ""),
                "arguments": orjson.dumps(block.get("arguments") or {}).decode(),
            }
            # OpenAI rejects a function_call item id whose reasoning item is not replayed with it ("provided without
            # its required 'reasoning' item"); pi-ai drops the id then too.
            if item_id and reasonings:
                item["id"] = item_id
            items.append(item)
        # redactedThinking (Anthropic's), images and server-tool blocks have no Responses input item.
    return items


def _input_items(call: UpstreamCall) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    supports_images = "image" in call.model.input
    # Unanswered calls and orphan results are repaired first: OpenAI rejects both with a 400.
    for message in repair_tool_history(call.context["messages"]):
        role = message["role"]
        if message["role"] == "toolResult":
            texts = [b["text"] for b in message["content"] if b["type"] == "text"]
            images = [b for b in message["content"] if b["type"] == "image"]
            output = "\n".join(texts) if texts else ("(see attached image)" if images else "")
            out.append(
                {"type": "function_call_output", "call_id": split_tool_id(message["toolCallId"])[0], "output": output}
            )
            if images and supports_images:  # an output item holds text only: the images follow as a user turn
                out.append({"role": "user", "content": [_image(image) for image in images]})
        elif role in ("user", "developer"):
            parts = _user_content(message["content"])
            if parts:
                out.append({"role": role, "content": parts})
        elif role == "assistant":  # errored and aborted turns were dropped by the repair
            out.extend(_assistant_items(message["content"]))
    return out


# ----- response ---------------------------------------------------------------------------------------------------


def tier_costs(call: UpstreamCall) -> Mapping[str, float]:
    """``compat.service_tier_cost``: the cost multiplier per service tier the response reports (catalog data)."""
    costs = call.model.compat.get("service_tier_cost")
    return costs if isinstance(costs, Mapping) else {}


def _usage(usage: Mapping[str, Any], response: Mapping[str, Any], tier_costs: Mapping[str, float]) -> UsageUpdate:
    total_in, output = usage.get("input_tokens"), usage.get("output_tokens")
    in_details, out_details = usage.get("input_tokens_details"), usage.get("output_tokens_details")
    cached = in_details.get("cached_tokens") if isinstance(in_details, Mapping) else None
    cached = cached if isinstance(cached, int) else 0
    reasoning = out_details.get("reasoning_tokens") if isinstance(out_details, Mapping) else None
    # The tier actually served (flex may fall back to default), not the one asked for.
    multiplier = tier_costs.get(response.get("service_tier")) if tier_costs else None  # type: ignore[arg-type]
    return UsageUpdate(
        input=total_in - cached if isinstance(total_in, int) else None,  # pi's input excludes the cache reads
        output=output if isinstance(output, int) else None,
        cache_read=cached,
        reasoning=reasoning if isinstance(reasoning, int) else None,
        cost_multiplier=float(multiplier) if isinstance(multiplier, int | float) else None,
    )


def _stream_error(provider: str, error: Any, secrets: tuple[str, ...]) -> UpstreamStreamError:
    error = error if isinstance(error, Mapping) else {}
    code, kind = error.get("code"), error.get("type")
    status = _ERROR_STATUS.get(str(code)) or _ERROR_STATUS.get(str(kind)) or 500
    # Every field taken from the provider goes through the redaction, not only the message.
    text = f"{provider} stream error ({code or kind or 'error'}): {error.get('message') or 'no message'}"
    return UpstreamStreamError(redact(text, secrets), status)


def _finish(response: Mapping[str, Any], saw_tool: bool, provider: str) -> Finish:
    if response.get("status") == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, Mapping) else None
        if reason == "content_filter":
            raise UpstreamStreamError(f"{provider}: the response was blocked by the upstream content filter", 400)
        return Finish("length")  # max_output_tokens, and whatever else cut the output short
    return Finish("toolUse" if saw_tool else "stop")


def _item_deltas(item: Mapping[str, Any], key: Any) -> tuple[Delta, ...] | None:
    """The deltas that open a block for the output item; ``None`` for items pi's content cannot hold
    (``web_search_call`` and other hosted tools ran server-side)."""
    kind = item.get("type")
    if kind == "function_call":
        call_id = item.get("call_id") or key
        arguments = item.get("arguments") or ""
        return (ToolCallDelta(key, id=f"{call_id}|{key}", name=item.get("name"), arguments=arguments),)
    if kind in ("message", "reasoning"):
        return _NOTHING  # opened by their first text, or by the reasoning's signature at the item's end
    return None


class ResponsesEventParser:
    """One Responses stream's events -> deltas: the adapter's ``stream`` and the same-family relay (``sidecar.relay``)
    both feed it. Plain dict lookups, no validation: this is the per-event hot path.

    Raises ``UpstreamStreamError`` for what OpenAI itself reported (``response.failed``, a content filter) and
    ``UpstreamProtocolError`` for what cannot be read. An ``error`` event is held until the ``response.failed`` that
    follows it, so a relayed stream keeps that terminal event too."""

    __slots__ = (
        "provider",
        "_secrets",
        "_tier_costs",
        "_saw_tool",
        "_streamed",
        "_error",
        "response",
        "sequence",
        "done",
    )

    def __init__(
        self, provider: str, secrets: tuple[str, ...] = (), tier_costs: Mapping[str, float] | None = None
    ) -> None:
        self.provider = provider
        self._secrets = secrets
        self._tier_costs = tier_costs or {}
        self._saw_tool = False
        self._streamed: set[Any] = set()  # function calls whose arguments arrived as deltas
        self._error: UpstreamStreamError | None = None
        self.response: Mapping[str, Any] | None = None
        """The ``response`` of ``response.created``: the relay's own ``response.failed`` echoes it."""
        self.sequence = -1
        """The last ``sequence_number`` seen."""
        self.done = False
        """A terminal event (``response.completed``, ``.incomplete`` or ``.failed``) was read."""

    def feed(self, sse: ServerSentEvent) -> Sequence[Delta]:
        if not sse.data:
            return _NOTHING
        data = event_object(sse.data, self.provider, event=sse.event)
        try:
            return self._event(data)
        except (AttributeError, TypeError) as exc:  # a list or string where an object belongs
            raise UpstreamProtocolError(f"{self.provider}: malformed Responses event ({exc})") from None

    def _event(self, data: dict[str, Any]) -> Sequence[Delta]:
        sequence = data.get("sequence_number")
        if isinstance(sequence, int):
            self.sequence = sequence
        kind = data.get("type")
        if kind == "response.output_text.delta" or kind == "response.refusal.delta":  # a gateway keeps refusals
            text = data.get("delta")
            return (TextDelta(data.get("item_id"), text),) if text else _NOTHING
        if kind == "response.function_call_arguments.delta":
            fragment = data.get("delta")
            if not fragment:
                return _NOTHING
            key = data.get("item_id")
            self._streamed.add(key)
            return (ToolCallDelta(key, arguments=fragment),)
        if kind == "response.reasoning_summary_text.delta":
            text = data.get("delta")
            return (ThinkingDelta(data.get("item_id"), text),) if text else _NOTHING
        if kind == "response.reasoning_summary_part.added":
            # Summary parts are paragraphs of one thinking block, as pi-ai joins them.
            return (ThinkingDelta(data.get("item_id"), "\n\n"),) if data.get("summary_index") else _NOTHING
        if kind == "response.output_item.added":
            item = data.get("item") or {}
            started = _item_deltas(item, item.get("id"))
            if started and item.get("type") == "function_call":
                self._saw_tool = True
            return started or _NOTHING
        if kind == "response.output_item.done":
            return self._item_done(data.get("item") or {})
        if kind == "response.created":
            response = data.get("response") or {}
            self.response = response
            return (ResponseInfo(response_id=response.get("id"), upstream_model=response.get("model")),)
        if kind == "response.completed" or kind == "response.incomplete":
            self.done = True
            response = data.get("response") or {}
            finish = _finish(response, self._saw_tool, self.provider)
            usage = response.get("usage")
            return (_usage(usage, response, self._tier_costs), finish) if isinstance(usage, Mapping) else (finish,)
        if kind == "response.failed":
            self.done = True
            error = (data.get("response") or {}).get("error")
            raise _stream_error(self.provider, error, self._secrets) if error else self._failure()
        if kind == "error":
            # OpenAI nests the error (`{"type":"error","error":{code,message}}`); the API reference shows it flat.
            error = data.get("error")
            self._error = _stream_error(self.provider, error if isinstance(error, Mapping) else data, self._secrets)
            return _NOTHING
        # in_progress, content_part.*, *.done, annotations, hosted-tool progress: nothing pi's content holds.
        return _NOTHING

    def _item_done(self, item: Mapping[str, Any]) -> Sequence[Delta]:
        key, kind = item.get("id"), item.get("type")
        if kind == "reasoning":
            if not item.get("encrypted_content") and not item.get("summary"):
                return _NOTHING  # nothing to show and nothing to replay: no block
            # The whole item is the signature (pi-ai's convention): replayed as-is on the next turn.
            return (ThinkingDelta(key, signature=orjson.dumps(item).decode()), BlockEnd(key))
        if kind == "function_call" and key not in self._streamed and item.get("arguments"):
            # Servers that send the arguments whole (in the added or the done item) rather than as deltas.
            return (ToolCallDelta(key, arguments=item["arguments"]), BlockEnd(key))
        if kind in ("message", "function_call"):
            return (BlockEnd(key),)
        return _NOTHING

    def _failure(self) -> UpstreamStreamError:
        return self._error or UpstreamStreamError(f"{self.provider}: the response failed (no error details)", 500)

    def end(self) -> None:
        """The upstream body ended: fine after a terminal event, a truncated stream otherwise."""
        if self.done:
            return
        if self._error is not None:
            raise self._error
        raise UpstreamProtocolError(f"{self.provider}: Responses stream ended before response.completed", 502)


def parse_response(
    data: Any, provider: str, secrets: tuple[str, ...] = (), tier_costs: Mapping[str, float] | None = None
) -> list[Delta]:
    """A non-streaming ``Response`` body as the deltas its stream would have given, for the relay's ledger row;
    raises as the stream parser does (an error body, a failed response, a content filter)."""
    if not isinstance(data, dict):
        raise UpstreamProtocolError(f"{provider}: the Responses reply is not a JSON object")
    error = data.get("error")
    if isinstance(error, Mapping) and (data.get("status") == "failed" or "output" not in data):
        raise _stream_error(provider, error, secrets)
    deltas: list[Delta] = [ResponseInfo(response_id=data.get("id"), upstream_model=data.get("model"))]
    saw_tool = False
    try:
        for item in data.get("output") or ():
            key, kind = item.get("id"), item.get("type")
            if kind == "message":
                parts = item.get("content") or ()
                text = "".join(p.get("text") or p.get("refusal") or "" for p in parts if isinstance(p, dict))
                if text:
                    deltas += (TextDelta(key, text), BlockEnd(key))
            elif kind == "reasoning":
                summary = "\n\n".join(p.get("text", "") for p in item.get("summary") or () if isinstance(p, dict))
                if summary or item.get("encrypted_content"):
                    signature = orjson.dumps(item).decode()
                    deltas += (ThinkingDelta(key, summary, signature=signature), BlockEnd(key))
            elif kind == "function_call":
                saw_tool = True
                deltas += (*(_item_deltas(item, key) or ()), BlockEnd(key))
    except (AttributeError, TypeError) as exc:
        raise UpstreamProtocolError(f"{provider}: malformed Responses reply ({exc})") from None
    if isinstance(usage := data.get("usage"), Mapping):
        deltas.append(_usage(usage, data, tier_costs or {}))
    deltas.append(_finish(data, saw_tool, provider))
    return deltas
