"""Interop: the unmodified real client ``@oh-my-pi/pi-ai@18.2.3`` (under Bun) streams OpenAI's Responses API and Azure
OpenAI through the sidecar.

The sidecar (``python -m sidecar serve``) holds a canary ``OPENAI_API_KEY`` and a canary ``AZURE_OPENAI_API_KEY``;
``OPENAI_BASE_URL`` and ``AZURE_OPENAI_ENDPOINT`` point at one FakeUpstream replaying recorded Responses and Chat
Completions streams. The client driver, its runner and the protocol checks are those of ``test_pi_ai_interop``; this
module brings its own sidecar and canaries, which the shared ``run_client`` picks up by name and checks the client
never sees. The assertions are on what the client reported (events, ``.result()``, usage and cost) and on what the
upstream received (URL, key header, body, the replayed reasoning item).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.fakeupstream import FakeUpstream, Received, Reply, fixture_bytes
from tests.interop import test_pi_ai_interop as shared
from tests.interop.harness import Sidecar, run_sidecar
from tests.interop.test_pi_ai_interop import RunClient, assert_usage, assert_well_formed, user

pytestmark = pytest.mark.interop

# The shared module's fixtures, used here by name: `run_client` asks for `sidecar` and `canaries`, which resolve to
# this module's own.
bun = shared.bun
client_home = shared.client_home
upstream = shared.upstream
run_client = shared.run_client
_fresh_upstream = shared._fresh_upstream

RESPONSES = "openai-responses"
COMPLETIONS = "openai-completions"
DIR = "openai-responses"
TEXT = f"{DIR}/text-basic.sse"
REASONING_CALL = f"{DIR}/reasoning-summary-then-function-call.sse"
CACHED = f"{DIR}/web-search-cached-and-reasoning-usage.sse"
CHAT_TEXT = "openai-chat-completions/text-basic-include-usage.sse"
# Recorded with `store: true`, so its reasoning item carries no `encrypted_content`; the sidecar asks for it
# (`store: false`, `include: ["reasoning.encrypted_content"]`), and OpenAI then returns it on the item's done event.
ENCRYPTED = "gAAAAABoWaTKencrypted-reasoning-blob-from-openai"


def model(provider: str, model_id: str, api: str, cost: list[float], reasoning: bool) -> dict[str, Any]:
    """A client-side Model; ``cost`` is the price the sidecar resolves for it (the client trusts the sidecar's
    figures, and ``assert_usage`` recomputes every cost component from it)."""
    return {
        "provider": provider,
        "id": model_id,
        "api": api,
        "reasoning": reasoning,
        "cost": dict(zip(("input", "output", "cacheRead", "cacheWrite"), cost, strict=True)),
        "contextWindow": 400_000 if reasoning else 128_000,
        "maxTokens": 128_000 if reasoning else 16_384,
    }


# The catalog's `openai/gpt-5` row: [1.25, 10, 0.125, 0].
GPT5 = model("openai", "gpt-5", RESPONSES, [1.25, 10, 0.125, 0], reasoning=True)
# The azure rows have no cost: genai-prices' azure table prices them (gpt-5: 1.25/10/0.125, cache write = input).
AZURE_GPT5 = model("azure", "gpt-5", RESPONSES, [1.25, 10, 0.125, 1.25], reasoning=True)
AZURE_GPT4O = model("azure", "gpt-4o", COMPLETIONS, [2.5, 10, 1.25, 2.5], reasoning=False)

SEARCH_TOOL: dict[str, Any] = {
    "name": "search",
    "description": "Search for information",
    "parameters": {
        "type": "object",
        "properties": {"query": {"description": "The search query", "type": "string"}},
        "required": ["query"],
    },
}
WEATHER_TOOL: dict[str, Any] = {
    "name": "weather",
    "description": "Get weather information",
    "parameters": {
        "type": "object",
        "properties": {"city": {"description": "City name", "type": "string"}},
        "required": ["city"],
    },
}
QUESTION = "When do the Tigers play today, and do I need a coat in Detroit?"


@pytest.fixture(scope="module")
def canaries() -> dict[str, str]:
    """The keys the sidecar holds: each must reach its own provider's requests and nothing else."""
    return {
        "openai": f"sk-proj-canary{secrets.token_hex(16)}",
        "azure": f"azure-canary{secrets.token_hex(16)}",
    }


@pytest.fixture(scope="module")
def sidecar(
    upstream: FakeUpstream, canaries: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Sidecar]:
    env = {
        "OPENAI_API_KEY": canaries["openai"],
        "OPENAI_BASE_URL": f"{upstream.url}/v1",
        "AZURE_OPENAI_API_KEY": canaries["azure"],
        "AZURE_OPENAI_ENDPOINT": upstream.url,  # the catalog's v1 URLs: {endpoint}/openai/v1/…
    }
    token = f"gw-{secrets.token_urlsafe(24)}"
    with run_sidecar(tmp_path_factory.mktemp("sidecar-responses"), "[upstream]\nmax_retries = 0\n", token, env) as sc:
        yield sc


# ---------------------------------------------------------------------------------------------------------------------
# Helpers: the recordings read independently of the adapter, and the checks on what reached the upstream


def recorded(relative: str, data: bytes | None = None) -> list[dict[str, Any]]:
    raw = fixture_bytes(relative) if data is None else data
    return [orjson.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: {")]


def completed(relative: str) -> dict[str, Any]:
    """The ``response`` of the recording's ``response.completed``."""
    (event,) = [e for e in recorded(relative) if e["type"] == "response.completed"]
    response: dict[str, Any] = event["response"]
    return response


def with_encrypted_reasoning(relative: str) -> tuple[bytes, dict[str, Any]]:
    """The recording as a ``store: false`` request gets it: the reasoning item's done event carries
    ``encrypted_content``. Returns the bytes and that item."""
    data = fixture_bytes(relative)
    (done,) = [
        e["item"]
        for e in recorded(relative)
        if e["type"] == "response.output_item.done" and e["item"]["type"] == "reasoning"
    ]
    signed = {**done, "encrypted_content": ENCRYPTED}
    patched = data.replace(orjson.dumps(done), orjson.dumps(signed), 1)
    assert patched != data
    return patched, signed


def check_request(req: Received, provider: str, canaries: dict[str, str], sidecar: Sidecar) -> dict[str, Any]:
    """The provider's key in its own header only (OpenAI: a bearer; Azure: ``api-key``, no Authorization header),
    the other provider's key and the gateway bearer nowhere, no attribution header; returns the JSON body."""
    if provider == "azure":
        assert req.headers["api-key"] == canaries["azure"]
        assert "authorization" not in req.headers  # Azure would take a bearer as an Entra ID token
        others = {k: v for k, v in req.headers.items() if k != "api-key"}
    else:
        assert req.headers["authorization"] == f"Bearer {canaries['openai']}"
        assert "api-key" not in req.headers
        others = {k: v for k, v in req.headers.items() if k != "authorization"}
    rest = json.dumps(others) + req.path + req.body.decode()
    for key in canaries.values():
        assert key not in rest, "a provider key went upstream outside its header"
        assert key not in sidecar.log(), "a provider key reached the sidecar's log"
    assert sidecar.token not in rest, "the gateway bearer went upstream"
    assert not [name for name in req.headers if name.startswith("x-omp-")], "attribution headers stay local"
    body: dict[str, Any] = req.json()
    return body


# ---------------------------------------------------------------------------------------------------------------------
# OpenAI, Responses API


@pytest.mark.parametrize("entry", ["streamPiNative", "streamSimple"])
def test_text_turn(
    entry: str, run_client: RunClient, upstream: FakeUpstream, sidecar: Sidecar, canaries: dict[str, str]
) -> None:
    upstream.push(Reply.sse(fixture_bytes(TEXT), split=7))
    run = run_client(GPT5, [user("Who are you?")], entry=entry, system=["Be brief."])

    assert_well_formed(run)
    recorded_deltas = [e["delta"] for e in recorded(TEXT) if e["type"] == "response.output_text.delta"]
    assert run.types == ["start", "text_start", *["text_delta"] * len(recorded_deltas), "text_end", "done"]
    assert run.deltas("text_delta", 0) == recorded_deltas
    response = completed(TEXT)
    msg = run.result
    assert msg == run.events[-1]["message"]
    assert msg["content"] == [{"type": "text", "text": response["output"][0]["content"][0]["text"]}]
    assert (msg["api"], msg["provider"], msg["model"], msg["stopReason"]) == (RESPONSES, "openai", "gpt-5", "stop")
    assert msg["responseId"] == response["id"]
    # Hand-computed from the recording: input_tokens 10 (none cached), output_tokens 62.
    assert_usage(msg, GPT5["cost"], input=10, output=62, cacheRead=0, cacheWrite=0, totalTokens=72)
    assert msg["usage"]["cost"]["total"] == pytest.approx(10 * 1.25e-6 + 62 * 10e-6, rel=1e-12)

    (req,) = upstream.received
    assert (req.method, req.path) == ("POST", "/v1/responses")
    body = check_request(req, "openai", canaries, sidecar)
    assert (body["model"], body["stream"], body["store"]) == ("gpt-5", True, False)
    assert body["instructions"] == "Be brief."
    assert body["input"] == [{"role": "user", "content": [{"type": "input_text", "text": "Who are you?"}]}]
    assert body["max_output_tokens"] == 1024
    assert body["include"] == ["reasoning.encrypted_content"]  # stateless: the reasoning must come back to replay


def test_thinking_and_tool_call_turn_then_the_next_turn_replays_them(
    run_client: RunClient, upstream: FakeUpstream, sidecar: Sidecar, canaries: dict[str, str]
) -> None:
    data, reasoning_item = with_encrypted_reasoning(REASONING_CALL)
    upstream.push(Reply.sse(data, split=11))
    question = user(QUESTION)
    tools = [WEATHER_TOOL, SEARCH_TOOL]
    run = run_client(GPT5, [question], tools=tools, options={"reasoning": "low"})

    assert_well_formed(run)
    events = recorded(REASONING_CALL)
    summary_deltas = [e["delta"] for e in events if e["type"] == "response.reasoning_summary_text.delta"]
    argument_deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert run.types == [
        "start",
        "thinking_start",
        *["thinking_delta"] * len(summary_deltas),
        "thinking_end",
        "toolcall_start",
        *["toolcall_delta"] * len(argument_deltas),
        "toolcall_end",
        "done",
    ]
    assert run.deltas("thinking_delta", 0) == summary_deltas
    assert run.deltas("toolcall_delta", 1) == argument_deltas
    response = completed(REASONING_CALL)
    summary = response["output"][0]["summary"][0]["text"]
    recorded_call = response["output"][1]
    msg = run.result
    assert msg["stopReason"] == "toolUse" and run.events[-1]["reason"] == "toolUse"
    assert msg["responseId"] == response["id"]
    thinking, call = msg["content"]
    assert thinking["type"] == "thinking" and thinking["thinking"] == summary
    assert orjson.loads(thinking["thinkingSignature"]) == reasoning_item  # the whole item, to replay it
    assert call == {
        "type": "toolCall",
        "id": f"{recorded_call['call_id']}|{recorded_call['id']}",
        "name": "search",
        "arguments": {"query": "Detroit Tigers game time June 23 2025"},
    }
    assert run.events[-2]["toolCall"] == call
    # Hand-computed from the recording: input_tokens 78 (0 cached), output_tokens 221 of which 192 reasoning.
    assert_usage(msg, GPT5["cost"], input=78, output=221, cacheRead=0, cacheWrite=0, totalTokens=299)
    assert msg["usage"]["reasoningTokens"] == 192
    assert msg["usage"]["cost"]["total"] == pytest.approx(78 * 1.25e-6 + 221 * 10e-6, rel=1e-12)

    (req,) = upstream.received
    assert req.path == "/v1/responses"
    first = check_request(req, "openai", canaries, sidecar)
    assert first["reasoning"] == {"effort": "low", "summary": "auto"}
    assert [t["name"] for t in first["tools"]] == ["weather", "search"]
    assert first["tools"][1] == {"type": "function", "strict": False, **SEARCH_TOOL}

    # The next turn: the client sends its own history back with the tool's result.
    upstream.received.clear()
    upstream.push(Reply.sse(fixture_bytes(TEXT)))
    result = {
        "role": "toolResult",
        "toolCallId": call["id"],
        "toolName": "search",
        "content": [{"type": "text", "text": "First pitch 6:40 pm; 12°C and windy."}],
        "isError": False,
        "timestamp": 1_767_225_600_500,
    }
    second = run_client(GPT5, [question, msg, result], tools=tools, options={"reasoning": "low"})
    assert second.result["stopReason"] == "stop"
    (req,) = upstream.received
    body = check_request(req, "openai", canaries, sidecar)
    assert body["input"] == [
        {"role": "user", "content": [{"type": "input_text", "text": QUESTION}]},
        reasoning_item,  # replayed as OpenAI sent it, encrypted content included
        {
            "type": "function_call",
            "call_id": recorded_call["call_id"],
            "name": "search",
            "arguments": '{"query":"Detroit Tigers game time June 23 2025"}',
            "id": recorded_call["id"],
        },
        {
            "type": "function_call_output",
            "call_id": recorded_call["call_id"],
            "output": "First pitch 6:40 pm; 12°C and windy.",
        },
    ]


def test_cached_input_and_reasoning_tokens_are_priced_exactly(
    run_client: RunClient, upstream: FakeUpstream, sidecar: Sidecar, canaries: dict[str, str]
) -> None:
    """A turn with hosted web searches: their items have no pi block, the answer does; the cached prompt tokens are
    cacheRead (excluded from input) at the cache rate."""
    upstream.push(Reply.sse(fixture_bytes(CACHED), split=64))
    run = run_client(GPT5, [user("How many inches in a cm, exactly?")], options={"reasoning": "medium"})

    assert_well_formed(run)
    response = completed(CACHED)
    (message_item,) = [item for item in response["output"] if item["type"] == "message"]
    msg = run.result
    assert msg["content"] == [{"type": "text", "text": message_item["content"][0]["text"]}]
    assert msg["stopReason"] == "stop"
    # Hand-computed: input_tokens 17360 of which 8311 cached, output_tokens 1321 of which 1152 reasoning.
    assert_usage(msg, GPT5["cost"], input=17360 - 8311, output=1321, cacheRead=8311, cacheWrite=0, totalTokens=18681)
    assert msg["usage"]["reasoningTokens"] == 1152
    assert msg["usage"]["cost"]["total"] == pytest.approx(9049 * 1.25e-6 + 1321 * 10e-6 + 8311 * 0.125e-6, rel=1e-12)
    (req,) = upstream.received
    check_request(req, "openai", canaries, sidecar)


def test_rate_limit_in_the_stream_is_a_429_error(
    run_client: RunClient, upstream: FakeUpstream, sidecar: Sidecar, canaries: dict[str, str]
) -> None:
    upstream.push(Reply.sse(fixture_bytes(f"{DIR}/error-rate-limit-then-response-failed.sse")))
    run = run_client(GPT5, [user("hi")])

    assert_well_formed(run)
    assert run.types[-1] == "error"
    msg = run.result
    assert msg["stopReason"] == "error" and msg["errorStatus"] == 429
    assert "rate_limit_exceeded" in msg["errorMessage"]
    (req,) = upstream.received
    check_request(req, "openai", canaries, sidecar)


# ---------------------------------------------------------------------------------------------------------------------
# Azure OpenAI: the same wires at the resource's v1 URLs, the key in `api-key`


def test_azure_responses_deployment_thinking_and_tool_call_turn(
    run_client: RunClient, upstream: FakeUpstream, sidecar: Sidecar, canaries: dict[str, str]
) -> None:
    data, reasoning_item = with_encrypted_reasoning(REASONING_CALL)
    upstream.push(Reply.sse(data, split=5))
    run = run_client(AZURE_GPT5, [user(QUESTION)], tools=[WEATHER_TOOL, SEARCH_TOOL], options={"reasoning": "low"})

    assert_well_formed(run)
    response = completed(REASONING_CALL)
    recorded_call = response["output"][1]
    msg = run.result
    assert (msg["api"], msg["provider"], msg["model"], msg["stopReason"]) == (RESPONSES, "azure", "gpt-5", "toolUse")
    thinking, call = msg["content"]
    assert thinking["thinking"] == response["output"][0]["summary"][0]["text"]
    assert orjson.loads(thinking["thinkingSignature"]) == reasoning_item
    assert (call["id"], call["name"], call["arguments"]) == (
        f"{recorded_call['call_id']}|{recorded_call['id']}",
        "search",
        {"query": "Detroit Tigers game time June 23 2025"},
    )
    assert_usage(msg, AZURE_GPT5["cost"], input=78, output=221, cacheRead=0, cacheWrite=0, totalTokens=299)
    assert msg["usage"]["reasoningTokens"] == 192
    assert msg["usage"]["cost"]["total"] == pytest.approx(78 * 1.25e-6 + 221 * 10e-6, rel=1e-12)

    (req,) = upstream.received
    assert (req.method, req.path) == ("POST", "/openai/v1/responses")  # the v1 API: no deployment path, no version
    body = check_request(req, "azure", canaries, sidecar)
    assert (body["model"], body["store"]) == ("gpt-5", False)  # the deployment name
    assert body["reasoning"] == {"effort": "low", "summary": "auto"}
    assert body["include"] == ["reasoning.encrypted_content"]


def test_azure_chat_deployment_text_turn(
    run_client: RunClient, upstream: FakeUpstream, sidecar: Sidecar, canaries: dict[str, str]
) -> None:
    upstream.push(Reply.sse(fixture_bytes(CHAT_TEXT), split=7))
    run = run_client(AZURE_GPT4O, [user("What's the weather in San Francisco?")])

    assert_well_formed(run)
    chunks = recorded(CHAT_TEXT)
    recorded_deltas = [d for c in chunks for choice in c["choices"] if (d := choice["delta"].get("content"))]
    assert run.types == ["start", "text_start", *["text_delta"] * len(recorded_deltas), "text_end", "done"]
    msg = run.result
    assert msg["content"] == [{"type": "text", "text": "".join(recorded_deltas)}]
    assert (msg["api"], msg["provider"], msg["model"], msg["stopReason"]) == (COMPLETIONS, "azure", "gpt-4o", "stop")
    # Hand-computed: prompt_tokens 14, completion_tokens 30, at Azure's gpt-4o rates ($2.50 / $10 per 1M).
    assert_usage(msg, AZURE_GPT4O["cost"], input=14, output=30, cacheRead=0, cacheWrite=0, totalTokens=44)
    assert msg["usage"]["cost"]["total"] == pytest.approx(14 * 2.5e-6 + 30 * 10e-6, rel=1e-12)

    (req,) = upstream.received
    assert (req.method, req.path) == ("POST", "/openai/v1/chat/completions")
    body = check_request(req, "azure", canaries, sidecar)
    assert (body["model"], body["stream"]) == ("gpt-4o", True)
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"][-1]["role"] == "user"


def test_a_call_whose_reasoning_cannot_be_replayed_goes_back_without_its_item_id(
    run_client: RunClient, upstream: FakeUpstream, sidecar: Sidecar, canaries: dict[str, str]
) -> None:
    """pi-ai's own encoder drops the ``fc_`` id when no reasoning item goes with it (``openai-shared.ts``): OpenAI
    requires the reasoning item an ``fc_`` item was produced with, and ``store: false`` leaves it nowhere to look."""
    upstream.push(Reply.sse(fixture_bytes(REASONING_CALL)))  # as recorded: the reasoning item has no encrypted_content
    question = user(QUESTION)
    first = run_client(GPT5, [question], tools=[SEARCH_TOOL], options={"reasoning": "low"}).result
    call = first["content"][1]
    assert call["id"].count("|fc_") == 1

    upstream.received.clear()
    upstream.push(Reply.sse(fixture_bytes(TEXT)))
    result = {
        "role": "toolResult",
        "toolCallId": call["id"],
        "toolName": "search",
        "content": [{"type": "text", "text": "6:40 pm"}],
        "isError": False,
        "timestamp": 1_767_225_600_500,
    }
    run_client(GPT5, [question, first, result], tools=[SEARCH_TOOL], options={"reasoning": "low"})
    (req,) = upstream.received
    items = check_request(req, "openai", canaries, sidecar)["input"]
    assert [item.get("type") for item in items] == [None, "function_call", "function_call_output"]
    assert "id" not in items[1], items[1]
