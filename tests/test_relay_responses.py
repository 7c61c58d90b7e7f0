"""Same family, no translation, for OpenAI Responses: a ``POST /v1/responses`` for a model on ``openai-responses`` is
relayed byte for byte (``sidecar.relay``), through the running sidecar against recorded upstream bytes."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest

from sidecar import relay
from sidecar.ingress import FORMATS
from sidecar.ingress.base import IngressRequest
from sidecar.models import ModelSpec
from sidecar.providers.openai_responses import ResponsesEventParser
from tests.canaries import leaks
from tests.fakeupstream import FIXTURES, FakeUpstream, Reply, fixture_bytes
from tests.sidecar_server import OPENAI_CANARY, TOKEN, RunningSidecar, generation_row

DIR = "openai-responses"
STREAMS = sorted(p.name for p in (FIXTURES / DIR).glob("*.sse"))
TEXT = f"{DIR}/text-basic.sse"
HEADERS = {"authorization": f"Bearer {TOKEN}", "openai-organization": "org-relay", "x-stainless-lang": "python"}
FAILED = {  # the recorded stream's error -> the status the ledger records
    "error-rate-limit-then-response-failed.sse": 429,
    "error-insufficient-quota-then-response-failed.sse": 429,
}


def responses_body(stream: bool = True, **extra: Any) -> dict[str, Any]:
    """Fields a translation refuses or drops, which OpenAI serves: a hosted tool, structured output, references to
    what OpenAI stored, an unknown key."""
    return {
        "model": "openai/gpt-5",
        "stream": stream,
        "instructions": "be brief",
        "input": [
            {"type": "item_reference", "id": "msg_stored_by_openai"},
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        ],
        "previous_response_id": "resp_stored_by_openai",
        "tools": [{"type": "web_search"}],
        "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}}},
        "include": ["reasoning.encrypted_content"],
        "x_future_field": {"kept": True},
        **extra,
    }


def post(sidecar: RunningSidecar, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{sidecar.url}/v1/responses", json=body, headers=HEADERS, timeout=10)


def ledger_row(sidecar: RunningSidecar, response: httpx.Response) -> dict[str, Any]:
    return generation_row(sidecar.url, response.headers["x-generation-id"])


def events(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in data.split(b"\n") if line.startswith(b"data: ")]


def usage_of(response: dict[str, Any]) -> dict[str, int]:
    """The ledger's native token fields for a recorded ``Response``, as OpenAI counts them."""
    usage = response["usage"]
    return {
        "native_tokens_prompt": usage["input_tokens"],
        "native_tokens_completion": usage["output_tokens"],
        "native_tokens_cached": usage["input_tokens_details"]["cached_tokens"],
        "native_tokens_reasoning": usage["output_tokens_details"]["reasoning_tokens"],
    }


def assert_clean_upstream_request(upstream: FakeUpstream, body: dict[str, Any]) -> None:
    (received,) = upstream.received
    assert received.path == "/v1/responses"
    assert received.json() == {**body, "model": "gpt-5"}  # only the model id is rewritten
    assert received.headers["authorization"] == f"Bearer {OPENAI_CANARY}"
    assert received.headers["openai-organization"] == "org-relay" and received.headers["x-stainless-lang"] == "python"
    assert TOKEN not in repr(received.headers) and TOKEN.encode() not in received.body


# ----- streams: the client gets the upstream's bytes ------------------------------------------------------------


@pytest.mark.parametrize("name", STREAMS)
def test_stream_is_relayed_byte_for_byte(sidecar: RunningSidecar, upstream: FakeUpstream, name: str) -> None:
    recorded = fixture_bytes(f"{DIR}/{name}")
    upstream.push(Reply.sse(recorded, split=7))
    body = responses_body()
    response = post(sidecar, body)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.content == recorded  # nothing added, nothing re-encoded, also after an upstream error
    assert upstream.received[0].headers["accept"] == "text/event-stream"
    assert_clean_upstream_request(upstream, body)


@pytest.mark.parametrize(
    "name", ["text-basic.sse", "reasoning-summary-then-function-call.sse", "web-search-cached-and-reasoning-usage.sse"]
)
def test_ledger_row_has_the_stream_usage(sidecar: RunningSidecar, upstream: FakeUpstream, name: str) -> None:
    recorded = fixture_bytes(f"{DIR}/{name}")
    upstream.push(Reply.sse(recorded, split=7))
    response = post(sidecar, responses_body())
    row = ledger_row(sidecar, response)
    completed = events(recorded)[-1]["response"]
    expected = usage_of(completed)
    assert {name: row[name] for name in expected} == expected
    assert row["upstream_response_id"] == completed["id"] and row["upstream_model"] == completed["model"]
    assert row["api"] == "openai-responses" and row["model"] == "openai/gpt-5" and row["streamed"] is True
    assert row["finish_reason"] == ("tool-calls" if b'"function_call"' in recorded else "stop")
    assert row["error_status"] is None and row["total_cost"] > 0
    assert row["latency"] > 0  # the time to the first token, from the first content event


@pytest.mark.parametrize("name", sorted(FAILED))
def test_upstream_failure_is_relayed_and_recorded(sidecar: RunningSidecar, upstream: FakeUpstream, name: str) -> None:
    recorded = fixture_bytes(f"{DIR}/{name}")
    upstream.push(Reply.sse(recorded, split=7))
    response = post(sidecar, responses_body())
    assert response.content == recorded  # the error event and response.failed, and nothing of the sidecar's
    row = ledger_row(sidecar, response)
    assert row["error_status"] == FAILED[name] and row["finish_reason"] == "error"
    assert row["upstream_response_id"] == events(recorded)[0]["response"]["id"]


# ----- failures the upstream did not send -----------------------------------------------------------------------


def cut_at_event(data: bytes, size: int) -> bytes:
    """``data[:size]`` shortened to its last complete event."""
    head = data[:size]
    return head[: head.rfind(b"\n\n") + 2]


def test_dropped_upstream_ends_with_response_failed(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    recorded = fixture_bytes(TEXT)
    upstream.push(Reply.sse(recorded, split=7, drop_after=400))  # 2800 bytes: inside an event
    response = post(sidecar, responses_body())

    relayed = cut_at_event(recorded, 2800)
    assert len(relayed) > 2000 and response.content.startswith(relayed)
    tail = response.content[len(relayed) :]
    assert tail.startswith(b"event: response.failed\ndata: ") and tail.count(b"\n\n") == 1
    (failed,) = events(tail)
    last = events(relayed)[-1]
    created = events(recorded)[0]["response"]
    # The SDK stream helpers check the response id and the sequence: the upstream's own id, the next number.
    assert failed["sequence_number"] == last["sequence_number"] + 1
    assert failed["response"]["id"] == created["id"] and failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["code"] == "server_error"
    assert "connection" in failed["response"]["error"]["message"]
    row = ledger_row(sidecar, response)
    assert row["error_status"] == 502 and row["upstream_response_id"] == created["id"]


def test_unreadable_event_is_not_relayed(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    recorded = fixture_bytes(TEXT)
    first = recorded.index(b"\n\n") + 2
    upstream.push(Reply.sse(recorded[:first] + b"event: response.in_progress\ndata: {not json\n\n" + recorded[first:]))
    response = post(sidecar, responses_body())
    assert response.content.startswith(recorded[:first] + b"event: response.failed\ndata: ")
    assert b"not json" not in response.content
    assert "unparseable" in events(response.content)[-1]["response"]["error"]["message"]


def test_refusal_before_the_stream_keeps_status_and_body(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    recorded = fixture_bytes(f"{DIR}/errors/400-unsupported-parameter-temperature.json")
    upstream.push(Reply.json(400, recorded))
    response = post(sidecar, responses_body(temperature=0.5))
    assert response.status_code == 400
    assert response.json() == orjson.loads(recorded)  # OpenAI's own error, naming the parameter
    assert ledger_row(sidecar, response)["error_status"] == 400


def test_error_body_echoing_the_key_is_redacted(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    recorded = orjson.loads(fixture_bytes(f"{DIR}/errors/400-unsupported-parameter-temperature.json"))
    recorded["error"]["message"] = f"Incorrect API key provided: {OPENAI_CANARY}."
    upstream.push(Reply.json(401, recorded))
    response = post(sidecar, responses_body())
    assert response.status_code == 401 and not leaks(response.text, OPENAI_CANARY)


# ----- non-streaming requests -----------------------------------------------------------------------------------


def test_json_reply_is_returned_unchanged(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    completed = events(fixture_bytes(f"{DIR}/reasoning-summary-then-function-call.sse"))[-1]["response"]
    reply = orjson.dumps(completed, option=orjson.OPT_INDENT_2)  # whitespace too is the upstream's
    upstream.push(Reply.json(200, reply))
    body = responses_body(stream=False)
    response = post(sidecar, body)
    assert response.status_code == 200 and response.content == reply
    assert response.headers["content-type"].startswith("application/json")
    assert upstream.received[0].headers["accept"] == "application/json"
    assert_clean_upstream_request(upstream, body)
    row = ledger_row(sidecar, response)
    expected = usage_of(completed)
    assert {name: row[name] for name in expected} == expected
    assert row["finish_reason"] == "tool-calls" and row["streamed"] is False
    assert row["upstream_response_id"] == completed["id"]


# ----- the unmodified SDK sees what only a relay gives ----------------------------------------------------------


def test_openai_sdk_stream_sees_hosted_tool_items_and_citations(
    sidecar: RunningSidecar, upstream: FakeUpstream
) -> None:
    recorded = fixture_bytes(f"{DIR}/web-search-cached-and-reasoning-usage.sse")
    upstream.push(Reply.sse(recorded, split=7))
    with (
        openai.OpenAI(base_url=f"{sidecar.url}/v1", api_key=TOKEN, max_retries=0) as sdk,
        sdk.responses.stream(
            model="gpt-5",  # a bare id on /v1/responses finds its provider
            input=[{"type": "item_reference", "id": "msg_stored_by_openai"}, {"role": "user", "content": "1 cm?"}],
            tools=[{"type": "web_search"}],
            reasoning={"effort": "low"},
        ) as stream,
    ):
        final = stream.get_final_response()
    completed = events(recorded)[-1]["response"]
    assert [item.type for item in final.output] == [item["type"] for item in completed["output"]]
    assert final.output_text == completed["output"][-1]["content"][0]["text"]
    message = final.output[-1]
    assert message.type == "message" and message.content[0].type == "output_text"
    assert [a.type for a in message.content[0].annotations] == ["url_citation", "url_citation"]
    assert final.usage is not None and final.usage.input_tokens_details.cached_tokens == 8311
    sent = upstream.received[0].json()
    assert sent["tools"] == [{"type": "web_search"}] and sent["input"][0]["type"] == "item_reference"
    ((generation_id, _),) = sidecar.wait_for_outcomes(1)
    found = httpx.get(f"{sidecar.url}/v1/generation", params={"id": generation_id}, headers=HEADERS)
    assert found.json()["data"]["native_tokens_cached"] == 8311


# ----- what is relayed, and what a translation still refuses ----------------------------------------------------


def test_a_translated_request_still_refuses_what_only_openai_has(
    sidecar: RunningSidecar, upstream: FakeUpstream
) -> None:
    """The references and the hosted tool a relay passes on are refused, naming the field, for another model."""
    for model in ("anthropic/claude-sonnet-4-5", "openai/gpt-4o"):
        response = post(sidecar, responses_body(model=model))
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and "store: false" in error["message"]
    response = post(sidecar, {"model": "anthropic/claude-sonnet-4-5", "input": "hi", "tools": [{"type": "web_search"}]})
    assert response.status_code == 400 and '`tools[0].type` "web_search"' in response.json()["error"]["message"]
    assert upstream.received == []


def test_only_the_same_family_is_relayed() -> None:
    gpt5 = ModelSpec("openai", "gpt-5", "openai-responses", "http://x")
    gpt4o = ModelSpec("openai", "gpt-4o", "openai-completions", "http://x")
    request = IngressRequest(model_id="m", context={"messages": []}, options={}, stream=True, session_id="s")
    assert relay.plan(FORMATS["openai-responses"], request, gpt5) is not None
    assert relay.plan(FORMATS["openai-responses"], request, gpt4o) is None
    assert relay.plan(FORMATS["openai-chat"], request, gpt5) is None
    assert relay.plan(FORMATS["anthropic-messages"], request, gpt5) is None


def test_framer_relays_whole_responses_events_at_any_split() -> None:
    data = fixture_bytes(f"{DIR}/reasoning-summary-then-function-call.sse")
    for size in (1, 3, 64, len(data)):
        framer = relay._Framer(ResponsesEventParser("openai"))
        out = b""
        for i in range(0, len(data), size):
            relayed, _, failure = framer.feed(data[i : i + size])
            assert failure is None and (not relayed or relayed.endswith(b"\n\n"))
            out += relayed
        assert out == data
