"""Pi events for the scripted server (valid per protocol §5: every non-terminal event carries ``partial``)."""

from __future__ import annotations

import copy
import json
from typing import Any

MODEL = "anthropic/claude-sonnet-4-5"
CONTEXT: dict[str, Any] = {"messages": [{"role": "user", "content": "hi", "timestamp": 1}]}


def usage(input: int = 0, output: int = 0) -> dict[str, Any]:
    return {
        "input": input,
        "output": output,
        "cacheRead": 0,
        "cacheWrite": 0,
        "totalTokens": input + output,
        "cost": {"input": 0.0, "output": 0.0, "cacheRead": 0.0, "cacheWrite": 0.0, "total": 0.0},
    }


def message(content: list[dict[str, Any]] | None = None, stop: str = "stop", **extra: Any) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": content if content is not None else [],
        "api": "anthropic-messages",
        "provider": "anthropic",
        "model": "claude-sonnet-4-5",
        "usage": usage(),
        "stopReason": stop,
        "timestamp": 1_700_000_000_000,
        **extra,
    }


def start() -> dict[str, Any]:
    return {"type": "start", "partial": message()}


def text_turn(parts: list[str]) -> list[dict[str, Any]]:
    """start, text_start, one text_delta per part, text_end, done."""
    text = ""
    events: list[dict[str, Any]] = [start()]
    events.append({"type": "text_start", "contentIndex": 0, "partial": message([{"type": "text", "text": ""}])})
    for part in parts:
        text += part
        events.append(
            {
                "type": "text_delta",
                "contentIndex": 0,
                "delta": part,
                "partial": message([{"type": "text", "text": text}]),
            }
        )
    final = [{"type": "text", "text": text}]
    events.append({"type": "text_end", "contentIndex": 0, "content": text, "partial": message(copy.deepcopy(final))})
    events.append({"type": "done", "reason": "stop", "message": message(final, usage=usage(12, 5))})
    return events


def error_event(text: str = "upstream exploded", status: int = 529) -> dict[str, Any]:
    return {"type": "error", "reason": "error", "error": message(stop="error", errorMessage=text, errorStatus=status)}


def frame(event: dict[str, Any] | str) -> bytes:
    data = event if isinstance(event, str) else json.dumps(event, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


def sse(events: list[dict[str, Any]], *, done_marker: bool = True, crlf: bool = False) -> bytes:
    body = b"".join(frame(e) for e in events) + (frame("[DONE]") if done_marker else b"")
    return body.replace(b"\n", b"\r\n") if crlf else body
