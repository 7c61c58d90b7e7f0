"""Interop: the unmodified AI SDK (``ai@7.0.173``: ``generateText``, ``streamText``) with the unmodified provider
packages ``@ai-sdk/gateway@4.0.146``, ``@ai-sdk/anthropic@4.0.105`` and ``@ai-sdk/openai@4.0.118`` (under Node) against
the sidecar, each provider pointed at it by its ``baseURL`` setting and given the workload bearer as its API key:

- ``createGateway({baseURL: <sidecar>/v4/ai})`` → ``POST /v4/ai/language-model`` and ``GET /v4/ai/config``;
- ``createAnthropic({baseURL: <sidecar>/v1})`` → ``POST /v1/messages``;
- ``createOpenAI({baseURL: <sidecar>/v1})``: ``.chat()`` → ``/v1/chat/completions``, ``.responses()`` and the default
  → ``/v1/responses``.

One ``python -m sidecar serve`` process serves the module; its Anthropic, OpenAI and xAI base URLs point at a
FakeUpstream replaying recorded provider bytes (tests/fixtures). Each scenario runs through an Anthropic Messages
upstream, an OpenAI Chat upstream and an OpenAI Responses upstream. Expected text, tool calls, reasoning and token
counts are read from the fixtures here, never copied from the sidecar; every upstream request is checked to carry the
provider's canary key and never the workload bearer. The driver is tests/interop/ai_sdk_client.mjs.

Run with ``.venv/bin/python -m pytest tests/interop/test_ai_sdk_interop.py -q``. The suite fails, and never skips,
when Node >= 20 or npm is unavailable (tests/interop/conftest.py).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest

from tests.fakeupstream import FakeUpstream, Received, Reply, fixture_bytes
from tests.interop.harness import (
    INTEROP_DIR,
    NODE_MODULES,
    Sidecar,
    driver_broke,
    installed_version,
    node_env,
    ok,
    reset_upstream,
    run_driver,
    run_sidecar,
)
from tests.sidecar_server import ANTHROPIC_CANARY, OPENAI_CANARY, TOKEN, generation_row

pytestmark = pytest.mark.interop

DRIVER = INTEROP_DIR / "ai_sdk_client.mjs"
DRIVER_TIMEOUT_S = 60
PINNED = {"ai": "7.0.173", "@ai-sdk/openai": "4.0.118", "@ai-sdk/anthropic": "4.0.105", "@ai-sdk/gateway": "4.0.146"}
XAI_CANARY = "xai-canary-KEY-do-not-leak-777888999000"
GATEWAY_BASE = "/v4/ai"
GENERATION_ID = re.compile(r"^gen_[0-9A-HJKMNP-TV-Z]{26}$")

SONNET = "anthropic/claude-sonnet-4-5"
GPT4O = "openai/gpt-4o"
GPT5 = "openai/gpt-5"  # on openai-responses in the catalog
GROK = "xai/grok-3-mini"
# USD per token as /config must spell them: the catalog's rates (USD per 1M tokens, sidecar/catalog.toml) / 1e6.
SONNET_PRICING = {
    "input": "0.000003",
    "output": "0.000015",
    "cachedInputTokens": "0.0000003",
    "cacheCreationInputTokens": "0.00000375",
}

# The tools the fixtures call, as the app defines them (jsonSchema, no execute).
TOOLS: dict[str, dict[str, Any]] = {
    "get_weather": {
        "description": "Current weather for a location",
        "inputSchema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
    "GetWeatherArgs": {
        "description": "Weather for a city",
        "inputSchema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "country": {"type": "string"}, "units": {"type": "string"}},
        },
    },
    "get_stock_price": {
        "description": "A stock's price",
        "inputSchema": {
            "type": "object",
            "properties": {"ticker": {"type": "string"}, "exchange": {"type": "string"}},
        },
    },
    "weather": {
        "description": "Weather for a location",
        "inputSchema": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
    "search": {
        "description": "Search the web",
        "inputSchema": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
}


# ---------------------------------------------------------------------------------------------------------------------
# Expected values, read from the recorded fixtures


@dataclass(frozen=True)
class Expected:
    text: str = ""
    reasoning: str = ""
    signature: str = ""
    tool_calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    input_no_cache: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning_tokens: int = 0

    @property
    def input_total(self) -> int:
        return self.input_no_cache + self.cache_read + self.cache_write


def _payloads(relative: str) -> Iterator[dict[str, Any]]:
    for line in fixture_bytes(relative).decode().splitlines():
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            yield json.loads(line[5:])


def anthropic_expected(relative: str) -> Expected:
    """Text, thinking, signature and tool inputs concatenated from the deltas; usage from ``message_start`` overridden
    by the fields of the final ``message_delta`` (cumulative)."""
    text, thinking, signature = [], [], []
    blocks: dict[int, dict[str, Any]] = {}
    usage: dict[str, int] = {}
    for event in _payloads(relative):
        kind = event["type"]
        if kind == "message_start":
            usage.update(event["message"]["usage"])
        elif kind == "content_block_start" and event["content_block"]["type"] == "tool_use":
            block = event["content_block"]
            blocks[event["index"]] = {"id": block["id"], "name": block["name"], "json": ""}
        elif kind == "content_block_delta":
            delta = event["delta"]
            if delta["type"] == "text_delta":
                text.append(delta["text"])
            elif delta["type"] == "thinking_delta":
                thinking.append(delta["thinking"])
            elif delta["type"] == "signature_delta":
                signature.append(delta["signature"])
            elif delta["type"] == "input_json_delta":
                blocks[event["index"]]["json"] += delta["partial_json"]
        elif kind == "message_delta":
            usage.update({k: v for k, v in event["usage"].items() if isinstance(v, int)})
    return Expected(
        text="".join(text),
        reasoning="".join(thinking),
        signature="".join(signature),
        tool_calls=[(b["id"], b["name"], json.loads(b["json"] or "{}")) for _, b in sorted(blocks.items())],
        input_no_cache=usage["input_tokens"],
        cache_read=usage.get("cache_read_input_tokens") or 0,
        cache_write=usage.get("cache_creation_input_tokens") or 0,
        output=usage["output_tokens"],
    )


def openai_expected(relative: str) -> Expected:
    """Chat Completions chunks: content, ``reasoning_content``, tool calls by index, the usage chunk. xAI counts
    reasoning outside ``completion_tokens`` (its ``total_tokens`` shows it); it is output all the same."""
    text, reasoning = [], []
    calls: dict[int, dict[str, Any]] = {}
    usage: dict[str, Any] = {}
    for chunk in _payloads(relative):
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            text.append(delta.get("content") or "")
            reasoning.append(delta.get("reasoning_content") or "")
            for call in delta.get("tool_calls") or ():
                entry = calls.setdefault(call["index"], {"id": "", "name": "", "args": ""})
                entry["id"] = entry["id"] or call.get("id", "")
                function = call.get("function") or {}
                entry["name"] = entry["name"] or function.get("name", "")
                entry["args"] += function.get("arguments") or ""
        if chunk.get("usage"):
            usage = chunk["usage"]
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    reasoning_tokens = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens", 0)
    if usage.get("total_tokens") == prompt + completion + reasoning_tokens and reasoning_tokens:
        completion += reasoning_tokens
    return Expected(
        text="".join(text),
        reasoning="".join(reasoning),
        tool_calls=[(c["id"], c["name"], json.loads(c["args"] or "{}")) for _, c in sorted(calls.items())],
        input_no_cache=prompt - cached,
        cache_read=cached,
        output=completion,
        reasoning_tokens=reasoning_tokens,
    )


def _completed_response(relative: str) -> dict[str, Any]:
    response: dict[str, Any] = next(e for e in _payloads(relative) if e["type"] == "response.completed")["response"]
    return response


def responses_expected(relative: str) -> Expected:
    """Responses events: output_text deltas, the function_call items (the sidecar's pi-ai tool-call id is
    ``{call_id}|{item id}``), the usage of ``response.completed``."""
    text = "".join(e["delta"] for e in _payloads(relative) if e["type"] == "response.output_text.delta")
    response = _completed_response(relative)
    calls = [item for item in response["output"] if item["type"] == "function_call"]
    usage = response["usage"]
    cached = usage["input_tokens_details"]["cached_tokens"]
    return Expected(
        text=text,
        tool_calls=[(f"{c['call_id']}|{c['id']}", c["name"], json.loads(c["arguments"])) for c in calls],
        input_no_cache=usage["input_tokens"] - cached,
        cache_read=cached,
        output=usage["output_tokens"],
        reasoning_tokens=usage["output_tokens_details"]["reasoning_tokens"],
    )


def relayed_responses_expected(expected: Expected) -> Expected:
    """What ``@ai-sdk/openai`` reads from a relayed Responses stream: the tool call id is OpenAI's ``call_id``."""
    calls = [(call_id.split("|")[0], name, arguments) for call_id, name, arguments in expected.tool_calls]
    return replace(expected, tool_calls=calls)


def anthropic_message_json(relative: str) -> dict[str, Any]:
    """The non-streaming Messages body of a recorded stream, ASSEMBLED from its events (no non-streaming recording
    exists): ``message_start``'s message, the content blocks completed by their deltas, the final stop reason and
    usage."""
    message: dict[str, Any] = {}
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, str] = {}
    for event in _payloads(relative):
        kind = event["type"]
        if kind == "message_start":
            message = dict(event["message"])
        elif kind == "content_block_start":
            blocks[event["index"]] = dict(event["content_block"])
        elif kind == "content_block_delta":
            block, delta = blocks[event["index"]], event["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = block.get("signature", "") + delta["signature"]
            elif delta["type"] == "input_json_delta":
                partial[event["index"]] = partial.get(event["index"], "") + delta["partial_json"]
        elif kind == "message_delta":
            message.update(event["delta"])
            message["usage"] = {**message["usage"], **event["usage"]}
    for index, text in partial.items():
        blocks[index]["input"] = json.loads(text or "{}")
    message["content"] = [block for _, block in sorted(blocks.items())]
    return message


def chat_completion_json(relative: str) -> dict[str, Any]:
    """The non-streaming ``chat.completion`` of a recorded stream, ASSEMBLED from its chunks (no non-streaming
    recording exists)."""
    expected = openai_expected(relative)
    first = next(_payloads(relative))
    usage = next(c["usage"] for c in _payloads(relative) if c.get("usage"))
    finish = next(ch["finish_reason"] for c in _payloads(relative) for ch in c["choices"] if ch.get("finish_reason"))
    message: dict[str, Any] = {"role": "assistant", "content": expected.text or None, "refusal": None}
    if expected.tool_calls:
        message["tool_calls"] = [
            {"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
            for i, n, a in expected.tool_calls
        ]
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    return {
        "id": first["id"],
        "object": "chat.completion",
        "created": first["created"],
        "model": first["model"],
        "choices": [choice],
        "usage": usage,
    }


@dataclass(frozen=True)
class Upstream:
    """One upstream wire API and the fixtures replayed for it."""

    name: str
    model: str
    bare_model: str
    path: str
    text_fixture: str
    tool_fixture: str
    expected: Any
    as_json: Any
    """The non-streaming body of a fixture: what a relayed (same-family) non-streaming request gets upstream."""

    def text(self) -> Expected:
        result: Expected = self.expected(self.text_fixture)
        return result

    def tools(self) -> Expected:
        result: Expected = self.expected(self.tool_fixture)
        return result


ANTHROPIC = Upstream(
    "anthropic",
    SONNET,
    "claude-sonnet-4-5",
    "/v1/messages",
    "anthropic-messages/text-basic-padded.sse",
    "anthropic-messages/text-then-tool-use.sse",
    anthropic_expected,
    anthropic_message_json,
)
OPENAI_CHAT = Upstream(
    "openai-chat",
    GPT4O,
    "gpt-4o",
    "/v1/chat/completions",
    "openai-chat-completions/text-basic-include-usage.sse",
    "openai-chat-completions/tool-calls-parallel.sse",
    openai_expected,
    chat_completion_json,
)
OPENAI_RESPONSES = Upstream(
    "openai-responses",
    GPT5,
    "gpt-5",
    "/v1/responses",
    "openai-responses/text-basic.sse",
    "openai-responses/function-calls-parallel.sse",
    responses_expected,
    _completed_response,  # a non-streaming request gets the Response that response.completed carries
)
UPSTREAMS = (ANTHROPIC, OPENAI_CHAT, OPENAI_RESPONSES)
OPS = ("streamText", "generateText")


# ---------------------------------------------------------------------------------------------------------------------
# Infrastructure


@pytest.fixture(scope="module")
def ai_sdk(node: str) -> str:
    """Node with the pinned AI SDK packages installed (tests/interop/package.json); ``node`` installs them."""
    for package, version in PINNED.items():
        if not (NODE_MODULES / package / "package.json").exists():
            pytest.fail(f"{package} is missing from {NODE_MODULES}: run `npm ci` in {INTEROP_DIR}", pytrace=False)
        installed = installed_version(package)
        assert installed == version, f"node_modules has {package} {installed}, not {version}; run `npm ci`"
    return node


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def sidecar(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    work = tmp_path_factory.mktemp("sidecar-ai-sdk")
    config = f"""
[upstream]
max_retries = 0

[ledger]
path = "{work / "ledger.db"}"
"""
    env = {
        "ANTHROPIC_API_KEY": ANTHROPIC_CANARY,
        "ANTHROPIC_BASE_URL": upstream.url,
        "OPENAI_API_KEY": OPENAI_CANARY,
        "OPENAI_BASE_URL": f"{upstream.url}/v1",
        "XAI_API_KEY": XAI_CANARY,
        "XAI_BASE_URL": f"{upstream.url}/v1",
    }
    with run_sidecar(work, config, TOKEN, env) as sc:
        yield sc


@pytest.fixture(autouse=True)
def _fresh_upstream(upstream: FakeUpstream, sidecar: Sidecar) -> None:
    reset_upstream(upstream)
    sidecar.mark()


def run_ai_sdk(node: str, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run ``calls`` through the real SDK in one Node process; one result line per call."""
    proc, lines = run_driver("ai-sdk", [node, str(DRIVER)], {"calls": calls}, node_env(), DRIVER_TIMEOUT_S)
    if proc.returncode != 0 or len(lines) != len(calls):
        pytest.fail(driver_broke("ai-sdk", proc))
    return lines


def gateway_call(sidecar: Sidecar, op: str, model: str, **extra: Any) -> dict[str, Any]:
    call = {"client": "gateway", "baseURL": f"{sidecar.url}{GATEWAY_BASE}", "apiKey": TOKEN, "op": op, "model": model}
    return {**call, **extra}


def failed(line: dict[str, Any]) -> dict[str, Any]:
    """The error of a call that must have failed; for streamText, the request's own error (from onError)."""
    assert line["ok"] is False, line
    errors = line.get("streamErrors") or []
    error: dict[str, Any] = errors[0] if errors else line["error"]
    return error


def assert_canary_only(received: list[Received]) -> None:
    """Every upstream request carried its provider's canary key, and the workload bearer appears nowhere in it."""
    assert received, "no request reached the upstream"
    for request in received:
        if request.path.startswith("/v1/messages"):
            assert request.headers.get("x-api-key") == ANTHROPIC_CANARY, request.headers
            assert "authorization" not in request.headers, request.headers
        else:
            assert request.headers.get("authorization") in (f"Bearer {OPENAI_CANARY}", f"Bearer {XAI_CANARY}")
        seen = json.dumps(request.headers) + request.body.decode(errors="replace")
        assert TOKEN not in seen, f"the workload bearer reached the upstream at {request.path}"


def assert_tool_calls(value: dict[str, Any], expected: Expected) -> None:
    got = [(c["toolCallId"], c["toolName"], c["input"]) for c in value["toolCalls"]]
    assert got == expected.tool_calls, value
    assert value["finishReason"] == "tool-calls", value


def assert_usage(usage: dict[str, Any], expected: Expected, details: bool = True) -> None:
    assert usage["inputTokens"] == expected.input_total, usage
    assert usage["outputTokens"] == expected.output, usage
    assert usage["totalTokens"] == expected.input_total + expected.output, usage
    if details:
        assert usage["inputTokenDetails"] == {
            "noCacheTokens": expected.input_no_cache,
            "cacheReadTokens": expected.cache_read,
            "cacheWriteTokens": expected.cache_write,
        }, usage
        assert usage["outputTokenDetails"]["reasoningTokens"] == expected.reasoning_tokens, usage
        assert usage["outputTokenDetails"]["textTokens"] == expected.output - expected.reasoning_tokens, usage


def upstream_tool_names(request: Received) -> set[str]:
    tools = request.json().get("tools") or []
    return {t["name"] if "name" in t else t["function"]["name"] for t in tools}


# ---------------------------------------------------------------------------------------------------------------------
# (a) @ai-sdk/gateway → POST <base>/language-model


@pytest.mark.parametrize("up", UPSTREAMS, ids=lambda u: u.name)
def test_gateway_text_and_tool_call(ai_sdk: str, sidecar: Sidecar, upstream: FakeUpstream, up: Upstream) -> None:
    text, tools = up.text(), up.tools()
    calls, fixtures = [], []
    for op in OPS:
        calls.append(gateway_call(sidecar, op, up.model, prompt="Say hello."))
        calls.append(gateway_call(sidecar, op, up.model, prompt="Weather?", tools=TOOLS, system="Be brief."))
        fixtures += [up.text_fixture, up.tool_fixture]
    upstream.push(*(Reply.sse(fixture_bytes(f)) for f in fixtures))
    lines = run_ai_sdk(ai_sdk, calls)

    ids = []
    for op, (text_line, tool_line) in zip(OPS, zip(lines[::2], lines[1::2], strict=True), strict=True):
        said, called = ok(text_line), ok(tool_line)
        assert said["text"] == text.text, said
        assert said["finishReason"] == "stop", said
        assert_usage(said["usage"], text)
        assert called["text"] == tools.text, called
        assert_tool_calls(called, tools)
        assert_usage(called["usage"], tools)
        for value in (said, called):
            generation_id = value["providerMetadata"]["gateway"]["generationId"]
            assert GENERATION_ID.match(generation_id), value
            ids.append((op, generation_id, value))
            if op == "streamText":
                # "injected on the first content chunk" (AG docs): the first text/tool part carries it.
                first = next(p for p in value["parts"] if p["type"] in ("text-start", "tool-input-start"))
                assert first["providerMetadata"] == {"gateway": {"generationId": generation_id}}, value["parts"]
        assert all(r["url"] == f"{sidecar.url}{GATEWAY_BASE}/language-model" for r in text_line["requests"])

    assert [r.path for r in upstream.received] == [up.path] * len(calls)
    assert_canary_only(upstream.received)
    sent = upstream.received[1].json()
    assert upstream_tool_names(upstream.received[1]) == set(TOOLS), sent
    assert json.dumps(sent).count("Be brief.") == 1, sent  # the system prompt, once

    # Every generation id is found by the gateway client's own lookup (GET <origin>/v1/generation?id=…).
    lookups = run_ai_sdk(ai_sdk, [gateway_call(sidecar, "getGenerationInfo", "", id=gid) for _, gid, _ in ids])
    for (op, generation_id, value), line in zip(ids, lookups, strict=True):
        info = ok(line)
        assert (info["id"], info["model"], info["streamed"]) == (generation_id, up.model, op == "streamText"), info
        assert info["promptTokens"] == value["usage"]["inputTokens"], info
        assert info["completionTokens"] == value["usage"]["outputTokens"], info
        assert [r["url"].split("?")[0] for r in line["requests"]] == [f"{sidecar.url}/v1/generation"]


@pytest.mark.parametrize("op", OPS)
def test_gateway_anthropic_reasoning_signature_round_trips(
    ai_sdk: str, sidecar: Sidecar, upstream: FakeUpstream, op: str
) -> None:
    fixture = "anthropic-messages/thinking-signature-sonnet-4.5.sse"
    expected = anthropic_expected(fixture)
    assert expected.reasoning and expected.signature, "the fixture lost its thinking"
    upstream.push(Reply.sse(fixture_bytes(fixture)), Reply.sse(fixture_bytes(ANTHROPIC.text_fixture)))
    call = gateway_call(sidecar, op, SONNET, prompt="925 / 5?", reasoning="low", followUp={"text": "Thanks."})
    (line,) = run_ai_sdk(ai_sdk, [call])

    value = ok(line)
    assert value["reasoningText"] == expected.reasoning, value
    assert value["text"] == expected.text, value
    (reasoning,) = value["reasoning"]
    # As @ai-sdk/anthropic names it, so the app's next step sends it back.
    assert reasoning["providerMetadata"]["anthropic"] == {"signature": expected.signature}, reasoning
    assert_usage(value["usage"], expected)
    assert ok(line)["followUp"]["text"] == ANTHROPIC.text().text

    first, second = (r.json() for r in upstream.received)
    assert first["thinking"]["type"] == "enabled", first
    replayed = second["messages"][1]
    assert replayed["role"] == "assistant", second
    assert replayed["content"][0] == {
        "type": "thinking",
        "thinking": expected.reasoning,
        "signature": expected.signature,
    }, replayed
    assert_canary_only(upstream.received)


@pytest.mark.parametrize("op", OPS)
def test_gateway_openai_chat_reasoning_and_cached_usage(
    ai_sdk: str, sidecar: Sidecar, upstream: FakeUpstream, op: str
) -> None:
    fixture = "openai-chat-completions/xai-reasoning-content-cached-usage.sse"
    expected = openai_expected(fixture)
    assert expected.reasoning and expected.cache_read and expected.reasoning_tokens, "the fixture lost its usage"
    upstream.push(Reply.sse(fixture_bytes(fixture)))
    (line,) = run_ai_sdk(ai_sdk, [gateway_call(sidecar, op, GROK, prompt="Weather in SF?", tools=TOOLS)])

    value = ok(line)
    assert value["reasoningText"] == expected.reasoning, value
    assert_tool_calls(value, expected)
    assert_usage(value["usage"], expected)
    assert_canary_only(upstream.received)


def test_gateway_tool_results_reach_the_upstream(ai_sdk: str, sidecar: Sidecar, upstream: FakeUpstream) -> None:
    """The app's second step (its tool call, then a tool message with the result) arrives as the provider's own
    tool_use / tool_result pair."""
    expected = ANTHROPIC.tools()
    upstream.push(Reply.sse(fixture_bytes(ANTHROPIC.tool_fixture)), Reply.sse(fixture_bytes(ANTHROPIC.text_fixture)))
    result = {"tempC": 21, "sky": "clear"}
    call = gateway_call(
        sidecar, "streamText", SONNET, prompt="Weather?", tools=TOOLS, followUp={"toolResults": {"get_weather": result}}
    )
    (line,) = run_ai_sdk(ai_sdk, [call])

    assert_tool_calls(ok(line), expected)
    assert ok(line)["followUp"]["text"] == ANTHROPIC.text().text
    messages = upstream.received[1].json()["messages"]
    (call_id, name, arguments) = expected.tool_calls[0]
    assert {"type": "tool_use", "id": call_id, "name": name, "input": arguments} in messages[1]["content"], messages
    (tool_result,) = messages[2]["content"]
    assert (tool_result["type"], tool_result["tool_use_id"], tool_result["is_error"]) == ("tool_result", call_id, False)
    assert json.loads(tool_result["content"][0]["text"]) == result, tool_result


@pytest.mark.parametrize("op", OPS)
def test_gateway_error_mid_stream(ai_sdk: str, sidecar: Sidecar, upstream: FakeUpstream, op: str) -> None:
    """Anthropic's overloaded_error after the 200: streamed, an error part and finishReason "error" with the text so
    far; generated, the gateway's error with the upstream's retryable status."""
    upstream.push(Reply.sse(fixture_bytes("anthropic-messages/overloaded-error-mid-stream.ASSEMBLED.sse")))
    (line,) = run_ai_sdk(ai_sdk, [gateway_call(sidecar, op, SONNET, prompt="Say hello.")])

    if op == "streamText":
        value = ok(line)
        assert value["finishReason"] == "error", value
        (error,) = value["errors"]
        assert "overloaded" in error["message"].lower(), error
        assert (error["statusCode"], error["isRetryable"]) == (529, True), error
        assert value["text"], "the text streamed before the error is kept"
    else:
        error = failed(line)
        assert (error["name"], error["statusCode"], error["isRetryable"]) == ("GatewayInternalServerError", 529, True)
        assert "overloaded" in error["message"].lower(), error


@pytest.mark.parametrize("op", OPS)
def test_gateway_fallback_models_serve_an_overloaded_one(
    ai_sdk: str, sidecar: Sidecar, upstream: FakeUpstream, op: str
) -> None:
    """``providerOptions.gateway.models``, as an app sets it: the fallback serves when the model fails before its
    first byte, and the gateway client's own lookup names the model that served."""
    text = openai_expected("openai-chat-completions/text-basic-include-usage.sse")
    upstream.push(
        Reply.json(529, fixture_bytes("anthropic-messages/errors/529-overloaded-error.json")),
        Reply.sse(fixture_bytes("openai-chat-completions/text-basic-include-usage.sse")),
    )
    options = {"gateway": {"models": ["openai/gpt-4o-mini"]}}
    (line,) = run_ai_sdk(ai_sdk, [gateway_call(sidecar, op, SONNET, prompt="Say hello.", providerOptions=options)])

    value = ok(line)
    assert value["text"] == text.text, value
    assert value["finishReason"] == "stop", value
    assert_usage(value["usage"], text)
    assert [r.path for r in upstream.received] == ["/v1/messages", "/v1/chat/completions"]
    generation_id = value["providerMetadata"]["gateway"]["generationId"]
    (lookup,) = run_ai_sdk(ai_sdk, [gateway_call(sidecar, "getGenerationInfo", "", id=generation_id)])
    assert ok(lookup)["model"] == "openai/gpt-4o-mini"


@pytest.mark.parametrize("op", OPS)
def test_gateway_wrong_bearer(ai_sdk: str, sidecar: Sidecar, upstream: FakeUpstream, op: str) -> None:
    wrong = f"not-the-token-{secrets.token_hex(8)}"
    (line,) = run_ai_sdk(ai_sdk, [{**gateway_call(sidecar, op, SONNET, prompt="hi"), "apiKey": wrong}])

    error = failed(line)
    # `ai` replaces the gateway's GatewayAuthenticationError (chosen by the body's type authentication_error) by a
    # plain Error of the same name that tells the developer to set AI_GATEWAY_API_KEY (ai wrap-gateway-error.ts).
    assert error["name"] == "GatewayAuthenticationError", error
    assert "Unauthenticated request to AI Gateway" in error["message"], error
    assert [r["status"] for r in line["requests"]] == [401]
    assert upstream.received == []


def test_gateway_unknown_model(ai_sdk: str, sidecar: Sidecar, upstream: FakeUpstream) -> None:
    (line,) = run_ai_sdk(ai_sdk, [gateway_call(sidecar, "generateText", "no-such-model-1", prompt="hi")])

    error = failed(line)
    assert (error["name"], error["type"], error["statusCode"], error["modelId"]) == (
        "GatewayModelNotFoundError",
        "model_not_found",
        404,
        "no-such-model-1",
    ), error
    assert upstream.received == []


def test_gateway_config_lists_servable_models(ai_sdk: str, sidecar: Sidecar) -> None:
    (line,) = run_ai_sdk(ai_sdk, [gateway_call(sidecar, "getAvailableModels", "")])

    models = {m["id"]: m for m in ok(line)["models"]}
    assert [r["url"] for r in line["requests"]] == [f"{sidecar.url}{GATEWAY_BASE}/config"]
    sonnet = models[SONNET]
    assert sonnet["pricing"] == SONNET_PRICING, sonnet
    assert sonnet["specification"] == {"specificationVersion": "v4", "provider": "anthropic", "modelId": SONNET}
    assert sonnet["modelType"] == "language"
    assert {GPT4O, GROK} <= set(models), sorted(models)

    # Also at the root and under any other base path; the bearer is required.
    root = httpx.get(f"{sidecar.url}/config", headers={"authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert root.status_code == 200 and {m["id"] for m in root.json()["models"]} == set(models)
    anonymous = httpx.get(f"{sidecar.url}/other/base/config", timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "authentication_error", anonymous.text


# ---------------------------------------------------------------------------------------------------------------------
# (b) @ai-sdk/anthropic → POST /v1/messages; (c) @ai-sdk/openai → /v1/chat/completions and /v1/responses

PROVIDER_CLIENTS = ("anthropic", "openai-chat", "openai-responses", "openai")


def provider_call(sidecar: Sidecar, client: str, op: str, model: str, **extra: Any) -> dict[str, Any]:
    call = {"client": client, "baseURL": f"{sidecar.url}/v1", "apiKey": TOKEN, "op": op, "model": model}
    return {**call, **extra}


def provider_model(client: str, up: Upstream) -> str:
    """A bare id for the client's own family (as an app would name it), ``provider/id`` for the other one."""
    native = (client == "anthropic") == (up is ANTHROPIC)
    return up.bare_model if native else up.model


CLIENT_WIRE = {
    "anthropic": "anthropic",
    "openai-chat": "openai-chat",
    "openai-responses": "openai-responses",
    "openai": "openai-responses",
}
"""The upstream wire API each client's own format relays to untranslated."""
CLIENT_PATHS = {
    "anthropic": "/v1/messages",
    "openai-chat": "/v1/chat/completions",
    "openai-responses": "/v1/responses",
    "openai": "/v1/responses",
}


@pytest.mark.parametrize("up", UPSTREAMS, ids=lambda u: u.name)
@pytest.mark.parametrize("client", PROVIDER_CLIENTS)
def test_provider_package_text_and_tool_call(
    ai_sdk: str, sidecar: Sidecar, upstream: FakeUpstream, client: str, up: Upstream
) -> None:
    text, tools = up.text(), up.tools()
    model = provider_model(client, up)
    # Same family (Anthropic client and upstream, Chat client and upstream, Responses client and upstream): the
    # sidecar relays the request as the client wrote it (sidecar/relay.py), so generateText's non-streaming request
    # reaches the upstream as one.
    relayed = CLIENT_WIRE[client] == up.name
    if relayed and up is OPENAI_RESPONSES:
        tools = relayed_responses_expected(tools)
    calls, replies = [], []
    for op in OPS:
        calls.append(provider_call(sidecar, client, op, model, prompt="Say hello."))
        calls.append(provider_call(sidecar, client, op, model, prompt="Weather?", tools=TOOLS, system="Be brief."))
        for fixture in (up.text_fixture, up.tool_fixture):
            json_reply = relayed and op == "generateText"
            replies.append(Reply.json(200, up.as_json(fixture)) if json_reply else Reply.sse(fixture_bytes(fixture)))
    upstream.push(*replies)
    lines = run_ai_sdk(ai_sdk, calls)

    for i, line in enumerate(lines):
        assert [r["url"] for r in line["requests"]] == [f"{sidecar.url}{CLIENT_PATHS[client]}"], line
        value = ok(line)
        expected = text if i % 2 == 0 else tools
        assert value["text"] == expected.text, value
        if i % 2:
            assert_tool_calls(value, expected)
        else:
            assert value["finishReason"] == "stop", value
        assert_usage(value["usage"], expected, details=False)
        # The generation the package saw in its response headers is in the ledger, with the usage the app got.
        row = ledger_row(sidecar, value["response"]["generationId"])
        assert (row["model"], row["streamed"]) == (up.model, calls[i]["op"] == "streamText"), row
        assert row["native_tokens_completion"] == value["usage"]["outputTokens"], (row, value["usage"])

    assert [r.path for r in upstream.received] == [up.path] * len(calls)
    assert_canary_only(upstream.received)
    assert upstream_tool_names(upstream.received[1]) == set(TOOLS)


@pytest.mark.parametrize("client", PROVIDER_CLIENTS)
def test_provider_package_wrong_bearer(ai_sdk: str, sidecar: Sidecar, upstream: FakeUpstream, client: str) -> None:
    wrong = f"not-the-token-{secrets.token_hex(8)}"
    model = provider_model(client, ANTHROPIC)
    calls = [{**provider_call(sidecar, client, op, model, prompt="hi"), "apiKey": wrong} for op in OPS]
    lines = run_ai_sdk(ai_sdk, calls)

    for line in lines:
        error = failed(line)
        assert (error["statusCode"], error["isRetryable"]) == (401, False), error
        assert [r["status"] for r in line["requests"]] == [401]
    assert upstream.received == []


def ledger_row(sidecar: Sidecar, generation_id: Any) -> dict[str, Any]:
    """``GET /v1/generation?id=`` for ``generation_id``, waiting out the ledger's write batch."""
    assert isinstance(generation_id, str) and GENERATION_ID.match(generation_id), generation_id
    return generation_row(sidecar.url, generation_id)
