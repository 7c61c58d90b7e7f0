"""The built-in ``echo`` wire API: streams the last user message back word by word, with plausible usage.

It lets a fresh machine run the whole path with no provider key, and gives tests and health checks a deterministic
model. Token counts use the common four-characters-per-token estimate.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

from sidecar.upstream import Upstream

from .base import Delta, Finish, ResponseInfo, TextDelta, UpstreamCall, UsageUpdate

_WORDS = re.compile(r"\S+\s*")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _estimate_tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4) if text else 0


async def stream(call: UpstreamCall, client: Upstream) -> AsyncIterator[Delta]:
    messages = call.context["messages"]
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    reply = _text_of(last_user.get("content")) if last_user else ""
    reply = reply.strip() or "(echo: no user text to repeat)"

    prompt_text = "\n".join(call.context.get("systemPrompt") or []) + "".join(
        _text_of(m.get("content")) for m in messages
    )
    yield ResponseInfo(response_id=f"echo_{call.session_id[:8]}", upstream_model="echo")
    yield UsageUpdate(input=_estimate_tokens(prompt_text), output=0)
    max_words = call.options.get("maxTokens")
    words = _WORDS.findall(reply)
    truncated = isinstance(max_words, int) and len(words) > max_words
    if truncated:
        words = words[: int(max_words)]  # type: ignore[arg-type]
    for i, word in enumerate(words, 1):
        yield UsageUpdate(output=i)
        yield TextDelta("text", word)
    yield Finish("length" if truncated else "stop")
