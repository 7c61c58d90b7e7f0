"""Gemini API (``POST {base_url}/models/{model}:streamGenerateContent?alt=sse``) -> ``Delta`` records.

The key goes in the ``x-goog-api-key`` header, never in the URL (Google also accepts ``?key=``, which would put it in
every proxy and access log on the way).

Request (``request_body``): the pi ``Context`` becomes ``systemInstruction``, ``contents`` (``user``/``model`` turns
of parts), ``tools[].functionDeclarations`` and ``generationConfig``, in pi-ai's conventions (``google-shared.ts``)
so a conversation moves between pi-ai and the sidecar unchanged:

- Gemini signs its reasoning with a ``thoughtSignature`` on the part it belongs to, and wants it back on that part.
  pi-ai keeps a thought part's signature in the thinking block's ``thinkingSignature``, a function call's in the tool
  call's ``thoughtSignature`` and (Vertex only) a text part's in ``textSignature``. They are sent back only to the
  provider and model that made them, and only when well-formed base64: Gemini rejects a foreign signature with a 400.
  Thinking without a usable signature goes back as plain text in a ```` ```thinking ```` fence.
- Tool calls are minted an id (``{name}_{ms}_{n}``, as pi-ai does); Gemini pairs a ``functionResponse`` with its call
  by name and position, so the results of one turn are sent as one user turn, in order.

Response (``GeminiStreamParser``): one ``data:`` line per ``GenerateContentResponse`` chunk, no ``event:`` lines and
no terminator: the stream just ends. Consecutive text parts make one text block, consecutive ``thought`` parts one
thinking block, each ``functionCall`` part one whole tool call. ``usageMetadata`` is cumulative on every chunk.

Vendor quirks are data in the model's ``compat`` (``catalog.toml``):

- ``thinking = "level"``: ``thinkingConfig.thinkingLevel`` (Gemini 3) instead of a ``thinkingBudget`` (Gemini 2.5);
- ``thinking_budgets``: effort -> budget, over ``DEFAULT_THINKING_BUDGETS`` (2.5 Pro thinks up to 32768 tokens);
- ``thinking_levels``: the levels the model accepts (3 Pro: ``["LOW", "HIGH"]``); other efforts go to the nearest
  one below;
- ``thinking_required``: thinking cannot be turned off (2.5 Pro, Gemini 3): without ``reasoning`` no
  ``thinkingConfig`` is sent, instead of ``thinkingBudget: 0``;
- ``function_part_id``: ``functionCall``/``functionResponse`` parts carry the pi tool-call id (Gemini 3);
- ``skip_thought_signature``: an unsigned function call in the history gets Google's documented bypass value
  (Gemini 3 rejects unsigned calls with a 400; Vertex rejects the bypass value, so its rows leave this off);
- ``multimodal_function_response``: tool-result images go inside the ``functionResponse`` (Gemini 3), not in a user
  turn after the results;
- ``safety_settings``: a list of ``{category, threshold}`` sent as ``safetySettings`` (Vertex's rows turn the filters
  off, as pi-ai does there).

Vertex (``sidecar.providers.google_vertex``) sends the same body to another URL with another credential: it reuses
``request_body``, ``GeminiStreamParser``, ``parse_response`` and ``stream_request``.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote

import orjson
from httpx_sse import ServerSentEvent
from httpx_sse._decoders import SSEDecoder, SSELineDecoder  # not re-exported; pinned as for sidecar/relay.py

from client.types import ImageContent, Message
from sidecar.errors import UpstreamProtocolError, UpstreamStreamError, map_transport_errors, redact
from sidecar.providers.base import (
    BlockEnd,
    Delta,
    Finish,
    ResponseInfo,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    UpstreamCall,
    UsageUpdate,
    body_text,
    event_object,
    open_stream,
)
from sidecar.providers.history import repair_tool_history
from sidecar.upstream import Upstream, UpstreamResponse

# ----- vendor data ------------------------------------------------------------------------------------------------

DEFAULT_THINKING_BUDGETS = {"minimal": 128, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 24576, "max": 24576}
"""pi's effort -> ``thinkingBudget`` (pi-catalog's Gemini 2.5 Flash ladder); a model's ``compat.thinking_budgets``
and the caller's ``thinkingBudgets`` option override it."""
_LEVELS = {"minimal": "MINIMAL", "low": "LOW", "medium": "MEDIUM", "high": "HIGH", "xhigh": "HIGH", "max": "HIGH"}
_LEVEL_ORDER = ("MINIMAL", "LOW", "MEDIUM", "HIGH")
_TOOL_MODES = {"none": "NONE", "any": "ANY", "required": "ANY"}  # "auto" is Gemini's default: nothing is sent
SKIP_THOUGHT_SIGNATURE = "skip_thought_signature_validator"
"""Google's documented stand-in for the signature of a function call it did not make (Gemini 3 requires one)."""
_SIGNATURE = re.compile(r"[A-Za-z0-9+/]+={0,2}")  # Gemini's signatures are base64 bytes; anything else is foreign
_TOOL_ID_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_NO_VISION = "[image omitted: model does not support vision]"  # pi-ai's placeholder, so both send the same text

# JSON Schema keywords Gemini's function declarations reject or cannot use (pi-ai's list, utils/schema/fields.ts).
_SCHEMA_DROP = frozenset(
    "$schema $ref $defs definitions $dynamicRef $dynamicAnchor $id $anchor $comment examples prefixItems "
    "unevaluatedProperties unevaluatedItems patternProperties additionalProperties propertyNames minItems maxItems "
    "minLength maxLength minimum maximum exclusiveMinimum exclusiveMaximum multipleOf pattern format dependencies "
    "dependentSchemas dependentRequired deprecated readOnly writeOnly x-mcp-header".split()
)
_SCHEMA_MAPS = frozenset({"properties"})  # name -> schema
_SCHEMA_ONE = frozenset({"items", "not", "contains", "if", "then", "else"})  # one schema
_SCHEMA_LISTS = frozenset({"anyOf", "oneOf", "allOf"})  # a list of schemas
_MAX_SCHEMA_DEPTH = 64  # deeper nesting becomes {} (any): a request-sized schema must not exhaust the stack
_MAX_REF_DEPTH = 4  # local $refs are inlined this deep along a path; a recursive schema ends in {}

_OK_FINISH: dict[str, Literal["stop", "length"]] = {"STOP": "stop", "MAX_TOKENS": "length"}
# Any other finishReason ended the turn without its answer: an in-band error, with the status the same refusal gets
# when Google reports it before the stream (400: the request's content; 502: the model failed).
_FINISH_ERRORS: dict[str, tuple[int, str]] = {
    "SAFETY": (400, "the response was blocked by Gemini's safety filters"),
    "RECITATION": (400, "the response was stopped because it recited copyrighted material"),
    "LANGUAGE": (400, "the response was stopped: the language is not supported"),
    "BLOCKLIST": (400, "the response was blocked: it contained a blocklisted term"),
    "PROHIBITED_CONTENT": (400, "the response was blocked for prohibited content"),
    "SPII": (400, "the response was blocked: it contained sensitive personal information"),
    "IMAGE_SAFETY": (400, "the generated image was blocked by Gemini's safety filters"),
    "IMAGE_PROHIBITED_CONTENT": (400, "the generated image was blocked for prohibited content"),
    "IMAGE_RECITATION": (400, "the generated image was blocked for recitation"),
    "IMAGE_OTHER": (400, "the generated image was blocked"),
    "MALFORMED_FUNCTION_CALL": (502, "the model produced a function call that is not valid"),
    "UNEXPECTED_TOOL_CALL": (502, "the model called a tool that is not enabled"),
    "TOO_MANY_TOOL_CALLS": (502, "the model made too many tool calls"),
    "NO_IMAGE": (502, "the model produced no image"),
    "OTHER": (502, "the generation stopped for an unspecified reason"),
    "FINISH_REASON_UNSPECIFIED": (502, "the generation stopped for an unspecified reason"),
}
_BLOCK_STATUS = 400  # promptFeedback.blockReason: the prompt itself was refused
# google.rpc status names -> HTTP, for an in-stream error without a usable numeric code.
_RPC_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ABORTED": 409,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
_NOTHING: tuple[Delta, ...] = ()


def secrets_of(call: UpstreamCall) -> tuple[str, ...]:
    """The values an upstream error text is redacted of: the injected key."""
    return (call.api_key,) if call.api_key else ()


# ----- the adapter ------------------------------------------------------------------------------------------------


async def stream(call: UpstreamCall, client: Upstream) -> AsyncIterator[Delta]:
    """Send ``call`` to the Gemini API and yield its stream as deltas."""
    model_path = quote(call.model.id, safe="")  # one path segment, whatever the requested id holds
    url = f"{call.model.base_url.rstrip('/')}/models/{model_path}:streamGenerateContent?alt=sse"
    async for delta in stream_request(call, client, url, build_headers(call)):
        yield delta


async def stream_request(
    call: UpstreamCall,
    client: Upstream,
    url: str,
    headers: Mapping[str, str],
    *,
    secrets: tuple[str, ...] | None = None,
    text_signatures: bool = False,
) -> AsyncIterator[Delta]:
    """POST ``request_body(call)`` to ``url`` with ``headers`` and yield the ``streamGenerateContent`` SSE stream as
    deltas: the loop both Gemini APIs share. ``secrets`` (default: the call's key) are redacted from upstream error
    texts; ``text_signatures`` keeps text parts' signatures (Vertex, as pi-ai does there)."""
    provider = call.model.provider
    body = orjson.dumps(request_body(call))
    parser = GeminiStreamParser(provider, secrets_of(call) if secrets is None else secrets, text_signatures)
    async with open_stream(client, call, url, headers=headers, json_body=body) as response:
        events = gemini_events(response, provider)  # a local, so it outlives the drain (see anthropic_messages)
        async for event in events:
            for delta in parser.feed(event):
                yield delta
            if parser.done:
                break
    for delta in parser.end():
        yield delta


async def gemini_events(response: UpstreamResponse, provider: str) -> AsyncIterator[ServerSentEvent]:
    """The body as SSE events, as ``base.sse_reads`` reads it, plus what an SSE reader drops: a JSON object written
    outside any ``data:`` field, as the Firebase SDKs model a Vertex failure after the first chunks (a pretty-printed
    ``{"error": …}``; PROVENANCE.md). Its lines, from one that starts with ``{`` (no field name does) to a blank line
    or the end of the body, are one event's data, so the parser reports the error instead of a clean end."""
    content_type = response.headers.get("content-type", "").partition(";")[0]
    if "text/event-stream" not in content_type:
        # A 200 that is not text/event-stream: a server that ignored alt=sse and answered with JSON.
        raise UpstreamProtocolError(f"{provider}: expected an event stream, got {content_type or 'no content type'}")
    lines, decoder = SSELineDecoder(), SSEDecoder()
    loose: list[str] = []

    def step(line: str) -> ServerSentEvent | None:
        if loose:
            if line:
                loose.append(line)
                return None
            event = ServerSentEvent(data="\n".join(loose))
            loose.clear()
            return event
        if line.startswith("{"):
            loose.append(line)
            return None
        return decoder.decode(line)

    with map_transport_errors(provider):
        async for text in body_text(response):
            for line in lines.decode(text):
                if (event := step(line)) is not None:
                    yield event
    for line in lines.flush():
        if (event := step(line)) is not None:
            yield event
    if loose:
        yield ServerSentEvent(data="\n".join(loose))


def build_headers(call: UpstreamCall) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept": "text/event-stream"}
    # Lower-cased so that a caller's header replaces the model's of the same name instead of doubling it.
    for source in (call.model.headers, call.headers):
        for name, value in source.items():
            headers[name.lower()] = value
    # Set last: the injected credential is the sidecar's job, a pass-through header must not replace it.
    if call.api_key:
        headers["x-goog-api-key"] = call.api_key
    return headers


# ----- request ----------------------------------------------------------------------------------------------------


def request_body(call: UpstreamCall) -> dict[str, Any]:
    """The ``GenerateContentRequest`` for ``call`` (the same for the Gemini API and Vertex; the model is in the URL)."""
    options, context = call.options, call.context
    body: dict[str, Any] = {"contents": contents(call)}
    system = [{"text": text} for text in context.get("systemPrompt") or () if text and text.strip()]
    if system:
        body["systemInstruction"] = {"parts": system}
    tools = context.get("tools")
    if tools:
        declarations = [
            {
                "name": tool["name"],
                "description": tool.get("description") or "",
                "parametersJsonSchema": tool_schema(tool.get("parameters")),
            }
            for tool in tools
        ]
        body["tools"] = [{"functionDeclarations": declarations}]
        config = _tool_config(options.get("toolChoice"))
        if config is not None:  # only alongside tools: a toolConfig without them is a 400
            body["toolConfig"] = config
    generation: dict[str, Any] = {}
    for pi_name, wire_name in (
        ("temperature", "temperature"),
        ("maxTokens", "maxOutputTokens"),
        ("topP", "topP"),
        ("topK", "topK"),
        ("presencePenalty", "presencePenalty"),
    ):
        if options.get(pi_name) is not None:
            generation[wire_name] = options[pi_name]
    if options.get("stopSequences"):
        generation["stopSequences"] = list(options["stopSequences"])
    thinking = thinking_config(call)
    if thinking is not None:
        generation["thinkingConfig"] = thinking
    if generation:
        body["generationConfig"] = generation
    safety = call.model.compat.get("safety_settings")
    if isinstance(safety, list | tuple) and safety:
        body["safetySettings"] = [dict(setting) for setting in safety if isinstance(setting, Mapping)]
    cached = options.get("cachedContent")
    if isinstance(cached, str) and cached.strip():
        # A context cache the caller created (cachedContents/…): passed through, as pi-ai does. Google refuses it
        # together with systemInstruction/tools, with a 400 that says so.
        body["cachedContent"] = cached
    return body


def thinking_config(call: UpstreamCall) -> dict[str, Any] | None:
    """``generationConfig.thinkingConfig`` for the ``reasoning`` effort, as pi-ai maps it; ``None`` for none."""
    options, model = call.options, call.model
    if not model.reasoning:
        return None  # a model the catalog does not mark as thinking: Gemini's own default applies
    compat = model.compat
    level_mode = compat.get("thinking") == "level"
    effort = str(options.get("reasoning"))  # str(): an odd option value must not break the dict lookup
    if effort not in _LEVELS or options.get("disableReasoning") or options.get("forceReasoningOff"):
        # Gemini thinks by default: pi-ai turns it off explicitly where the model allows it.
        if level_mode or compat.get("thinking_required"):
            return None
        return {"includeThoughts": False, "thinkingBudget": 0}
    config: dict[str, Any] = {"includeThoughts": not options.get("hideThinkingSummary")}
    if level_mode:
        config["thinkingLevel"] = _thinking_level(effort, compat.get("thinking_levels"))
    else:
        config["thinkingBudget"] = _thinking_budget(effort, compat.get("thinking_budgets"), options)
    return config


def _thinking_budget(effort: str, model_budgets: Any, options: Mapping[str, Any]) -> int:
    custom = options.get("thinkingBudgets")
    value = custom.get(effort) if isinstance(custom, Mapping) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # the caller's exact budget (-1 is Gemini's "dynamic", 0 is off)
    value = model_budgets.get(effort) if isinstance(model_budgets, Mapping) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return DEFAULT_THINKING_BUDGETS[effort]


def _thinking_level(effort: str, accepted: Any) -> str:
    level = _LEVELS[effort]
    if not isinstance(accepted, list | tuple):
        return level
    allowed: list[str] = sorted((str(a) for a in accepted if a in _LEVEL_ORDER), key=_LEVEL_ORDER.index)
    if not allowed or level in allowed:
        return level
    below = [a for a in allowed if _LEVEL_ORDER.index(a) < _LEVEL_ORDER.index(level)]
    return below[-1] if below else allowed[0]


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if isinstance(choice, str):
        mode = _TOOL_MODES.get(choice)
        return {"functionCallingConfig": {"mode": mode}} if mode else None
    if isinstance(choice, Mapping) and choice.get("type") in ("function", "tool"):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else choice.get("name")
        if isinstance(name, str) and name:
            return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    return None  # "auto", {"type": "computer"} and unknown shapes: the model's own choice


def tool_schema(schema: Any) -> dict[str, Any]:
    """A tool's JSON Schema as ``parametersJsonSchema``: local ``$ref``s inlined, the keywords Gemini rejects dropped
    (pi-ai's list), ``const`` as a one-value ``enum``, always an object schema."""
    root = schema if isinstance(schema, dict) else {}
    defs: dict[str, Any] = {}
    for holder in ("definitions", "$defs"):
        if isinstance(root.get(holder), dict):
            defs.update(root[holder])
    cleaned = _clean_schema(root, defs, 0, 0)
    if "type" not in cleaned:
        cleaned = {"type": "object", **cleaned}
    if cleaned.get("type") == "object" and not isinstance(cleaned.get("properties"), dict):
        cleaned["properties"] = {}
    return cleaned


def _clean_schema(node: Any, defs: Mapping[str, Any], depth: int, refs: int) -> dict[str, Any]:
    if not isinstance(node, dict) or depth > _MAX_SCHEMA_DEPTH:
        return {"not": {}} if node is False else {}  # true, or anything unreadable: any value
    ref = node.get("$ref")
    if isinstance(ref, str):
        prefix, _, name = ref.rpartition("/")
        target = defs.get(name) if prefix in ("#/$defs", "#/definitions") else None
        if isinstance(target, dict) and refs < _MAX_REF_DEPTH:
            merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            return _clean_schema(merged, defs, depth + 1, refs + 1)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _SCHEMA_DROP:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _clean_schema(sub, defs, depth + 1, refs) for name, sub in value.items()}
        elif key in _SCHEMA_ONE:
            out[key] = _clean_schema(value, defs, depth + 1, refs)
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_clean_schema(sub, defs, depth + 1, refs) for sub in value]
        else:
            out[key] = value
    return out


def _valid_signature(signature: Any) -> bool:
    return isinstance(signature, str) and len(signature) % 4 == 0 and _SIGNATURE.fullmatch(signature) is not None


def _tool_id(raw: str) -> str:
    return _TOOL_ID_BAD_CHARS.sub("_", raw)[:64]


def _image_part(image: ImageContent) -> dict[str, Any]:
    provider_file = image.get("providerFile")
    if isinstance(provider_file, Mapping) and provider_file.get("provider") == "google" and provider_file.get("uri"):
        return {"fileData": {"fileUri": provider_file["uri"], "mimeType": image.get("mimeType")}}
    if image.get("url") and not image.get("data"):
        return {"fileData": {"fileUri": image["url"], "mimeType": image.get("mimeType")}}
    return {"inlineData": {"mimeType": image.get("mimeType"), "data": image.get("data")}}


def _user_parts(content: Any, vision: bool) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content.strip() else []
    parts: list[dict[str, Any]] = []
    omitted = False
    for block in content or ():
        if block.get("type") == "text":
            text = block.get("text") or ""
            if text.strip():  # Gemini rejects empty text parts
                parts.append({"text": text})
        elif block.get("type") == "image":
            if vision:
                parts.append(_image_part(block))
            else:
                omitted = True
    if omitted:
        parts.append({"text": _NO_VISION})
    return parts


class _History:
    """The pi messages as Gemini ``contents``: one pass, with the state pairing needs."""

    def __init__(self, call: UpstreamCall) -> None:
        model = call.model
        self.provider, self.model_id = model.provider, model.id
        self.vision = "image" in model.input
        self.part_ids = bool(model.compat.get("function_part_id"))
        self.skip_signature = bool(model.compat.get("skip_thought_signature"))
        self.nested_images = bool(model.compat.get("multimodal_function_response"))
        self.contents: list[dict[str, Any]] = []
        self.call_names: dict[str, str] = {}  # pi tool-call id -> the function name sent for it
        self.tool_images: list[dict[str, Any]] = []  # tool-result images for the user turn after the results

    def add(self, message: Message) -> None:
        role = message["role"]
        if role != "toolResult":
            self.flush_images()
        if role in ("user", "developer"):  # Gemini has no developer role: its text goes in as a user turn
            parts = _user_parts(message["content"], self.vision)
            if parts:
                self.contents.append({"role": "user", "parts": parts})
        elif role == "assistant":
            parts = self._model_parts(message)
            if parts:
                self.contents.append({"role": "model", "parts": parts})
        elif role == "toolResult":
            self._tool_result(message)

    def _model_parts(self, message: Any) -> list[dict[str, Any]]:
        # Signatures are only good for the model that made them (Gemini rejects others'); pi-ai checks the same.
        own = message.get("provider") == self.provider and message.get("model") == self.model_id
        parts: list[dict[str, Any]] = []
        for block in message.get("content") or ():
            kind = block.get("type")
            if kind == "text":
                text = block.get("text") or ""
                if not text.strip():
                    continue
                part: dict[str, Any] = {"text": text}
                if own and _valid_signature(signature := block.get("textSignature")):
                    part["thoughtSignature"] = signature
                parts.append(part)
            elif kind == "thinking":
                text = block.get("thinking") or ""
                if not text.strip():
                    continue
                signature = block.get("thinkingSignature")
                if own and _valid_signature(signature):
                    parts.append({"thought": True, "text": text, "thoughtSignature": signature})
                else:
                    # Unsigned or another model's reasoning cannot be a thought part (Gemini ignores it): plain text
                    # in the fence pi-ai uses for Gemini, so the model still reads what was thought.
                    parts.append({"text": f"```thinking\n{text}\n```"})
            elif kind == "toolCall":
                call_id = str(block.get("id") or "")
                name = str(block.get("name") or "")
                self.call_names[call_id] = name
                arguments = block.get("arguments")
                function_call: dict[str, Any] = {"name": name, "args": arguments if isinstance(arguments, dict) else {}}
                if self.part_ids:
                    function_call["id"] = _tool_id(call_id)
                part = {"functionCall": function_call}
                signature = block.get("thoughtSignature")
                if own and _valid_signature(signature):
                    part["thoughtSignature"] = signature
                elif self.skip_signature:
                    part["thoughtSignature"] = SKIP_THOUGHT_SIGNATURE
                parts.append(part)
            # redactedThinking (Anthropic's), images and server-tool blocks have no Gemini part.
        return parts

    def _tool_result(self, message: Any) -> None:
        content = message.get("content") or ()
        text = "\n".join(b.get("text") or "" for b in content if b.get("type") == "text")
        images = [b for b in content if b.get("type") == "image"]
        if images and not self.vision:
            value = "\n".join(t for t in (text, _NO_VISION) if t)
            images = []
        else:
            value = text or ("(see attached image)" if images else "")
        call_id = str(message.get("toolCallId") or "")
        response: dict[str, Any] = {
            "name": self.call_names.get(call_id) or message.get("toolName") or "",
            "response": {"error": value} if message.get("isError") else {"output": value},
        }
        image_parts = [_image_part(image) for image in images]
        if image_parts and self.nested_images:
            response["parts"] = image_parts
        elif image_parts:
            self.tool_images += [{"text": "Tool result image:"}, *image_parts]
        if self.part_ids:
            response["id"] = _tool_id(call_id)
        # All the results answering one model turn go in one user turn: Gemini pairs them with its calls by count.
        last = self.contents[-1] if self.contents else None
        if last is not None and last["role"] == "user" and any("functionResponse" in p for p in last["parts"]):
            last["parts"].append({"functionResponse": response})
        else:
            self.contents.append({"role": "user", "parts": [{"functionResponse": response}]})

    def flush_images(self) -> None:
        if self.tool_images:
            self.contents.append({"role": "user", "parts": self.tool_images})
            self.tool_images = []


def contents(call: UpstreamCall) -> list[dict[str, Any]]:
    """The conversation as Gemini ``contents``."""
    history = _History(call)
    # Unanswered calls and orphan results are repaired first: Gemini rejects both with a 400.
    for message in repair_tool_history(call.context["messages"]):
        history.add(message)
    history.flush_images()
    return history.contents


# ----- response ---------------------------------------------------------------------------------------------------

_call_numbers = itertools.count(1)


def mint_tool_call_id(name: str) -> str:
    """A tool-call id for a ``functionCall`` that came without one, unique in this process (pi-ai's shape)."""
    return f"{name or 'tool'}_{int(time.time() * 1000)}_{next(_call_numbers)}"


def _usage(meta: Mapping[str, Any]) -> UsageUpdate:
    # promptTokenCount includes the cached tokens and candidatesTokenCount leaves out the thoughts; pi's input is the
    # uncached prompt and its output includes the reasoning, as pi-ai counts them.
    cached = meta.get("cachedContentTokenCount") or 0
    thoughts = meta.get("thoughtsTokenCount") or 0
    return UsageUpdate(
        input=(meta.get("promptTokenCount") or 0) - cached,
        output=(meta.get("candidatesTokenCount") or 0) + thoughts,
        cache_read=cached,
        reasoning=thoughts or None,
    )


def _stream_error(provider: str, error: Any, secrets: tuple[str, ...]) -> UpstreamStreamError:
    error = error if isinstance(error, Mapping) else {}
    code, name = error.get("code"), error.get("status")
    if isinstance(code, int) and 400 <= code <= 599:
        status = code
    else:
        status = _RPC_STATUS.get(str(name), 500)
    # Every field taken from the provider goes through the redaction, not only the message.
    text = f"{provider} stream error ({name or code or 'error'}): {error.get('message') or 'no message'}"
    return UpstreamStreamError(redact(text, secrets), status)


class GeminiStreamParser:
    """One ``streamGenerateContent`` stream's chunks -> deltas. Plain dict lookups, no validation: this is the
    per-event hot path. Block keys are consecutive ints.

    ``feed`` raises ``UpstreamStreamError`` for a chunk that carries only a failure (an ``error`` object, a blocked
    prompt). A failing ``finishReason`` (SAFETY …) arrives with the chunk's last content and usage: ``feed`` returns
    those and sets ``done``; ``end`` raises. ``end`` also gives the closing deltas and the ``Finish``, and raises
    ``UpstreamProtocolError`` for a stream that ended without a ``finishReason``."""

    __slots__ = (
        "provider",
        "_secrets",
        "_text_signatures",
        "_key",
        "_kind",
        "_signature",
        "_ids",
        "_saw_tool",
        "_finish",
        "_error",
        "_usage",
        "_info",
        "done",
    )

    def __init__(self, provider: str, secrets: tuple[str, ...] = (), text_signatures: bool = False) -> None:
        self.provider = provider
        self._secrets = secrets
        self._text_signatures = text_signatures
        self._key = -1
        self._kind: str | None = None  # "text" or "thinking": the open block, which the next part may continue
        self._signature: str | None = None  # the open thinking block's, sent when it closes (the last one wins)
        self._ids: set[str] = set()
        self._saw_tool = False
        self._finish: str | None = None
        self._error: UpstreamStreamError | None = None
        self._usage: UsageUpdate | None = None
        self._info: tuple[Any, Any] = (None, None)
        self.done = False
        """A failing ``finishReason`` was read: nothing that follows matters, ``end`` raises."""

    def feed(self, sse: ServerSentEvent) -> Sequence[Delta]:
        if not sse.data:
            return _NOTHING
        chunk = event_object(sse.data, self.provider, stream="the Gemini stream")
        try:
            return self.feed_chunk(chunk)
        except (AttributeError, TypeError, LookupError) as exc:  # a list or string where an object belongs
            raise UpstreamProtocolError(f"{self.provider}: malformed Gemini chunk ({exc!r})") from None

    def feed_chunk(self, chunk: Mapping[str, Any]) -> list[Delta]:
        """One parsed ``GenerateContentResponse``."""
        if (error := chunk.get("error")) is not None:
            raise _stream_error(self.provider, error, self._secrets)
        out: list[Delta] = []
        info = (chunk.get("responseId"), chunk.get("modelVersion"))
        if info != self._info and (info[0] or info[1]):
            self._info = info
            out.append(ResponseInfo(response_id=info[0], upstream_model=info[1]))
        candidates = chunk.get("candidates")
        if candidates:
            candidate = candidates[0]  # one candidate: a pi message has one
            content = candidate.get("content")
            if content:
                for part in content.get("parts") or ():
                    self._part(part, out)
            if reason := candidate.get("finishReason"):
                self._finish_reason(str(reason), candidate.get("finishMessage"))
        elif (feedback := chunk.get("promptFeedback")) and feedback.get("blockReason"):
            detail = feedback.get("blockReasonMessage")
            text = f"{self.provider}: Gemini blocked the prompt (blockReason {feedback['blockReason']})"
            raise UpstreamStreamError(redact(f"{text}: {detail}" if detail else text, self._secrets), _BLOCK_STATUS)
        if meta := chunk.get("usageMetadata"):
            usage = _usage(meta)
            if usage != self._usage:  # repeated on every chunk; only a change is news
                self._usage = usage
                out.append(usage)
        return out

    def _part(self, part: Mapping[str, Any], out: list[Delta]) -> None:
        text, signature = part.get("text"), part.get("thoughtSignature")
        if text:
            kind = "thinking" if part.get("thought") is True else "text"
            if kind != self._kind:
                self._close(out)
                self._key += 1
                self._kind = kind
            if kind == "thinking":
                if signature:
                    self._signature = signature
                out.append(ThinkingDelta(self._key, text))
            elif signature and self._text_signatures:
                out.append(TextDelta(self._key, text, signature=signature))
            else:
                out.append(TextDelta(self._key, text))
            return
        function_call = part.get("functionCall")
        if function_call is not None:
            self._close(out)
            self._key += 1
            name = str(function_call.get("name") or "")
            given = function_call.get("id")
            call_id = given if isinstance(given, str) and given and given not in self._ids else mint_tool_call_id(name)
            self._ids.add(call_id)
            self._saw_tool = True
            args = function_call.get("args")
            arguments = orjson.dumps(args if isinstance(args, dict) else {}).decode()
            out += (
                ToolCallDelta(self._key, id=call_id, name=name, arguments=arguments, thought_signature=signature),
                BlockEnd(self._key),
            )
        elif signature and self._kind == "thinking":
            self._signature = signature  # an empty part carrying the open block's signature
        elif signature and self._kind == "text" and self._text_signatures:
            out.append(TextDelta(self._key, "", signature=signature))

    def _close(self, out: list[Delta]) -> None:
        if self._kind is None:
            return
        if self._kind == "thinking" and self._signature:
            out.append(ThinkingDelta(self._key, signature=self._signature))
        out.append(BlockEnd(self._key))
        self._kind = self._signature = None

    def _finish_reason(self, reason: str, message: Any) -> None:
        self._finish = reason
        if reason in _OK_FINISH:
            return
        status, what = _FINISH_ERRORS.get(reason, (502, "the generation stopped"))
        text = f"{self.provider}: {what} (finishReason {reason})"
        if message:
            text += f": {message}"
        self._error = UpstreamStreamError(redact(text, self._secrets), status)
        self.done = True

    def end(self) -> tuple[Delta, ...]:
        """The upstream body ended: the open block's end and the ``Finish``, or the failure the stream reported."""
        if self._error is not None:
            raise self._error
        if self._finish is None:
            raise UpstreamProtocolError(f"{self.provider}: Gemini stream ended without a finishReason", 502)
        out: list[Delta] = []
        self._close(out)
        # A turn with calls is a toolUse turn, also when Gemini says MAX_TOKENS after them (pi-ai does the same).
        out.append(Finish("toolUse" if self._saw_tool else _OK_FINISH[self._finish]))
        return tuple(out)


def parse_response(data: Any, provider: str, secrets: tuple[str, ...] = ()) -> list[Delta]:
    """A non-streaming reply (``generateContent``'s ``GenerateContentResponse``, or the JSON array of them that
    ``streamGenerateContent`` without ``alt=sse`` returns) as the deltas its stream would have given; raises as the
    stream parser does."""
    chunks = data if isinstance(data, list) else [data]
    parser = GeminiStreamParser(provider, secrets)
    deltas: list[Delta] = []
    try:
        for chunk in chunks:
            if not isinstance(chunk, dict):
                raise UpstreamProtocolError(f"{provider}: the Gemini reply is not a JSON object")
            deltas += parser.feed_chunk(chunk)
            if parser.done:
                break
    except (AttributeError, TypeError, LookupError) as exc:
        raise UpstreamProtocolError(f"{provider}: malformed Gemini reply ({exc!r})") from None
    deltas += parser.end()
    return deltas
