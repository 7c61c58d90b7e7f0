"""The OpenAI Chat Completions adapter against recorded streams and error bodies, over real sockets (FakeUpstream)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sidecar.errors import UpstreamProtocolError, UpstreamStatusError, UpstreamStreamError
from sidecar.models import ModelSpec
from sidecar.providers import openai_completions
from sidecar.providers.base import (
    Delta,
    Finish,
    ResponseInfo,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    UpstreamCall,
    UsageUpdate,
)
from tests.fakeupstream import FIXTURES, FakeUpstream, Reply, fixture_bytes
from tests.providers.adapters import adapter_deltas

CANARY = "sk-canary-0123456789abcdef"
DIR = "openai-chat-completions"
HELLO: dict[str, Any] = {"messages": [{"role": "user", "content": "hi", "timestamp": 0}]}


@pytest.fixture
def up(upstream: FakeUpstream) -> FakeUpstream:
    return upstream  # the shared fixture from tests/conftest.py, under a short name


def make_call(
    up: FakeUpstream,
    context: dict[str, Any] | None = None,
    *,
    options: dict[str, Any] | None = None,
    compat: dict[str, Any] | None = None,
    api_key: str | None = CANARY,
    max_retries: int = 0,
    model_headers: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> UpstreamCall:
    model = ModelSpec(
        provider="openai",
        id="gpt-4o",
        api="openai-completions",
        base_url=up.url + "/v1",
        compat=compat or {},
        headers=model_headers or {},
    )
    return UpstreamCall(
        model=model,
        context=context or HELLO,  # type: ignore[arg-type]
        options=options or {},
        api_key=api_key,
        session_id="session-1",
        headers=headers or {},
        max_retries=max_retries,
    )


async def collect(call: UpstreamCall) -> list[Delta]:
    deltas, _ = await adapter_deltas(openai_completions.stream, call, catch=())  # an error propagates
    return deltas


async def collect_until_error(call: UpstreamCall) -> tuple[list[Delta], Exception | None]:
    return await adapter_deltas(openai_completions.stream, call)


def sse(*chunks: dict[str, Any], done: bool = True) -> bytes:
    body = b"".join(b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in chunks)
    return body + (b"data: [DONE]\n\n" if done else b"")


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta or {}, "finish_reason": finish}
    return {"id": "chatcmpl-1", "model": "m-1", "choices": [choice], **extra}


# ----- expected deltas for every recorded stream ------------------------------------------------------------------


def texts(*parts: str) -> list[Delta]:
    return [TextDelta("text", part) for part in parts]


def thinking(*parts: str) -> list[Delta]:
    return [ThinkingDelta("thinking", part) for part in parts]


def tool_args(index: int, *parts: str) -> list[Delta]:
    return [ToolCallDelta(("tool", index), arguments=part) for part in parts]


GPT4O_SF = ['{"', "city", '":"', "San", " Francisco", '","', "temperature", '":', "65", ',"', "units", '":"', "f", '"}']
WEATHER_TEXT = [
    "I'm", " unable", " to", " provide", " real", "-time", " weather", " updates", ".", " To", " get", " the",
    " current", " weather", " in", " San", " Francisco", ",", " I", " recommend", " checking", " a", " reliable",
    " weather", " website", " or", " a", " weather", " app", ".",
]  # fmt: skip
NANO_TEXT = [
    "**", "Holiday", " Name", ":**", " Harmony", " Day", "\n\n", "**", "Date", ":**", " Celebr", "ated", " annually",
    " on", " the", " first", " Saturday", " of", " May", "\n\n", "**", "Purpose", ":**", " Harmony", " Day", " is",
    " dedicated", " to", " fostering", " understanding", ",", " kindness", ",", " and", " unity", " among", " diverse",
    " communities", ".",
]  # fmt: skip
DEEPSEEK_THOUGHT = [
    "The", " user", " is", " asking", " for", " the", " weather", " in", " San", " Francisco", ".", " I", " need",
    " to", " use", " the", " weather", " tool", " to", " get", " this", " information", ".", " Let", " me", " invoke",
    " the", " weather", " tool", " with", " the", " location", " parameter", " set", " to", ' "', "San", " Francisco",
    '".',
]  # fmt: skip


def _gpt4o(response_id: str) -> ResponseInfo:
    return ResponseInfo(response_id, "gpt-4o-2024-08-06")


EXPECTED: dict[str, list[Delta]] = {
    "text-basic-include-usage.sse": [
        _gpt4o("chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL"),
        *texts(*WEATHER_TEXT),
        UsageUpdate(input=14, output=30, cache_read=0, reasoning=0),
        Finish("stop"),
    ],
    "tool-calls-parallel.sse": [
        _gpt4o("chatcmpl-ABfwAwrNePHUgBBezonVC6MX3zd63"),
        ToolCallDelta(("tool", 0), id="call_JMW1whyEaYG438VE1OIflxA2", name="GetWeatherArgs"),
        *tool_args(0, '{"ci', 'ty": ', '"Edinb', "urgh", '", "c', "ountry", '": "', 'GB", ', '"units', '": "', 'c"}'),
        ToolCallDelta(("tool", 1), id="call_DNYTawLBoN8fj3KN6qU9N1Ou", name="get_stock_price"),
        *tool_args(1, '{"ti', 'cker"', ': "AAP', 'L", ', '"exch', 'ange":', ' "NA', 'SDAQ"', "}"),
        UsageUpdate(input=149, output=60, cache_read=0, reasoning=0),
        Finish("toolUse"),
    ],
    "deepseek-reasoning-content-tool-call.sse": [
        ResponseInfo("cca85624-4056-401f-b220-d77601d1f70d", "deepseek-reasoner"),
        *thinking(*DEEPSEEK_THOUGHT),
        ToolCallDelta(("tool", 0), id="call_00_ioIn7yN9p1ZOMNpDLwd4MgAF", name="weather"),
        *tool_args(0, "{", '"', "location", '"', ": ", '"', "San", " Francisco", '"', "}"),
        UsageUpdate(input=19, output=83, cache_read=320, reasoning=39),
        Finish("toolUse"),
    ],
    "xai-reasoning-content-cached-usage.sse": [
        ResponseInfo("de9d896d-e946-b3a7-bb14-75ab33326930", "grok-3-mini"),
        *thinking("First", ",", " the", " user", " is"),
        ToolCallDelta(("tool", 0), id="call_55117580", name="weather", arguments='{"location":"San Francisco"}'),
        # xAI leaves the 196 reasoning tokens out of completion_tokens (26); pi counts them inside output.
        UsageUpdate(input=1, output=222, cache_read=290, reasoning=196),
        Finish("toolUse"),
    ],
    "mistral-tool-calls-single-chunk.sse": [
        ResponseInfo("7f62714ed40e411ab060e0ec28a53a52", "mistral-large-latest"),
        ToolCallDelta(
            ("tool", 0), id="yBvJuId6u", name="search", arguments='{"query": "Detroit Tigers game time today"}'
        ),
        ToolCallDelta(("tool", 1), id="ihQrVBDfy", name="weather", arguments='{"city": "Detroit"}'),
        UsageUpdate(input=164, output=25, cache_read=0, reasoning=None),
        Finish("toolUse"),
    ],
    "azure-reasoning-tokens-prompt-filter-preamble.sse": [
        ResponseInfo("chatcmpl-CYPS1lijGoK8gd9lYzY3r9Sx50nbt", "gpt-5-nano-2025-08-07"),
        *texts("Capital", " of", " Denmark", "."),
        UsageUpdate(input=15, output=78, cache_read=0, reasoning=64),
        Finish("stop"),
    ],
    "refusal-delta.sse": [
        _gpt4o("chatcmpl-ABfw4IfQfCCrcuybFm41wJyxjbkz7"),
        *texts("I'm", " sorry", ",", " I", " can't", " assist", " with", " that", " request", "."),
        UsageUpdate(input=79, output=11, cache_read=0, reasoning=0),
        Finish("stop"),
    ],
    "finish-reason-length.sse": [
        _gpt4o("chatcmpl-ABfw3Oqj8RD0z6aJiiX37oTjV2HFh"),
        *texts('{"'),
        UsageUpdate(input=79, output=1, cache_read=0, reasoning=0),
        Finish("length"),
    ],
    "multiple-choices-n3.sse": [
        _gpt4o("chatcmpl-ABfw2KKFuVXmEJgVwYfBvejMAdWtq"),
        *texts(*GPT4O_SF),  # choice 0 only ("65"); choices 1 and 2 said 61 and 59
        UsageUpdate(input=79, output=42, cache_read=0, reasoning=0),
        Finish("stop"),
    ],
    "usage-details-gpt-4.1-nano-trimmed.sse": [
        ResponseInfo("chatcmpl-D8Z5oo6uDh67AD85p73ksdT1KxhE0", "gpt-4.1-nano-2025-04-14"),
        *texts(*NANO_TEXT),
        UsageUpdate(input=16, output=300, cache_read=0, reasoning=0),
        Finish("stop"),
    ],
    "deepseek-parallel-tool-calls-cached.sse": [
        ResponseInfo("faf49efa-a41c-4e8c-b499-80bc70a11550", "deepseek-chat"),
        ToolCallDelta(("tool", 0), id="call_0_7d6a342f-6da3-400c-a4f9-d80055fd7c74", name="search"),
        *tool_args(0, '{"', "query", '":', ' "', "Det", "roit", " Tigers", " game", " time", " today", '"}'),
        ToolCallDelta(("tool", 1), id="call_1_b0aff31e-ccb8-4418-a5fa-2d16caaf7945", name="get_weather"),
        *tool_args(1, '{"', "city", '":', ' "', "Det", "roit", '"}'),
        UsageUpdate(input=31, output=43, cache_read=192, reasoning=None),
        Finish("toolUse"),
    ],
    "error-mid-stream.ASSEMBLED.sse": [
        _gpt4o("chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL"),
        *texts("I'm", " unable", " to", " provide", " real"),
    ],
}
ERROR_FIXTURES = {"error-mid-stream.ASSEMBLED.sse"}


def test_every_fixture_has_expected_deltas() -> None:
    assert {p.name for p in (FIXTURES / DIR).glob("*.sse")} == set(EXPECTED)


def test_tool_call_arguments_concatenate_to_json() -> None:
    args: dict[object, str] = {}
    for delta in EXPECTED["tool-calls-parallel.sse"]:
        if isinstance(delta, ToolCallDelta):
            args[delta.key] = args.get(delta.key, "") + delta.arguments
    assert json.loads(args[("tool", 0)]) == {"city": "Edinburgh", "country": "GB", "units": "c"}
    assert json.loads(args[("tool", 1)]) == {"ticker": "AAPL", "exchange": "NASDAQ"}


@pytest.mark.parametrize("split", [None, 1, 2, 7, 64])
@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_fixture_stream(up: FakeUpstream, name: str, split: int | None) -> None:
    up.push(Reply.sse(fixture_bytes(f"{DIR}/{name}"), split=split))
    deltas, error = await collect_until_error(make_call(up))
    assert deltas == EXPECTED[name]
    if name in ERROR_FIXTURES:
        assert isinstance(error, UpstreamStreamError)
        assert error.status == 500
        assert "The server had an error processing your request" in str(error)
    else:
        assert error is None


# ----- HTTP errors ------------------------------------------------------------------------------------------------


def _recorded_reply(stem: str) -> Reply:
    body = fixture_bytes(f"{DIR}/errors/{stem}.json")
    headers_path = FIXTURES / DIR / "errors" / f"{stem}.headers"
    if not headers_path.exists():
        return Reply.json(int(stem[:3]), body)
    status_line, *lines = headers_path.read_text().splitlines()
    headers = dict(line.split(": ", 1) for line in lines if line.strip())
    return Reply(status=int(status_line.split()[1]), chunks=[body], headers=headers)


@pytest.mark.parametrize(
    ("stem", "status", "text"),
    [
        ("401-invalid-api-key", 401, "Incorrect API key provided"),
        ("429-insufficient-quota", 429, "You exceeded your current quota"),
        ("429-rate-limit-exceeded.ASSEMBLED", 429, "Request too large for gpt-4o"),
        ("400-unsupported-parameter", 400, "Unsupported parameter: 'max_tokens'"),
    ],
)
async def test_error_status(up: FakeUpstream, stem: str, status: int, text: str) -> None:
    up.push(_recorded_reply(stem))
    with pytest.raises(UpstreamStatusError) as caught:
        await collect(make_call(up, max_retries=0))
    assert caught.value.status == status
    assert text in str(caught.value)
    assert CANARY not in str(caught.value)
    assert len(up.received) == 1
    if stem.startswith("429-rate-limit"):
        assert caught.value.retry_after == 1.0


async def test_retry_after_429_then_success(up: FakeUpstream) -> None:
    up.push(
        Reply.json(429, fixture_bytes(f"{DIR}/errors/429-rate-limit-exceeded.ASSEMBLED.json"), {"retry-after": "0"}),
        Reply.sse(fixture_bytes(f"{DIR}/finish-reason-length.sse")),
    )
    deltas = await collect(make_call(up, max_retries=1))
    assert deltas == EXPECTED["finish-reason-length.sse"]
    assert len(up.received) == 2


# ----- request translation ----------------------------------------------------------------------------------------

IMAGE = {"type": "image", "data": "aGVsbG8=", "mimeType": "image/png", "detail": "low"}
SCREENSHOT = {"type": "image", "data": "d29ybGQ=", "mimeType": "image/jpeg"}
WEATHER_TOOL = {
    "name": "x",
    "description": "Look something up",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
}
FULL_CONTEXT: dict[str, Any] = {
    "systemPrompt": ["You are terse.", "Answer in English."],
    "tools": [WEATHER_TOOL],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, IMAGE], "timestamp": 1},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Look it up.", "thinkingSignature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "toolCall", "id": "call_1", "name": "x", "arguments": {"q": "hello"}},
                {"type": "toolCall", "id": "call_2", "name": "x", "arguments": {"q": "screen"}},
            ],
            "api": "openai-completions",
            "provider": "openai",
            "model": "gpt-4o",
            "usage": {},
            "stopReason": "toolUse",
            "timestamp": 2,
        },
        {
            "role": "toolResult",
            "toolCallId": "call_1",
            "toolName": "x",
            "content": [{"type": "text", "text": "a greeting"}],
            "isError": False,
            "timestamp": 3,
        },
        {
            "role": "toolResult",
            "toolCallId": "call_2",
            "toolName": "x",
            "content": [SCREENSHOT],
            "isError": False,
            "timestamp": 4,
        },
        {"role": "user", "content": "Thanks.", "timestamp": 5},
    ],
}


async def test_request_translation(up: FakeUpstream) -> None:
    up.push(Reply.sse(fixture_bytes(f"{DIR}/finish-reason-length.sse")))
    options = {"toolChoice": {"type": "function", "name": "x"}, "maxTokens": 256, "temperature": 0.2}
    await collect(make_call(up, FULL_CONTEXT, options=options))
    [received] = up.received
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == f"Bearer {CANARY}"
    assert received.headers["content-type"] == "application/json"
    assert received.headers["accept"] == "text/event-stream"
    assert received.json() == {
        "model": "gpt-4o",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [
            {"role": "system", "content": "You are terse.\n\nAnswer in English."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8=", "detail": "low"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "x", "arguments": '{"q":"hello"}'}},
                    {"id": "call_2", "type": "function", "function": {"name": "x", "arguments": '{"q":"screen"}'}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "a greeting"},
            {"role": "tool", "tool_call_id": "call_2", "content": "(see attached image)"},
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,d29ybGQ="}}],
            },
            {"role": "user", "content": "Thanks."},
        ],
        "max_completion_tokens": 256,
        "temperature": 0.2,
        "tools": [{"type": "function", "function": WEATHER_TOOL}],
        "tool_choice": {"type": "function", "function": {"name": "x"}},
    }


async def _sent(up: FakeUpstream, context: dict[str, Any] | None = None, **kw: Any) -> tuple[dict[str, Any], Any]:
    up.push(Reply.sse(fixture_bytes(f"{DIR}/finish-reason-length.sse")))
    await collect(make_call(up, context, **kw))
    received = up.received[-1]
    return received.json(), received.headers


async def test_minimal_body_omits_unset_options(up: FakeUpstream) -> None:
    body, _ = await _sent(up, options={"toolChoice": "required", "reasoning": "high"})
    # No tools, so no tool_choice; no reasoning_effort without the compat flag; nothing is sent as null.
    assert body == {
        "model": "gpt-4o",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}],
    }


async def test_all_sampling_options(up: FakeUpstream) -> None:
    options = {
        "topP": 0.9,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.3,
        "stopSequences": ["END"],
        "toolChoice": "any",
    }
    body, _ = await _sent(up, {**HELLO, "tools": [{**WEATHER_TOOL, "strict": True}]}, options=options)
    assert (body["top_p"], body["presence_penalty"], body["frequency_penalty"]) == (0.9, 0.1, 0.3)
    assert body["stop"] == ["END"]
    assert body["tool_choice"] == "required"
    assert body["tools"][0]["function"]["strict"] is True


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ({"type": "tool", "name": "x"}, {"type": "function", "function": {"name": "x"}}),
        ({"type": "function", "function": {"name": "x"}}, {"type": "function", "function": {"name": "x"}}),
    ],
)
async def test_tool_choice(up: FakeUpstream, choice: Any, wire: Any) -> None:
    body, _ = await _sent(up, {**HELLO, "tools": [WEATHER_TOOL]}, options={"toolChoice": choice})
    assert body["tool_choice"] == wire


async def test_compat_max_tokens_field(up: FakeUpstream) -> None:
    body, _ = await _sent(up, options={"maxTokens": 99}, compat={"max_tokens_field": "max_tokens"})
    assert body["max_tokens"] == 99
    assert "max_completion_tokens" not in body


async def test_compat_developer_role(up: FakeUpstream) -> None:
    context = {
        "systemPrompt": ["Be brief."],
        "messages": [
            {"role": "developer", "content": "Use metric units.", "timestamp": 0},
            {"role": "developer", "content": [{"type": "text", "text": "See chart."}, SCREENSHOT], "timestamp": 0},
            {"role": "user", "content": "hi", "timestamp": 0},
        ],
    }
    body, _ = await _sent(up, context, compat={"system_role": "developer"})
    assert body["messages"] == [
        {"role": "developer", "content": "Be brief."},
        {"role": "developer", "content": "Use metric units."},
        {"role": "developer", "content": "See chart."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,d29ybGQ="}}]},
        {"role": "user", "content": "hi"},
    ]


@pytest.mark.parametrize(
    ("options", "compat", "effort"),
    [
        ({"reasoning": "xhigh"}, {"supports_reasoning_effort": True}, "high"),
        ({"reasoning": "max"}, {"supports_reasoning_effort": True}, "high"),
        ({"reasoning": "minimal"}, {"supports_reasoning_effort": True}, "minimal"),
        ({"reasoning": "low", "disableReasoning": True}, {"supports_reasoning_effort": True}, None),
        ({"reasoning": "low"}, {}, None),
        ({}, {"supports_reasoning_effort": True}, None),
    ],
)
async def test_compat_reasoning_effort(
    up: FakeUpstream, options: dict[str, Any], compat: dict[str, Any], effort: str | None
) -> None:
    body, _ = await _sent(up, options=options, compat=compat)
    assert body.get("reasoning_effort") == effort


async def test_compat_store_service_tier_cache_key_usage(up: FakeUpstream) -> None:
    compat = {
        "supports_store": True,
        "supports_service_tier": True,
        "supports_prompt_cache_key": True,
        "supports_usage_in_streaming": False,
    }
    body, _ = await _sent(up, options={"serviceTier": "flex"}, compat=compat)
    assert (body["store"], body["service_tier"], body["prompt_cache_key"]) == (False, "flex", "session-1")
    assert "stream_options" not in body
    body, _ = await _sent(up, options={"promptCacheKey": "pk", "serviceTier": "flex"}, compat=compat)
    assert body["prompt_cache_key"] == "pk"
    body, _ = await _sent(up, options={"serviceTier": "flex"})
    assert not {"store", "service_tier", "prompt_cache_key"} & set(body)


async def test_compat_image_detail_off(up: FakeUpstream) -> None:
    context = {"messages": [{"role": "user", "content": [IMAGE], "timestamp": 0}]}
    body, _ = await _sent(up, context, compat={"image_detail": False})
    assert body["messages"][0]["content"][0]["image_url"] == {"url": "data:image/png;base64,aGVsbG8="}


async def test_compat_azure_api_key_header(up: FakeUpstream) -> None:
    _, headers = await _sent(up, compat={"auth_header": "api-key"})
    assert headers["api-key"] == CANARY
    assert "authorization" not in headers


async def test_no_key_sends_no_auth_header(up: FakeUpstream) -> None:
    _, headers = await _sent(up, api_key=None)
    assert "authorization" not in headers
    assert "api-key" not in headers


async def test_header_precedence(up: FakeUpstream) -> None:
    _, headers = await _sent(
        up,
        model_headers={"X-Title": "model", "HTTP-Referer": "https://example.test"},
        headers={"x-title": "call", "OpenAI-Organization": "org-1"},
    )
    assert (headers["x-title"], headers["http-referer"], headers["openai-organization"]) == (
        "call",
        "https://example.test",
        "org-1",
    )


async def test_history_skips_failed_turns_and_fills_missing_results(up: FakeUpstream) -> None:
    def assistant(content: list[dict[str, Any]], stop: str) -> dict[str, Any]:
        return {"role": "assistant", "content": content, "stopReason": stop, "timestamp": 0}

    def result(call_id: str) -> dict[str, Any]:
        content = [{"type": "text", "text": "ok"}]
        return {"role": "toolResult", "toolCallId": call_id, "toolName": "x", "content": content, "timestamp": 0}

    call_a = {"type": "toolCall", "id": "a", "name": "x", "arguments": {}}
    call_b = {"type": "toolCall", "id": "b", "name": "x", "arguments": {}}
    context = {
        "messages": [
            {"role": "user", "content": "go", "timestamp": 0},
            assistant([{"type": "text", "text": "partial"}, call_a], "aborted"),
            result("a"),  # its call was dropped with the aborted turn
            assistant([{"type": "thinking", "thinking": "hm"}], "stop"),  # nothing left to replay
            assistant([call_b], "toolUse"),  # the user interrupted before the result
            {"role": "user", "content": [], "timestamp": 0},
            {"role": "user", "content": "again", "timestamp": 0},
        ]
    }
    body, _ = await _sent(up, context)
    wire_b = {"id": "b", "type": "function", "function": {"name": "x", "arguments": "{}"}}
    assert body["messages"] == [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [wire_b]},
        {"role": "tool", "tool_call_id": "b", "content": "No result provided"},
        {"role": "user", "content": "again"},
    ]


# ----- stream edge cases ------------------------------------------------------------------------------------------


async def test_eof_without_finish_reason(up: FakeUpstream) -> None:
    up.push(Reply.sse(sse(chunk({"content": "Hel"}), done=False)))
    deltas, error = await collect_until_error(make_call(up))
    assert deltas == [ResponseInfo("chatcmpl-1", "m-1"), TextDelta("text", "Hel")]
    assert isinstance(error, UpstreamProtocolError)
    assert error.status == 502
    assert "finish_reason" in str(error)


async def test_done_without_finish_reason(up: FakeUpstream) -> None:
    up.push(Reply.sse(sse(chunk({"content": "Hel"}))))
    _, error = await collect_until_error(make_call(up))
    assert isinstance(error, UpstreamProtocolError)


async def test_content_filter_raises_after_usage(up: FakeUpstream) -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 2}
    up.push(Reply.sse(sse(chunk({"content": "Hi"}), chunk(finish="content_filter"), {"choices": [], "usage": usage})))
    deltas, error = await collect_until_error(make_call(up))
    assert deltas[-1] == UsageUpdate(input=5, output=2, cache_read=0)
    assert isinstance(error, UpstreamStreamError)
    assert error.status == 400
    assert "content filter" in str(error)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        ({"message": "slow down", "code": 429}, 429),
        ({"message": "slow down", "code": "429"}, 429),
        ({"message": "slow down", "type": "tokens", "code": "rate_limit_exceeded"}, 429),
        ({"message": "bad gateway", "code": 502, "type": "upstream"}, 502),
        ({"message": "odd", "code": 200}, 500),
        ({"message": f"leaked {CANARY}", "type": "server_error"}, 500),
    ],
)
async def test_in_stream_error_status(up: FakeUpstream, error: dict[str, Any], status: int) -> None:
    up.push(Reply.sse(sse({"error": error}, done=False)))
    deltas, exc = await collect_until_error(make_call(up))
    assert deltas == []
    assert isinstance(exc, UpstreamStreamError)
    assert exc.status == status
    assert CANARY not in str(exc)


async def test_openrouter_error_beside_choices(up: FakeUpstream) -> None:
    # OpenRouter ends a failed stream with the error object next to a choice whose finish_reason is "error".
    failing = chunk({"content": ""}, "error", error={"code": "server_error", "message": "Provider disconnected"})
    up.push(Reply.sse(sse(chunk({"content": "a"}), failing)))
    deltas, exc = await collect_until_error(make_call(up))
    assert deltas[-1] == TextDelta("text", "a")
    assert isinstance(exc, UpstreamStreamError)
    assert "Provider disconnected" in str(exc)


@pytest.mark.parametrize(
    "body",
    [b"data: {not json\n\n", b"data: [1, 2]\n\n", b'data: {"id": "x", "choices": ["oops"]}\n\n'],
    ids=["not-json", "not-object", "choice-not-object"],
)
async def test_malformed_stream_is_protocol_error(up: FakeUpstream, body: bytes) -> None:
    up.push(Reply.sse(body))
    _, exc = await collect_until_error(make_call(up))
    assert isinstance(exc, UpstreamProtocolError)


async def test_reasoning_field_comments_and_choice_usage(up: FakeUpstream) -> None:
    # OpenRouter: ": OPENROUTER PROCESSING" comments and `reasoning`; Moonshot: usage inside the choice.
    usage = {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}
    body = b": OPENROUTER PROCESSING\n\n" + sse(
        chunk({"role": "assistant", "content": None, "reasoning": "Think"}),
        chunk({"reasoning_content": "ing", "reasoning": "ing"}),
        chunk({"content": "Done"}),
        {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "usage": usage}]},
    )
    up.push(Reply.sse(body))
    assert await collect(make_call(up)) == [
        ResponseInfo("chatcmpl-1", "m-1"),
        ThinkingDelta("thinking", "Think"),
        ThinkingDelta("thinking", "ing"),
        TextDelta("text", "Done"),
        UsageUpdate(input=10, output=4, cache_read=0),
        Finish("stop"),
    ]


async def test_tool_call_quirks(up: FakeUpstream) -> None:
    # No `index` (position is used), arguments as an object, and finish_reason "stop" after tool calls (Gemini).
    calls = [
        {"id": "c1", "function": {"name": "a", "arguments": {"x": 1}}},
        {"id": "c2", "type": "function", "function": {"name": "b", "arguments": "{}"}},
    ]
    up.push(Reply.sse(sse(chunk({"tool_calls": calls}), chunk(finish="stop"))))
    assert await collect(make_call(up)) == [
        ResponseInfo("chatcmpl-1", "m-1"),
        ToolCallDelta(("tool", 0), id="c1", name="a", arguments='{"x":1}'),
        ToolCallDelta(("tool", 1), id="c2", name="b", arguments="{}"),
        Finish("toolUse"),
    ]


async def test_deepseek_cache_hit_without_details(up: FakeUpstream) -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 5, "prompt_cache_hit_tokens": 64, "usage": None}
    up.push(Reply.sse(sse(chunk({"content": "ok"}, "stop", usage=usage))))
    deltas = await collect(make_call(up))
    assert deltas[-2:] == [UsageUpdate(input=36, output=5, cache_read=64), Finish("stop")]
