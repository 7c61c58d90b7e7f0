"""The stream contract in ``sidecar.stream``: block indices, end events, terminal reasons, exactly-once outcomes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sidecar.models import ModelSpec, Pricing
from sidecar.providers import echo
from sidecar.providers.base import BlockEnd, Finish, TextDelta, ThinkingDelta, ToolCallDelta, UpstreamCall, UsageUpdate
from sidecar.stream import EventTimeouts, Generation, MessageAssembler, Outcome
from sidecar.upstream import Upstream

MODEL = ModelSpec(provider="p", id="m", api="x", base_url="", pricing=Pricing(3, 15, 0.3, 3.75))


def events(frames: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(f[6:]) for blob in frames for f in blob.split(b"\n\n") if f.startswith(b"data: {")]


def test_interleaved_tool_calls_keep_their_indices_and_kinds_close_each_other() -> None:
    asm = MessageAssembler(MODEL)
    frames = [asm.start()]
    for delta in (
        ThinkingDelta("t", "hmm"),
        ThinkingDelta("t", signature="sig-1"),
        TextDelta("x", "Calling tools."),  # a new kind closes the thinking block
        ToolCallDelta(("tool", 0), id="a", name="read"),  # ...and tool calls close the text block
        ToolCallDelta(("tool", 1), id="b", name="grep"),
        ToolCallDelta(("tool", 0), arguments='{"path": '),
        ToolCallDelta(("tool", 1), arguments='{"q": "x"}'),
        ToolCallDelta(("tool", 0), arguments='"a.txt"}'),
        UsageUpdate(input=10, output=20, cache_read=5, cache_write=1),
        Finish("stop"),
    ):
        frames.extend(asm.feed(delta))
    frames.append(asm.done())
    evs = events(frames)
    assert [(e["type"], e.get("contentIndex")) for e in evs] == [
        ("start", None), ("thinking_start", 0), ("thinking_delta", 0), ("thinking_end", 0),
        ("text_start", 1), ("text_delta", 1), ("text_end", 1),
        ("toolcall_start", 2), ("toolcall_start", 3), ("toolcall_delta", 2), ("toolcall_delta", 3),
        ("toolcall_delta", 2), ("toolcall_end", 2), ("toolcall_end", 3), ("done", None),
    ]  # fmt: skip
    done = evs[-1]
    assert done["reason"] == "toolUse"  # "stop" with tool calls in the content is reported as toolUse
    content = done["message"]["content"]
    assert content[0] == {"type": "thinking", "thinking": "hmm", "thinkingSignature": "sig-1"}
    assert content[2]["arguments"] == {"path": "a.txt"} and content[3]["arguments"] == {"q": "x"}
    usage = done["message"]["usage"]
    assert usage["totalTokens"] == 36
    assert usage["cost"]["total"] == pytest.approx((10 * 3 + 20 * 15 + 5 * 0.3 + 1 * 3.75) / 1e6)


def test_explicit_block_end_bad_arguments_and_redacted_thinking() -> None:
    asm = MessageAssembler(MODEL)
    frames = [asm.start()]
    for delta in (
        ThinkingDelta(0, "opaque-data", redacted=True),
        BlockEnd(0),
        ToolCallDelta(1, id="c", name="run", arguments='{"unterminated": '),
        BlockEnd(1),
        Finish("length"),
    ):
        frames.extend(asm.feed(delta))
    frames.append(asm.done())
    evs = events(frames)
    assert [e["type"] for e in evs] == [
        "start", "thinking_start", "thinking_end", "toolcall_start", "toolcall_delta", "toolcall_end", "done",
    ]  # fmt: skip
    message = evs[-1]["message"]
    assert message["content"][0] == {"type": "redactedThinking", "data": "opaque-data"}
    assert message["content"][1]["arguments"] == {}
    assert evs[-1]["reason"] == "length" and message["stopReason"] == "length"


async def test_a_client_gone_at_the_start_frame_is_still_recorded_once() -> None:
    outcomes: list[Outcome] = []
    context: Any = {"messages": [{"role": "user", "content": "a b c", "timestamp": 1}]}
    call = UpstreamCall(model=MODEL, context=context, options={}, api_key=None, session_id="s")
    async with Upstream() as client:
        generation = Generation(call, echo.stream, client, EventTimeouts(None, None), outcomes.append)
        frames = generation.frames()
        first = await anext(frames)
        assert first.startswith(b'data: {"type":"start"')
        await frames.aclose()  # what the server does when the client disconnects
    assert [(o.reason, o.error_status) for o in outcomes] == [("aborted", 499)]
