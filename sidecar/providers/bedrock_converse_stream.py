"""AWS Bedrock ``ConverseStream`` (``POST {base_url}/model/{modelId}/converse-stream``) -> ``Delta`` records.

Request: the pi ``Context`` becomes a Converse body (``system``, ``messages`` of text/image/toolUse/toolResult/
reasoningContent blocks, ``toolConfig``, ``inferenceConfig``, Claude's thinking budget in
``additionalModelRequestFields``), signed with SigV4 (service ``bedrock``) by botocore's own signer, or sent with
``Authorization: Bearer`` for a Bedrock API key. Credentials come from ``sidecar.cloud.aws``.

Response: ``application/vnd.amazon.eventstream`` binary frames, decoded by botocore's ``EventStreamBuffer`` (CRCs
checked). Each message names itself in its headers: ``:message-type`` ``event`` with ``:event-type`` (``messageStart``,
``contentBlockStart`` / ``Delta`` / ``Stop``, ``messageStop``, ``metadata``), or ``exception`` with
``:exception-type`` (``throttlingException`` …). Each content block is keyed by its ``contentBlockIndex``.

botocore is an optional extra (``pip install 'pi-sidecar[bedrock]'``), imported on the first Bedrock call.

Region: ``[providers.bedrock] compat.region``, else the credential's (``AWS_REGION`` …), else ``us-east-1``; a
cross-region inference profile (``us.``/``eu.``/``apac.``/… model ids) is sent to a region of its own geography
when the configured one is in another (AWS answers 400 otherwise). ``{region}`` in the base URL is replaced by it.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from types import ModuleType
from typing import Any, Literal, Protocol
from urllib.parse import quote

import orjson

from sidecar.cloud import aws
from sidecar.errors import (
    BadRequest,
    ConfigError,
    MissingCredential,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamStreamError,
    map_transport_errors,
    redact,
)
from sidecar.models import ModelSpec
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
    event_object,
    open_stream,
)
from sidecar.providers.history import repair_tool_history
from sidecar.upstream import Upstream, UpstreamResponse

API = "bedrock-converse-stream"
SERVICE = "bedrock"
"""The SigV4 signing name of bedrock-runtime."""
DEFAULT_REGION = "us-east-1"
_DEFAULT_MAX_TOKENS = 8192
_MIN_THINKING_BUDGET = 1024
_THINKING_BUDGETS = {"minimal": 1024, "low": 4096, "medium": 10240, "high": 20480, "xhigh": 32000, "max": 32000}
_INTERLEAVED_THINKING_BETA = "interleaved-thinking-2025-05-14"
_CACHE_POINT = {"cachePoint": {"type": "default"}}
_TOOL_ID_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_IMAGE_FORMATS = {
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/png": "png",
    "image/gif": "gif",
    "image/webp": "webp",
}

# Cross-region inference profiles (the model id's first label) -> (default region, prefixes of the regions that serve
# it). `global.` profiles are served from any commercial region and have no row.
_GEOGRAPHIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "us": ("us-east-1", ("us-east-", "us-west-")),
    "us-gov": ("us-gov-west-1", ("us-gov-",)),
    "eu": ("eu-west-1", ("eu-",)),
    "apac": ("ap-southeast-1", ("ap-",)),
    "au": ("ap-southeast-2", ("ap-southeast-2", "ap-southeast-4")),
    "jp": ("ap-northeast-1", ("ap-northeast-1", "ap-northeast-3")),
    "ca": ("ca-central-1", ("ca-",)),
}

# Headers the request owns: the signer's (a caller's copy would be signed as sent but replaced on the wire) and the
# framing ones.
_RESERVED_HEADERS = frozenset(
    {"host", "authorization", "content-type", "accept", "content-length", "x-amz-date", "x-amz-security-token"}
)
_HEADER_PREFIX_RESERVED = "x-amz-"

_STOP_REASONS: dict[str, Literal["stop", "length", "toolUse"]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "toolUse",
}
# Stop reasons that end the turn without a usable answer -> (status, what happened).
_FAILED_STOPS = {
    "guardrail_intervened": (400, "the response was blocked by an Amazon Bedrock guardrail"),
    "content_filtered": (400, "the response was blocked by Amazon Bedrock's content filters"),
    "malformed_model_output": (502, "the model produced output Bedrock could not read"),
    "malformed_tool_use": (502, "the model produced a tool call Bedrock could not read"),
}
# An exception message's `:exception-type` (lower-cased) -> the HTTP status Bedrock gives it before a stream starts.
_EXCEPTION_STATUS = {
    "validationexception": 400,
    "accessdeniedexception": 403,
    "resourcenotfoundexception": 404,
    "modeltimeoutexception": 408,
    "modelstreamerrorexception": 424,
    "modelerrorexception": 424,
    "throttlingexception": 429,
    "servicequotaexceededexception": 429,
    "modelnotreadyexception": 429,
    "internalserverexception": 500,
    "serviceunavailableexception": 503,
}

# Bedrock rejects toolUse/toolResult history without a toolConfig; a turn with none (toolChoice "none", or no tools
# left) gets this placeholder, and a call of it is dropped from the answer.
NO_TOOLS_PLACEHOLDER = "__no_tools__"
_PLACEHOLDER_TOOL = {
    "toolSpec": {
        "name": NO_TOOLS_PLACEHOLDER,
        "description": "Placeholder required by Bedrock validation. Do not call; answer with text.",
        "inputSchema": {"json": {"type": "object", "properties": {}}},
    }
}


# ----- botocore, the optional extra --------------------------------------------------------------------------------

_BOTOCORE: dict[str, ModuleType] = {}


def botocore() -> dict[str, ModuleType]:
    """botocore's ``auth``, ``awsrequest``, ``credentials`` and ``eventstream`` modules, imported once."""
    if not _BOTOCORE:
        try:
            modules = {name: importlib.import_module(f"botocore.{name}") for name in _BOTOCORE_MODULES}
        except ImportError:
            raise ConfigError(
                "the bedrock-converse-stream wire API (Amazon Bedrock) needs botocore, which is not installed: "
                "pip install 'pi-sidecar[bedrock]'"
            ) from None
        # botocore.auth writes the canonical request at DEBUG, and it holds the session token header: never below INFO.
        logger = logging.getLogger("botocore")
        if logger.level < logging.INFO:
            logger.setLevel(logging.INFO)
        _BOTOCORE.update(modules)
    return _BOTOCORE


_BOTOCORE_MODULES = ("auth", "awsrequest", "credentials", "eventstream")


# ----- the call ---------------------------------------------------------------------------------------------------


async def stream(call: UpstreamCall, client: Upstream) -> AsyncIterator[Delta]:
    """Send ``call`` to ConverseStream and yield its stream as deltas."""
    modules = botocore()
    if not call.api_key:
        raise MissingCredential(f"No AWS credential for provider {call.model.provider}: {aws.MISSING_HINT}")
    credential = aws.parse(call.api_key)
    region = resolve_region(call.model, credential.region)
    url = endpoint_url(call.model, region)
    body, placeholder = request_body(call)
    payload = orjson.dumps(body)
    headers, secrets = await _authorize(call, credential, client, url, payload, region)
    parser = ConverseStreamParser(call.model.provider, secrets, placeholder)
    try:
        async with open_stream(client, call, url, headers=headers, json_body=payload) as response:
            _check_content_type(response, call.model.provider)
            parser.response_id = response.headers.get("x-amzn-requestid")
            # A local, so the iterator outlives the drain (see anthropic_messages).
            messages = iter_messages(response, call.model.provider, modules["eventstream"])
            async for message in messages:
                for delta in parser.feed(message):
                    yield delta
                if parser.done:
                    parser.end()
                    return
    except UpstreamStatusError as exc:
        # open_stream redacted the body of the credential value as a whole; the secrets inside it go here.
        exc.message = redact(exc.message, secrets)
        exc.args = (exc.message,)
        if exc.status in (401, 403) and credential.web_identity is not None:
            aws.forget(credential.web_identity)  # revoked or expired early: the next call asks STS again
        raise
    parser.end()


async def _authorize(
    call: UpstreamCall,
    credential: aws.AwsCredential,
    client: Upstream,
    url: str,
    payload: bytes,
    region: str,
) -> tuple[dict[str, str], tuple[str, ...]]:
    """The request headers with the credential applied, and the secrets an error text must not carry."""
    headers = build_headers(call)
    if credential.bearer is not None:
        headers["authorization"] = f"Bearer {credential.bearer}"
        return headers, credential.secrets()
    keys = credential.keys
    if keys is None:
        if credential.web_identity is None:  # parse() gives one of the three; this keeps mypy and -O honest
            raise MissingCredential(f"No AWS credential for provider {call.model.provider}: {aws.MISSING_HINT}")
        keys = await aws.web_identity_keys(credential.web_identity, client.http, call.model.provider)
    secrets = tuple(s for s in (keys.secret_access_key, keys.session_token) if s)
    return sign(url, headers, payload, keys, region), secrets


def build_headers(call: UpstreamCall) -> dict[str, str]:
    headers: dict[str, str] = {}
    for source in (call.model.headers, call.headers):
        for name, value in source.items():
            lower = name.lower()
            if lower not in _RESERVED_HEADERS and not lower.startswith(_HEADER_PREFIX_RESERVED):
                headers[lower] = value
    headers["content-type"] = "application/json"
    headers["accept"] = "application/vnd.amazon.eventstream"
    return headers


def sign(
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    keys: aws.Keys,
    region: str,
    *,
    method: str = "POST",
    service: str = SERVICE,
) -> dict[str, str]:
    """``headers`` plus SigV4's (``x-amz-date``, ``x-amz-security-token``, ``authorization``), by botocore's signer.

    Every header given is signed; the ones httpx adds (``user-agent``, ``accept-encoding``, ``content-length``) are
    not, and need not be."""
    modules = botocore()
    request = modules["awsrequest"].AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    credentials = modules["credentials"].Credentials(keys.access_key_id, keys.secret_access_key, keys.session_token)
    modules["auth"].SigV4Auth(credentials, service, region).add_auth(request)
    return {name.lower(): value for name, value in request.headers.items()}


def resolve_region(model: ModelSpec, ambient: str | None) -> str:
    """The region to call: the configured one, an ARN's, else the credential's when it can serve the model's
    inference profile, else the profile's default region."""
    configured = model.compat.get("region")
    if isinstance(configured, str) and configured:
        return configured
    parts = model.id.split(":", 5)
    if len(parts) > 3 and parts[0] == "arn" and parts[2] == "bedrock" and parts[3]:
        return parts[3]
    geography = _GEOGRAPHIES.get(model.id.split(".", 1)[0]) if "." in model.id else None
    if geography is None:
        return ambient or DEFAULT_REGION
    default, serving = geography
    return ambient if ambient and ambient.startswith(serving) else default


def endpoint_url(model: ModelSpec, region: str) -> str:
    base = model.base_url.rstrip("/").replace("{region}", region)
    # One path segment whatever the id holds (an ARN has "/"); "." and ".." escaped so httpx keeps them.
    model_id = quote(model.id, safe="")
    if not model_id.strip("."):
        model_id = model_id.replace(".", "%2E")
    return f"{base}/model/{model_id}/converse-stream"


def _check_content_type(response: UpstreamResponse, provider: str) -> None:
    kind = response.headers.get("content-type", "")
    # A proxy may label the frames application/octet-stream; JSON or text is a server that did not stream.
    if "json" in kind or kind.startswith("text/"):
        raise UpstreamProtocolError(f"{provider}: expected an AWS event stream, got {kind}")


class EventMessage(Protocol):
    """An event-stream message as botocore decodes it."""

    @property
    def headers(self) -> Mapping[str, Any]: ...

    @property
    def payload(self) -> bytes: ...


async def iter_messages(response: UpstreamResponse, provider: str, eventstream: ModuleType) -> AsyncIterator[Any]:
    """The response body as event-stream messages (botocore's ``EventStreamBuffer``: prelude and message CRCs)."""
    buffer = eventstream.EventStreamBuffer()
    try:
        with map_transport_errors(provider):
            async for chunk in response.chunks():
                buffer.add_data(chunk)
                for message in buffer:
                    yield message
    except eventstream.ParserError as exc:
        raise UpstreamProtocolError(f"{provider}: unreadable AWS event stream ({type(exc).__name__})") from None


# ----- response ---------------------------------------------------------------------------------------------------

_NOTHING: tuple[Delta, ...] = ()


class ConverseStreamParser:
    """One ConverseStream's messages -> deltas. Plain dict lookups, no validation: the per-event hot path.

    Raises ``UpstreamStreamError`` for what Bedrock itself reported (an exception message; a guardrail or filter stop,
    raised by ``end`` once the usage that follows it is read) and ``UpstreamProtocolError`` for what cannot be read.
    """

    __slots__ = (
        "provider",
        "_secrets",
        "_placeholder",
        "_tools",
        "_opened",
        "_called",
        "_failure",
        "response_id",
        "stopped",
        "done",
    )

    def __init__(self, provider: str, secrets: tuple[str, ...] = (), placeholder: str | None = None) -> None:
        self.provider = provider
        self._secrets = secrets
        self._placeholder = placeholder
        """The placeholder tool's name when the request carried it: its calls are dropped."""
        self._tools: set[Any] = set()  # blocks opened by a toolUse start
        self._opened: set[Any] = set()  # blocks that produced a delta, so the assembler has opened them
        self._called = False  # a real tool (not the placeholder) was called
        self._failure: UpstreamStreamError | None = None
        self.response_id: str | None = None
        """The response's ``x-amzn-RequestId``, reported at ``messageStart``."""
        self.stopped = False
        """``messageStop`` was read."""
        self.done = False
        """``metadata`` (the last event) was read: the stream is complete."""

    def feed(self, message: EventMessage) -> Sequence[Delta]:
        headers = message.headers
        kind = headers.get(":message-type", "event")
        if kind != "event":
            raise self._exception(kind, headers, message.payload)
        payload = message.payload
        data = event_object(payload, self.provider, event=headers.get(":event-type")) if payload else {}
        try:
            return self._event(headers.get(":event-type"), data)
        except (AttributeError, TypeError) as exc:  # a list or string where an object belongs
            raise UpstreamProtocolError(f"{self.provider}: malformed ConverseStream event ({exc})") from None

    def _event(self, event: Any, data: dict[str, Any]) -> Sequence[Delta]:
        if event == "contentBlockDelta":
            index = data.get("contentBlockIndex")
            delta = data.get("delta") or {}
            if (text := delta.get("text")) is not None:
                if text:
                    self._opened.add(index)
                    return (TextDelta(index, text),)
                return _NOTHING
            if (tool := delta.get("toolUse")) is not None:
                fragment = tool.get("input")
                if fragment and index in self._tools:
                    return (ToolCallDelta(index, arguments=fragment),)
                return _NOTHING
            if (reasoning := delta.get("reasoningContent")) is not None:
                return self._reasoning(index, reasoning)
            return _NOTHING  # citations and future delta kinds: nothing pi's content holds
        if event == "contentBlockStart":
            index = data.get("contentBlockIndex")
            tool = (data.get("start") or {}).get("toolUse")
            if tool is None:
                return _NOTHING
            if self._placeholder is not None and tool.get("name") == self._placeholder:
                return _NOTHING  # its input deltas and its stop find no block either
            self._called = True
            self._tools.add(index)
            self._opened.add(index)
            return (ToolCallDelta(index, id=tool.get("toolUseId"), name=tool.get("name")),)
        if event == "contentBlockStop":
            index = data.get("contentBlockIndex")
            self._tools.discard(index)
            if index in self._opened:
                self._opened.discard(index)
                return (BlockEnd(index),)
            return _NOTHING
        if event == "messageStop":
            self.stopped = True
            return (self._finish(data.get("stopReason")),)
        if event == "metadata":
            self.done = True
            usage = data.get("usage")
            if not isinstance(usage, dict):
                return _NOTHING
            return (
                UsageUpdate(
                    input=usage.get("inputTokens"),
                    output=usage.get("outputTokens"),
                    cache_read=usage.get("cacheReadInputTokens"),
                    cache_write=usage.get("cacheWriteInputTokens"),
                ),
            )
        if event == "messageStart":
            # Reported here, not when the headers arrive: a stream whose first message is an exception (throttled
            # after the 200) then fails before any delta, and the caller gets it as an HTTP status.
            return (ResponseInfo(response_id=self.response_id),)
        return _NOTHING  # unknown event types carry nothing

    def _reasoning(self, index: Any, reasoning: Mapping[str, Any]) -> Sequence[Delta]:
        if text := reasoning.get("text"):
            self._opened.add(index)
            return (ThinkingDelta(index, text),)
        if signature := reasoning.get("signature"):
            self._opened.add(index)
            return (ThinkingDelta(index, signature=signature),)
        if redacted := reasoning.get("redactedContent"):
            self._opened.add(index)
            return (ThinkingDelta(index, redacted, redacted=True),)
        return _NOTHING

    def _finish(self, reason: Any) -> Finish:
        reason = str(reason or "end_turn")
        if reason in _FAILED_STOPS:
            # Raised by end(), after the metadata event: the turn's usage is still read and billed.
            status, what = _FAILED_STOPS[reason]
            self._failure = UpstreamStreamError(f"{self.provider}: {what} (stopReason {reason})", status)
            return Finish("stop")
        if reason == "tool_use" and not self._called:
            return Finish("stop")  # only the placeholder was called: there is no tool to run
        # Unknown future stop reasons end a turn that did complete, so they map to "stop".
        return Finish(_STOP_REASONS.get(reason, "stop"))

    def _exception(self, kind: Any, headers: Mapping[str, Any], payload: bytes) -> UpstreamStreamError:
        if kind == "exception":
            name = str(headers.get(":exception-type") or "exception")
            try:
                body = orjson.loads(payload) if payload else {}
            except orjson.JSONDecodeError:
                body = {"message": payload.decode("utf-8", "replace")}
            text = body.get("message") if isinstance(body, dict) else None
        else:  # "error": a service-side failure named in the headers
            name = str(headers.get(":error-code") or "error")
            text = headers.get(":error-message")
        message = redact(f"{self.provider} stream error ({name}): {text or 'no message'}", self._secrets)
        return UpstreamStreamError(message, _EXCEPTION_STATUS.get(name.lower(), 500))

    def end(self) -> None:
        """The stream is over (``metadata`` read, or the body ended): raise what the turn's end reported, or a
        protocol error for a stream cut before ``messageStop``."""
        if self._failure is not None:
            raise self._failure
        if not self.stopped:
            raise UpstreamProtocolError(f"{self.provider}: ConverseStream ended before messageStop", 502)


# ----- request ----------------------------------------------------------------------------------------------------


def request_body(call: UpstreamCall) -> tuple[dict[str, Any], str | None]:
    """The Converse body, and the placeholder tool's name when the body carries it."""
    options, model, context = call.options, call.model, call.context
    cache = bool(model.compat.get("cache_points")) and options.get("cacheRetention") != "none"
    messages = _convert_messages(context["messages"])
    body: dict[str, Any] = {"messages": messages}
    system: list[dict[str, Any]] = [{"text": t} for t in context.get("systemPrompt") or () if t.strip()]
    if cache:
        # The end of the conversation first (the whole prefix is cached), then the system prompt: two of the four
        # checkpoints Bedrock allows.
        if messages and messages[-1]["role"] == "user":
            messages[-1]["content"].append(_CACHE_POINT)
        if system:
            system.append(_CACHE_POINT)
    if system:
        body["system"] = system

    tool_config, placeholder = _tool_config(context.get("tools") or [], options.get("toolChoice"), messages)
    budget = _thinking_budget(call)
    forced = tool_config is not None and bool({"any", "tool"} & set(tool_config.get("toolChoice", {})))
    if forced:
        budget = None  # Claude rejects extended thinking with a forced tool choice; the caller's choice wins
    inference: dict[str, Any] = {}
    max_tokens = options.get("maxTokens") or model.max_tokens
    if budget is not None:
        # As for Anthropic: the budget comes on top of the requested output, capped at the model's limit.
        max_tokens = (max_tokens or _DEFAULT_MAX_TOKENS) + budget
        if model.max_tokens and max_tokens > model.max_tokens:
            max_tokens = model.max_tokens
            budget = min(budget, max_tokens - _MIN_THINKING_BUDGET)
            if budget < _MIN_THINKING_BUDGET:
                budget = None
    if max_tokens:
        inference["maxTokens"] = max_tokens
    if options.get("temperature") is not None and budget is None:
        inference["temperature"] = options["temperature"]  # Claude rejects a temperature while thinking
    if options.get("topP") is not None:
        inference["topP"] = options["topP"]
    if options.get("stopSequences"):
        inference["stopSequences"] = list(options["stopSequences"])
    if inference:
        body["inferenceConfig"] = inference
    if tool_config:
        body["toolConfig"] = tool_config
    if budget is not None:
        fields: dict[str, Any] = {"thinking": {"type": "enabled", "budget_tokens": budget}}
        if options.get("interleavedThinking"):
            fields["anthropic_beta"] = [_INTERLEAVED_THINKING_BETA]
        body["additionalModelRequestFields"] = fields
    return body, placeholder


def _thinking_budget(call: UpstreamCall) -> int | None:
    options, model = call.options, call.model
    effort = str(options.get("reasoning"))
    if effort not in _THINKING_BUDGETS or options.get("disableReasoning") or options.get("forceReasoningOff"):
        return None
    if not (model.reasoning or model.compat.get("supports_thinking")):
        return None
    budgets = options.get("thinkingBudgets")
    custom = budgets.get(effort) if isinstance(budgets, Mapping) else None
    return int(custom) if isinstance(custom, int | float) and custom > 0 else _THINKING_BUDGETS[effort]


def _tool_config(
    tools: Sequence[Any], choice: Any, messages: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, Any] | None, str | None]:
    history = any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])
    if choice == "none" or not tools:
        # Converse has no "none": no toolConfig at all, unless the history's tool blocks require one.
        if not history:
            return None, None
        if not tools:
            return {"tools": [_PLACEHOLDER_TOOL], "toolChoice": {"auto": {}}}, NO_TOOLS_PLACEHOLDER
        return {"tools": [_tool_spec(tool) for tool in tools]}, None
    config: dict[str, Any] = {"tools": [_tool_spec(tool) for tool in tools]}
    if choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif choice in ("any", "required"):
        config["toolChoice"] = {"any": {}}
    elif isinstance(choice, Mapping) and choice.get("type") in ("function", "tool"):
        function = choice.get("function")
        name = choice.get("name") if choice.get("name") is not None else (function or {}).get("name")
        if isinstance(name, str) and name:
            config["toolChoice"] = {"tool": {"name": name}}
    return config, None


def _tool_spec(tool: Any) -> dict[str, Any]:
    schema = tool.get("parameters") or {}
    if "type" not in schema:
        schema = {"type": "object", "properties": {}, **schema}
    spec: dict[str, Any] = {"name": tool.get("name", ""), "inputSchema": {"json": schema}}
    if tool.get("description"):  # Bedrock requires a description of at least one character, or none
        spec["description"] = tool["description"]
    return {"toolSpec": spec}


def _convert_messages(messages: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    # Unanswered calls and orphan results are repaired first: Bedrock rejects both with a 400.
    for message in repair_tool_history(messages):
        role = message["role"]
        if role == "toolResult":
            wire_role, blocks = "user", [_tool_result(message)]
        elif role in ("user", "developer"):
            wire_role, blocks = "user", _user_blocks(message.get("content"))
        elif role == "assistant":  # errored and aborted turns were dropped by the repair
            wire_role, blocks = "assistant", _assistant_blocks(message)
        else:
            continue
        if not blocks:
            continue
        # Converse wants the roles to alternate: consecutive tool results, and a user turn after them, are one turn.
        if out and out[-1]["role"] == wire_role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": wire_role, "content": blocks})
    return out


def _image(part: Mapping[str, Any]) -> dict[str, Any]:
    mime = str(part.get("mimeType") or "")
    image_format = _IMAGE_FORMATS.get(mime.lower())
    if image_format is None or not part.get("data"):
        what = f"an image of type {mime!r}" if part.get("data") else "an image given by URL"
        raise BadRequest(f"Bedrock cannot take {what}: send inline base64 JPEG, PNG, GIF or WebP data")
    # The Converse JSON wire carries the blob as base64 text, which pi's image data already is.
    return {"image": {"format": image_format, "source": {"bytes": part["data"]}}}


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content.strip() else []
    blocks: list[dict[str, Any]] = []
    for part in content or ():
        kind = part.get("type")
        if kind == "text":
            text = part.get("text") or ""
            if text.strip():  # Bedrock rejects blank text blocks
                blocks.append({"text": text})
        elif kind == "image":
            blocks.append(_image(part))
    return blocks


def _tool_result(message: Mapping[str, Any]) -> dict[str, Any]:
    content = _user_blocks(message.get("content")) or [{"text": "(empty)"}]
    return {
        "toolResult": {
            "toolUseId": _tool_id(message["toolCallId"]),
            "content": content,
            "status": "error" if message.get("isError") else "success",
        }
    }


def _replays_reasoning(message: Mapping[str, Any], signature: str) -> bool:
    """Whether a thinking block's signature can go back to Bedrock: one Bedrock gave (``api``), or a turn a client
    sent back in an ingress format (no ``api``) unless the signature is another API's (OpenAI's JSON items)."""
    api = message.get("api") or ""
    return api == API or (api == "" and not signature.startswith("{"))


def _assistant_blocks(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in message.get("content") or ():
        kind = part.get("type")
        if kind == "text":
            text = part.get("text") or ""
            if text.strip():
                blocks.append({"text": text})
        elif kind == "thinking":
            text, signature = part.get("thinking") or "", part.get("thinkingSignature") or ""
            if signature and _replays_reasoning(message, signature):
                blocks.append({"reasoningContent": {"reasoningText": {"text": text, "signature": signature}}})
            elif text.strip():
                # Unsigned reasoning (Nova's, an aborted stream's) or another API's: Bedrock rejects it as
                # reasoningContent ("User messages cannot contain reasoning content"), so it goes back as text.
                blocks.append({"text": text})
        elif kind == "redactedThinking":
            data = part.get("data") or ""
            if data and _replays_reasoning(message, data):
                blocks.append({"reasoningContent": {"redactedContent": data}})
        elif kind == "toolCall":
            arguments = part.get("arguments")
            blocks.append(
                {
                    "toolUse": {
                        "toolUseId": _tool_id(part.get("id", "")),
                        "name": part.get("name", ""),
                        "input": arguments if isinstance(arguments, dict) else {},
                    }
                }
            )
        # images, fallback and server-tool blocks are not sent back upstream.
    return blocks


def _tool_id(raw: str) -> str:
    """Bedrock's toolUseId pattern is ``[a-zA-Z0-9_-]+`` (max 64): other providers' ids are rewritten the same way
    in the call and its result, so they still pair."""
    return _TOOL_ID_BAD_CHARS.sub("_", raw)[:64] or "_"
