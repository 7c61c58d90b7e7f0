"""The OpenAI Responses adapter against recorded streams and error bodies, over real sockets (FakeUpstream), and the pi
route through it in the running sidecar."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from httpx_sse import ServerSentEvent

from sidecar.errors import UpstreamProtocolError, UpstreamStatusError, UpstreamStreamError
from sidecar.models import ModelSpec, Pricing
from sidecar.providers import openai_responses
from sidecar.providers.base import Delta, Finish, ResponseInfo, ThinkingDelta, UpstreamCall, UsageUpdate
from sidecar.stream import MessageAssembler, SilentEncoder
from tests.conftest import pi_body, read_events
from tests.fakeupstream import FIXTURES, FakeUpstream, Reply, fixture_bytes
from tests.providers.adapters import adapter_deltas
from tests.sidecar_server import OPENAI_CANARY, TOKEN, RunningSidecar

CANARY = "sk-canary-0123456789abcdef"
DIR = "openai-responses"
HELLO: dict[str, Any] = {"messages": [{"role": "user", "content": "hi", "timestamp": 0}]}
STREAMS = sorted(p.name for p in (FIXTURES / DIR).glob("*.sse"))
ENCRYPTED = "gAAAAABoWaTKencrypted-reasoning-blob"


@pytest.fixture
def up(upstream: FakeUpstream) -> FakeUpstream:
    return upstream  # the shared fixture from tests/conftest.py, under a short name


def model(up_url: str = "http://x", **kw: Any) -> ModelSpec:
    fields: dict[str, Any] = {"reasoning": True, "input": ("text", "image"), "pricing": Pricing(1.25, 10, 0.125)}
    return ModelSpec("openai", "gpt-5", "openai-responses", up_url + "/v1", **{**fields, **kw})


def make_call(
    up: FakeUpstream,
    context: dict[str, Any] | None = None,
    *,
    options: dict[str, Any] | None = None,
    api_key: str | None = CANARY,
    max_retries: int = 0,
    headers: dict[str, str] | None = None,
    model_headers: dict[str, str] | None = None,
    **model_kw: Any,
) -> UpstreamCall:
    return UpstreamCall(
        model=model(up.url, headers=model_headers or {}, **model_kw),
        context=context or HELLO,  # type: ignore[arg-type]
        options=options or {},
        api_key=api_key,
        session_id="session-1",
        headers=headers or {},
        max_retries=max_retries,
    )


async def collect(call: UpstreamCall) -> tuple[list[Delta], Exception | None]:
    return await adapter_deltas(openai_responses.stream, call)


def recorded(data: bytes) -> list[dict[str, Any]]:
    """The recorded events' payloads, read independently of the adapter (one ``data:`` line per event)."""
    return [orjson.loads(line[6:]) for line in data.split(b"\n") if line.startswith(b"data: ")]


def assemble(deltas: list[Delta]) -> dict[str, Any]:
    """The pi message the deltas make (the assembler every route uses)."""
    assembler = MessageAssembler(model(), encoder=SilentEncoder())
    assembler.start()
    for delta in deltas:
        assembler.feed(delta)
    assembler.done()
    return dict(assembler.message)


# ----- every recorded stream, split at odd sizes --------------------------------------------------------------------


def expected_message(data: bytes) -> dict[str, Any]:
    """What the recording says the turn was, from its ``*.done`` events: the text, the reasoning items, the calls."""
    content: list[dict[str, Any]] = []
    for event in recorded(data):
        if event["type"] != "response.output_item.done":
            continue
        item = event["item"]
        if item["type"] == "message":
            content.append({"type": "text", "text": "".join(p["text"] for p in item["content"])})
        elif item["type"] == "reasoning" and item["summary"]:
            text = "\n\n".join(p["text"] for p in item["summary"])
            content.append({"type": "thinking", "thinking": text, "thinkingSignature": orjson.dumps(item).decode()})
        elif item["type"] == "function_call":
            content.append(
                {
                    "type": "toolCall",
                    "id": f"{item['call_id']}|{item['id']}",
                    "name": item["name"],
                    "arguments": orjson.loads(item["arguments"]),
                }
            )
    return {"content": content}


ERRORS = {
    "error-rate-limit-then-response-failed.sse": (429, "rate_limit_exceeded", "Request too large for gpt-4o"),
    "error-insufficient-quota-then-response-failed.sse": (429, "insufficient_quota", "You exceeded your current quota"),
}


def test_every_recorded_stream_is_replayed() -> None:
    assert STREAMS == [
        "error-insufficient-quota-then-response-failed.sse",
        "error-rate-limit-then-response-failed.sse",
        "function-calls-parallel.sse",
        "reasoning-summary-then-function-call.sse",
        "text-basic.sse",
        "web-search-cached-and-reasoning-usage.sse",
    ]


@pytest.mark.parametrize("split", [None, 1, 2, 7, 64])
@pytest.mark.parametrize("name", [n for n in STREAMS if n not in ERRORS])
async def test_recorded_stream(up: FakeUpstream, name: str, split: int | None) -> None:
    data = fixture_bytes(f"{DIR}/{name}")
    up.push(Reply.sse(data, split=split))
    deltas, error = await collect(make_call(up))
    assert error is None
    events = recorded(data)
    created, completed = events[0]["response"], events[-1]["response"]
    assert deltas[0] == ResponseInfo(created["id"], created["model"])
    usage = completed["usage"]
    cached = usage["input_tokens_details"]["cached_tokens"]
    assert deltas[-2:] == [
        UsageUpdate(
            input=usage["input_tokens"] - cached,  # pi's input leaves out the cache reads
            output=usage["output_tokens"],
            cache_read=cached,
            reasoning=usage["output_tokens_details"]["reasoning_tokens"],
        ),
        Finish("toolUse" if b'"function_call"' in data else "stop"),
    ]
    message = assemble(deltas)
    assert message["content"] == expected_message(data)["content"]
    assert message["stopReason"] == deltas[-1].reason  # type: ignore[union-attr]


async def test_figures_of_the_cached_reasoning_stream(up: FakeUpstream) -> None:
    """The hosted web search ran upstream (no block for it); its usage is pi's: 9049 new + 8311 cached input."""
    up.push(Reply.sse(fixture_bytes(f"{DIR}/web-search-cached-and-reasoning-usage.sse"), split=7))
    deltas, _ = await collect(make_call(up))
    message = assemble(deltas)
    assert [block["type"] for block in message["content"]] == ["text"]  # empty reasoning items make no block
    usage = message["usage"]
    assert (usage["input"], usage["cacheRead"], usage["output"], usage["reasoningTokens"]) == (9049, 8311, 1321, 1152)
    assert usage["cost"]["cacheRead"] == pytest.approx(8311 * 0.125 / 1e6)


@pytest.mark.parametrize("name", sorted(ERRORS))
@pytest.mark.parametrize("split", [None, 3])
async def test_error_event_then_response_failed(up: FakeUpstream, name: str, split: int | None) -> None:
    up.push(Reply.sse(fixture_bytes(f"{DIR}/{name}"), split=split))
    deltas, error = await collect(make_call(up))
    status, code, text = ERRORS[name]
    assert isinstance(error, UpstreamStreamError)
    assert error.status == status and code in str(error) and text in str(error)
    assert [type(d) for d in deltas] == [ResponseInfo]


async def test_error_event_without_response_failed_is_raised_at_the_end(up: FakeUpstream) -> None:
    data = fixture_bytes(f"{DIR}/error-rate-limit-then-response-failed.sse")
    up.push(Reply.sse(data[: data.index(b"event: response.failed")]))
    _, error = await collect(make_call(up))
    assert isinstance(error, UpstreamStreamError) and error.status == 429


async def test_stream_cut_before_completed_is_a_protocol_error(up: FakeUpstream) -> None:
    data = fixture_bytes(f"{DIR}/text-basic.sse")
    up.push(Reply.sse(data[: data.index(b"event: response.completed")], split=64))
    deltas, error = await collect(make_call(up))
    assert isinstance(error, UpstreamProtocolError) and error.status == 502
    assert "response.completed" in str(error)
    assert assemble(deltas)["content"][0]["text"].startswith("I am OpenAI's language model")


def incomplete(reason: str) -> bytes:
    data = fixture_bytes(f"{DIR}/text-basic.sse")
    return (
        data.replace(b'"type":"response.completed"', b'"type":"response.incomplete"')
        .replace(b'"status":"completed","background"', b'"status":"incomplete","background"')
        .replace(
            b'"incomplete_details":null,"instructions":null,"max_output_tokens":2048,"model":"gpt-4-0613","output":[{',
            (
                b'"incomplete_details":{"reason":"'
                + reason.encode()
                + b'"},"instructions":null,"max_output_tokens":2048,'
                b'"model":"gpt-4-0613","output":[{'
            ),
        )
    )


async def test_incomplete_is_length_and_a_content_filter_is_an_error(up: FakeUpstream) -> None:
    up.push(Reply.sse(incomplete("max_output_tokens")), Reply.sse(incomplete("content_filter")))
    deltas, error = await collect(make_call(up))
    assert error is None and deltas[-1] == Finish("length")
    _, error = await collect(make_call(up))
    assert isinstance(error, UpstreamStreamError) and error.status == 400 and "content filter" in str(error)


async def test_whole_arguments_without_deltas(up: FakeUpstream) -> None:
    """A server that sends a call's arguments only in its done item (no argument deltas) still gives them."""
    data = fixture_bytes(f"{DIR}/function-calls-parallel.sse")
    kept = b"\n\n".join(e for e in data.split(b"\n\n") if b"function_call_arguments.delta" not in e)
    up.push(Reply.sse(kept))
    deltas, _ = await collect(make_call(up))
    assert assemble(deltas)["content"] == expected_message(data)["content"]


async def test_error_message_is_redacted(up: FakeUpstream) -> None:
    data = fixture_bytes(f"{DIR}/error-rate-limit-then-response-failed.sse").replace(
        b"Request too large", b"Request with key " + CANARY.encode() + b" too large"
    )
    up.push(Reply.sse(data))
    _, error = await collect(make_call(up))
    assert isinstance(error, UpstreamStreamError) and CANARY not in str(error) and "too large" in str(error)


async def test_refusal_before_the_stream(up: FakeUpstream) -> None:
    up.push(Reply.json(400, fixture_bytes(f"{DIR}/errors/400-unsupported-parameter-temperature.json")))
    _, error = await collect(make_call(up, options={"temperature": 0.5}))
    assert isinstance(error, UpstreamStatusError) and error.status == 400
    assert "Unsupported parameter: 'temperature'" in str(error)
    assert up.received[0].json()["temperature"] == 0.5  # the client's choice is sent; OpenAI's answer names it


# ----- the request ------------------------------------------------------------------------------------------------

IMAGE = {"type": "image", "data": "aGVsbG8=", "mimeType": "image/png", "detail": "low"}
SCREENSHOT = {"type": "image", "data": "d29ybGQ=", "mimeType": "image/jpeg"}
LOOKUP = {
    "name": "lookup",
    "description": "Look something up",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
}
REASONING_ITEM = {
    "id": "rs_68",
    "type": "reasoning",
    "summary": [{"type": "summary_text", "text": "Look it up."}],
    "encrypted_content": ENCRYPTED,
}


def assistant(*content: dict[str, Any], stop: str = "toolUse") -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": list(content),
        "api": "openai-responses",
        "provider": "openai",
        "model": "gpt-5",
        "usage": {},
        "stopReason": stop,
        "timestamp": 2,
    }


def tool_result(call_id: str, *content: dict[str, Any]) -> dict[str, Any]:
    return {
        "role": "toolResult",
        "toolCallId": call_id,
        "toolName": "lookup",
        "content": list(content),
        "isError": False,
        "timestamp": 3,
    }


FULL_CONTEXT: dict[str, Any] = {
    "systemPrompt": ["You are terse.", "Answer in English."],
    "tools": [LOOKUP, {**LOOKUP, "name": "strict_lookup", "strict": True}],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, IMAGE], "timestamp": 1},
        assistant(
            {"type": "thinking", "thinking": "Look it up.", "thinkingSignature": orjson.dumps(REASONING_ITEM).decode()},
            {"type": "thinking", "thinking": "Anthropic's.", "thinkingSignature": "EqQBCgIYAhIM1gbcDa9G"},
            {"type": "thinking", "thinking": "Unsigned."},
            {"type": "text", "text": "Checking."},
            {"type": "toolCall", "id": "call_1|fc_1", "name": "lookup", "arguments": {"q": "hello"}},
            {"type": "toolCall", "id": "toolu_01A.b", "name": "lookup", "arguments": {"q": "screen"}},
        ),
        tool_result("call_1|fc_1", {"type": "text", "text": "a greeting"}),
        tool_result("toolu_01A.b", SCREENSHOT),
        {"role": "developer", "content": "Be careful.", "timestamp": 4},
        {"role": "user", "content": "Thanks.", "timestamp": 5},
    ],
}


async def sent(up: FakeUpstream, context: dict[str, Any] | None = None, **kw: Any) -> tuple[dict[str, Any], Any]:
    up.push(Reply.sse(fixture_bytes(f"{DIR}/text-basic.sse")))
    _, error = await collect(make_call(up, context, **kw))
    assert error is None
    received = up.received[-1]
    assert received.path == "/v1/responses"
    return received.json(), received.headers


async def test_request_translation(up: FakeUpstream) -> None:
    options = {"toolChoice": {"type": "tool", "name": "lookup"}, "maxTokens": 256, "reasoning": "low"}
    body, headers = await sent(up, FULL_CONTEXT, options=options)
    assert headers["authorization"] == f"Bearer {CANARY}"
    assert headers["accept"] == "text/event-stream" and headers["content-type"] == "application/json"
    assert body == {
        "model": "gpt-5",
        "instructions": "You are terse.\n\nAnswer in English.",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,aGVsbG8=", "detail": "low"},
                ],
            },
            REASONING_ITEM,  # replayed whole; the other provider's and the unsigned thinking cannot be
            {"role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "lookup",
                "arguments": '{"q":"hello"}',
                "id": "fc_1",
            },
            {"type": "function_call", "call_id": "toolu_01A_b", "name": "lookup", "arguments": '{"q":"screen"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "a greeting"},
            {"type": "function_call_output", "call_id": "toolu_01A_b", "output": "(see attached image)"},
            {
                "role": "user",
                "content": [{"type": "input_image", "image_url": "data:image/jpeg;base64,d29ybGQ=", "detail": "auto"}],
            },
            {"role": "developer", "content": [{"type": "input_text", "text": "Be careful."}]},
            {"role": "user", "content": [{"type": "input_text", "text": "Thanks."}]},
        ],
        "stream": True,
        "store": False,
        "max_output_tokens": 256,
        "tools": [
            {"type": "function", "strict": False, **LOOKUP},  # Responses defaults strict to true: sent explicitly
            {"type": "function", "strict": True, **LOOKUP, "name": "strict_lookup"},
        ],
        "tool_choice": {"type": "function", "name": "lookup"},
        "include": ["reasoning.encrypted_content"],
        "reasoning": {"effort": "low", "summary": "auto"},
        "prompt_cache_key": "session-1",
    }


async def test_minimal_body_of_a_model_without_reasoning(up: FakeUpstream) -> None:
    body, _ = await sent(up, options={"toolChoice": "required", "reasoning": "high"}, reasoning=False)
    # No tools, so no tool_choice; no reasoning on a model without it; nothing is sent as null.
    assert body == {
        "model": "gpt-5",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
        "stream": True,
        "store": False,
        "prompt_cache_key": "session-1",
    }


@pytest.mark.parametrize(
    ("options", "compat", "reasoning"),
    [
        ({"reasoning": "xhigh"}, {}, {"effort": "high", "summary": "auto"}),
        ({"reasoning": "xhigh"}, {"supports_xhigh": True}, {"effort": "xhigh", "summary": "auto"}),
        ({"reasoning": "minimal"}, {}, {"effort": "minimal", "summary": "auto"}),
        ({"reasoning": "high", "disableReasoning": True}, {}, None),
        ({}, {}, None),
    ],
)
async def test_reasoning_options(
    up: FakeUpstream, options: dict[str, Any], compat: dict[str, Any], reasoning: dict[str, str] | None
) -> None:
    body, _ = await sent(up, options=options, compat=compat)
    assert body.get("reasoning") == reasoning
    assert body["include"] == ["reasoning.encrypted_content"]  # a reasoning model's items can always be replayed


async def test_sampling_cache_and_tier_options(up: FakeUpstream) -> None:
    options = {"temperature": 0.2, "topP": 0.9, "serviceTier": "flex", "promptCacheKey": "conv-7"}
    body, _ = await sent(up, options=options)
    assert (body["temperature"], body["top_p"], body["service_tier"], body["prompt_cache_key"]) == (
        0.2,
        0.9,
        "flex",
        "conv-7",
    )
    body, _ = await sent(up, options={"cacheRetention": "none"})
    assert "prompt_cache_key" not in body


async def test_injected_key_wins_and_azure_uses_api_key(up: FakeUpstream) -> None:
    caller = {"authorization": "Bearer caller", "openai-beta": "responses=v1"}
    _, headers = await sent(up, headers=caller, model_headers={"Authorization": "Bearer model", "OpenAI-Beta": "x"})
    # A pass-through or model header never replaces the injected key; the caller's headers beat the model's.
    assert headers["authorization"] == f"Bearer {CANARY}" and headers["openai-beta"] == "responses=v1"
    _, headers = await sent(up, compat={"auth_header": "api-key"})
    assert headers["api-key"] == CANARY and "authorization" not in headers
    _, headers = await sent(up, api_key=None)  # a local server without a key gets no auth header at all
    assert "authorization" not in headers and "api-key" not in headers


@pytest.mark.parametrize(
    ("pi_id", "wire"),
    [
        ("call_abc|fc_123", ("call_abc", "fc_123")),
        ("call_abc|123", ("call_abc", "fc_123")),  # OpenAI requires function_call item ids to start with "fc"
        ("toolu_01|", ("toolu_01", None)),
        ("call.with:odd/chars___", ("call_with_odd_chars", None)),
        ("x" * 70 + "|fc_" + "y" * 70, ("x" * 64, "fc_" + "y" * 61)),
    ],
)
def test_tool_ids_split_and_clean(pi_id: str, wire: tuple[str, str | None]) -> None:
    assert openai_responses.split_tool_id(pi_id) == wire


async def test_reasoning_round_trip(up: FakeUpstream) -> None:
    """A reasoning item with encrypted content comes back, on the next turn, as the very item OpenAI sent."""
    data = fixture_bytes(f"{DIR}/reasoning-summary-then-function-call.sse")
    done = next(e for e in recorded(data) if e["type"] == "response.output_item.done")
    signed = {**done["item"], "encrypted_content": ENCRYPTED}
    data = data.replace(orjson.dumps(done["item"]), orjson.dumps(signed))
    up.push(Reply.sse(data, split=7))
    deltas, _ = await collect(make_call(up))
    turn = assemble(deltas)
    thinking, call = turn["content"]
    assert orjson.loads(thinking["thinkingSignature"]) == signed
    result = tool_result(call["id"], {"type": "text", "text": "7pm"})
    context = {"messages": [HELLO["messages"][0], turn, result]}
    body, _ = await sent(up, context)
    assert body["input"][1] == signed
    assert body["input"][2]["id"] == call["id"].split("|")[1]  # the call keeps the item id its reasoning pairs with
    assert body["input"][3] == {"type": "function_call_output", "call_id": call["id"].split("|")[0], "output": "7pm"}


# ----- non-streaming replies (the relay's ledger) -----------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in STREAMS if n not in ERRORS])
def test_parse_response_reads_the_completed_response(name: str) -> None:
    """The ``Response`` object of ``response.completed`` is what a non-streaming request gets."""
    data = fixture_bytes(f"{DIR}/{name}")
    response = recorded(data)[-1]["response"]
    deltas = openai_responses.parse_response(response, "openai")
    streamed = assemble(deltas)
    assert streamed["content"] == expected_message(data)["content"]
    assert deltas[0] == ResponseInfo(response["id"], response["model"])
    assert isinstance(deltas[-1], Finish) and isinstance(deltas[-2], UsageUpdate)
    assert deltas[-2].output == response["usage"]["output_tokens"]


def test_parse_response_raises_for_errors() -> None:
    body = orjson.loads(fixture_bytes(f"{DIR}/errors/400-unsupported-parameter-temperature.json"))
    with pytest.raises(UpstreamStreamError) as caught:
        openai_responses.parse_response(body, "openai")
    assert caught.value.status == 400 and "temperature" in str(caught.value)
    failed = recorded(fixture_bytes(f"{DIR}/error-insufficient-quota-then-response-failed.sse"))[-1]["response"]
    with pytest.raises(UpstreamStreamError) as caught:
        openai_responses.parse_response(failed, "openai")
    assert caught.value.status == 429
    with pytest.raises(UpstreamProtocolError):
        openai_responses.parse_response([], "openai")


# ----- the pi route through the running sidecar -------------------------------------------------------------------


def test_pi_route_streams_a_responses_model(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    data = fixture_bytes(f"{DIR}/reasoning-summary-then-function-call.sse")
    upstream.push(Reply.sse(data, split=7))
    body = pi_body("openai/gpt-5", "Tigers tonight, and do I need a coat?", reasoning="medium")
    response = httpx.post(
        f"{sidecar.url}/v1/pi/stream", json=body, headers={"authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert response.status_code == 200
    events = read_events(response)
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["start", "thinking_start", "thinking_delta"] and kinds[-2:] == ["toolcall_end", "done"]
    message: Any = events[-1]["message"]
    assert message["content"] == expected_message(data)["content"]
    assert (message["api"], message["stopReason"], message["responseId"]) == (
        "openai-responses",
        "toolUse",
        recorded(data)[0]["response"]["id"],
    )
    assert (message["usage"]["input"], message["usage"]["output"], message["usage"]["reasoningTokens"]) == (
        78,
        221,
        192,
    )
    (received,) = upstream.received
    assert received.path == "/v1/responses"
    assert received.headers["authorization"] == f"Bearer {OPENAI_CANARY}"
    assert TOKEN not in repr(received.headers) and TOKEN.encode() not in received.body
    sent_body = received.json()
    assert sent_body["model"] == "gpt-5" and sent_body["reasoning"] == {"effort": "medium", "summary": "auto"}
    assert sent_body["input"] == [
        {"role": "user", "content": [{"type": "input_text", "text": "Tigers tonight, and do I need a coat?"}]}
    ]


def test_summary_parts_are_paragraphs_of_one_thinking_block() -> None:
    """pi-ai joins a reasoning item's summary parts with a blank line; the deltas stream that join."""
    parser = openai_responses.ResponsesEventParser("openai")
    item = {"id": "rs_1", "type": "reasoning", "summary": []}
    events: list[dict[str, Any]] = [
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.reasoning_summary_part.added", "item_id": "rs_1", "summary_index": 0},
        {"type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "summary_index": 0, "delta": "One."},
        {"type": "response.reasoning_summary_part.added", "item_id": "rs_1", "summary_index": 1},
        {"type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "summary_index": 1, "delta": "Two."},
    ]
    deltas = [d for e in events for d in parser.feed(ServerSentEvent(e["type"], orjson.dumps(e).decode()))]
    assert "".join(d.text for d in deltas if isinstance(d, ThinkingDelta)) == "One.\n\nTwo."


# ----- service tier ------------------------------------------------------------------------------------------------

TIER_COSTS = {"flex": 0.5, "priority": 2.0}  # the openai provider's compat.service_tier_cost in the catalog


@pytest.mark.parametrize(("tier", "multiplier"), [("default", 1.0), ("auto", 1.0), ("flex", 0.5), ("priority", 2.0)])
async def test_the_served_service_tier_scales_the_cost(up: FakeUpstream, tier: str, multiplier: float) -> None:
    """pi-catalog prices OpenAI's flex tier at half and priority at double; the tier is the one the response says it
    was served on (a flex request may be served on default)."""
    data = fixture_bytes(f"{DIR}/text-basic.sse")
    completed = next(e for e in recorded(data) if e["type"] == "response.completed")
    served = data.replace(b'"service_tier":"default"', f'"service_tier":"{tier}"'.encode())
    assert served.count(f'"service_tier":"{tier}"'.encode()) >= 1
    up.push(Reply.sse(served, split=7))
    deltas, error = await collect(make_call(up, compat={"service_tier_cost": TIER_COSTS}))
    assert error is None
    usage = completed["response"]["usage"]
    cached = usage["input_tokens_details"]["cached_tokens"]
    by_hand = ((usage["input_tokens"] - cached) * 1.25 + usage["output_tokens"] * 10 + cached * 0.125) / 1e6
    assembler = MessageAssembler(model(compat={"service_tier_cost": TIER_COSTS}), encoder=SilentEncoder())
    assembler.start()
    for delta in deltas:
        assembler.feed(delta)
    assembler.done()
    assert assembler.message["usage"]["cost"]["total"] == pytest.approx(by_hand * multiplier)


def test_the_catalog_prices_openai_tiers_and_nothing_else() -> None:
    from sidecar.config import load_settings

    settings = load_settings(None, {"HOME": "/nonexistent"})
    assert settings.catalog.providers["openai"].compat["service_tier_cost"] == TIER_COSTS
    assert "service_tier_cost" not in settings.catalog.providers["azure"].compat
