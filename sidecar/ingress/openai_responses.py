"""OpenAI Responses (``POST /v1/responses``, ingress-formats §3) as an ingress format, translated to the pi context.

What the official clients need (the openai SDKs' ``responses`` API, Codex CLI, ``@ai-sdk/openai``):

- ``input`` items become pi messages: message items (roles user/system/developer/assistant), ``function_call`` and
  ``function_call_output`` pairs, ``reasoning`` items. Consecutive assistant-side items (reasoning, assistant
  message, function calls) form one assistant turn. ``instructions`` and the system/developer messages that open the
  input become the system prompt; a later system/developer message stays in place as a developer message.
- Only function tools are translated. Hosted tools (``web_search``, ``file_search``, ``code_interpreter``, ``mcp``,
  ``custom`` …) get a 400 naming the type: the sidecar cannot run them, and dropping one silently would leave the
  model without a capability the client counted on. Structured output (``text.format`` other than text),
  ``background``, ``conversation`` and ``prompt`` are refused the same way.
- ``item_reference`` and ``previous_response_id`` resolve against ``STORE``: the output items this process produced
  and each stored response's conversation, LRU-bounded and lost on restart. ``@ai-sdk/openai`` sends references
  by default (``store ?? true``, pitfall 18); an unknown one gets a 400 that says to send ``store: false``.
- A request for a model on ``openai-responses`` is relayed, not translated (``sidecar.relay``), and OpenAI runs
  hosted tools and resolves the references it stored. So what only a translation cannot do is not refused here:
  decode records the first such refusal as ``relay_only``, and ``relay.plan`` raises it when the request is to be
  translated. Malformed input is refused here either way.
- Reasoning items carry the provider's thinking signature in ``encrypted_content`` (prefixed, see ``SIGNATURE_PREFIX``),
  so an Anthropic thinking block survives the round trip through a stateless client such as Codex.
- The stream is ``event: <type>`` + ``data:`` frames with ``sequence_number`` on each, in the item lifecycle the
  SDK stream helpers check (§3.2, §3.3); every stream ends in ``response.completed``, ``.incomplete`` or ``.failed``.

This module is the request side; ``openai_responses_output`` holds the response side and ``STORE``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from sidecar.config import Limits
from sidecar.errors import BadRequest
from sidecar.identifiers import check_text, shown
from sidecar.ingress.base import IngressFormat, IngressRequest
from sidecar.ingress.common import (
    assistant_turn,
    fail,
    image_from_url,
    json_object,
    model_field,
    openai_error_body,
    optional,
    pi_tool,
    tool_result,
)
from sidecar.ingress.openai_responses_output import (
    REDACTED_PREFIX,
    SIGNATURE_PREFIX,
    STORE,
    ResponsesRequest,
    encoder,
    render,
)
from sidecar.ledger.record import Attribution
from sidecar.request import session_id_for

_REASONING_EFFORTS = frozenset({"minimal", "low", "medium", "high", "xhigh"})
_TOOL_CHOICES = frozenset({"auto", "none", "required"})
_UNSUPPORTED_FIELDS = {
    "background": "background responses",
    "conversation": "conversations (send the items, or use previous_response_id)",
    "prompt": "prompt templates",
}
_EXAMPLE = '{"model": "anthropic/claude-sonnet-4-5", "input": "Hello"}'
_NO_STORE_HINT = (
    "send `store: false` (the AI SDK: providerOptions.openai.store = false) so the client sends full items instead "
    "of references, or send the items themselves"
)


def decode(body: bytes, headers: Mapping[str, str], limits: Limits) -> IngressRequest:
    data = json_object(body, limits, _EXAMPLE)
    model_id = model_field(data, limits)
    refusals = _Refusals()
    for name, what in _UNSUPPORTED_FIELDS.items():
        if data.get(name):
            refusals.add(f"`{name}` is not supported: the sidecar translates Responses requests and has no {what}")
    store = _flag(data, "store", True)
    stream = _flag(data, "stream", False)
    owner = _owner(headers)

    history, history_bytes = _previous(data.get("previous_response_id"), owner, refusals)
    given = _input_items(data.get("input"), owner, refusals)
    if not history and not given and not refusals.first:
        raise BadRequest("`input` is empty: send a string or at least one input item")
    items = (*history, *(item for _, item in given))

    conversation = _Conversation(refusals)
    instructions = data.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise BadRequest("`instructions` must be a string")
        conversation.system.append(instructions)
    for item in history:
        conversation.add(item, "previous_response_id")
    for where, item in given:
        conversation.add(item, where)
    conversation.flush()

    tools, tool_choice = _tools(data.get("tools"), data.get("tool_choice"), refusals)
    context: dict[str, Any] = {"messages": conversation.messages}
    if conversation.system:
        context["systemPrompt"] = conversation.system
    if tools:
        context["tools"] = tools
    options = _options(data, limits, refusals)
    if tool_choice is not None:
        options["toolChoice"] = tool_choice
    return ResponsesRequest(
        model_id=model_id,
        context=context,  # type: ignore[arg-type]  # built from checked items
        options=options,
        stream=stream,
        session_id=session_id_for(model_id, context, options),
        body=data,
        attribution=_attribution(data),
        items=items,
        items_bytes=history_bytes + len(body),
        owner=owner,
        store=store,
        relay_only=refusals.first,
    )


class _Refusals:
    """What a translation cannot serve but OpenAI can (a hosted tool, a reference it stored …): the first one is the
    refusal a translated request gets."""

    __slots__ = ("first",)

    def __init__(self) -> None:
        self.first: str | None = None

    def add(self, message: str) -> None:
        if self.first is None:
            self.first = message


def _flag(data: dict[str, Any], name: str, default: bool) -> bool:
    value = optional(data, name, bool, "true or false")
    return default if value is None else bool(value)


def _owner(headers: Mapping[str, str]) -> str:
    # Whichever header carried the bearer (auth already checked it): stored items stay with the workload that made them.
    key = headers.get("authorization") or headers.get("x-api-key") or headers.get("x-goog-api-key") or ""
    return hashlib.blake2b(key.encode(), digest_size=16, person=b"responses-store").hexdigest()


def _previous(response_id: Any, owner: str, refusals: _Refusals) -> tuple[tuple[dict[str, Any], ...], int]:
    if response_id is None:
        return (), 0
    if not isinstance(response_id, str) or not response_id:
        raise BadRequest("`previous_response_id` must be a response id string")
    found = STORE.conversation(owner, response_id)
    if found is None:
        refusals.add(
            f"`previous_response_id` {shown(response_id)} is not a response this sidecar process holds (it keeps "
            f"recent responses in memory only): {_NO_STORE_HINT}"
        )
        return (), 0
    return found


def _input_items(raw: Any, owner: str, refusals: _Refusals) -> list[tuple[str, dict[str, Any]]]:
    """``(field path, item)`` pairs, ``item_reference``s replaced by the items they name."""
    if raw is None:
        return []
    if isinstance(raw, str):
        return [("input", {"type": "message", "role": "user", "content": raw})]
    if not isinstance(raw, list):
        raise BadRequest("`input` must be a string or an array of input items")
    out: list[tuple[str, dict[str, Any]]] = []
    for i, item in enumerate(raw):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"`{where}` must be an object (a message, function_call, function_call_output …)")
        if item.get("type") == "item_reference":
            ref = item.get("id")
            if not isinstance(ref, str) or not ref:
                raise BadRequest(f"`{where}.id` must be the id of an earlier output item")
            stored = STORE.item(owner, ref)
            if stored is None:
                refusals.add(
                    f"`{where}` references item {shown(ref)}, which this sidecar process does not hold (it keeps the "
                    f"items it produced in memory only): {_NO_STORE_HINT}"
                )
                continue
            item = stored
        out.append((where, item))
    return out


class _Conversation:
    """Responses items → pi messages: consecutive assistant-side items form one assistant turn."""

    def __init__(self, refusals: _Refusals) -> None:
        self.refusals = refusals
        self.messages: list[dict[str, Any]] = []
        self.system: list[str] = []
        self._turn: list[dict[str, Any]] = []
        self._tool_names: dict[str, str] = {}

    def add(self, item: dict[str, Any], where: str) -> None:
        kind = item.get("type")
        if kind is None and "role" in item:
            kind = "message"
        if kind == "message":
            self._message(item, where)
        elif kind == "function_call":
            self._turn.append(_function_call(item, where))
            self._tool_names[self._turn[-1]["id"]] = self._turn[-1]["name"]
        elif kind == "reasoning":
            block = _reasoning(item, where)
            if block is not None:
                self._turn.append(block)
        elif kind == "function_call_output":
            self.flush()
            self.messages.append(self._tool_result(item, where))
        else:  # a hosted tool's call or output (web_search_call …): OpenAI's own items, left to a relay
            self.refusals.add(
                f"`{where}.type` {shown(str(kind))} is not supported: the sidecar translates message, function_call, "
                "function_call_output, reasoning and item_reference items only"
            )

    def flush(self) -> None:
        if self._turn:
            self.messages.append(assistant_turn(self._turn))
            self._turn = []

    def _message(self, item: dict[str, Any], where: str) -> None:
        role = item.get("role")
        content = item.get("content")
        if role == "assistant":
            self._turn.extend({"type": "text", "text": text} for text in _assistant_texts(content, where))
            return
        if role in ("system", "developer"):
            text = "\n".join(_texts(content, f"{where}.content"))
            if not self.messages and not self._turn:
                self.system.append(text)  # the opening instructions: the provider's system prompt
                return
            self.flush()
            self.messages.append({"role": "developer", "content": text, "timestamp": 0})
            return
        if role != "user":
            raise BadRequest(f"`{where}.role` must be one of user, assistant, system, developer, got {role!r}")
        self.flush()
        blocks = content if isinstance(content, str) else _user_blocks(content, f"{where}.content", self.refusals)
        self.messages.append({"role": "user", "content": blocks, "timestamp": 0})

    def _tool_result(self, item: dict[str, Any], where: str) -> dict[str, Any]:
        call_id = item.get("call_id")
        if not isinstance(call_id, str) or not call_id:
            raise BadRequest(f"`{where}.call_id` must be the call_id of the function_call this output answers")
        output = item.get("output")
        if isinstance(output, str):
            content = [{"type": "text", "text": output}]
        else:
            content = _user_blocks(output, f"{where}.output", self.refusals)
        return tool_result(call_id, self._tool_names.get(call_id, ""), content)


def _texts(content: Any, where: str) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise BadRequest(f"`{where}` must be a string or an array of input_text parts")
    texts = []
    for i, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "text"):
            raise BadRequest(f"`{where}[{i}]` must be an input_text part here")
        texts.append(_string(part, "text", f"{where}[{i}]"))
    return texts


def _assistant_texts(content: Any, where: str) -> list[str]:
    if isinstance(content, str):
        return [content] if content else []
    if not isinstance(content, list):
        raise BadRequest(f"`{where}.content` must be a string or an array of output_text parts")
    texts = []
    for i, part in enumerate(content):
        at = f"{where}.content[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("output_text", "input_text", "text"):
            texts.append(_string(part, "text", at))
        elif kind == "refusal":
            texts.append(_string(part, "refusal", at))
        else:
            raise BadRequest(f"`{at}` must be an output_text or refusal part, got {shown(str(kind))}")
    return [text for text in texts if text]


def _user_blocks(content: Any, where: str, refusals: _Refusals) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        raise BadRequest(f"`{where}` must be a string or an array of input_text/input_image parts")
    blocks: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        at = f"{where}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            blocks.append({"type": "text", "text": _string(part, "text", at)})
        elif kind == "input_image":
            if part.get("file_id") is not None and not part.get("image_url"):
                refusals.add(
                    f"`{at}.file_id` needs OpenAI's Files API, which the sidecar does not have: send `image_url`"
                )
                continue
            blocks.append(_image(part, at))
        elif kind == "input_file":
            refusals.add(f"`{at}`: input_file parts are not supported by the sidecar; send the text or an image")
        else:
            raise BadRequest(f"`{at}.type` must be input_text or input_image, got {shown(str(kind))}")
    return blocks


def _image(part: dict[str, Any], where: str) -> dict[str, Any]:
    url = part.get("image_url")
    if not isinstance(url, str) or not url:  # (a file_id instead was left to a relay by the caller)
        raise fail(f"{where}.image_url", "must be a data: URL or an https URL")
    block = image_from_url(url)
    if part.get("detail") in ("auto", "low", "high", "original"):
        block["detail"] = part["detail"]
    return block


def _function_call(item: dict[str, Any], where: str) -> dict[str, Any]:
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
        raise BadRequest(f"`{where}` needs a string `call_id` and `name` (a function_call item)")
    raw = item.get("arguments", "")
    if not isinstance(raw, str):
        raise BadRequest(f'`{where}.arguments` must be a string of JSON, like "{{}}"')
    try:
        arguments = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        arguments = {}  # as the stream treats a model's broken arguments; the call still pairs with its output
    return {
        "type": "toolCall",
        "id": call_id,
        "name": name,
        "arguments": arguments if isinstance(arguments, dict) else {},
    }


def _reasoning(item: dict[str, Any], where: str) -> dict[str, Any] | None:
    parts = item.get("summary") or item.get("content") or []
    if not isinstance(parts, list):
        raise BadRequest(f"`{where}.summary` must be an array of summary_text parts")
    text = "\n\n".join(_string(p, "text", f"{where}.summary[{i}]") for i, p in enumerate(parts))
    encrypted = item.get("encrypted_content")
    if isinstance(encrypted, str) and encrypted.startswith(REDACTED_PREFIX):
        return {"type": "redactedThinking", "data": encrypted.removeprefix(REDACTED_PREFIX)}
    block: dict[str, Any] = {"type": "thinking", "thinking": text}
    if isinstance(encrypted, str) and encrypted.startswith(SIGNATURE_PREFIX):
        block["thinkingSignature"] = encrypted.removeprefix(SIGNATURE_PREFIX)
    elif not text:
        return None
    return block


def _string(part: Any, key: str, where: str) -> str:
    value = part.get(key) if isinstance(part, dict) else None
    if not isinstance(value, str):
        raise BadRequest(f"`{where}.{key}` must be a string")
    return value


def _tools(raw: Any, choice: Any, refusals: _Refusals) -> tuple[list[dict[str, Any]], Any]:
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise BadRequest("`tools` must be an array of function tools")
    tools: list[dict[str, Any]] = []
    for i, tool in enumerate(raw):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            refusals.add(
                f"`tools[{i}].type` {shown(str(kind))} is not supported: the sidecar runs no hosted tools and serves "
                "function tools only; remove it (or disable it in the client)"
            )
            continue
        tools.append(pi_tool(tool, f"tools[{i}]", "parameters", schema_required=False))
    return _tool_choice(choice, tools, refusals)


def _tool_choice(choice: Any, tools: list[dict[str, Any]], refusals: _Refusals) -> tuple[list[dict[str, Any]], Any]:
    """``(tools, pi toolChoice)``: ``allowed_tools`` narrows the tool list rather than needing provider support."""
    if choice is None:
        return tools, None
    if isinstance(choice, str) and choice in _TOOL_CHOICES:
        return tools, choice
    if isinstance(choice, dict):
        if choice.get("type") == "function" and isinstance(choice.get("name"), str):
            return tools, {"type": "function", "name": choice["name"]}
        if choice.get("type") == "allowed_tools":
            allowed = {t.get("name") for t in choice.get("tools") or () if isinstance(t, dict)}
            mode = choice.get("mode", "auto")
            if mode not in ("auto", "required"):
                raise BadRequest('`tool_choice.mode` must be "auto" or "required"')
            return [tool for tool in tools if tool["name"] in allowed], mode
    refusals.add(
        '`tool_choice` must be "auto", "none", "required", {"type": "function", "name": …} or allowed_tools; hosted '
        "tool choices are not supported"
    )
    return tools, None


def _options(data: Mapping[str, Any], limits: Limits, refusals: _Refusals) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for wire, pi in (("max_output_tokens", "maxTokens"), ("temperature", "temperature"), ("top_p", "topP")):
        value = data.get(wire)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(f"`{wire}` must be a number, got {type(value).__name__}")
        options[pi] = value
    if "maxTokens" in options and (not isinstance(options["maxTokens"], int) or options["maxTokens"] < 1):
        raise BadRequest("`max_output_tokens` must be a whole number of at least 1")
    reasoning = data.get("reasoning")
    if reasoning is not None:
        effort = reasoning.get("effort") if isinstance(reasoning, dict) else reasoning
        if effort in _REASONING_EFFORTS:
            options["reasoning"] = effort
        elif effort not in (None, "none"):
            raise BadRequest(f"`reasoning.effort` must be one of none, {', '.join(sorted(_REASONING_EFFORTS))}")
    key = data.get("prompt_cache_key")
    if key is not None:
        if not isinstance(key, str):
            raise BadRequest("`prompt_cache_key` must be a string")
        options["promptCacheKey"] = options["sessionId"] = check_text(
            key, "prompt_cache_key", limits.max_identifier_chars
        )
    if isinstance(data.get("service_tier"), str):
        options["serviceTier"] = data["service_tier"]
    text = data.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict) and fmt.get("type", "text") != "text":
        refusals.add(
            f"`text.format.type` {shown(str(fmt.get('type')))} is not supported: the sidecar translates to providers "
            'without a structured-output option; use {"type": "text"} and ask for JSON in the prompt'
        )
    return options


def _attribution(data: Mapping[str, Any]) -> Attribution:
    values: dict[str, tuple[str, Any]] = {}
    metadata = data.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise BadRequest("`metadata` must be an object of string values")
        if "user_id" in metadata:
            values["user"] = ("metadata.user_id", metadata["user_id"])
        for key in ("user", "tags", "quotaEntityId"):
            if key in metadata:
                values[key] = (f"metadata.{key}", metadata[key])
        tags = metadata.get("tags")
        if isinstance(tags, str):  # OpenAI metadata values are strings: tags come comma-separated
            values["tags"] = ("metadata.tags", [tag.strip() for tag in tags.split(",") if tag.strip()])
    for name in ("safety_identifier", "user"):  # `user` is the older name of safety_identifier
        if data.get(name) is not None:
            values["user"] = (name, data[name])
    return Attribution.parse(values)


FORMAT = IngressFormat(
    name="openai-responses",
    decode=decode,
    encoder=encoder,
    render=render,
    error_body=openai_error_body,
    wire_api="openai-responses",
    preferred_provider="openai",
)
