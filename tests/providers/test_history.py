"""History repair shared by every adapter, and what each wire API receives for an interrupted tool run."""

from __future__ import annotations

from typing import Any

from client.types import Message
from sidecar.models import ModelSpec
from sidecar.providers import anthropic_messages, openai_completions
from sidecar.providers.base import UpstreamCall
from sidecar.providers.history import NO_RESULT, repair_tool_history
from sidecar.upstream import Upstream
from tests.fakeupstream import FakeUpstream, Reply, fixture_bytes


def assistant(*calls: tuple[str, str], stop: str = "toolUse") -> Any:
    content = [{"type": "toolCall", "id": i, "name": n, "arguments": {}} for i, n in calls]
    return {
        "role": "assistant",
        "content": content,
        "api": "x",
        "provider": "x",
        "model": "x",
        "usage": {},
        "stopReason": stop,
        "timestamp": 5,
    }


def result(call_id: str) -> Any:
    return {
        "role": "toolResult",
        "toolCallId": call_id,
        "toolName": "t",
        "content": [{"type": "text", "text": "ok"}],
        "isError": False,
        "timestamp": 6,
    }


USER: Any = {"role": "user", "content": "next", "timestamp": 7}


def test_unanswered_calls_get_an_error_result_in_place() -> None:
    history: list[Message] = [assistant(("c1", "read"), ("c2", "grep")), result("c1"), USER]
    repaired = repair_tool_history(history)
    assert [m["role"] for m in repaired] == ["assistant", "toolResult", "toolResult", "user"]
    placeholder: Any = repaired[2]
    assert placeholder["toolCallId"] == "c2" and placeholder["toolName"] == "grep" and placeholder["isError"]
    assert placeholder["content"] == [{"type": "text", "text": NO_RESULT}]


def test_failed_turns_and_orphan_results_are_dropped() -> None:
    history: list[Message] = [assistant(("c1", "read"), stop="aborted"), result("c1"), USER, result("c9")]
    assert repair_tool_history(history) == [USER]


def test_trailing_unanswered_call_is_closed() -> None:
    repaired = repair_tool_history([USER, assistant(("c1", "read"))])
    assert [m["role"] for m in repaired] == ["user", "assistant", "toolResult"]


async def test_both_wire_apis_receive_a_result_for_every_call() -> None:
    context: Any = {"messages": [USER, assistant(("call_1", "read")), USER]}
    with FakeUpstream() as up:
        up.push(
            Reply.sse(fixture_bytes("anthropic-messages/text-basic-padded.sse")),
            Reply.sse(fixture_bytes("openai-chat-completions/text-basic-include-usage.sse")),
        )
        async with Upstream() as client:
            for module, api, base in (
                (anthropic_messages, "anthropic-messages", up.url),
                (openai_completions, "openai-completions", up.url + "/v1"),
            ):
                model = ModelSpec(provider="p", id="m", api=api, base_url=base)
                call = UpstreamCall(model=model, context=context, options={}, api_key="k", session_id="s")
                [d async for d in module.stream(call, client)]
        anthropic_body, openai_body = (r.json() for r in up.received)
    tool_turn = anthropic_body["messages"][2]
    assert tool_turn["role"] == "user" and tool_turn["content"][0]["type"] == "tool_result"
    assert tool_turn["content"][0]["tool_use_id"] == "call_1" and tool_turn["content"][0]["is_error"] is True
    assert [m["role"] for m in openai_body["messages"]] == ["user", "assistant", "tool", "user"]
    assert openai_body["messages"][2] == {"role": "tool", "tool_call_id": "call_1", "content": NO_RESULT}
