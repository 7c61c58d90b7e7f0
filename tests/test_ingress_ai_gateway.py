"""The AI SDK Gateway language-model format (``sidecar.ingress.ai_gateway``) without a client: decoding
``LanguageModelV4CallOptions`` into pi's context and options, the stream parts and the gateway error bodies.

The unmodified clients run against it in tests/interop/test_ai_sdk_interop.py; these cases cover the prompt shapes and
refusals an app can produce that the recorded scenarios do not reach.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from client.types import AssistantMessage, zero_usage
from sidecar.config import Limits
from sidecar.errors import BadRequest, UnknownModel
from sidecar.ingress import FORMATS
from sidecar.ingress.ai_gateway import FORMAT, decode, error_body, usage_v4
from sidecar.ingress.base import IngressRequest
from sidecar.models import ModelSpec

HEADERS = {"ai-language-model-id": "anthropic/claude-sonnet-4-5", "ai-language-model-streaming": "true"}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


def call(prompt: list[dict[str, Any]], headers: dict[str, str] | None = None, **options: Any) -> IngressRequest:
    return decode(orjson.dumps({"prompt": prompt, **options}), HEADERS if headers is None else headers, Limits())


def user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(parts)}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def refused(body: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    with pytest.raises(BadRequest) as info:
        decode(orjson.dumps(body), HEADERS if headers is None else headers, Limits())
    return info.value.message


def test_registered_as_a_format() -> None:
    assert FORMATS["ai-gateway"] is FORMAT
    assert (FORMAT.wire_api, FORMAT.preferred_provider) == (None, None)


def test_full_conversation_decodes_to_pi() -> None:
    signature = "sig-abc"
    request = call(
        [
            {"role": "system", "content": "Be brief."},
            user(text("Weather?"), {"type": "file", "mediaType": "image/*", "data": {"type": "data", "data": PNG}}),
            {
                "role": "assistant",
                "content": [
                    {"type": "reasoning", "text": "think", "providerOptions": {"anthropic": {"signature": signature}}},
                    {"type": "reasoning", "text": "", "providerOptions": {"anthropic": {"redactedData": "opaque"}}},
                    text("Checking."),
                    {"type": "tool-call", "toolCallId": "c1", "toolName": "get_weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "tool",
                "content": [
                    {
                        "type": "tool-result",
                        "toolCallId": "c1",
                        "toolName": "get_weather",
                        "output": {"type": "json", "value": {"t": 21}},
                    },
                    {"type": "tool-approval-response", "approvalId": "a", "approved": True},
                ],
            },
            {"role": "system", "content": "Answer in French."},
        ],
        tools=[
            {"type": "function", "name": "get_weather", "description": "Weather", "inputSchema": {"type": "object"}}
        ],
        toolChoice={"type": "tool", "toolName": "get_weather"},
        maxOutputTokens=100,
        temperature=0.2,
        topP=0.9,
        topK=5,
        stopSequences=["END"],
        reasoning="high",
        seed=7,
        providerOptions={"gateway": {"user": "alice", "tags": ["a", "b"], "order": ["anthropic"]}},
    )
    context: Any = request.context
    assert context["systemPrompt"] == ["Be brief.", "Answer in French."]
    first, assistant, result = context["messages"]
    assert first["content"][1] == {"type": "image", "data": PNG, "mimeType": "image/png"}  # image/* sniffed
    assert assistant["content"] == [
        {"type": "thinking", "thinking": "think", "thinkingSignature": signature},
        {"type": "redactedThinking", "data": "opaque"},
        {"type": "text", "text": "Checking."},
        {"type": "toolCall", "id": "c1", "name": "get_weather", "arguments": {"city": "Paris"}},
    ]
    assert (result["role"], result["toolCallId"], result["isError"]) == ("toolResult", "c1", False)
    assert result["content"] == [{"type": "text", "text": '{"t":21}'}]
    assert context["tools"] == [{"name": "get_weather", "description": "Weather", "parameters": {"type": "object"}}]
    assert request.options == {
        "maxTokens": 100,
        "temperature": 0.2,
        "topP": 0.9,
        "topK": 5,
        "stopSequences": ["END"],
        "toolChoice": {"type": "tool", "name": "get_weather"},
        "reasoning": "high",
    }
    assert (request.model_id, request.stream) == ("anthropic/claude-sonnet-4-5", True)
    assert (request.attribution.user, request.attribution.tags) == ("alice", ("a", "b"))


@pytest.mark.parametrize(
    ("output", "content", "is_error"),
    [
        ({"type": "text", "value": "ok"}, [{"type": "text", "text": "ok"}], False),
        ({"type": "error-text", "value": "boom"}, [{"type": "text", "text": "boom"}], True),
        ({"type": "error-json", "value": {"e": 1}}, [{"type": "text", "text": '{"e":1}'}], True),
        ({"type": "execution-denied", "reason": "no"}, [{"type": "text", "text": "Tool execution denied: no"}], True),
        (
            {
                "type": "content",
                "value": [
                    text("see"),
                    {
                        "type": "file",
                        "mediaType": "image/png",
                        "data": {"type": "url", "url": f"data:image/png;base64,{PNG}"},
                    },
                ],
            },
            [{"type": "text", "text": "see"}, {"type": "image", "data": PNG, "mimeType": "image/png"}],
            False,
        ),
    ],
)
def test_tool_result_outputs(output: dict[str, Any], content: list[dict[str, Any]], is_error: bool) -> None:
    part = {"type": "tool-result", "toolCallId": "c1", "toolName": "f", "output": output}
    (message,) = call([{"role": "tool", "content": [part]}]).context["messages"]
    assert (message["content"], message["isError"]) == (content, is_error)  # type: ignore[typeddict-item]


def test_tool_choice_and_reasoning_values() -> None:
    assert call([user(text("hi"))], toolChoice={"type": "auto"}).options == {"toolChoice": "auto"}
    assert call([user(text("hi"))], toolChoice={"type": "none"}).options == {"toolChoice": "none"}
    assert call([user(text("hi"))], toolChoice={"type": "required"}).options == {"toolChoice": "required"}
    assert call([user(text("hi"))], reasoning="none").options == {"disableReasoning": True}
    assert call([user(text("hi"))], reasoning="provider-default").options == {}


def test_streaming_header() -> None:
    assert call([user(text("hi"))], {**HEADERS, "ai-language-model-streaming": "false"}).stream is False
    assert "must be" in refused({"prompt": [user(text("hi"))]}, {**HEADERS, "ai-language-model-streaming": "yes"})


@pytest.mark.parametrize(
    ("body", "headers", "says"),
    [
        ({"prompt": [user(text("hi"))]}, {}, "Missing header ai-language-model-id"),
        ({"prompt": []}, None, "`prompt` must be a non-empty array"),
        ({"prompt": [{"role": "bot", "content": []}]}, None, "`prompt[0].role`"),
        ({"prompt": [user({"type": "reasoning", "text": "x"})]}, None, "`prompt[0].content[0].type`"),
        (
            {
                "prompt": [
                    user({"type": "file", "mediaType": "application/pdf", "data": {"type": "data", "data": "JVBE"}})
                ]
            },
            None,
            "image files only",
        ),
        (
            {
                "prompt": [user(text("hi"))],
                "tools": [{"type": "provider", "id": "openai.web_search", "name": "ws", "args": {}}],
            },
            None,
            "function tools only",
        ),
        ({"prompt": [user(text("hi"))], "toolChoice": {"type": "any"}}, None, "`toolChoice`"),
        ({"prompt": [user(text("hi"))], "maxOutputTokens": 0}, None, "`maxOutputTokens`"),
        ({"prompt": [user(text("hi"))], "temperature": "hot"}, None, "`temperature` must be a number"),
        ({"prompt": [user(text("hi"))], "reasoning": "huge"}, None, "`reasoning` must be one of"),
        (
            {"prompt": [user(text("hi"))], "providerOptions": {"gateway": {"tags": [1]}}},
            None,
            "providerOptions.gateway.tags",
        ),
        (
            {
                "prompt": [
                    {
                        "role": "assistant",
                        "content": [{"type": "tool-call", "toolCallId": "c", "toolName": "f", "input": "{oops"}],
                    }
                ]
            },
            None,
            "`prompt[0].content[0].input`",
        ),
    ],
)
def test_refusals_name_the_field(body: dict[str, Any], headers: dict[str, str] | None, says: str) -> None:
    assert says in refused(body, headers)


def test_string_tool_input_and_provider_executed_calls() -> None:
    assistant = {
        "role": "assistant",
        "content": [
            {"type": "tool-call", "toolCallId": "c", "toolName": "f", "input": '{"a": 1}'},
            {"type": "tool-call", "toolCallId": "s", "toolName": "web", "input": {}, "providerExecuted": True},
        ],
    }
    (message,) = call([assistant]).context["messages"]
    assert message["content"] == [{"type": "toolCall", "id": "c", "name": "f", "arguments": {"a": 1}}]


# ----- stream parts and bodies ------------------------------------------------------------------------------------

MODEL = ModelSpec(provider="anthropic", id="claude-sonnet-4-5", api="anthropic-messages", base_url="http://x")


def message(**fields: Any) -> AssistantMessage:
    usage = zero_usage()
    usage.update({"input": 10, "output": 7, "cacheRead": 3, "cacheWrite": 2, "reasoningTokens": 4})
    base: dict[str, Any] = {
        "role": "assistant",
        "content": [],
        "api": MODEL.api,
        "provider": MODEL.provider,
        "model": MODEL.id,
        "usage": usage,
        "stopReason": "stop",
        "timestamp": 0,
    }
    return base | fields  # type: ignore[return-value]


def parts(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in data.split(b"\n\n") if line.startswith(b"data: ")]


def test_usage_v4_counts_cached_input_and_reasoning() -> None:
    assert usage_v4(message()["usage"]) == {
        "inputTokens": {"total": 15, "noCache": 10, "cacheRead": 3, "cacheWrite": 2},
        "outputTokens": {"total": 7, "text": 3, "reasoning": 4},
    }


def test_stream_parts() -> None:
    request = call([user(text("hi"))], seed=1)
    enc = FORMAT.encoder(request, MODEL, "gen_1")
    msg = message()
    out = enc.start(msg)
    thinking = {"type": "thinking", "thinking": "", "thinkingSignature": "sig"}
    out += enc.block_start("thinking", 0, thinking, msg) + enc.block_delta("thinking", 0, "hm", msg)
    out += enc.block_end("thinking", 0, thinking, msg)
    tool = {"type": "toolCall", "id": "", "name": "f", "arguments": {"a": 1}}
    out += enc.block_start("toolCall", 1, tool, msg) + enc.block_delta("toolCall", 1, '{"a":1}', msg)
    tool["id"] = "late-id"  # an id arriving after the start does not split the call's parts
    out += enc.block_end("toolCall", 1, tool, msg) + enc.done("toolUse", msg)
    got = parts(out)
    assert [p["type"] for p in got] == [
        "stream-start",
        "response-metadata",
        "reasoning-start",
        "reasoning-delta",
        "reasoning-end",
        "tool-input-start",
        "tool-input-delta",
        "tool-input-end",
        "tool-call",
        "finish",
    ]
    assert got[0]["warnings"] == [
        {"type": "unsupported", "feature": "seed", "details": got[0]["warnings"][0]["details"]}
    ]
    assert got[1] == {
        "type": "response-metadata",
        "id": "gen_1",
        "modelId": "anthropic/claude-sonnet-4-5",
        "timestamp": "1970-01-01T00:00:00.000Z",
    }
    assert got[2]["providerMetadata"] == {"gateway": {"generationId": "gen_1"}}  # the first content part only
    assert "providerMetadata" not in got[5]
    assert got[4]["providerMetadata"] == {"anthropic": {"signature": "sig"}}
    call_id = got[5]["id"]
    assert {got[6]["id"], got[7]["id"], got[8]["toolCallId"]} == {call_id}
    assert (got[8]["toolName"], got[8]["input"]) == ("f", '{"a":1}')  # a JSON string (AP LanguageModelV4ToolCall)
    assert got[9]["finishReason"] == {"unified": "tool-calls", "raw": "toolUse"}
    assert got[9]["providerMetadata"]["gateway"]["generationId"] == "gen_1"


def test_in_stream_error_then_finish() -> None:
    enc = FORMAT.encoder(call([user(text("hi"))]), MODEL, "gen_1")
    msg = message(errorMessage="Anthropic stream error (overloaded_error): Overloaded", errorStatus=529)
    error, finish = parts(enc.error("error", msg))
    assert error == {
        "type": "error",
        "error": {"message": msg["errorMessage"], "type": "internal_server_error", "statusCode": 529},
    }
    assert finish["type"] == "finish" and finish["finishReason"]["unified"] == "error"


def test_generate_result() -> None:
    msg = message(
        content=[
            {"type": "thinking", "thinking": "hm", "thinkingSignature": "sig"},
            {"type": "text", "text": "Hi"},
            {"type": "toolCall", "id": "c1", "name": "f", "arguments": {}},
        ],
        stopReason="toolUse",
    )
    body = FORMAT.render(call([user(text("hi"))]), msg, "gen_9")
    assert body["content"] == [
        {"type": "reasoning", "text": "hm", "providerMetadata": {"anthropic": {"signature": "sig"}}},
        {"type": "text", "text": "Hi"},
        {"type": "tool-call", "toolCallId": "c1", "toolName": "f", "input": "{}"},
    ]
    assert body["finishReason"] == {"unified": "tool-calls", "raw": "toolUse"}
    assert body["providerMetadata"]["gateway"]["generationId"] == "gen_9"
    assert body["warnings"] == []


@pytest.mark.parametrize(
    ("status", "sidecar_type", "gateway_type"),
    [
        (401, "unauthorized", "authentication_error"),
        (401, "authentication_error", "failed_dependency"),  # the provider refused the sidecar's key
        (400, "invalid_request_error", "invalid_request_error"),
        (413, "invalid_request_error", "invalid_request_error"),
        (403, "forbidden", "forbidden"),
        (424, "failed_dependency", "failed_dependency"),
        (429, "rate_limit_exceeded", "rate_limit_exceeded"),
        (503, "overloaded", "internal_server_error"),
        (502, "upstream_error", "internal_server_error"),
    ],
)
def test_error_types(status: int, sidecar_type: str, gateway_type: str) -> None:
    assert error_body(status, sidecar_type, "why") == {"error": {"message": "why", "type": gateway_type}}


def test_unknown_model_names_the_model() -> None:
    exc = UnknownModel("gpt-4.1-nope")
    body = error_body(exc.status, exc.type, exc.message)
    assert body["error"]["type"] == "model_not_found"
    assert body["error"]["param"] == {"modelId": "gpt-4.1-nope"}
