"""``POST /v1/responses`` proven with the unmodified ``openai`` Python SDK (``client.responses``, pinned in the dev
extra): its ``stream()`` helper checks the event order strictly (``response.created`` first, items added before
their deltas, content parts before text deltas, every item done before ``response.completed``).

Upstreams are the FakeUpstream replaying recorded provider bytes: Anthropic Messages and OpenAI Chat streams, both
translated (there is no Responses upstream yet). The SDK holds only the workload bearer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from sidecar.ingress.openai_responses_output import ResponseStore
from tests.fakeupstream import FakeUpstream, Reply, fixture_bytes
from tests.ingress.upstream import anthropic_reply, assert_no_bearer_upstream, openai_reply
from tests.sidecar_server import ANTHROPIC_CANARY, OPENAI_CANARY, TOKEN, RunningSidecar, generation_row

SONNET = "anthropic/claude-sonnet-4-5"
WEATHER_TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    "strict": False,
}
HEADERS = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(sidecar: RunningSidecar) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{sidecar.url}/v1", api_key=TOKEN, max_retries=0) as sdk:
        yield sdk


def assert_keys_in_place(upstream: FakeUpstream, header: str, canary: str) -> None:
    """The provider key reached the provider, in its header; the workload bearer never left the sidecar."""
    for received in upstream.received:
        assert canary in received.headers[header]
    assert_no_bearer_upstream(upstream)


def raw_events(sidecar: RunningSidecar, body: dict[str, Any]) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """The SSE frames as sent: ``event:`` line, ``data:`` line whose ``type`` matches it."""
    response = httpx.post(f"{sidecar.url}/v1/responses", json={**body, "stream": True}, headers=HEADERS, timeout=10)
    assert response.status_code == 200, response.text
    events = []
    for frame in response.text.split("\n\n"):
        if not frame.strip() or frame.startswith(":"):
            continue
        name, data = frame.split("\n")
        assert name.startswith("event: ") and data.startswith("data: "), frame
        event = json.loads(data[6:])
        assert event["type"] == name[7:]
        events.append(event)
    return response, events


# ----- streaming ----------------------------------------------------------------------------------------------------


def test_text_stream_events_exactly(upstream: FakeUpstream, sidecar: RunningSidecar) -> None:
    upstream.push(anthropic_reply("text-basic-padded.sse"))
    response, events = raw_events(sidecar, {"model": SONNET, "input": "Pick two numbers"})
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 4,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    created = events[0]["response"]
    assert created["id"] == "resp_" + response.headers["x-generation-id"].removeprefix("gen_")
    assert (created["object"], created["status"], created["output"], created["model"]) == (
        "response",
        "in_progress",
        [],
        SONNET,
    )
    assert isinstance(created["created_at"], int)
    added = events[2]
    assert added["item"] == {
        "id": added["item"]["id"],
        "type": "message",
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }
    assert added["item"]["id"].startswith("msg_")
    delta = events[4]
    assert (delta["item_id"], delta["output_index"], delta["content_index"], delta["logprobs"]) == (
        added["item"]["id"],
        0,
        0,
        [],
    )
    completed = events[-1]["response"]
    assert completed["status"] == "completed" and completed["id"] == created["id"]
    assert completed["output"][0]["content"] == [{"type": "output_text", "text": "[12345,67890]", "annotations": []}]
    assert completed["usage"] == {
        "input_tokens": 135,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 10,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 145,
    }
    assert ANTHROPIC_CANARY not in response.text
    assert_keys_in_place(upstream, "x-api-key", ANTHROPIC_CANARY)


def test_stream_helper_text_then_tool_call(upstream: FakeUpstream, client: openai.OpenAI) -> None:
    upstream.push(anthropic_reply("text-then-tool-use.sse"))
    with client.responses.stream(
        model=SONNET, instructions="Be brief.", input="Weather in Paris?", tools=[WEATHER_TOOL], tool_choice="auto"
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds.count("response.function_call_arguments.delta") >= 2
    assert final.status == "completed"
    assert final.output_text == "I'll check the current weather in Paris for you."
    message, call = final.output
    assert message.type == "message" and call.type == "function_call"
    assert (call.call_id, call.name, call.status) == ("toolu_01NRLabsLyVHZPKxbKvkfSMn", "get_weather", "completed")
    assert json.loads(call.arguments) == {"location": "Paris"} and (call.id or "").startswith("fc_")
    assert final.usage is not None and (final.usage.input_tokens, final.usage.output_tokens) == (377, 65)

    sent = upstream.received[0]
    assert sent.path == "/v1/messages"
    body = sent.json()
    assert body["model"] == "claude-sonnet-4-5" and body["system"][0]["text"] == "Be brief."
    assert body["messages"][0]["content"][0]["text"] == "Weather in Paris?"
    assert body["tools"][0]["name"] == "get_weather" and body["tools"][0]["input_schema"]["required"] == ["location"]
    assert body["tool_choice"] == {"type": "auto"}
    assert_keys_in_place(upstream, "x-api-key", ANTHROPIC_CANARY)


def test_parallel_function_calls_from_an_openai_upstream(upstream: FakeUpstream, client: openai.OpenAI) -> None:
    upstream.push(openai_reply("tool-calls-parallel.sse"))
    with client.responses.stream(
        model="openai/gpt-4o", input="Weather and a stock price", tools=[WEATHER_TOOL], tool_choice="required"
    ) as stream:
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert len(calls) >= 2 and len({c.call_id for c in calls}) == len(calls)
    assert [c.name for c in calls][:2] == ["GetWeatherArgs", "get_stock_price"]
    assert all(json.loads(c.arguments) for c in calls)
    assert [final.output.index(c) for c in calls] == list(range(len(calls)))  # output_index = array position

    sent = upstream.received[0]
    assert sent.path == "/v1/chat/completions"
    body = sent.json()
    assert body["tools"][0] == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather",
            "parameters": WEATHER_TOOL["parameters"],
            "strict": False,
        },
    }
    assert body["tool_choice"] == "required"
    assert_keys_in_place(upstream, "authorization", OPENAI_CANARY)


def test_thinking_becomes_a_reasoning_item_that_round_trips(upstream: FakeUpstream, client: openai.OpenAI) -> None:
    upstream.push(anthropic_reply("thinking-signature-delta.sse"))
    with client.responses.stream(
        model=SONNET, input="The meaning of life?", reasoning={"effort": "low", "summary": "auto"}, store=False
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.reasoning_summary_part.added" in kinds and "response.reasoning_summary_text.delta" in kinds
    reasoning, message = final.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert reasoning.summary[0].type == "summary_text" and "Deep Thought" in reasoning.summary[0].text
    assert (reasoning.encrypted_content or "").startswith("pi.signature.ErUBCkYIARgCIkCMkRFgNNhwET9y5I")
    assert message.type == "message" and "Douglas Adams" in final.output_text
    assert upstream.received[0].json()["thinking"] == {"type": "enabled", "budget_tokens": 4096}

    # A stateless client (Codex, store: false) sends the items back: the signed thinking block reaches Anthropic intact.
    upstream.push(anthropic_reply("text-basic-padded.sse"))
    history: Any = [{"role": "user", "content": "The meaning of life?"}]
    history += [item.to_dict() for item in final.output]
    history.append({"role": "user", "content": "Shorter, please."})
    client.responses.create(model=SONNET, input=history, store=False)
    assistant = upstream.received[1].json()["messages"][1]
    assert assistant["role"] == "assistant"
    thinking, text = assistant["content"]
    assert thinking["type"] == "thinking" and thinking["thinking"] == reasoning.summary[0].text
    assert thinking["signature"] == (reasoning.encrypted_content or "").removeprefix("pi.signature.")
    assert text == {"type": "text", "text": final.output_text}


def test_cached_usage_counts_all_input(upstream: FakeUpstream, client: openai.OpenAI) -> None:
    upstream.push(anthropic_reply("prompt-cache-usage-server-tools.sse"))
    response = client.responses.create(model=SONNET, input="Search something", stream=True)
    completed = [event for event in response if event.type == "response.completed"]
    usage = completed[0].response.usage
    assert usage is not None
    assert (usage.input_tokens, usage.input_tokens_details.cached_tokens, usage.output_tokens) == (
        6 + 3337 + 6289,
        6289,
        198,
    )
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_max_output_tokens_ends_incomplete(upstream: FakeUpstream, client: openai.OpenAI) -> None:
    upstream.push(openai_reply("finish-reason-length.sse"))
    events = list(client.responses.create(model="openai/gpt-4o", input="Write JSON", max_output_tokens=16, stream=True))
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.status == "incomplete" and last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert upstream.received[0].json()["max_completion_tokens"] == 16


# ----- non-streaming, second turns, stored items ----------------------------------------------------------------------


def test_non_streaming_response_and_its_ledger_row(
    upstream: FakeUpstream, sidecar: RunningSidecar, client: openai.OpenAI
) -> None:
    upstream.push(anthropic_reply("text-then-tool-use.sse"))
    raw = client.responses.with_raw_response.create(
        model="claude-sonnet-4-5", input="Weather in Paris?", tools=[WEATHER_TOOL], user="alice"
    )
    response = raw.parse()
    assert response.object == "response" and response.status == "completed" and response.model == "claude-sonnet-4-5"
    assert response.output_text == "I'll check the current weather in Paris for you."
    assert [item.type for item in response.output] == ["message", "function_call"]
    message: Any = response.output[0]
    assert message.content[0].annotations == []
    assert response.usage is not None and response.usage.total_tokens == 377 + 65
    generation_id = raw.headers["x-generation-id"]
    assert response.id == "resp_" + generation_id.removeprefix("gen_")
    data = generation_row(sidecar.url, generation_id)
    assert data["model"] == SONNET  # a bare id on an OpenAI route still finds its provider
    assert (data["native_tokens_prompt"], data["native_tokens_completion"], data["user"]) == (377, 65, "alice")
    assert data["streamed"] is False


def test_second_turn_sends_function_call_and_output_back_translated(
    upstream: FakeUpstream, client: openai.OpenAI
) -> None:
    upstream.push(anthropic_reply("text-basic-padded.sse"))
    history: Any = [
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"location":"Paris"}'},
        {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": '{"location":"Lyon"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "18 C and sunny"},
        {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "12 C"}]},
    ]
    response = client.responses.create(model=SONNET, instructions="Be brief.", input=history, tools=[WEATHER_TOOL])
    assert response.output_text == "[12345,67890]"
    body = upstream.received[0].json()
    assert [block["text"] for block in body["system"]] == ["Be brief.", "Answer in French."]
    user, assistant, results = body["messages"]
    assert user == {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"location": "Lyon"}},
        ],
    }
    assert [(r["type"], r["tool_use_id"], r["content"][0]["text"]) for r in results["content"]] == [
        ("tool_result", "call_1", "18 C and sunny"),
        ("tool_result", "call_2", "12 C"),
    ]


def test_item_reference_and_previous_response_id_resolve_in_process(
    upstream: FakeUpstream, client: openai.OpenAI
) -> None:
    upstream.push(anthropic_reply("thinking-signature-delta.sse"), anthropic_reply("text-basic-padded.sse"))
    first = client.responses.create(model=SONNET, input="The meaning of life?", reasoning={"effort": "low"})
    reasoning_id, message_id = (item.id for item in first.output)
    # What @ai-sdk/openai sends by default (store ?? true): references to the earlier output items.
    references: Any = [
        {"role": "user", "content": "The meaning of life?"},
        {"type": "item_reference", "id": reasoning_id},
        {"type": "item_reference", "id": message_id},
        {"role": "user", "content": "Shorter, please."},
    ]
    client.responses.create(model=SONNET, input=references)
    replayed = upstream.received[1].json()["messages"]
    assert [m["role"] for m in replayed] == ["user", "assistant", "user"]
    assert [b["type"] for b in replayed[1]["content"]] == ["thinking", "text"]
    assert replayed[1]["content"][1]["text"] == first.output_text

    upstream.push(anthropic_reply("text-basic-padded.sse"))
    client.responses.create(model=SONNET, previous_response_id=first.id, input="And in one word?")
    chained = upstream.received[2].json()["messages"]
    assert [m["role"] for m in chained] == ["user", "assistant", "user"]
    assert chained[0]["content"][0]["text"] == "The meaning of life?"
    assert chained[1]["content"][1]["text"] == first.output_text
    assert chained[2]["content"][0]["text"] == "And in one word?"


def test_unknown_references_say_to_send_store_false(upstream: FakeUpstream, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as reference:
        client.responses.create(model=SONNET, input=[{"type": "item_reference", "id": "msg_elsewhere"}])
    assert "`input[0]`" in reference.value.message and "store: false" in reference.value.message
    with pytest.raises(openai.BadRequestError) as previous:
        client.responses.create(model=SONNET, previous_response_id="resp_unknown", input="hi")
    assert "`previous_response_id`" in previous.value.message and "store: false" in previous.value.message
    assert upstream.received == []


def test_store_is_bounded_and_per_bearer() -> None:
    store = ResponseStore(max_items=3, max_responses=2, max_bytes=10_000)
    for n in range(4):
        store.remember("a", f"resp_{n}", (), 10, [{"id": f"msg_{n}", "type": "message"}])
    assert [store.item("a", f"msg_{n}") is not None for n in range(4)] == [False, True, True, True]
    assert [store.conversation("a", f"resp_{n}") is not None for n in range(4)] == [False, False, True, True]
    assert store.item("b", "msg_3") is None and store.conversation("b", "resp_3") is None  # another bearer's
    store.remember("a", "resp_big", (), 9_900, [{"id": "msg_big", "type": "message"}])  # the oldest make room
    assert store.item("a", "msg_3") is None and store.conversation("a", "resp_3") is None
    assert store.item("a", "msg_big") is not None and store.conversation("a", "resp_big") is not None
    store.remember("a", "resp_huge", (), 20_000, [])  # larger than the whole store: not kept
    assert store.conversation("a", "resp_huge") is None and store.conversation("a", "resp_big") is not None


# ----- refusals -------------------------------------------------------------------------------------------------------


def test_wrong_bearer_is_an_authentication_error(sidecar: RunningSidecar) -> None:
    with openai.OpenAI(base_url=f"{sidecar.url}/v1", api_key="not-the-bearer", max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError) as caught:
            sdk.responses.create(model=SONNET, input="hi")
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key" and caught.value.type == "invalid_request_error"


def test_unknown_model_and_unsupported_fields_say_what_to_fix(upstream: FakeUpstream, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="nosuch/model-x", input="hi")
    assert "nosuch/model-x" in missing.value.message and missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as hosted:
        client.responses.create(model=SONNET, input="hi", tools=[WEATHER_TOOL, {"type": "web_search"}])
    assert '`tools[1].type` "web_search"' in hosted.value.message
    hosted_call: Any = [{"type": "web_search_call", "id": "ws_1"}]
    with pytest.raises(openai.BadRequestError) as item:
        client.responses.create(model=SONNET, input=hosted_call)
    assert '`input[0].type` "web_search_call"' in item.value.message
    not_text: Any = [{"role": "user", "content": [{"type": "input_text", "text": 3}]}]
    with pytest.raises(openai.BadRequestError) as part:
        client.responses.create(model=SONNET, input=not_text)
    assert "`input[0].content[0].text` must be a string" in part.value.message
    with pytest.raises(openai.BadRequestError) as schema:
        client.responses.create(
            model=SONNET, input="hi", text={"format": {"type": "json_schema", "name": "x", "schema": {}}}
        )
    assert "`text.format.type`" in schema.value.message
    assert upstream.received == []


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_rate_limit_is_a_rate_limit_error(upstream: FakeUpstream, client: openai.OpenAI, stream: bool) -> None:
    upstream.push(Reply.json(429, fixture_bytes("anthropic-messages/errors/429-rate-limit-error.json")))
    with pytest.raises(openai.RateLimitError) as caught:
        result: Any = client.responses.create(model=SONNET, input="hi", stream=stream)
        if stream:
            list(result)
    assert caught.value.status_code == 429 and caught.value.code == "rate_limit_exceeded"
    assert "rate limit" in caught.value.message
    assert ANTHROPIC_CANARY not in caught.value.message and TOKEN not in caught.value.message


def test_mid_stream_error_ends_in_response_failed(upstream: FakeUpstream, client: openai.OpenAI) -> None:
    upstream.push(anthropic_reply("overloaded-error-mid-stream.ASSEMBLED.sse"))
    events = list(client.responses.create(model=SONNET, input="Pick numbers", stream=True))
    failed = events[-1]
    assert failed.type == "response.failed" and failed.response.status == "failed"
    assert failed.response.error is not None and "Overloaded" in failed.response.error.message
    assert failed.response.error.code == "server_error"
    partial = failed.response.output[0]
    assert partial.type == "message" and partial.status == "incomplete"
    assert partial.content[0].text == "[12"  # type: ignore[union-attr]
    assert ANTHROPIC_CANARY not in failed.to_json()

    upstream.push(anthropic_reply("overloaded-error-mid-stream.ASSEMBLED.sse"))
    with client.responses.stream(model=SONNET, input="Pick numbers") as stream:
        with pytest.raises(RuntimeError, match="response.completed"):
            stream.get_final_response()


def test_codex_shaped_request_on_the_path_without_v1(upstream: FakeUpstream, sidecar: RunningSidecar) -> None:
    """What Codex CLI sends (``wire_api = "responses"``, store false, encrypted reasoning requested, developer
    messages, a prompt cache key) on ``/responses``, for a base URL set without ``/v1``."""
    upstream.push(anthropic_reply("text-then-tool-use.sse"))
    body: Any = {
        "model": SONNET,
        "instructions": "You are a coding agent.",
        "input": [
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "Sandbox: read-only."}],
            },
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<env>cwd=/w</env>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
        ],
        "tools": [{**WEATHER_TOOL, "name": "shell"}],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "0197a0c2-codex-session",
    }
    response = httpx.post(f"{sidecar.url}/responses", json=body, headers=HEADERS, timeout=10)
    assert response.status_code == 200, response.text
    datas = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    completed = datas[-1]
    assert completed["type"] == "response.completed" and isinstance(completed["response"]["id"], str)
    usage = completed["response"]["usage"]
    assert all(isinstance(v, int) for v in (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]))
    assert [item["type"] for item in completed["response"]["output"]] == ["message", "function_call"]
    sent = upstream.received[0].json()
    assert [block["text"] for block in sent["system"]] == ["You are a coding agent.", "Sandbox: read-only."]
    assert [m["content"][0]["text"] for m in sent["messages"]] == ["<env>cwd=/w</env>", "Weather in Paris?"]
    assert sent["thinking"]["type"] == "enabled" and sent["tools"][0]["name"] == "shell"
    # store: false keeps nothing: the items cannot be referenced later.
    with openai.OpenAI(base_url=sidecar.url, api_key=TOKEN, max_retries=0) as sdk:
        with pytest.raises(openai.BadRequestError):
            sdk.responses.create(model=SONNET, previous_response_id=completed["response"]["id"], input="next")
