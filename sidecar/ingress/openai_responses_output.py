"""The response side of the OpenAI Responses format (``sidecar.ingress.openai_responses``): output items, the
``response.*`` event stream, the non-streaming ``Response`` body, and ``STORE``, the in-process memory of what was
produced that ``item_reference`` and ``previous_response_id`` resolve against.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from client.types import AssistantMessage, StopReason, Usage
from sidecar.ingress.base import IngressRequest
from sidecar.ingress.common import sse_event
from sidecar.models import ModelSpec
from sidecar.stream import BlockKind

SIGNATURE_PREFIX = "pi.signature."
"""``encrypted_content`` prefix for a thinking signature. A reasoning blob from elsewhere (OpenAI's own) is no
signature a provider here would accept, so the decoder drops it and replays the summary unsigned."""
REDACTED_PREFIX = "pi.redacted."
"""``encrypted_content`` prefix for Anthropic ``redacted_thinking`` data."""

# ----- the in-process item store ----------------------------------------------------------------------------------

MAX_STORED_ITEMS = 4096
"""Output items kept for ``item_reference`` (a few hundred conversations' worth of recent turns)."""
MAX_STORED_RESPONSES = 1024
"""Responses kept for ``previous_response_id``."""
MAX_STORED_BYTES = 64 * 1024 * 1024
"""Both tables together, counted as JSON bytes (a response counts its whole conversation); the oldest go first."""


@dataclass(slots=True)
class _Entry:
    owner: str
    value: Any
    size: int
    tick: int


class ResponseStore:
    """The output items this process produced (by item id) and each response's conversation (by response id): what
    ``item_reference`` and ``previous_response_id`` resolve to. A bounded LRU; an entry is visible only to the bearer
    that created it."""

    def __init__(
        self,
        max_items: int = MAX_STORED_ITEMS,
        max_responses: int = MAX_STORED_RESPONSES,
        max_bytes: int = MAX_STORED_BYTES,
    ) -> None:
        self.max_items, self.max_responses, self.max_bytes = max_items, max_responses, max_bytes
        self._items: OrderedDict[str, _Entry] = OrderedDict()
        self._responses: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._tick = 0

    def item(self, owner: str, item_id: str) -> dict[str, Any] | None:
        entry = self._get(self._items, owner, item_id)
        return None if entry is None else entry.value

    def conversation(self, owner: str, response_id: str) -> tuple[tuple[dict[str, Any], ...], int] | None:
        """The response's input and output items, and their size in bytes."""
        entry = self._get(self._responses, owner, response_id)
        return None if entry is None else (entry.value, entry.size)

    def remember(
        self, owner: str, response_id: str, history: tuple[dict[str, Any], ...], history_bytes: int, output: list[Any]
    ) -> None:
        sizes = [len(orjson.dumps(item)) for item in output]
        for item, size in zip(output, sizes, strict=True):
            self._put(self._items, item["id"], owner, item, size)
        self._put(self._responses, response_id, owner, (*history, *output), history_bytes + sum(sizes))
        self._evict()

    def _get(self, table: OrderedDict[str, _Entry], owner: str, key: str) -> _Entry | None:
        entry = table.get(key)
        if entry is None or entry.owner != owner:
            return None
        table.move_to_end(key)
        self._tick += 1
        entry.tick = self._tick
        return entry

    def _put(self, table: OrderedDict[str, _Entry], key: str, owner: str, value: Any, size: int) -> None:
        if size > self.max_bytes:
            return
        old = table.pop(key, None)
        if old is not None:
            self._bytes -= old.size
        self._tick += 1
        table[key] = _Entry(owner, value, size, self._tick)
        self._bytes += size

    def _evict(self) -> None:
        while len(self._items) > self.max_items:
            self._bytes -= self._items.popitem(last=False)[1].size
        while len(self._responses) > self.max_responses:
            self._bytes -= self._responses.popitem(last=False)[1].size
        while self._bytes > self.max_bytes:
            items_head = next(iter(self._items.values()), None)
            responses_head = next(iter(self._responses.values()), None)
            older = (
                self._items
                if responses_head is None or (items_head and items_head.tick < responses_head.tick)
                else self._responses
            )
            self._bytes -= older.popitem(last=False)[1].size


STORE = ResponseStore()


# ----- the decoded request --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponsesRequest(IngressRequest):
    """The decoded request plus what the encoder and ``render`` need to store the response."""

    items: tuple[dict[str, Any], ...] = ()
    """The conversation as Responses items with references resolved: what a later ``previous_response_id`` replays."""
    items_bytes: int = 0
    owner: str = ""
    """A digest of the caller's bearer: stored items are visible to that bearer only."""
    store: bool = True


# ----- output items -----------------------------------------------------------------------------------------------


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": []}
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": [part]}


def _reasoning_item(item_id: str, block: Mapping[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {"id": item_id, "type": "reasoning", "summary": []}
    if block.get("type") == "redactedThinking":
        item["encrypted_content"] = REDACTED_PREFIX + block.get("data", "")
        return item
    item["summary"] = [{"type": "summary_text", "text": block.get("thinking", "")}]
    if block.get("thinkingSignature"):
        item["encrypted_content"] = SIGNATURE_PREFIX + block["thinkingSignature"]
    return item


def _function_item(item_id: str, block: Mapping[str, Any], arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": block.get("id", ""),
        "name": block.get("name", ""),
    }


_PREFIXES = {"text": "msg", "thinking": "rs", "toolCall": "fc"}


def _item_id(kind: BlockKind, suffix: str, output_index: int) -> str:
    return f"{_PREFIXES[kind]}_{suffix}{output_index:03d}"


def _output_items(message: AssistantMessage, suffix: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    block: Any
    for block in message["content"]:
        kind = block["type"]
        if kind == "text":
            items.append(_message_item(_item_id("text", suffix, len(items)), block["text"], "completed"))
        elif kind in ("thinking", "redactedThinking"):
            items.append(_reasoning_item(_item_id("thinking", suffix, len(items)), block))
        elif kind == "toolCall":
            arguments = orjson.dumps(block.get("arguments", {})).decode()
            items.append(_function_item(_item_id("toolCall", suffix, len(items)), block, arguments, "completed"))
    return items


def _usage(usage: Usage) -> dict[str, Any]:
    # pi's `input` excludes cached tokens; OpenAI's input_tokens counts them all.
    input_tokens = usage["input"] + usage["cacheRead"] + usage["cacheWrite"]
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": usage["cacheRead"], "cache_write_tokens": usage["cacheWrite"]},
        "output_tokens": usage["output"],
        "output_tokens_details": {"reasoning_tokens": usage.get("reasoningTokens") or 0},
        "total_tokens": input_tokens + usage["output"],
    }


def _shell(request: IngressRequest, response_id: str, created_at: int) -> dict[str, Any]:
    """The response fields that do not change while it runs (the request's settings, echoed as OpenAI does)."""
    body = request.body
    reasoning = body.get("reasoning")
    reasoning = reasoning if isinstance(reasoning, dict) else {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": request.model_id,
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": getattr(request, "store", True),
        "temperature": body.get("temperature"),
        "text": {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p"),
        "truncation": "disabled",
        "usage": None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def _finished(
    shell: dict[str, Any], reason: StopReason, output: list[Any], message: AssistantMessage
) -> dict[str, Any]:
    response = {**shell, "output": output, "usage": _usage(message["usage"]), "completed_at": int(time.time())}
    if reason == "length":
        response.update(status="incomplete", incomplete_details={"reason": "max_output_tokens"})
    else:
        response["status"] = "completed"
    return response


def _remember(request: IngressRequest, response_id: str, output: list[dict[str, Any]]) -> None:
    if isinstance(request, ResponsesRequest) and request.store:
        STORE.remember(request.owner, response_id, request.items, request.items_bytes, output)


def _suffix(generation_id: str) -> str:
    return generation_id.removeprefix("gen_")  # resp_X answers the ledger's gen_X


_FAILURE_CODES = {400: "invalid_prompt", 429: "rate_limit_exceeded"}
"""``response.error.code`` by the failure's status (codes the SDK types list); anything else is server_error."""


# ----- stream -----------------------------------------------------------------------------------------------------


class ResponsesEncoder:
    """The ``response.*`` event stream (§3.2); ``output_index`` is the item's position in ``response.output``, which
    differs from the block index once blocks are skipped (images) or interleave."""

    def __init__(self, request: IngressRequest, generation_id: str) -> None:
        self._request = request
        self._suffix = _suffix(generation_id)
        self._response_id = "resp_" + self._suffix
        self._shell = _shell(request, self._response_id, int(time.time()))
        self._sequence = 0
        self._output: list[dict[str, Any]] = []
        self._slots: dict[int, int] = {}  # block index → output index
        self._arguments: dict[int, list[str]] = {}
        self._open: set[int] = set()  # block indices whose item is not done yet
        self._delta_heads: dict[int, bytes] = {}  # block index → its delta frames up to the delta's JSON string

    def _event(self, kind: str, payload: dict[str, Any]) -> bytes:
        self._sequence += 1
        return sse_event(kind, {"type": kind, **payload, "sequence_number": self._sequence - 1})

    def start(self, message: AssistantMessage) -> bytes:
        return self._event("response.created", {"response": self._shell}) + self._event(
            "response.in_progress", {"response": self._shell}
        )

    def block_start(self, kind: BlockKind, index: int, content: dict[str, Any], message: AssistantMessage) -> bytes:
        position = self._slots[index] = len(self._output)
        item_id = _item_id(kind, self._suffix, position)
        if kind == "text":
            item: dict[str, Any] = {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant"}
            item["content"] = []
        elif kind == "thinking":
            item = {"id": item_id, "type": "reasoning", "summary": []}
        else:
            item = _function_item(item_id, content, "", "in_progress")
            self._arguments[index] = []
        self._output.append(item)
        self._open.add(index)
        added = self._event("response.output_item.added", {"output_index": position, "item": item})
        at = {"item_id": item_id, "output_index": position}
        self._delta_heads[index] = _delta_head(kind, at)
        if kind == "text":  # the part its text deltas go to (the SDK helpers fail without it)
            part = {"type": "output_text", "text": "", "annotations": []}
            return added + self._event("response.content_part.added", {**at, "content_index": 0, "part": part})
        if content["type"] == "thinking":  # redacted thinking has no summary to stream
            part = {"type": "summary_text", "text": ""}
            return added + self._event(
                "response.reasoning_summary_part.added", {**at, "summary_index": 0, "part": part}
            )
        return added

    def block_delta(self, kind: BlockKind, index: int, delta: str, message: AssistantMessage) -> bytes:
        # The per-token path: the frame's fixed part was built at block start.
        if kind == "toolCall":
            self._arguments[index].append(delta)
        self._sequence += 1
        tail = b',"sequence_number":%d}\n\n' % (self._sequence - 1)
        return self._delta_heads[index] + orjson.dumps(delta) + tail

    def block_end(self, kind: BlockKind, index: int, content: dict[str, Any], message: AssistantMessage) -> bytes:
        position = self._slots[index]
        item_id = self._output[position]["id"]
        at = {"item_id": item_id, "output_index": position}
        frames = []
        if kind == "text":
            text = content["text"]
            item = _message_item(item_id, text, "completed")
            frames.append(
                self._event("response.output_text.done", {**at, "content_index": 0, "text": text, "logprobs": []})
            )
            frames.append(
                self._event("response.content_part.done", {**at, "content_index": 0, "part": item["content"][0]})
            )
        elif kind == "thinking":
            item = _reasoning_item(item_id, content)
            if content["type"] == "thinking":
                text = content["thinking"]
                frames.append(
                    self._event("response.reasoning_summary_text.done", {**at, "summary_index": 0, "text": text})
                )
                part = {"type": "summary_text", "text": text}
                frames.append(
                    self._event("response.reasoning_summary_part.done", {**at, "summary_index": 0, "part": part})
                )
        else:
            # The text as streamed (deltas and done agree); the parsed arguments only when nothing was streamed.
            arguments = "".join(self._arguments.pop(index, ())) or orjson.dumps(content.get("arguments", {})).decode()
            item = _function_item(item_id, content, arguments, "completed")
            frames.append(self._event("response.function_call_arguments.done", {**at, "arguments": arguments}))
        self._output[position] = item
        self._open.discard(index)
        frames.append(self._event("response.output_item.done", {"output_index": position, "item": item}))
        return b"".join(frames)

    def done(self, reason: StopReason, message: AssistantMessage) -> bytes:
        response = _finished(self._shell, reason, self._output, message)
        _remember(self._request, self._response_id, self._output)
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        return self._event(kind, {"response": response})

    def error(self, reason: Literal["error", "aborted"], message: AssistantMessage) -> bytes:
        self._settle_open(message)
        status = message.get("errorStatus") or 500
        error = {"code": _FAILURE_CODES.get(status, "server_error"), "message": message.get("errorMessage", "error")}
        response = {**self._shell, "status": "failed", "error": error, "output": self._output}
        response["usage"] = _usage(message["usage"])
        return self._event("response.failed", {"response": response})

    def _settle_open(self, message: AssistantMessage) -> None:
        """Items still streaming when the generation failed: their partial content, status ``incomplete``."""
        for index in sorted(self._open):
            position = self._slots[index]
            item = self._output[position]
            block: Any = message["content"][index]
            if item["type"] == "message":
                self._output[position] = _message_item(item["id"], block.get("text", ""), "incomplete")
            elif item["type"] == "function_call":
                arguments = "".join(self._arguments.get(index, ()))
                self._output[position] = _function_item(item["id"], block, arguments, "incomplete")
            else:
                self._output[position] = _reasoning_item(item["id"], block)
        self._open.clear()


_DELTA_EVENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "text": ("response.output_text.delta", {"content_index": 0, "logprobs": []}),
    "thinking": ("response.reasoning_summary_text.delta", {"summary_index": 0}),
    "toolCall": ("response.function_call_arguments.delta", {}),
}


def _delta_head(kind: BlockKind, at: dict[str, Any]) -> bytes:
    """``event: …`` and the ``data:`` JSON of the block's delta events, open at ``"delta":``."""
    name, fields = _DELTA_EVENTS[kind]
    fixed = orjson.dumps({"type": name, **at, **fields})
    return b"event: " + name.encode() + b"\ndata: " + fixed[:-1] + b',"delta":'


def encoder(request: IngressRequest, model: ModelSpec, generation_id: str) -> ResponsesEncoder:
    return ResponsesEncoder(request, generation_id)


def render(request: IngressRequest, message: AssistantMessage, generation_id: str) -> Any:
    suffix = _suffix(generation_id)
    response_id = "resp_" + suffix
    output = _output_items(message, suffix)
    _remember(request, response_id, output)
    return _finished(_shell(request, response_id, int(time.time())), message["stopReason"], output, message)
