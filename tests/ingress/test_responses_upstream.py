"""A model on the OpenAI Responses API, served to the unmodified official clients of every ingress format: the openai
SDK's ``responses.stream`` (same family: relayed), its ``chat.completions.stream`` and the anthropic SDK's
``messages.stream`` (other families: translated by the ``openai-responses`` adapter). Each runs a turn that ends in
tool calls and the turn that answers them; each generation is found in the ledger by ``GET /v1/generation``.

The upstream is the FakeUpstream replaying recorded Responses streams; the SDKs hold only the workload bearer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import orjson
import pytest

from tests.fakeupstream import FakeUpstream, Reply, fixture_bytes
from tests.sidecar_server import OPENAI_CANARY, TOKEN, RunningSidecar, generation_row

MODEL = "openai/gpt-5"  # on openai-responses in the catalog
TOOLS_STREAM = "openai-responses/function-calls-parallel.sse"
REASONING_STREAM = "openai-responses/reasoning-summary-then-function-call.sse"
TEXT_STREAM = "openai-responses/text-basic.sse"
ENCRYPTED = "gAAAAABoWaTKencrypted-reasoning-blob"
QUESTION = "When do the Tigers play today, and do I need a coat in Detroit?"
SEARCH = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def recorded(name: str) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in fixture_bytes(name).split(b"\n") if line.startswith(b"data: ")]


def recorded_calls(name: str) -> list[dict[str, Any]]:
    """The function_call items the recording ends with."""
    return [item for item in recorded(name)[-1]["response"]["output"] if item["type"] == "function_call"]


def with_encrypted_reasoning(name: str) -> bytes:
    """The recording as a ``store: false`` request with ``include: ["reasoning.encrypted_content"]`` gets it: the
    reasoning item's done event carries ``encrypted_content`` (the recordings were made with ``store: true``)."""
    data = fixture_bytes(name)
    done = next(e for e in recorded(name) if e["type"] == "response.output_item.done")["item"]
    return data.replace(orjson.dumps(done), orjson.dumps({**done, "encrypted_content": ENCRYPTED}))


def ledger(sidecar: RunningSidecar, count: int) -> list[dict[str, Any]]:
    """The ledger rows of the first ``count`` generations, as ``GET /v1/generation`` shows them."""
    rows = []
    for generation_id, _ in sidecar.wait_for_outcomes(count)[:count]:
        rows.append(generation_row(sidecar.url, generation_id))
    assert len(rows) == count
    return rows


def upstream_bodies(upstream: FakeUpstream) -> list[dict[str, Any]]:
    """What reached OpenAI: the Responses path, the injected key, never the bearer."""
    bodies = []
    for received in upstream.received:
        assert received.path == "/v1/responses"
        assert received.headers["authorization"] == f"Bearer {OPENAI_CANARY}"
        assert TOKEN not in json.dumps(received.headers) and TOKEN.encode() not in received.body
        bodies.append(received.json())
    return bodies


@pytest.fixture
def openai_client(sidecar: RunningSidecar) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{sidecar.url}/v1", api_key=TOKEN, max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def anthropic_client(sidecar: RunningSidecar) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=sidecar.url, api_key=TOKEN, max_retries=0) as sdk:
        yield sdk


def test_openai_responses_stream_is_relayed(
    sidecar: RunningSidecar, upstream: FakeUpstream, openai_client: openai.OpenAI
) -> None:
    upstream.push(Reply.sse(fixture_bytes(TOOLS_STREAM), split=7), Reply.sse(fixture_bytes(TEXT_STREAM), split=7))
    tools: Any = [
        {"type": "function", "name": "search", "parameters": SEARCH, "strict": False},
        {"type": "function", "name": "weather", "parameters": WEATHER, "strict": False},
    ]
    with openai_client.responses.stream(model=MODEL, input=QUESTION, tools=tools, store=False) as stream:
        first = stream.get_final_response()
    calls = [item for item in first.output if item.type == "function_call"]
    expected = recorded_calls(TOOLS_STREAM)
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [
        (e["call_id"], e["name"], e["arguments"]) for e in expected
    ]
    assert first.id == recorded(TOOLS_STREAM)[0]["response"]["id"]  # the upstream's own response: relayed

    answers: Any = [{"type": "function_call_output", "call_id": c.call_id, "output": "ok"} for c in calls]
    history: Any = [{"role": "user", "content": QUESTION}, *[c.model_dump() for c in calls], *answers]
    with openai_client.responses.stream(model=MODEL, input=history, tools=tools, store=False) as stream:
        second = stream.get_final_response()
    assert second.output_text == recorded(TEXT_STREAM)[-1]["response"]["output"][0]["content"][0]["text"]

    first_body, second_body = upstream_bodies(upstream)
    assert first_body["model"] == "gpt-5" and first_body["tools"] == tools  # the client's body, as sent
    assert second_body["input"][1:3] == [c.model_dump() for c in calls]
    rows = ledger(sidecar, 2)
    assert [row["finish_reason"] for row in rows] == ["tool-calls", "stop"]
    assert [row["native_tokens_prompt"] for row in rows] == [76, 10]
    assert all(row["api"] == "openai-responses" and row["model"] == MODEL for row in rows)


def test_openai_chat_stream_is_translated(
    sidecar: RunningSidecar, upstream: FakeUpstream, openai_client: openai.OpenAI
) -> None:
    upstream.push(Reply.sse(fixture_bytes(TOOLS_STREAM), split=7), Reply.sse(fixture_bytes(TEXT_STREAM), split=7))
    tools: Any = [
        {"type": "function", "function": {"name": "search", "parameters": SEARCH}},
        {"type": "function", "function": {"name": "weather", "parameters": WEATHER}},
    ]
    messages: Any = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}]
    with openai_client.chat.completions.stream(
        model=MODEL, messages=messages, tools=tools, tool_choice="required", stream_options={"include_usage": True}
    ) as stream:
        first = stream.get_final_completion()
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    expected = recorded_calls(TOOLS_STREAM)
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        (e["name"], json.loads(e["arguments"])) for e in expected
    ]
    assert [c.id for c in calls] == [f"{e['call_id']}|{e['id']}" for e in expected]  # pi-ai's tool-call ids
    assert first.usage is not None and (first.usage.prompt_tokens, first.usage.completion_tokens) == (76, 52)

    answers = [{"role": "tool", "tool_call_id": c.id, "content": "ok"} for c in calls]
    history: Any = [*messages, choice.message.model_dump(exclude_none=True), *answers]
    with openai_client.chat.completions.stream(model=MODEL, messages=history, tools=tools) as stream:
        second = stream.get_final_completion()
    assert second.choices[0].message.content == recorded(TEXT_STREAM)[-1]["response"]["output"][0]["content"][0]["text"]

    first_body, second_body = upstream_bodies(upstream)
    assert first_body["instructions"] == "Be brief." and first_body["tool_choice"] == "required"
    assert first_body["tools"][0] == {
        "type": "function",
        "name": "search",
        "description": "",
        "parameters": SEARCH,
        "strict": False,
    }
    # The calls go back with the call_id and item id they came with, and the outputs answer the call_ids.
    replayed = [item for item in second_body["input"] if item.get("type") == "function_call"]
    # A Chat client sends no reasoning back, so the calls go without their fc_ item ids (OpenAI rejects an fc_ id whose
    # reasoning item is missing; pi-ai drops it too), paired to their outputs by call_id.
    assert [(item["call_id"], item.get("id")) for item in replayed] == [(e["call_id"], None) for e in expected]
    outputs = [item for item in second_body["input"] if item.get("type") == "function_call_output"]
    assert [(o["call_id"], o["output"]) for o in outputs] == [(e["call_id"], "ok") for e in expected]
    rows = ledger(sidecar, 2)
    assert [row["finish_reason"] for row in rows] == ["tool-calls", "stop"]
    assert rows[0]["upstream_response_id"] == recorded(TOOLS_STREAM)[0]["response"]["id"]
    assert all(row["api"] == "openai-responses" for row in rows)


def test_anthropic_messages_stream_is_translated_and_reasoning_round_trips(
    sidecar: RunningSidecar, upstream: FakeUpstream, anthropic_client: anthropic.Anthropic
) -> None:
    upstream.push(
        Reply.sse(with_encrypted_reasoning(REASONING_STREAM), split=7), Reply.sse(fixture_bytes(TEXT_STREAM), split=7)
    )
    tools: Any = [
        {"name": "search", "description": "Search the web", "input_schema": SEARCH},
        {"name": "weather", "description": "Current weather", "input_schema": WEATHER},
    ]
    ask: Any = [{"role": "user", "content": QUESTION}]
    thinking: Any = {"type": "enabled", "budget_tokens": 4096}
    with anthropic_client.messages.stream(
        model=MODEL, max_tokens=2048, messages=ask, tools=tools, thinking=thinking
    ) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    reasoning, call = first.content
    assert reasoning.type == "thinking" and call.type == "tool_use"
    item = next(e for e in recorded(REASONING_STREAM) if e["type"] == "response.output_item.done")["item"]
    assert reasoning.thinking == item["summary"][0]["text"]
    assert json.loads(reasoning.signature) == {**item, "encrypted_content": ENCRYPTED}  # the item, to replay
    (expected,) = recorded_calls(REASONING_STREAM)
    assert (call.id, call.name, call.input) == (
        f"{expected['call_id']}|{expected['id']}",
        expected["name"],
        json.loads(expected["arguments"]),
    )
    assert (first.usage.input_tokens, first.usage.output_tokens) == (78, 221)

    result: Any = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "7:10pm"}]}
    history: Any = [*ask, {"role": "assistant", "content": [b.model_dump() for b in first.content]}, result]
    with anthropic_client.messages.stream(
        model=MODEL, max_tokens=2048, messages=history, tools=tools, thinking=thinking
    ) as stream:
        second = stream.get_final_message()
    assert second.content[0].type == "text" and second.stop_reason == "end_turn"

    first_body, second_body = upstream_bodies(upstream)
    assert first_body["reasoning"] == {"effort": "low", "summary": "auto"}  # a 4096-token budget is pi's "low"
    assert first_body["include"] == ["reasoning.encrypted_content"] and first_body["store"] is False
    # The next turn replays the encrypted reasoning, then the call it led to, then its output.
    assert second_body["input"][1:] == [
        {**item, "encrypted_content": ENCRYPTED},
        {
            "type": "function_call",
            "call_id": expected["call_id"],
            "name": expected["name"],
            "arguments": json.dumps(json.loads(expected["arguments"]), separators=(",", ":")),
            "id": expected["id"],
        },
        {"type": "function_call_output", "call_id": expected["call_id"], "output": "7:10pm"},
    ]
    rows = ledger(sidecar, 2)
    assert [row["finish_reason"] for row in rows] == ["tool-calls", "stop"]
    assert rows[0]["native_tokens_reasoning"] == 192 and rows[0]["upstream_model"] == "o4-mini-2025-04-16"
    assert all(row["api"] == "openai-responses" and row["model"] == MODEL for row in rows)
