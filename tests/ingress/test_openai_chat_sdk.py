"""``POST /v1/chat/completions`` proven with the unmodified ``openai`` Python SDK (pinned in the dev extra).

Upstreams are the FakeUpstream replaying recorded provider bytes: an Anthropic Messages stream (a different family:
translated) and an OpenAI Chat stream (the same family). The SDK holds only the workload bearer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
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

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}
ASK: Any = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture
def client(sidecar: RunningSidecar) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{sidecar.url}/v1", api_key=TOKEN, max_retries=0) as sdk:
        yield sdk


def test_streamed_tool_call_through_an_anthropic_upstream(
    upstream: FakeUpstream, sidecar: RunningSidecar, client: openai.OpenAI
) -> None:
    upstream.push(anthropic_reply("text-then-tool-use.sse"))
    # The SDK's stream helper checks the chunk sequence strictly (role, tool call type/name, finish_reason).
    with client.chat.completions.stream(
        model="anthropic/claude-sonnet-4-5",
        messages=ASK,
        tools=[WEATHER_TOOL],
        stream_options={"include_usage": True},
    ) as stream:
        chunks = list(stream)
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I'll check the current weather in Paris for you."
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("toolu_01NRLabsLyVHZPKxbKvkfSMn", "get_weather", {"location": "Paris"})
    ]
    assert final.usage is not None and (final.usage.prompt_tokens, final.usage.completion_tokens) == (377, 65)
    assert any(c.type == "chunk" and c.chunk.choices == [] and c.chunk.usage for c in chunks)  # the usage chunk

    sent = upstream.received[0]
    assert sent.path == "/v1/messages" and sent.headers["x-api-key"] == ANTHROPIC_CANARY
    body = sent.json()
    assert body["model"] == "claude-sonnet-4-5" and body["system"][0]["text"] == "Be brief."
    assert body["tools"][0]["name"] == "get_weather" and body["tools"][0]["input_schema"]["required"] == ["location"]
    assert_no_bearer_upstream(upstream)


def test_usage_chunk_only_when_asked(upstream: FakeUpstream, sidecar: RunningSidecar) -> None:
    upstream.push(anthropic_reply("text-basic-padded.sse"))
    response = httpx.post(
        f"{sidecar.url}/v1/chat/completions",
        json={"model": "anthropic/claude-sonnet-4-5", "messages": ASK, "stream": True},
        headers={"authorization": f"Bearer {TOKEN}"},
    )
    frames = [f for f in response.text.split("\n\n") if f.startswith("data: ")]
    assert frames[-1] == "data: [DONE]"
    chunks = [json.loads(f[6:]) for f in frames[:-1]]
    assert all(c["choices"] for c in chunks) and "usage" not in chunks[-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert len({c["id"] for c in chunks}) == 1


def test_non_streaming_completion_and_its_ledger_row(
    upstream: FakeUpstream, sidecar: RunningSidecar, client: openai.OpenAI
) -> None:
    upstream.push(anthropic_reply("text-then-tool-use.sse"))
    raw = client.chat.completions.with_raw_response.create(
        model="claude-sonnet-4-5", messages=ASK, tools=[WEATHER_TOOL], user="alice"
    )
    completion = raw.parse()
    assert completion.object == "chat.completion" and completion.choices[0].finish_reason == "tool_calls"
    call = (completion.choices[0].message.tool_calls or [])[0]
    assert json.loads(call.function.arguments) == {"location": "Paris"}  # type: ignore[union-attr]
    assert completion.usage is not None and completion.usage.total_tokens == 377 + 65
    generation_id = raw.headers["x-generation-id"]
    data = generation_row(sidecar.url, generation_id)
    assert data["model"] == "anthropic/claude-sonnet-4-5"  # a bare id on an OpenAI route still finds its provider
    assert (data["native_tokens_prompt"], data["native_tokens_completion"], data["user"]) == (377, 65, "alice")


def test_second_turn_sends_the_tool_result_back_translated(
    upstream: FakeUpstream, sidecar: RunningSidecar, client: openai.OpenAI
) -> None:
    upstream.push(anthropic_reply("text-basic-padded.sse"))
    messages: Any = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C and sunny"},
    ]
    completion = client.chat.completions.create(model="anthropic/claude-sonnet-4-5", messages=messages)
    assert completion.choices[0].message.content
    turns = upstream.received[0].json()["messages"]
    assert turns[1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "Paris"}}],
    }
    result = turns[2]["content"][0]
    assert (result["type"], result["tool_use_id"], result["content"][0]["text"]) == (
        "tool_result",
        "call_1",
        "18 C and sunny",
    )


def test_parallel_tool_calls_from_an_openai_upstream(
    upstream: FakeUpstream, sidecar: RunningSidecar, client: openai.OpenAI
) -> None:
    upstream.push(openai_reply("tool-calls-parallel.sse"))
    with client.chat.completions.stream(model="openai/gpt-4o", messages=ASK, tools=[WEATHER_TOOL]) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert len(calls) >= 2 and all(json.loads(c.function.arguments) for c in calls)
    assert final.choices[0].finish_reason == "tool_calls"
    sent = upstream.received[0]
    assert sent.path == "/v1/chat/completions" and sent.headers["authorization"] == f"Bearer {OPENAI_CANARY}"
    assert_no_bearer_upstream(upstream)


def test_reasoning_streams_as_reasoning_content(
    upstream: FakeUpstream, sidecar: RunningSidecar, client: openai.OpenAI
) -> None:
    upstream.push(anthropic_reply("thinking-signature-delta.sse"))
    stream = client.chat.completions.create(model="anthropic/claude-sonnet-4-5", messages=ASK, stream=True)
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content", "") for c in stream if c.choices
    )
    assert len(reasoning) > 20


def test_wrong_bearer_is_a_401_in_openai_shape(sidecar: RunningSidecar) -> None:
    with openai.OpenAI(base_url=f"{sidecar.url}/v1", api_key="not-the-bearer", max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError) as caught:
            sdk.chat.completions.create(model="openai/gpt-4o", messages=ASK)
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key" and caught.value.type == "invalid_request_error"


def test_unknown_model_and_bad_fields_say_what_to_fix(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nosuch/model-x", messages=ASK)
    assert "nosuch/model-x" in missing.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="openai/gpt-4o", messages=ASK, n=2)
    assert "`n` must be 1" in bad.value.message
    with pytest.raises(openai.BadRequestError) as empty:
        client.chat.completions.create(model="openai/gpt-4o", messages=[])
    assert "`messages`" in empty.value.message
    assert upstream.received == []


@pytest.mark.parametrize(
    ("fixture", "status", "error"),
    [
        ("anthropic-messages/errors/429-rate-limit-error.json", 429, openai.RateLimitError),
        ("anthropic-messages/errors/529-overloaded-error.json", 529, openai.InternalServerError),
        ("anthropic-messages/errors/401-authentication-error.ASSEMBLED.json", 401, openai.AuthenticationError),
    ],
)
def test_upstream_refusals_keep_their_status(
    upstream: FakeUpstream, client: openai.OpenAI, fixture: str, status: int, error: type[openai.APIStatusError]
) -> None:
    upstream.push(Reply.json(status, fixture_bytes(fixture)))
    with pytest.raises(error) as caught:
        list(client.chat.completions.create(model="anthropic/claude-sonnet-4-5", messages=ASK, stream=True))
    assert caught.value.status_code == status
    assert ANTHROPIC_CANARY not in caught.value.message and TOKEN not in caught.value.message


def test_mid_stream_error_raises_in_the_sdk(upstream: FakeUpstream, client: openai.OpenAI) -> None:
    upstream.push(anthropic_reply("overloaded-error-mid-stream.ASSEMBLED.sse"))
    stream = client.chat.completions.create(model="anthropic/claude-sonnet-4-5", messages=ASK, stream=True)
    with pytest.raises(openai.APIError) as caught:
        list(stream)
    assert "overloaded" in caught.value.message.lower()


def test_budget_exceeded_is_refused_before_any_upstream_call(upstream: FakeUpstream, tmp_path: Path) -> None:
    config = "[upstream]\nmax_retries = 0\n[budget]\nusd = 0.0\n"
    with run_sidecar(sidecar_environ(upstream.url, tmp_path), write_config(tmp_path, config)) as sidecar:
        with openai.OpenAI(base_url=f"{sidecar.url}/v1", api_key=TOKEN, max_retries=0) as sdk:
            with pytest.raises(openai.RateLimitError) as caught:
                sdk.chat.completions.create(model="anthropic/claude-sonnet-4-5", messages=ASK)
    assert caught.value.code == "rate_limit_exceeded" and "budget" in caught.value.message.lower()
    assert upstream.received == []


def test_client_abort_cancels_the_upstream_and_is_recorded(upstream: FakeUpstream, sidecar: RunningSidecar) -> None:
    events = [e + b"\n\n" for e in fixture_bytes("anthropic-messages/text-basic-padded.sse").split(b"\n\n") if e]
    upstream.push(Reply(chunks=events, stall_after=3, stall_seconds=1))  # message_start, a block, then silence
    with openai.OpenAI(base_url=f"{sidecar.url}/v1", api_key=TOKEN, max_retries=0) as sdk:
        stream = sdk.chat.completions.create(model="anthropic/claude-sonnet-4-5", messages=ASK, stream=True)
        next(iter(stream))
        stream.close()
    outcomes = sidecar.wait_for_outcomes(1)
    assert outcomes[0][1].reason == "aborted"
    deadline = time.monotonic() + 5
    while upstream.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert upstream.disconnects == 1
