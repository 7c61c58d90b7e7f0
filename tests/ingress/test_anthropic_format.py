"""The Anthropic Messages ingress format as functions: decode's mapping and refusals, the encoder's event sequence in
the cases the recorded streams do not reach (redacted thinking, an error before any block, an abort), render."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from client.types import AssistantMessage, zero_usage
from sidecar.config import Limits
from sidecar.count_tokens import IMAGE_TOKENS, estimate_tokens
from sidecar.errors import BadRequest
from sidecar.ingress.anthropic_messages import AnthropicEncoder, decode, decode_count_tokens, error_body, render
from sidecar.ingress.base import IngressRequest

LIMITS = Limits()
BASE: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "Hi"}],
}


def decoded(headers: dict[str, str] | None = None, **fields: Any) -> IngressRequest:
    return decode(orjson.dumps({**BASE, **fields}), headers or {}, LIMITS)


def refusal(**fields: Any) -> str:
    with pytest.raises(BadRequest) as caught:
        decode(orjson.dumps({**BASE, **fields}), {}, LIMITS)
    return caught.value.message


def test_a_conversation_becomes_the_pi_context() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    request = decoded(
        system=[{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Look"}, image]},
            {
                "role": "assistant",
                "content": [
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "tool_use", "id": "toolu_1", "name": "shot", "input": {"x": 1}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True, "content": [image]},
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}},
                ],
            },
            {"role": "system", "content": "Mid-conversation rule."},
        ],
        stream=True,
    )
    assert request.stream and request.context["systemPrompt"] == ["You are terse."]
    messages: list[Any] = list(request.context["messages"])
    user, assistant, result, after, developer = messages
    assert user["content"][1] == {"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png"}
    assert assistant["content"] == [
        {"type": "redactedThinking", "data": "opaque"},
        {"type": "toolCall", "id": "toolu_1", "name": "shot", "arguments": {"x": 1}},
    ]
    assert assistant["stopReason"] == "toolUse"
    assert (result["role"], result["toolCallId"], result["toolName"], result["isError"]) == (
        "toolResult",
        "toolu_1",
        "shot",
        True,
    )
    assert result["content"][0]["type"] == "image"
    assert after == {"role": "user", "content": [{"type": "text", "text": "notes"}], "timestamp": 0}
    assert developer["role"] == "developer"


def test_what_pi_cannot_hold_is_accepted_and_noted() -> None:
    """Decode runs for relayed requests too: a PDF or a Files API image must not be refused, and a translation says
    what it left out."""
    pdf = {
        "type": "document",
        "title": "Q3",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JV"},
    }
    file_image = {"type": "image", "source": {"type": "file", "file_id": "file_011"}}
    found = {
        "type": "search_result",
        "source": "https://example.com",
        "title": "Example",
        "content": [{"type": "text", "text": "Found it."}],
    }
    server = {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}}
    results = {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}
    request = decoded(
        messages=[
            {"role": "user", "content": [pdf, file_image, found]},
            {"role": "assistant", "content": [server, results, {"type": "text", "text": "Done."}]},
        ]
    )
    messages: list[Any] = list(request.context["messages"])
    user, assistant = messages
    assert [block["text"] for block in user["content"]] == [
        "[a document (Q3) (base64 source) was left out: only Anthropic models can receive it through the sidecar]",
        "[an image (file source) was left out: only Anthropic models can receive it through the sidecar]",
        "Example https://example.com\n\nFound it.",
    ]
    assert [block["type"] for block in assistant["content"]] == ["anthropicServerTool", "anthropicServerTool", "text"]
    reference = {"type": "tool_reference", "tool_name": "Grep"}  # a client-side tool search's result
    answered = decoded(
        messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [reference]}]}]
    )
    assert answered.context["messages"][0]["content"] == [{"type": "text", "text": "[tool reference: Grep]"}]


def test_options_map_to_what_the_adapters_read() -> None:
    request = decoded(
        temperature=0.2,
        top_p=0.9,
        top_k=40,
        stop_sequences=["###"],
        metadata={"user_id": "alice"},
        tools=[
            {"name": "f", "description": "F", "input_schema": {"type": "object"}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},  # a server tool: not translatable
        ],
        tool_choice={"type": "tool", "name": "f"},
        thinking={"type": "enabled", "budget_tokens": 5000},
    )
    assert request.options == {
        "maxTokens": 1024,
        "temperature": 0.2,
        "topP": 0.9,
        "topK": 40,
        "stopSequences": ["###"],
        "metadata": {"user_id": "alice"},
        "reasoning": "medium",
        "thinkingBudgets": {"medium": 5000},
        "toolChoice": {"type": "function", "name": "f"},
    }
    assert request.context["tools"] == [{"name": "f", "description": "F", "parameters": {"type": "object"}}]
    assert request.attribution.user == "alice" and not request.stream
    assert request.body["tools"][1]["name"] == "web_search"  # the raw body keeps it, for a relay
    assert decoded(tool_choice={"type": "any"}).options["toolChoice"] == "required"
    assert decoded(thinking={"type": "adaptive"}, output_config={"effort": "high"}).options["reasoning"] == "high"
    assert decoded(thinking={"type": "enabled", "budget_tokens": 60000}).options["reasoning"] == "max"
    assert "reasoning" not in decoded(thinking={"type": "disabled"}).options


def test_the_session_id_is_claude_codes_or_derived_from_the_conversation() -> None:
    named = decoded({"x-claude-code-session-id": "5f0c-session"})
    assert named.session_id == "5f0c-session" and named.options["sessionId"] == "5f0c-session"
    first, second = decoded(), decoded(messages=[*BASE["messages"], {"role": "assistant", "content": "Hello"}])
    assert first.session_id == second.session_id  # the same conversation, one turn later
    assert decoded(system="Other.").session_id != first.session_id


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_tokens": None}, "`max_tokens` is required"),
        ({"max_tokens": 0}, "`max_tokens` must be a positive integer"),
        ({"model": ""}, "Missing `model`"),
        ({"messages": "Hi"}, "`messages` is required"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "`messages[0].role` must be one of user, assistant"),
        ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "`messages[0].content[0].type` must be"),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]},
            "`messages[0].content[0].tool_use_id`",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "title": "x"}]}]},
            "`messages[0].content[0].source` is required on document blocks",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": 1}]}
                ]
            },
            "`messages[0].content[0].input` must be an object",
        ),
        ({"system": [{"type": "image"}]}, "`system[0]` must be a text block"),
        ({"tools": [{"name": "f"}]}, "`tools[0].input_schema` must be a JSON Schema object"),
        ({"tool_choice": {"type": "tool"}}, "`tool_choice.name`"),
        ({"tool_choice": {"type": "sometimes"}}, "`tool_choice.type` must be one of auto, any, none, tool"),
        ({"thinking": {"type": "enabled"}}, "`thinking.budget_tokens` must be a positive integer"),
        ({"temperature": "hot"}, "`temperature` must be a number"),
        ({"stop_sequences": [1]}, "`stop_sequences` must be an array of strings"),
        ({"metadata": {"user_id": 7}}, "`metadata.user_id` must be a string"),
        ({"metadata": {"user_id": "a\nb"}}, "`metadata.user_id` must not contain control characters"),
        ({"stream": "yes"}, "`stream` must be true or false"),
        ({"model": "a b"}, "`model` may contain only"),
    ],
)
def test_refusals_name_the_field(fields: dict[str, Any], message: str) -> None:
    assert message in refusal(**fields)


def test_depth_and_json_are_checked_first() -> None:
    deep: Any = {}
    for _ in range(LIMITS.max_json_depth + 1):
        deep = {"d": deep}
    assert "nests arrays/objects deeper than" in refusal(metadata=deep)
    with pytest.raises(BadRequest, match="Invalid JSON body"):
        decode(b"{", {}, LIMITS)


def test_count_tokens_needs_no_max_tokens() -> None:
    body = {k: v for k, v in BASE.items() if k != "max_tokens"}
    request = decode_count_tokens(orjson.dumps({**body, "stream": True}), {}, LIMITS)
    assert "maxTokens" not in request.options and not request.stream


def test_the_estimate_counts_text_tools_and_images() -> None:
    text_only = decoded(messages=[{"role": "user", "content": "x" * 400}]).context
    assert estimate_tokens(text_only) == 100 + 3
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 100_000}}
    with_image = decoded(messages=[{"role": "user", "content": [image]}]).context
    assert estimate_tokens(with_image) == IMAGE_TOKENS + 3  # not the base64 length
    tools = [{"name": "f", "description": "d" * 400, "input_schema": {"type": "object"}}]
    assert estimate_tokens(decoded(tools=tools).context) > estimate_tokens(decoded().context) + 100


# ----- encoder and render ----------------------------------------------------------------------------------------


def message(**usage: int) -> AssistantMessage:
    return {
        "role": "assistant",
        "content": [],
        "api": "anthropic-messages",
        "provider": "anthropic",
        "model": "m",
        "usage": {**zero_usage(), **usage},  # type: ignore[typeddict-item]
        "stopReason": "stop",
        "timestamp": 0,
    }


def events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for frame in data.decode().split("\n\n"):
        if frame:
            name, payload = frame.split("\n")
            out.append((name.removeprefix("event: "), json.loads(payload.removeprefix("data: "))))
    return out


def test_redacted_thinking_starts_with_its_data_and_a_signature_is_sent_at_the_end() -> None:
    encoder = AnthropicEncoder("msg_1", "claude-sonnet-4-5")
    msg = message(input=7, cacheRead=5, cacheWrite=2)
    assert encoder.start(msg) == b""  # deferred until the first block
    redacted: dict[str, Any] = {"type": "redactedThinking", "data": ""}
    out = encoder.block_start("thinking", 0, redacted, msg)
    redacted["data"] = "opaque"  # the assembler appends the data after the start
    out += encoder.block_end("thinking", 0, redacted, msg)
    thinking: dict[str, Any] = {"type": "thinking", "thinking": ""}
    out += encoder.block_start("thinking", 1, thinking, msg)
    out += encoder.block_delta("thinking", 1, "hmm", msg)
    thinking["thinkingSignature"] = "sig"
    out += encoder.block_end("thinking", 1, thinking, msg)
    out += encoder.done("stop", msg)
    got = events(out)
    assert [name for name, _ in got] == [
        "message_start",
        "content_block_start",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert got[0][1]["message"]["usage"] == {
        "input_tokens": 7,
        "output_tokens": 0,
        "cache_creation_input_tokens": 2,
        "cache_read_input_tokens": 5,
    }
    assert got[1][1]["content_block"] == {"type": "redacted_thinking", "data": "opaque"}
    assert got[3][1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert got[5][1]["delta"] == {"type": "signature_delta", "signature": "sig"}
    assert got[7][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}


def test_an_error_before_any_block_still_opens_the_message_and_an_abort_sends_nothing() -> None:
    msg = message()
    msg["errorMessage"], msg["errorStatus"] = "upstream timed out", 504
    got = events(AnthropicEncoder("msg_1", "m").error("error", msg))
    assert [name for name, _ in got] == ["message_start", "error"]
    assert got[1][1]["error"] == {"type": "timeout_error", "message": "upstream timed out"}
    assert AnthropicEncoder("msg_1", "m").error("aborted", msg) == b""


def test_a_tool_call_without_an_id_gets_one() -> None:
    out = AnthropicEncoder("msg_01ABC", "m").block_start("toolCall", 2, {"id": "", "name": "f"}, message())
    block = events(out)[1][1]["content_block"]
    assert block == {"type": "tool_use", "id": "toolu_01ABC_2", "name": "f", "input": {}}


def test_render_is_a_message() -> None:
    msg = message(input=3, output=4)
    msg["content"] = [
        {"type": "thinking", "thinking": "t", "thinkingSignature": "s"},
        {"type": "text", "text": "hi"},
        {"type": "toolCall", "id": "c", "name": "f", "arguments": {"a": 1}},
    ]
    msg["stopReason"] = "toolUse"
    body = render(decoded(), msg, "gen_01XYZ")
    assert body == {
        "id": "msg_01XYZ",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "t", "signature": "s"},
            {"type": "text", "text": "hi"},
            {"type": "tool_use", "id": "c", "name": "f", "input": {"a": 1}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 3,
            "output_tokens": 4,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (415, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
def test_error_types_follow_the_status(status: int, kind: str) -> None:
    assert error_body(status, "whatever", "why") == {"type": "error", "error": {"type": kind, "message": "why"}}
