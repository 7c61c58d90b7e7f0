"""Conversation-history repair every wire API needs before translation (pi's ``transformMessages`` step).

Providers reject a tool call without its result, and a result without its call, with a 400. Agents produce both: a
user interrupts a tool run, a turn fails half-way. So, once, for every adapter:

- assistant turns that ended in ``error`` or ``aborted`` are dropped (they may hold half a tool call);
- a tool result whose call is not in the assistant turn it follows is dropped;
- a tool call left without a result gets an ``isError`` result "No result provided", placed right after the run of
  results that follows its assistant turn.
"""

from __future__ import annotations

from collections.abc import Iterable

from client.types import Message, ToolResultMessage

NO_RESULT = "No result provided"


def _placeholder(call_id: str, name: str, timestamp: int) -> ToolResultMessage:
    return {
        "role": "toolResult",
        "toolCallId": call_id,
        "toolName": name,
        "content": [{"type": "text", "text": NO_RESULT}],
        "isError": True,
        "timestamp": timestamp,
    }


def repair_tool_history(messages: Iterable[Message]) -> list[Message]:
    out: list[Message] = []
    pending: dict[str, str] = {}  # call id -> tool name, for the last assistant turn's unanswered calls
    timestamp = 0

    def close_run() -> None:
        out.extend(_placeholder(call_id, name, timestamp) for call_id, name in pending.items())
        pending.clear()

    for message in messages:
        timestamp = message.get("timestamp", timestamp) or timestamp
        if message["role"] == "toolResult":
            if pending.pop(message["toolCallId"], None) is not None:
                out.append(message)
            continue
        close_run()
        if message["role"] == "assistant":
            if message.get("stopReason") in ("error", "aborted"):
                continue
            for block in message["content"]:
                if block["type"] == "toolCall":
                    pending[block["id"]] = block["name"]
        out.append(message)
    close_run()
    return out
