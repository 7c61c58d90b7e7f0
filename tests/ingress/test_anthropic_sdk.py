"""``POST /v1/messages`` and ``/v1/messages/count_tokens`` proven with the unmodified ``anthropic`` Python SDK.

Upstreams are the FakeUpstream replaying recorded provider bytes: an Anthropic Messages stream (the same family,
relayed by ``sidecar.relay``: these tests assert what the SDK sees, what reaches the wire and the ledger, which hold
relayed or translated) and an OpenAI Chat stream (a different family: translated by this format's decode, encoder
and render). The SDK holds only the workload bearer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from tests.fakeupstream import FakeUpstream, Reply, fixture_bytes
from tests.ingress.upstream import anthropic_reply, assert_no_bearer_upstream, openai_reply
from tests.sidecar_server import (
    ANTHROPIC_CANARY,
    OPENAI_CANARY,
    TOKEN,
    RunningSidecar,
    generation_row,
    run_sidecar,
    sidecar_environ,
    write_config,
)

# The 2.14 SDK warns on every call that names claude-sonnet-4-5 (end of life in November 2026); the catalog's model.
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

SONNET = "claude-sonnet-4-5"
ASK: Any = [{"role": "user", "content": "Weather in Paris?"}]
WEATHER_TOOL: Any = {
    "name": "get_weather",
    "description": "Current weather",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}
# From thinking-signature-delta.sse: the one signature_delta of its thinking block.
SIGNATURE = (
    "ErUBCkYIARgCIkCMkRFgNNhwET9y5IN2hGVaMO+tPgd5T2aSXprEVvIU5pN9uklyYgqC6GzmijY5Wr2DFwm5oBX0XHqfb9bYcbmzEgyeDDF5O/"
    "iNwNRyyd8aDFdKPcaLtnOEE+xkBSIwhVbJFW8zL9keNzmvEjacAs+Zw6hU7b22EqyWy7hrPjLNHZHJ6SWUV3TzbClf3D05Kh34DwkpbncEwubXurH"
    "Ja0E8yOLOfa1mCFe43e4r7g=="
)
OPENAI_TEXT = (  # text-basic-include-usage.sse
    "I'm unable to provide real-time weather updates. To get the current weather in San Francisco, I recommend "
    "checking a reliable weather website or a weather app."
)
CLAUDE_CODE_HEADERS = {"x-api-key": TOKEN, "anthropic-version": "2023-06-01", "content-type": "application/json"}


@pytest.fixture
def client(sidecar: RunningSidecar) -> Iterator[anthropic.Anthropic]:
    """``api_key``: the 2.x SDK sends it as ``Authorization: Bearer``."""
    with anthropic.Anthropic(base_url=sidecar.url, api_key=TOKEN, max_retries=0) as sdk:
        yield sdk


def assert_anthropic_upstream(upstream: FakeUpstream, path: str = "/v1/messages") -> dict[str, Any]:
    sent = upstream.received[-1]
    assert sent.path == path and sent.headers["x-api-key"] == ANTHROPIC_CANARY
    assert "authorization" not in sent.headers
    assert_no_bearer_upstream(upstream)
    body: dict[str, Any] = sent.json()
    return body


def generation(sidecar: RunningSidecar, generation_id: str) -> dict[str, Any]:
    return generation_row(sidecar.url, generation_id)


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` per frame, asserting every frame is named (Anthropic's SDKs skip unnamed ones)."""
    events = []
    for frame in text.split("\n\n"):
        lines = [line for line in frame.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), frame
        name, data = lines[0][len("event: ") :], json.loads(lines[1][len("data: ") :])
        assert data["type"] == name
        events.append((name, data))
    return events


# ----- an Anthropic upstream -------------------------------------------------------------------------------------


def test_stream_text_with_a_bare_model_id(
    upstream: FakeUpstream, sidecar: RunningSidecar, client: anthropic.Anthropic
) -> None:
    upstream.push(anthropic_reply("text-basic-padded.sse"))
    with client.messages.stream(
        model=SONNET, max_tokens=256, system="Be brief.", messages=ASK, metadata={"user_id": "user-42"}
    ) as stream:
        message = stream.get_final_message()
        generation_id = stream.response.headers["x-generation-id"]
    assert [(b.type, getattr(b, "text", None)) for b in message.content] == [("text", "[12345,67890]")]
    assert (message.stop_reason, message.role) == ("end_turn", "assistant")
    assert (message.usage.input_tokens, message.usage.output_tokens) == (135, 10)

    body = assert_anthropic_upstream(upstream)
    assert body["model"] == SONNET and body["metadata"] == {"user_id": "user-42"}
    assert json.dumps(body["system"]).count("Be brief.") == 1

    row = generation(sidecar, generation_id)  # the ledger row, with the user from metadata.user_id
    assert (row["model"], row["streamed"], row["user"]) == (f"anthropic/{SONNET}", True, "user-42")
    assert (row["native_tokens_prompt"], row["native_tokens_completion"]) == (135, 10)


def test_stream_text_then_tool_use_with_auth_token(upstream: FakeUpstream, sidecar: RunningSidecar) -> None:
    upstream.push(anthropic_reply("text-then-tool-use.sse"))
    with (
        anthropic.Anthropic(base_url=sidecar.url, auth_token=TOKEN, max_retries=0) as sdk,
        sdk.messages.stream(
            model=f"anthropic/{SONNET}",
            max_tokens=1024,
            messages=ASK,
            tools=[WEATHER_TOOL],
            tool_choice={"type": "auto"},
        ) as stream,
    ):
        texts = list(stream.text_stream)
        final = stream.get_final_message()
        generation_id = stream.response.headers["x-generation-id"]
    assert "".join(texts) == "I'll check the current weather in Paris for you."
    assert [b.type for b in final.content] == ["text", "tool_use"]
    call = final.content[1]
    assert call.type == "tool_use"
    assert (call.id, call.name, call.input) == ("toolu_01NRLabsLyVHZPKxbKvkfSMn", "get_weather", {"location": "Paris"})
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (377, 65)

    body = assert_anthropic_upstream(upstream)
    assert body["model"] == SONNET and body["tool_choice"] == {"type": "auto"}
    assert body["tools"][0]["name"] == "get_weather" and body["tools"][0]["input_schema"]["required"] == ["location"]
    row = generation(sidecar, generation_id)
    assert (row["streamed"], row["finish_reason"]) == (True, "tool-calls")


def test_stream_thinking_keeps_its_signature_and_budget(
    upstream: FakeUpstream, sidecar: RunningSidecar, client: anthropic.Anthropic
) -> None:
    upstream.push(anthropic_reply("thinking-signature-delta.sse"))
    with client.messages.stream(
        model=SONNET, max_tokens=8000, messages=ASK, thinking={"type": "enabled", "budget_tokens": 2048}
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    thinking, text = final.content
    assert thinking.type == "thinking" and text.type == "text"
    assert thinking.signature == SIGNATURE
    assert thinking.thinking.startswith("The question is asking") and "Deep Thought" in thinking.thinking
    assert text.text.endswith(" in pop culture.")
    assert any(e.type == "signature" for e in events)
    assert (final.usage.input_tokens, final.usage.output_tokens) == (50, 452)
    assert assert_anthropic_upstream(upstream)["thinking"] == {"type": "enabled", "budget_tokens": 2048}


def test_a_history_with_thinking_and_tool_results_reaches_anthropic(
    upstream: FakeUpstream, sidecar: RunningSidecar, client: anthropic.Anthropic
) -> None:
    upstream.push(anthropic_reply("text-basic-padded.sse"))
    with client.messages.stream(
        model=SONNET,
        max_tokens=256,
        messages=[
            *ASK,
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Use the tool.", "signature": SIGNATURE},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
        tools=[WEATHER_TOOL],
    ) as stream:
        assert stream.get_final_text() == "[12345,67890]"
    messages = assert_anthropic_upstream(upstream)["messages"]
    assert [m["role"] for m in messages[:2]] == ["user", "assistant"]
    thinking, call = messages[1]["content"]
    assert (thinking["type"], thinking["signature"]) == ("thinking", SIGNATURE)
    assert (call["id"], call["input"]) == ("toolu_1", {"location": "Paris"})
    # The last turn, whether sent as one user turn or as the tool results' turn and a text turn: results first.
    assert {m["role"] for m in messages[2:]} == {"user"}
    result, *rest = [block for m in messages[2:] for block in m["content"]]
    assert (result["type"], result["tool_use_id"]) == ("tool_result", "toolu_1")
    assert "18C" in json.dumps(result) and [b["text"] for b in rest] == ["And tomorrow?"]


def test_claude_code_beta_query_with_x_api_key(upstream: FakeUpstream, sidecar: RunningSidecar) -> None:
    """Claude Code posts to ``/v1/messages?beta=true`` with ``x-api-key`` and ``anthropic-version: 2023-06-01``."""
    upstream.push(anthropic_reply("text-then-tool-use.sse"))
    body = {"model": SONNET, "max_tokens": 512, "messages": ASK, "tools": [WEATHER_TOOL], "stream": True}
    response = httpx.post(f"{sidecar.url}/v1/messages?beta=true", json=body, headers=CLAUDE_CODE_HEADERS, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["usage"]["input_tokens"] == 377  # known at message_start
    # Block lifecycle: a start, its deltas, its stop, each `index` the block's position.
    blocks = [(d["index"], d["content_block"]["type"]) for n, d in events if n == "content_block_start"]
    assert blocks == [(0, "text"), (1, "tool_use")]
    stops = [d["index"] for n, d in events if n == "content_block_stop"]
    assert stops == [0, 1]
    arguments = "".join(d["delta"]["partial_json"] for n, d in events if n == "content_block_delta" and d["index"] == 1)
    assert json.loads(arguments) == {"location": "Paris"}
    delta = events[-2][1]
    assert (
        delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None} and delta["usage"]["output_tokens"] == 65
    )
    assert_anthropic_upstream(upstream)


def test_x_api_key_through_the_sdk(
    upstream: FakeUpstream, sidecar: RunningSidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    upstream.push(anthropic_reply("text-basic-padded.sse"))
    with (
        anthropic.Anthropic(base_url=sidecar.url, default_headers={"X-Api-Key": TOKEN}, max_retries=0) as sdk,
        sdk.messages.stream(model=SONNET, max_tokens=64, messages=ASK) as stream,
    ):
        assert stream.get_final_text() == "[12345,67890]"
    assert_anthropic_upstream(upstream)


def test_a_pdf_document_is_not_refused(
    upstream: FakeUpstream, sidecar: RunningSidecar, client: anthropic.Anthropic
) -> None:
    """Decode accepts what pi cannot hold: relayed, Anthropic gets the PDF; translated, a note that it was left out."""
    upstream.push(anthropic_reply("text-basic-padded.sse"))
    pdf: Any = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}}
    question: Any = [{"role": "user", "content": [pdf, {"type": "text", "text": "Summarise it."}]}]
    with client.messages.stream(model=SONNET, max_tokens=64, messages=question) as stream:
        assert stream.get_final_text() == "[12345,67890]"
    sent = json.dumps(assert_anthropic_upstream(upstream)["messages"])
    assert "JVBERi0x" in sent or "document (base64 source) was left out" in sent


# ----- a different family: translated ----------------------------------------------------------------------------


def test_create_text_through_an_openai_upstream(
    upstream: FakeUpstream, sidecar: RunningSidecar, client: anthropic.Anthropic
) -> None:
    upstream.push(openai_reply("text-basic-include-usage.sse"))
    raw = client.messages.with_raw_response.create(
        model="openai/gpt-4o",
        max_tokens=300,
        system=[{"type": "text", "text": "Be brief."}],
        messages=ASK,
        stop_sequences=["END"],
        extra_body={"temperature": 0.5},  # the 2.14 SDK has no `temperature` argument; Claude Code sends it
    )
    message = raw.parse()
    assert raw.http_response.headers["content-type"].startswith("application/json")
    assert message.id == "msg_" + raw.http_response.headers["x-generation-id"].removeprefix("gen_")
    assert message.content[0].type == "text" and message.content[0].text == OPENAI_TEXT
    assert (message.stop_reason, message.model) == ("end_turn", "openai/gpt-4o")
    assert (message.usage.input_tokens, message.usage.output_tokens) == (14, 30)

    sent = upstream.received[0]
    assert sent.path == "/v1/chat/completions" and sent.headers["authorization"] == f"Bearer {OPENAI_CANARY}"
    assert_no_bearer_upstream(upstream)
    body = sent.json()
    assert body["model"] == "gpt-4o" and body["temperature"] == 0.5 and body["stop"] == ["END"]
    assert body["max_completion_tokens"] == 300
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
    ]


def test_stream_parallel_tool_calls_through_an_openai_upstream(
    upstream: FakeUpstream, sidecar: RunningSidecar, client: anthropic.Anthropic
) -> None:
    upstream.push(openai_reply("tool-calls-parallel.sse"))
    history: Any = [
        *ASK,
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_0", "name": "get_weather", "input": {}}]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "call_0", "content": "18C", "is_error": False}],
        },
    ]
    with client.messages.stream(
        model="openai/gpt-4o", max_tokens=1024, messages=history, tools=[WEATHER_TOOL], tool_choice={"type": "any"}
    ) as stream:
        final = stream.get_final_message()
    calls = [(b.id, b.name, b.input) for b in final.content if b.type == "tool_use"]
    assert calls == [
        ("call_JMW1whyEaYG438VE1OIflxA2", "GetWeatherArgs", {"city": "Edinburgh", "country": "GB", "units": "c"}),
        ("call_DNYTawLBoN8fj3KN6qU9N1Ou", "get_stock_price", {"ticker": "AAPL", "exchange": "NASDAQ"}),
    ]
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (149, 60)

    body = upstream.received[0].json()
    assert upstream.received[0].headers["authorization"] == f"Bearer {OPENAI_CANARY}"
    assert body["tool_choice"] == "required"
    assert body["tools"][0]["function"]["name"] == "get_weather"
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "tool"]
    assert body["messages"][1]["tool_calls"][0]["id"] == "call_0"
    assert (body["messages"][2]["tool_call_id"], body["messages"][2]["content"]) == ("call_0", "18C")
    assert_no_bearer_upstream(upstream)


def test_stream_reasoning_and_cached_usage_through_an_openai_compatible_upstream(
    upstream: FakeUpstream, sidecar: RunningSidecar, client: anthropic.Anthropic
) -> None:
    """DeepSeek's ``reasoning_content`` becomes a thinking block (unsigned), its cache hits cache_read_input_tokens."""
    upstream.push(openai_reply("deepseek-reasoning-content-tool-call.sse"))
    with client.messages.stream(model="openai/gpt-4o", max_tokens=1024, messages=ASK, tools=[WEATHER_TOOL]) as stream:
        final = stream.get_final_message()
        generation_id = stream.response.headers["x-generation-id"]
    thinking, call = final.content
    assert thinking.type == "thinking" and thinking.signature == ""
    assert thinking.thinking.startswith("The user is asking for the weather in San Francisco.")
    assert call.type == "tool_use"
    assert (call.id, call.name, call.input) == (
        "call_00_ioIn7yN9p1ZOMNpDLwd4MgAF",
        "weather",
        {"location": "San Francisco"},
    )
    assert (final.id, final.model, final.stop_reason) == (
        "msg_" + generation_id.removeprefix("gen_"),
        "openai/gpt-4o",
        "tool_use",
    )
    usage = final.usage  # 339 prompt tokens of which 320 cached: Anthropic counts input without the cache reads
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (19, 320, 83)


def test_a_named_tool_choice_and_a_thinking_budget_translate_to_openai(
    upstream: FakeUpstream, sidecar: RunningSidecar, client: anthropic.Anthropic
) -> None:
    upstream.push(openai_reply("tool-calls-parallel.sse"))
    client.messages.create(
        model="openai/o3",
        max_tokens=4096,
        messages=ASK,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
        thinking={"type": "enabled", "budget_tokens": 16000},
    )
    body = upstream.received[0].json()
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["reasoning_effort"] == "high"  # 16000 budget tokens: pi's "high" (up to 20480)


def test_stream_text_through_an_openai_upstream_is_well_framed(upstream: FakeUpstream, sidecar: RunningSidecar) -> None:
    upstream.push(openai_reply("text-basic-include-usage.sse"))
    body = {"model": "openai/gpt-4o", "max_tokens": 64, "messages": ASK, "stream": True}
    response = httpx.post(f"{sidecar.url}/v1/messages", json=body, headers=CLAUDE_CODE_HEADERS, timeout=10)
    assert response.status_code == 200, response.text
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "content_block_start"] and names[-3:] == [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[1][1]["content_block"] == {"type": "text", "text": ""}
    usage = events[-2][1]["usage"]  # OpenAI reports usage last: the message_delta carries the input tokens
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    row = generation(sidecar, response.headers["x-generation-id"])
    assert (row["model"], row["api"]) == ("openai/gpt-4o", "openai-completions")


# ----- count_tokens ----------------------------------------------------------------------------------------------


def test_count_tokens_is_forwarded_to_anthropic(
    upstream: FakeUpstream, sidecar: RunningSidecar, client: anthropic.Anthropic
) -> None:
    upstream.push(Reply.json(200, {"input_tokens": 42}))
    counted = client.messages.count_tokens(model=SONNET, messages=ASK, tools=[WEATHER_TOOL])
    assert counted.input_tokens == 42
    body = assert_anthropic_upstream(upstream, "/v1/messages/count_tokens")
    assert body["model"] == SONNET and body["tools"][0]["name"] == "get_weather" and "max_tokens" not in body
    assert upstream.received[0].headers["anthropic-version"]


def test_count_tokens_with_the_beta_query_and_an_upstream_refusal(
    upstream: FakeUpstream, sidecar: RunningSidecar
) -> None:
    refusal = {"type": "error", "error": {"type": "invalid_request_error", "message": f"bad key {ANTHROPIC_CANARY}"}}
    upstream.push(Reply.json(400, refusal))
    headers = {**CLAUDE_CODE_HEADERS, "anthropic-beta": "token-counting-2024-11-01"}
    body = {"model": f"anthropic/{SONNET}", "messages": ASK}
    response = httpx.post(f"{sidecar.url}/v1/messages/count_tokens?beta=true", json=body, headers=headers)
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert ANTHROPIC_CANARY not in response.text and "bad key" in error["error"]["message"]
    assert upstream.received[0].headers["anthropic-beta"] == "token-counting-2024-11-01"
    assert upstream.received[0].headers["anthropic-version"] == "2023-06-01"
    assert_anthropic_upstream(upstream, "/v1/messages/count_tokens")


def test_count_tokens_is_estimated_for_other_families(
    upstream: FakeUpstream, sidecar: RunningSidecar, client: anthropic.Anthropic
) -> None:
    short = client.messages.count_tokens(model="openai/gpt-4o", messages=ASK).input_tokens
    long = client.messages.count_tokens(
        model="openai/gpt-4o", messages=[{"role": "user", "content": "word " * 400}]
    ).input_tokens
    assert 0 < short < 20 and 450 < long < 550  # ~4 characters per token
    assert upstream.received == []
    assert sidecar.outcomes == []  # counting is no generation: no ledger row


def test_count_tokens_needs_the_bearer(sidecar: RunningSidecar) -> None:
    with anthropic.Anthropic(base_url=sidecar.url, api_key="wrong-bearer", max_retries=0) as sdk:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            sdk.messages.count_tokens(model=SONNET, messages=ASK)
    assert caught.value.status_code == 401
    assert caught.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


# ----- errors ----------------------------------------------------------------------------------------------------


def test_a_wrong_bearer_is_an_authentication_error(upstream: FakeUpstream, sidecar: RunningSidecar) -> None:
    with anthropic.Anthropic(base_url=sidecar.url, api_key="wrong-bearer", max_retries=0) as sdk:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            sdk.messages.create(model=SONNET, max_tokens=64, messages=ASK)
    assert caught.value.status_code == 401
    assert caught.value.body == {"type": "error", "error": {"type": "authentication_error", "message": "unauthorized"}}
    assert upstream.received == []


def test_an_unknown_model_is_not_found(upstream: FakeUpstream, tmp_path: Path) -> None:
    environ = sidecar_environ(upstream.url, tmp_path)
    del environ["ANTHROPIC_API_KEY"]  # no Anthropic key: a bare id no provider catalogs cannot be sent anywhere
    with (
        run_sidecar(environ, write_config(tmp_path, "[upstream]\nmax_retries = 0\n")) as sidecar,
        anthropic.Anthropic(base_url=sidecar.url, api_key=TOKEN, max_retries=0) as sdk,
    ):
        with pytest.raises(anthropic.NotFoundError) as caught:
            sdk.messages.create(model="no-such-model", max_tokens=64, messages=ASK)
        assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
        assert "no-such-model" in caught.value.message
        with pytest.raises(anthropic.NotFoundError):
            sdk.messages.count_tokens(model="no-such-model", messages=ASK)
    assert upstream.received == []


def test_an_invalid_block_names_the_field(upstream: FakeUpstream, client: anthropic.Anthropic) -> None:
    bad: Any = [*ASK, {"role": "assistant", "content": [{"type": "txt", "text": "hi"}]}]
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=SONNET, max_tokens=64, messages=bad)
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "`messages[1].content[0].type` must be one of" in caught.value.message
    assert upstream.received == []


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_429_is_a_rate_limit_error(
    upstream: FakeUpstream, sidecar: RunningSidecar, client: anthropic.Anthropic, stream: bool
) -> None:
    upstream.push(
        Reply.json(429, fixture_bytes("anthropic-messages/errors/429-rate-limit-error.json"), {"retry-after": "18"})
    )
    with pytest.raises(anthropic.RateLimitError) as caught:
        if stream:
            with client.messages.stream(model=SONNET, max_tokens=64, messages=ASK) as events:
                list(events)
        else:
            client.messages.create(model=SONNET, max_tokens=64, messages=ASK)
    assert caught.value.status_code == 429 and caught.value.response.headers["retry-after"] == "18"
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert "rate limit" in caught.value.message
    assert_anthropic_upstream(upstream)


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_529_is_overloaded(
    upstream: FakeUpstream, sidecar: RunningSidecar, client: anthropic.Anthropic, stream: bool
) -> None:
    upstream.push(Reply.json(529, fixture_bytes("anthropic-messages/errors/529-overloaded-error.json")))
    with pytest.raises(anthropic.APIStatusError) as caught:
        if stream:
            with client.messages.stream(model=SONNET, max_tokens=64, messages=ASK) as events:
                list(events)
        else:
            client.messages.create(model=SONNET, max_tokens=64, messages=ASK)
    assert isinstance(caught.value, anthropic.OverloadedError)
    assert caught.value.status_code == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


@pytest.mark.parametrize("stream", [False, True])
def test_an_openai_429_is_a_rate_limit_error(
    upstream: FakeUpstream, sidecar: RunningSidecar, client: anthropic.Anthropic, stream: bool
) -> None:
    upstream.push(
        Reply.json(
            429,
            fixture_bytes("openai-chat-completions/errors/429-rate-limit-exceeded.ASSEMBLED.json"),
            {"retry-after": "1"},
        )
    )
    with pytest.raises(anthropic.RateLimitError) as caught:
        if stream:
            with client.messages.stream(model="openai/gpt-4o", max_tokens=64, messages=ASK) as events:
                list(events)
        else:
            client.messages.create(model="openai/gpt-4o", max_tokens=64, messages=ASK)
    assert caught.value.body["type"] == "error"  # type: ignore[index]
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert "Request too large for gpt-4o" in caught.value.message and OPENAI_CANARY not in caught.value.message
    assert caught.value.response.headers["retry-after"] == "1"  # the provider's, streamed (primed) or not


def test_a_translated_mid_stream_error_raises_in_the_sdk_stream(
    upstream: FakeUpstream, sidecar: RunningSidecar, client: anthropic.Anthropic
) -> None:
    upstream.push(openai_reply("error-mid-stream.ASSEMBLED.sse"))
    texts: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(model="openai/gpt-4o", max_tokens=64, messages=ASK) as stream:
            for text in stream.text_stream:
                texts.append(text)
    assert texts and OPENAI_TEXT.startswith("".join(texts))  # what came before the error
    error = caught.value.body["error"]  # type: ignore[index]
    assert error["type"] == "api_error" and "The server had an error processing your request" in error["message"]
    assert sidecar.wait_for_outcomes(1)[-1][1].reason == "error"


def test_a_mid_stream_error_raises_in_the_sdk_stream(
    upstream: FakeUpstream, sidecar: RunningSidecar, client: anthropic.Anthropic
) -> None:
    upstream.push(anthropic_reply("overloaded-error-mid-stream.ASSEMBLED.sse"))
    texts: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(model=SONNET, max_tokens=64, messages=ASK) as stream:
            for text in stream.text_stream:
                texts.append(text)
    assert "".join(texts) == "[12"  # what came before the error
    assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert ANTHROPIC_CANARY not in caught.value.message
    outcomes = sidecar.wait_for_outcomes(1)
    assert outcomes[-1][1].reason == "error"
