"""The Gemini adapter (``google-generative-ai``) against recorded streams and error bodies, over real sockets
(FakeUpstream), and the pi route through it in the running sidecar."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import orjson
import pytest

from sidecar.errors import UpstreamProtocolError, UpstreamStatusError, UpstreamStreamError
from sidecar.models import ModelSpec, Pricing, load_builtin_catalog
from sidecar.providers import ADAPTERS, google_generative_ai
from sidecar.providers.base import Delta, Finish, ResponseInfo, TextDelta, UpstreamCall, UsageUpdate
from sidecar.stream import MessageAssembler, SilentEncoder
from tests.conftest import FAST_CONFIG, pi_body, read_events
from tests.fakeupstream import FIXTURES, FakeUpstream, Reply, fixture_bytes
from tests.providers.adapters import adapter_deltas
from tests.sidecar_server import TOKEN, RunningSidecar, run_sidecar, sidecar_environ, write_config

CANARY = "AIzaSy-canary-KEY-do-not-leak-0123456789"
DIR = "google-gemini"
STREAMS = sorted(p.name for p in (FIXTURES / DIR).glob("*.sse"))
HELLO: dict[str, Any] = {"messages": [{"role": "user", "content": "hi", "timestamp": 0}]}
CATALOG = load_builtin_catalog()
TOOL_ID = re.compile(r"^(?P<name>[a-z]+)_(?P<ms>\d{13})_(?P<n>\d+)$")  # pi-ai's minted shape, name_ms_counter


def catalog_pricing(model_id: str) -> Pricing:
    return Pricing(*CATALOG["models"][f"google/{model_id}"]["cost"])


def catalog_compat(model_id: str) -> dict[str, Any]:
    return dict(CATALOG["models"][f"google/{model_id}"].get("compat", {}))


def model(base_url: str = "http://x/v1beta", model_id: str = "gemini-2.5-flash", **kw: Any) -> ModelSpec:
    fields: dict[str, Any] = {
        "reasoning": True,
        "input": ("text", "image"),
        "pricing": catalog_pricing(model_id),
        "compat": catalog_compat(model_id),
    }
    return ModelSpec("google", model_id, "google-generative-ai", base_url, **{**fields, **kw})


def make_call(
    up: FakeUpstream,
    context: dict[str, Any] | None = None,
    *,
    options: dict[str, Any] | None = None,
    api_key: str | None = CANARY,
    max_retries: int = 0,
    headers: dict[str, str] | None = None,
    **model_kw: Any,
) -> UpstreamCall:
    return UpstreamCall(
        model=model(up.url + "/v1beta", **model_kw),
        context=context or HELLO,  # type: ignore[arg-type]
        options=options or {},
        api_key=api_key,
        session_id="session-1",
        headers=headers or {},
        max_retries=max_retries,
    )


@pytest.fixture
def up(upstream: FakeUpstream) -> FakeUpstream:
    return upstream  # the shared fixture from tests/conftest.py, under a short name


async def collect(call: UpstreamCall) -> tuple[list[Delta], Exception | None]:
    return await adapter_deltas(google_generative_ai.stream, call)


def assemble(deltas: list[Delta], model_id: str = "gemini-2.5-flash") -> dict[str, Any]:
    """The pi message the deltas make (the assembler every route uses), priced at the catalog's rates."""
    assembler = MessageAssembler(model(model_id=model_id), encoder=SilentEncoder())
    assembler.start()
    for delta in deltas:
        assembler.feed(delta)
    assembler.done()
    return dict(assembler.message)


def chunks(data: bytes) -> list[dict[str, Any]]:
    """The recorded chunks, read independently of the adapter (one ``data:`` line per event)."""
    return [orjson.loads(line[6:]) for line in data.splitlines() if line.startswith(b"data: ")]


def parts(data: bytes) -> list[dict[str, Any]]:
    return [
        p for c in chunks(data) for cand in c.get("candidates", []) for p in cand.get("content", {}).get("parts", [])
    ]


def thoughts(data: bytes) -> str:
    return "".join(p["text"] for p in parts(data) if p.get("thought"))


def answer(data: bytes) -> str:
    return "".join(p.get("text", "") for p in parts(data) if not p.get("thought"))


def signatures(data: bytes) -> list[str]:
    return [p["thoughtSignature"] for p in parts(data) if "thoughtSignature" in p]


# ----- every recorded stream, split at odd sizes --------------------------------------------------------------------

ERRORS = {  # fixture -> status, what the message says, the text that arrived before the failure
    "finish-reason-safety-vertex.sse": (400, "safety filters (finishReason SAFETY)", "<redacted>"),
    "prompt-blocked-safety.sse": (400, "blocked the prompt (blockReason SAFETY)", ""),
    "recitation-no-content.sse": (400, "(finishReason RECITATION)", "text1text2text3text4text5text6text7text8"),
    "malformed-function-call.sse": (
        502,
        "not valid (finishReason MALFORMED_FUNCTION_CALL): "
        'Malformed function call: print(default_api.archive(cities=["New',
        "",
    ),
}


def test_every_recorded_stream_is_replayed() -> None:
    assert STREAMS == [
        "cached-content-usage.ASSEMBLED.sse",
        "error-mid-stream-vertex.MOCK.sse",
        "finish-reason-safety-vertex.sse",
        "function-calls-parallel.sse",
        "malformed-function-call.sse",
        "max-tokens-after-thought.sse",
        "prompt-blocked-safety.sse",
        "recitation-no-content.sse",
        "text-basic.sse",
        "thought-summary-then-function-call-signature.sse",
        "thought-summary-then-text.sse",
        "thought-then-function-call-gemini-3.sse",
    ]
    assert ADAPTERS["google-generative-ai"] is google_generative_ai.stream
    assert CATALOG["providers"]["google"]["api"] == "google-generative-ai"


# Hand-computed from each recording's last usageMetadata: input = promptTokenCount - cachedContentTokenCount,
# output = candidatesTokenCount + thoughtsTokenCount, reasoning = thoughtsTokenCount; cost at the catalog's rates
# (USD per 1M tokens) for the recording's model.
EXPECTED: dict[str, dict[str, Any]] = {
    "text-basic.sse": {
        "model": "gemini-2.0-flash",
        "blocks": ["text"],
        "usage": (7, 10, 0, None),
        "cost": 7 * 0.1e-6 + 10 * 0.4e-6,
        "stop": "stop",
        "info": (None, "gemini-2.0-flash"),
    },
    "thought-summary-then-text.sse": {
        "model": "gemini-2.5-flash",
        "blocks": ["thinking", "text"],
        "usage": (10, 48 + 540, 0, 540),
        "cost": 10 * 0.3e-6 + 588 * 2.5e-6,
        "stop": "stop",
        "info": ("0J-HaJetAqv0jrEPwu-tsQ0", "gemini-2.5-flash"),
    },
    "thought-summary-then-function-call-signature.sse": {
        "model": "gemini-2.5-flash",
        "blocks": ["thinking", "toolCall"],
        "calls": [("now", {})],
        "usage": (38, 6 + 168, 0, 168),
        "cost": 38 * 0.3e-6 + 174 * 2.5e-6,
        "stop": "toolUse",
        "info": ("48SHaPHpHKbG-8YPtZCawAk", "gemini-2.5-flash"),
    },
    "function-calls-parallel.sse": {
        "model": "gemini-2.5-flash",
        "blocks": ["toolCall", "toolCall"],
        "calls": [("weather", {"city": "San Francisco"}), ("weather", {"city": "Santa Cruz"})],
        "usage": (68, 28 + 79, 0, 79),
        "cost": 68 * 0.3e-6 + 107 * 2.5e-6,
        "stop": "toolUse",
        "info": ("9zN1acDXGvaFz7IPxOOaiAU", "gemini-2.5-flash"),
    },
    "thought-then-function-call-gemini-3.sse": {
        "model": "gemini-3-pro-preview",
        "blocks": ["thinking", "toolCall"],
        "calls": [("weather", {"city": "San Francisco"})],
        "usage": (131, 15 + 95, 0, 95),
        "cost": 131 * 2e-6 + 110 * 12e-6,
        "stop": "toolUse",
        "info": ("B94haYr_OovWjMcPjJy_6Qk", "gemini-3-pro-preview"),
    },
    "max-tokens-after-thought.sse": {
        "model": "gemini-2.5-flash",
        "blocks": ["thinking", "text"],
        "usage": (29, 0 + 59, 0, 59),
        "cost": 29 * 0.3e-6 + 59 * 2.5e-6,
        "stop": "length",
        "info": ("EdDHavuSDILGjMcPvefFoQg", "gemini-2.5-flash"),
    },
    "cached-content-usage.ASSEMBLED.sse": {
        "model": "gemini-2.5-flash",
        "blocks": ["text"],
        "usage": (12013 - 11243, 15 + 73, 11243, 73),
        "cost": 770 * 0.3e-6 + 88 * 2.5e-6 + 11243 * 0.075e-6,
        "stop": "stop",
        "info": (None, "gemini-2.5-flash"),
    },
}


@pytest.mark.parametrize("split", [None, 1, 2, 7, 64])
@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_recorded_stream(up: FakeUpstream, name: str, split: int | None) -> None:
    data = fixture_bytes(f"{DIR}/{name}")
    expected = EXPECTED[name]
    up.push(Reply.sse(data, split=split))
    deltas, error = await collect(make_call(up, model_id=expected["model"]))
    assert error is None, error
    assert deltas[-1] == Finish(expected["stop"])
    infos = [d for d in deltas if isinstance(d, ResponseInfo)]
    assert infos == ([ResponseInfo(*expected["info"])] if expected["info"] else [])

    message = assemble(deltas, expected["model"])
    content = message["content"]
    assert [b["type"] for b in content] == expected["blocks"]
    texts = [b["text"] for b in content if b["type"] == "text"]
    assert "".join(texts) == answer(data) and all(texts)
    thinking = [b for b in content if b["type"] == "thinking"]
    assert "".join(b["thinking"] for b in thinking) == thoughts(data)
    assert all("thinkingSignature" not in b for b in thinking)  # these recordings sign the function calls only
    calls = [b for b in content if b["type"] == "toolCall"]
    assert [(c["name"], c["arguments"]) for c in calls] == expected.get("calls", [])
    # The signature stays on the part it came with: the first call of a parallel turn has it, the second does not.
    assert [c.get("thoughtSignature") for c in calls] == [
        p.get("thoughtSignature") for p in parts(data) if "functionCall" in p
    ]
    assert len({c["id"] for c in calls}) == len(calls)
    for call in calls:
        match = TOOL_ID.match(call["id"])
        assert match is not None and match["name"] == call["name"], call["id"]
        assert abs(int(match["ms"]) - time.time() * 1000) < 60_000

    usage = message["usage"]
    assert (usage["input"], usage["output"], usage["cacheRead"], usage.get("reasoningTokens")) == expected["usage"]
    assert usage["cacheWrite"] == 0
    assert usage["totalTokens"] == sum(expected["usage"][:3])
    assert usage["cost"]["total"] == pytest.approx(expected["cost"], rel=1e-12, abs=1e-15)
    assert message["stopReason"] == expected["stop"]


def test_total_tokens_match_the_recorded_totals() -> None:
    """pi's input + output + cacheRead is Gemini's totalTokenCount: nothing double-counted or dropped."""
    for name in ("text-basic.sse", "thought-summary-then-text.sse", "function-calls-parallel.sse"):
        meta = chunks(fixture_bytes(f"{DIR}/{name}"))[-1]["usageMetadata"]
        input_, output, cache_read, _ = EXPECTED[name]["usage"]
        assert input_ + output + cache_read == meta["totalTokenCount"], name
    meta = chunks(fixture_bytes(f"{DIR}/cached-content-usage.ASSEMBLED.sse"))[-1]["usageMetadata"]
    assert sum(EXPECTED["cached-content-usage.ASSEMBLED.sse"]["usage"][:3]) == meta["totalTokenCount"]


@pytest.mark.parametrize("split", [None, 1, 7])
@pytest.mark.parametrize("name", sorted(ERRORS))
async def test_failing_finish_and_blocked_prompt_are_in_band_errors(
    up: FakeUpstream, name: str, split: int | None
) -> None:
    status, says, before = ERRORS[name]
    up.push(Reply.sse(fixture_bytes(f"{DIR}/{name}"), split=split))
    deltas, error = await collect(make_call(up))
    assert isinstance(error, UpstreamStreamError), error
    assert error.status == status and says in str(error), str(error)
    # What arrived before the failure is kept for the error event (the guard keeps content and usage).
    assert "".join(d.text for d in deltas if isinstance(d, TextDelta)) == before
    assert not any(isinstance(d, Finish) for d in deltas)


async def test_safety_stop_keeps_the_usage_it_came_with(up: FakeUpstream) -> None:
    up.push(Reply.sse(fixture_bytes(f"{DIR}/finish-reason-safety-vertex.sse")))
    deltas, error = await collect(make_call(up))
    assert isinstance(error, UpstreamStreamError)
    assert [d for d in deltas if isinstance(d, UsageUpdate)] == [UsageUpdate(input=10, output=66, cache_read=0)]


def mid_stream_error_body() -> bytes:
    """The MOCK's two chunks, then its error object framed as a ``data:`` event (as pi-ai reads ``chunk.error``)."""
    data = fixture_bytes(f"{DIR}/error-mid-stream-vertex.MOCK.sse")
    head, _, error = data.partition(b"\n\n{")
    return head + b"\n\ndata: " + orjson.dumps(orjson.loads(b"{" + error)) + b"\n\n"


@pytest.mark.parametrize("split", [None, 1, 5])
@pytest.mark.parametrize("framed", [False, True])
async def test_error_mid_stream(up: FakeUpstream, framed: bool, split: int | None) -> None:
    """Two chunks (each saying STOP), then the error: as the MOCK writes it, a pretty-printed JSON object outside any
    SSE field, and as a ``data:`` event (how pi-ai reads ``chunk.error``). Both end the turn with that error."""
    data = fixture_bytes(f"{DIR}/error-mid-stream-vertex.MOCK.sse")
    up.push(Reply.sse(mid_stream_error_body() if framed else data, split=split))
    deltas, error = await collect(make_call(up))
    assert isinstance(error, UpstreamStreamError)
    assert error.status == 499 and str(error) == "google stream error (CANCELLED): The operation was cancelled."
    assert [d.text for d in deltas if isinstance(d, TextDelta)] == ["First ", "Second "]
    assert assemble(deltas)["content"] == [{"type": "text", "text": "First Second "}]


async def test_a_json_reply_where_a_stream_belongs_is_a_protocol_error(up: FakeUpstream) -> None:
    (chunk,) = chunks(fixture_bytes(f"{DIR}/cached-content-usage.ASSEMBLED.sse"))
    up.push(Reply.json(200, chunk))
    _, error = await collect(make_call(up))
    assert isinstance(error, UpstreamProtocolError) and "expected an event stream" in str(error)


async def test_error_chunk_without_a_code_gets_the_status_of_its_name(up: FakeUpstream) -> None:
    error = {"error": {"message": f"quota for key {CANARY} exceeded", "status": "RESOURCE_EXHAUSTED"}}
    up.push(Reply.sse(b"data: " + orjson.dumps(error) + b"\r\n\r\n"))
    _, raised = await collect(make_call(up))
    assert isinstance(raised, UpstreamStreamError) and raised.status == 429
    assert CANARY not in str(raised) and "exceeded" in str(raised)  # the message is redacted of the key


async def test_stream_cut_before_the_finish_reason_is_a_protocol_error(up: FakeUpstream) -> None:
    data = fixture_bytes(f"{DIR}/thought-summary-then-text.sse")
    up.push(Reply.sse(data[: data.index(b'"finishReason"')].rpartition(b"\r\n\r\n")[0] + b"\r\n\r\n", split=64))
    deltas, error = await collect(make_call(up))
    assert isinstance(error, UpstreamProtocolError) and error.status == 502
    assert "without a finishReason" in str(error)
    message = assemble(deltas)
    assert message["content"][1]["text"].startswith("The sky is blue")  # kept for the error event


async def test_unparseable_chunk_is_a_protocol_error(up: FakeUpstream) -> None:
    up.push(Reply.sse(b'data: {"candidates": [\r\n\r\n'), Reply.sse(b'data: {"candidates": {"0": 1}}\r\n\r\n'))
    _, error = await collect(make_call(up))
    assert isinstance(error, UpstreamProtocolError) and "unparseable" in str(error)
    _, error = await collect(make_call(up))
    assert isinstance(error, UpstreamProtocolError) and "malformed Gemini chunk" in str(error)


ERROR_BODIES = {
    "400-api-key-invalid.json": (400, "API key not valid. Please pass a valid API key."),
    "404-model-not-found.json": (404, "models/gemini-5.0-flash is not found"),
    "429-resource-exhausted-retry-info.json": (429, "You exceeded your current quota"),
    "503-unavailable-high-demand.json": (503, "This model is currently experiencing high demand."),
}


@pytest.mark.parametrize("name", sorted(ERROR_BODIES))
async def test_errors_before_the_first_byte(up: FakeUpstream, name: str) -> None:
    status, says = ERROR_BODIES[name]
    up.push(Reply.json(status, fixture_bytes(f"{DIR}/errors/{name}")))
    deltas, error = await collect(make_call(up))
    assert deltas == []
    assert isinstance(error, UpstreamStatusError) and error.status == status
    assert str(error).startswith(f"{status} ") and says in str(error)


async def test_an_echoed_key_is_redacted_from_the_error(up: FakeUpstream) -> None:
    """Gemini's 400 for a bad key quotes the key in its DebugInfo ("Invalid API key: key1234"): with the injected
    key in its place, the error the caller sees says what failed but not the key."""
    body = fixture_bytes(f"{DIR}/errors/400-api-key-invalid.json").replace(b"key1234", CANARY.encode())
    up.push(Reply.json(400, body))
    _, error = await collect(make_call(up))
    assert isinstance(error, UpstreamStatusError) and error.status == 400
    assert CANARY not in str(error) and "API_KEY_INVALID" in str(error)


async def test_unavailable_is_retried(up: FakeUpstream) -> None:
    up.push(
        Reply.json(503, fixture_bytes(f"{DIR}/errors/503-unavailable-high-demand.json")),
        Reply.sse(fixture_bytes(f"{DIR}/text-basic.sse")),
    )
    deltas, error = await collect(make_call(up, max_retries=1, options={"maxRetryDelayMs": 10}))
    assert error is None and deltas[-1] == Finish("stop") and len(up.received) == 2


# ----- the key, the URL and the headers ---------------------------------------------------------------------------


async def test_key_only_in_the_x_goog_api_key_header(up: FakeUpstream) -> None:
    up.push(Reply.sse(fixture_bytes(f"{DIR}/text-basic.sse")))
    caller = {"X-Goog-Api-Key": "caller-key", "x-goog-user-project": "proj-1"}
    _, error = await collect(make_call(up, headers=caller, model_id="gemini-2.0-flash"))
    assert error is None
    (received,) = up.received
    assert received.path == "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    assert received.headers["x-goog-api-key"] == CANARY  # the injected key beats a pass-through header
    assert received.headers["x-goog-user-project"] == "proj-1"
    assert received.headers["content-type"] == "application/json"
    assert received.headers["accept"] == "text/event-stream"
    assert CANARY not in unquote(received.path) and "key=" not in received.path
    assert CANARY.encode() not in received.body
    others = {k: v for k, v in received.headers.items() if k != "x-goog-api-key"}
    assert CANARY not in repr(others)


async def test_model_id_is_one_path_segment(up: FakeUpstream) -> None:
    """A requested model id cannot reach another path or add a query (``key=`` would be the key's place)."""
    up.push(Reply.sse(fixture_bytes(f"{DIR}/text-basic.sse")))
    odd = ModelSpec("google", "../files/x?key=1", "google-generative-ai", up.url + "/v1beta/")
    await collect(dataclasses.replace(make_call(up), model=odd))
    assert up.received[-1].path == "/v1beta/models/..%2Ffiles%2Fx%3Fkey%3D1:streamGenerateContent?alt=sse"


# ----- the request ------------------------------------------------------------------------------------------------

SIGNATURE = "CiIBVKhc7vB+vaaq6rA/KC79Ts7iXagIOA4EBOyBFDpl+pxP"  # base64, as Gemini's are
IMAGE = {"type": "image", "data": "aGVsbG8=", "mimeType": "image/png"}
SCREENSHOT = {"type": "image", "data": "d29ybGQ=", "mimeType": "image/jpeg"}
LOOKUP = {
    "name": "lookup",
    "description": "Look something up",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
}


def assistant(*content: dict[str, Any], provider: str = "google", model_id: str = "gemini-2.5-flash") -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": list(content),
        "api": "google-generative-ai",
        "provider": provider,
        "model": model_id,
        "usage": {},
        "stopReason": "toolUse",
        "timestamp": 2,
    }


def tool_result(call_id: str, name: str, *content: dict[str, Any], error: bool = False) -> dict[str, Any]:
    return {
        "role": "toolResult",
        "toolCallId": call_id,
        "toolName": name,
        "content": list(content),
        "isError": error,
        "timestamp": 3,
    }


def full_context(provider: str = "google", model_id: str = "gemini-2.5-flash") -> dict[str, Any]:
    return {
        "systemPrompt": ["You are terse.", "  ", "Answer in English."],
        "tools": [LOOKUP],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "What is this?"}, IMAGE], "timestamp": 1},
            assistant(
                {"type": "thinking", "thinking": "Look it up.", "thinkingSignature": SIGNATURE},
                {"type": "thinking", "thinking": "Unsigned."},
                {"type": "thinking", "thinking": "Anthropic's.", "thinkingSignature": "EqQBCgIYAhIM1gbcDa9G=="},
                {"type": "redactedThinking", "data": "opaque"},
                {"type": "text", "text": "Checking."},
                {"type": "text", "text": "  "},
                {
                    "type": "toolCall",
                    "id": "lookup_1",
                    "name": "lookup",
                    "arguments": {"q": "hello"},
                    "thoughtSignature": SIGNATURE,
                },
                {"type": "toolCall", "id": "call|odd.id", "name": "lookup", "arguments": {"q": "screen"}},
                provider=provider,
                model_id=model_id,
            ),
            tool_result("lookup_1", "lookup", {"type": "text", "text": "a greeting"}),
            tool_result("call|odd.id", "lookup", {"type": "text", "text": "see"}, SCREENSHOT, error=True),
            {"role": "developer", "content": "Be careful.", "timestamp": 4},
            {"role": "user", "content": "Thanks.", "timestamp": 5},
        ],
    }


async def sent(up: FakeUpstream, context: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    up.push(Reply.sse(fixture_bytes(f"{DIR}/text-basic.sse")))
    _, error = await collect(make_call(up, context, **kw))
    assert error is None
    body: dict[str, Any] = up.received[-1].json()
    return body


async def test_request_translation(up: FakeUpstream) -> None:
    options = {
        "toolChoice": {"type": "tool", "name": "lookup"},
        "maxTokens": 256,
        "reasoning": "low",
        "temperature": 0.3,
    }
    body = await sent(up, full_context(), options=options)
    assert body == {
        "contents": [
            {
                "role": "user",
                "parts": [{"text": "What is this?"}, {"inlineData": {"mimeType": "image/png", "data": "aGVsbG8="}}],
            },
            {
                "role": "model",
                "parts": [
                    {"thought": True, "text": "Look it up.", "thoughtSignature": SIGNATURE},
                    {"text": "```thinking\nUnsigned.\n```"},  # no signature: replayed as text, not as a thought
                    {"text": "```thinking\nAnthropic's.\n```"},  # not base64 Gemini would take: the same
                    {"text": "Checking."},
                    {"functionCall": {"name": "lookup", "args": {"q": "hello"}}, "thoughtSignature": SIGNATURE},
                    {"functionCall": {"name": "lookup", "args": {"q": "screen"}}},
                ],
            },
            {
                "role": "user",  # the turn's results, together and in order
                "parts": [
                    {"functionResponse": {"name": "lookup", "response": {"output": "a greeting"}}},
                    {"functionResponse": {"name": "lookup", "response": {"error": "see"}}},
                ],
            },
            # Gemini 2.5 takes no image in a functionResponse: it follows the results as a user turn.
            {
                "role": "user",
                "parts": [
                    {"text": "Tool result image:"},
                    {"inlineData": {"mimeType": "image/jpeg", "data": "d29ybGQ="}},
                ],
            },
            {"role": "user", "parts": [{"text": "Be careful."}]},
            {"role": "user", "parts": [{"text": "Thanks."}]},
        ],
        "systemInstruction": {"parts": [{"text": "You are terse."}, {"text": "Answer in English."}]},
        "tools": [
            {
                "functionDeclarations": [
                    {"name": "lookup", "description": "Look something up", "parametersJsonSchema": LOOKUP["parameters"]}
                ]
            }
        ],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}},
        "generationConfig": {
            "temperature": 0.3,
            "maxOutputTokens": 256,
            "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 2048},
        },
    }


async def test_gemini_3_request(up: FakeUpstream) -> None:
    """Gemini 3 (catalog compat): ids on function parts, the bypass value on an unsigned call, tool-result images
    inside the functionResponse, a thinkingLevel."""
    model_id = "gemini-3-pro-preview"
    body = await sent(up, full_context(model_id=model_id), options={"reasoning": "medium"}, model_id=model_id)
    model_turn, results = body["contents"][1], body["contents"][2]
    assert model_turn["parts"][-2:] == [
        {"functionCall": {"name": "lookup", "args": {"q": "hello"}, "id": "lookup_1"}, "thoughtSignature": SIGNATURE},
        {
            "functionCall": {"name": "lookup", "args": {"q": "screen"}, "id": "call_odd_id"},
            "thoughtSignature": google_generative_ai.SKIP_THOUGHT_SIGNATURE,
        },
    ]
    assert results["parts"][1] == {
        "functionResponse": {
            "name": "lookup",
            "response": {"error": "see"},
            "parts": [{"inlineData": {"mimeType": "image/jpeg", "data": "d29ybGQ="}}],
            "id": "call_odd_id",
        }
    }
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user", "user", "user"]  # no image turn
    # 3 Pro accepts LOW and HIGH only: medium goes to the level below.
    assert body["generationConfig"] == {"thinkingConfig": {"includeThoughts": True, "thinkingLevel": "LOW"}}


@pytest.mark.parametrize(
    ("provider", "model_id"),
    [("anthropic", "gemini-2.5-flash"), ("google", "gemini-2.5-pro"), ("google-vertex", "gemini-2.5-flash")],
)
async def test_foreign_signatures_are_not_sent(up: FakeUpstream, provider: str, model_id: str) -> None:
    """Signatures made by another provider, or by another Gemini model, are dropped (Gemini rejects them)."""
    body = await sent(up, full_context(provider, model_id))
    model_turn = body["contents"][1]["parts"]
    assert model_turn[0] == {"text": "```thinking\nLook it up.\n```"}
    assert model_turn[-2] == {"functionCall": {"name": "lookup", "args": {"q": "hello"}}}
    assert not any("thoughtSignature" in part or part.get("thought") for part in model_turn)
    assert SIGNATURE not in orjson.dumps(body).decode()


async def test_images_for_a_model_without_vision(up: FakeUpstream) -> None:
    body = await sent(up, full_context(), input=("text",))
    assert body["contents"][0] == {
        "role": "user",
        "parts": [{"text": "What is this?"}, {"text": "[image omitted: model does not support vision]"}],
    }
    assert body["contents"][2]["parts"][1]["functionResponse"]["response"] == {
        "error": "see\n[image omitted: model does not support vision]"
    }
    assert len(body["contents"]) == 5  # no image turn after the results


async def test_unanswered_calls_are_answered_and_orphans_dropped(up: FakeUpstream) -> None:
    context = {
        "messages": [
            {"role": "user", "content": "go", "timestamp": 1},
            assistant(
                {"type": "toolCall", "id": "a_1", "name": "alpha", "arguments": {}},
                {"type": "toolCall", "id": "b_2", "name": "beta", "arguments": {}},
            ),
            tool_result("b_2", "beta", {"type": "text", "text": "B"}),
            tool_result("zzz", "ghost", {"type": "text", "text": "orphan"}),
            {"role": "user", "content": "next", "timestamp": 4},
        ]
    }
    body = await sent(up, context)
    assert body["contents"][2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "beta", "response": {"output": "B"}}},
            {"functionResponse": {"name": "alpha", "response": {"error": "No result provided"}}},
        ],
    }
    assert body["contents"][3] == {"role": "user", "parts": [{"text": "next"}]}


@pytest.mark.parametrize(
    ("model_id", "options", "thinking"),
    [
        ("gemini-2.5-flash", {"reasoning": "minimal"}, {"includeThoughts": True, "thinkingBudget": 128}),
        ("gemini-2.5-flash", {"reasoning": "high"}, {"includeThoughts": True, "thinkingBudget": 24576}),
        ("gemini-2.5-pro", {"reasoning": "high"}, {"includeThoughts": True, "thinkingBudget": 32768}),
        ("gemini-2.5-pro", {"reasoning": "medium"}, {"includeThoughts": True, "thinkingBudget": 8192}),
        (
            "gemini-2.5-flash",
            {"reasoning": "low", "thinkingBudgets": {"low": 1000}, "hideThinkingSummary": True},
            {"includeThoughts": False, "thinkingBudget": 1000},
        ),
        ("gemini-2.5-flash", {}, {"includeThoughts": False, "thinkingBudget": 0}),  # Gemini thinks unless told not to
        (
            "gemini-2.5-flash",
            {"reasoning": "high", "disableReasoning": True},
            {"includeThoughts": False, "thinkingBudget": 0},
        ),
        ("gemini-2.5-pro", {}, None),  # 2.5 Pro cannot stop thinking: its default is left alone
        ("gemini-3-pro-preview", {}, None),
        ("gemini-3-pro-preview", {"reasoning": "minimal"}, {"includeThoughts": True, "thinkingLevel": "LOW"}),
        ("gemini-3-pro-preview", {"reasoning": "xhigh"}, {"includeThoughts": True, "thinkingLevel": "HIGH"}),
        ("gemini-3-flash-preview", {"reasoning": "minimal"}, {"includeThoughts": True, "thinkingLevel": "MINIMAL"}),
        ("gemini-3-flash-preview", {"reasoning": "medium"}, {"includeThoughts": True, "thinkingLevel": "MEDIUM"}),
        ("gemini-2.0-flash", {"reasoning": "high"}, None),  # not a thinking model
    ],
)
async def test_thinking_config(
    up: FakeUpstream, model_id: str, options: dict[str, Any], thinking: dict[str, Any] | None
) -> None:
    reasoning = bool(CATALOG["models"][f"google/{model_id}"].get("reasoning"))
    body = await sent(up, options=options, model_id=model_id, reasoning=reasoning)
    assert body.get("generationConfig", {}).get("thinkingConfig") == thinking


async def test_sampling_options_and_tool_choice(up: FakeUpstream) -> None:
    options = {"topP": 0.9, "topK": 40, "presencePenalty": 0.5, "stopSequences": ["END"], "toolChoice": "required"}
    body = await sent(up, {**HELLO, "tools": [LOOKUP]}, options=options, model_id="gemini-2.0-flash", reasoning=False)
    assert body["generationConfig"] == {"topP": 0.9, "topK": 40, "presencePenalty": 0.5, "stopSequences": ["END"]}
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    for choice, config in (
        ("none", {"functionCallingConfig": {"mode": "NONE"}}),
        ("auto", None),
        ({"type": "computer"}, None),
    ):
        body = await sent(up, {**HELLO, "tools": [LOOKUP]}, options={"toolChoice": choice})
        assert body.get("toolConfig") == config
    body = await sent(up, options={"toolChoice": "required", "cachedContent": "cachedContents/abc"})
    assert "toolConfig" not in body and "tools" not in body  # no toolConfig without tools (a 400)
    assert body["cachedContent"] == "cachedContents/abc"
    assert "safetySettings" not in body  # the Gemini API rows set none: Google's defaults apply


async def test_safety_settings_come_from_the_model_compat(up: FakeUpstream) -> None:
    settings = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}]
    body = await sent(up, compat={**catalog_compat("gemini-2.5-flash"), "safety_settings": settings})
    assert body["safetySettings"] == settings


def test_tool_schema_is_made_acceptable_to_gemini() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "format": {"type": "string", "format": "date", "pattern": "^\\d+$"},  # a property named like a keyword
            "mode": {"const": "fast"},
            "where": {"$ref": "#/$defs/Place"},
            "tags": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 3},
            "any": True,
        },
        "$defs": {
            "Place": {"type": "object", "properties": {"city": {"type": "string"}, "near": {"$ref": "#/$defs/Place"}}}
        },
    }
    cleaned = google_generative_ai.tool_schema(schema)
    place_4 = {"type": "object", "properties": {"city": {"type": "string"}, "near": {}}}  # recursion ends in "any"
    place = place_4
    for _ in range(3):
        place = {"type": "object", "properties": {"city": {"type": "string"}, "near": place}}
    assert cleaned == {
        "type": "object",
        "properties": {
            "format": {"type": "string"},
            "mode": {"enum": ["fast"]},
            "where": place,
            "tags": {"type": "array", "items": {"type": "string"}},
            "any": {},
        },
    }
    assert google_generative_ai.tool_schema(None) == {"type": "object", "properties": {}}
    assert google_generative_ai.tool_schema({"properties": {"a": {"type": "string"}}}) == {
        "type": "object",
        "properties": {"a": {"type": "string"}},
    }
    deep: dict[str, Any] = {"type": "object"}
    for _ in range(5000):  # request-sized nesting must not exhaust the stack
        deep = {"type": "object", "properties": {"x": deep}}
    assert google_generative_ai.tool_schema(deep)["type"] == "object"


# ----- a second turn replays the first turn's signatures ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "model_id"),
    [
        ("thought-summary-then-function-call-signature.sse", "gemini-2.5-flash"),
        ("function-calls-parallel.sse", "gemini-2.5-flash"),
        ("thought-then-function-call-gemini-3.sse", "gemini-3-pro-preview"),
    ],
)
async def test_second_turn_replays_the_signatures_on_their_parts(up: FakeUpstream, name: str, model_id: str) -> None:
    data = fixture_bytes(f"{DIR}/{name}")
    up.push(Reply.sse(data, split=7))
    deltas, error = await collect(make_call(up, model_id=model_id))
    assert error is None
    turn = assemble(deltas, model_id)
    calls = [b for b in turn["content"] if b["type"] == "toolCall"]
    results = [tool_result(c["id"], c["name"], {"type": "text", "text": f"result {i}"}) for i, c in enumerate(calls)]
    context = {"messages": [HELLO["messages"][0], turn, *results]}
    body = await sent(up, context, model_id=model_id)

    user, model_turn, answers = body["contents"]
    assert user == {"role": "user", "parts": [{"text": "hi"}]}
    recorded_calls = [p for p in parts(data) if "functionCall" in p]
    sent_calls = [p for p in model_turn["parts"] if "functionCall" in p]
    compat = catalog_compat(model_id)
    for recorded, replayed, call in zip(recorded_calls, sent_calls, calls, strict=True):
        expected_call = dict(recorded["functionCall"])
        if compat.get("function_part_id"):
            expected_call["id"] = call["id"]
        # The signature goes back on the very part it came with; an unsigned parallel call stays unsigned.
        assert replayed == {
            "functionCall": expected_call,
            **({"thoughtSignature": s} if (s := recorded.get("thoughtSignature")) else {}),
        }
    assert signatures(data) == [p["thoughtSignature"] for p in model_turn["parts"] if "thoughtSignature" in p]
    # The thought summaries came unsigned: replayed as text, in order, before the calls.
    thinking = [p["text"] for p in model_turn["parts"] if "functionCall" not in p]
    assert thinking == ([f"```thinking\n{thoughts(data)}\n```"] if thoughts(data) else [])
    assert answers["parts"] == [
        {
            "functionResponse": {
                "name": c["name"],
                "response": {"output": f"result {i}"},
                **({"id": c["id"]} if compat.get("function_part_id") else {}),
            }
        }
        for i, c in enumerate(calls)
    ]


async def test_a_signed_thought_is_replayed_as_a_thought(up: FakeUpstream) -> None:
    """A thought part that carries its signature (on itself or on an empty part after it) keeps it, and goes back as
    a ``thought`` part with it."""
    thought = {"text": "Plan.", "thought": True}
    stream = [
        {"candidates": [{"content": {"parts": [thought], "role": "model"}}]},
        {"candidates": [{"content": {"parts": [{"text": "", "thoughtSignature": SIGNATURE}], "role": "model"}}]},
        {"candidates": [{"content": {"parts": [{"text": "Done."}], "role": "model"}, "finishReason": "STOP"}]},
    ]
    up.push(Reply.sse(b"".join(b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in stream), split=3))
    deltas, _ = await collect(make_call(up))
    turn = assemble(deltas)
    assert turn["content"] == [
        {"type": "thinking", "thinking": "Plan.", "thinkingSignature": SIGNATURE},
        {"type": "text", "text": "Done."},
    ]
    body = await sent(
        up, {"messages": [HELLO["messages"][0], turn, {"role": "user", "content": "and?", "timestamp": 9}]}
    )
    assert body["contents"][1] == {
        "role": "model",
        "parts": [{"thought": True, "text": "Plan.", "thoughtSignature": SIGNATURE}, {"text": "Done."}],
    }


def test_text_signatures_are_kept_only_when_asked() -> None:
    """Vertex keeps a text part's signature (pi-ai's textSignature); the Gemini API's parser does not."""
    chunk = {
        "candidates": [{"content": {"parts": [{"text": "Hi", "thoughtSignature": SIGNATURE}]}, "finishReason": "STOP"}]
    }
    kept = google_generative_ai.GeminiStreamParser("google-vertex", text_signatures=True).feed_chunk(chunk)
    dropped = google_generative_ai.GeminiStreamParser("google").feed_chunk(chunk)
    assert kept == [TextDelta(0, "Hi", signature=SIGNATURE)] and dropped == [TextDelta(0, "Hi")]


def test_function_call_ids_from_gemini_are_kept_unless_repeated() -> None:
    parser = google_generative_ai.GeminiStreamParser("google")
    call = {"functionCall": {"name": "f", "args": {"a": 1}, "id": "fc-1"}}
    chunk = {"candidates": [{"content": {"parts": [call, call]}, "finishReason": "STOP"}]}
    first, _, second, _ = parser.feed_chunk(chunk)
    assert first.id == "fc-1" and second.id != "fc-1" and TOOL_ID.match(second.id or "")  # type: ignore[union-attr]
    assert first.arguments == '{"a":1}'  # type: ignore[union-attr]


# ----- non-streaming replies ----------------------------------------------------------------------------------------


def test_parse_response_reads_a_generate_content_reply() -> None:
    """The cached-usage fixture's chunk is a real non-streaming ``generateContent`` reply (see PROVENANCE.md)."""
    (reply,) = chunks(fixture_bytes(f"{DIR}/cached-content-usage.ASSEMBLED.sse"))
    deltas = google_generative_ai.parse_response(reply, "google")
    assert deltas[0] == ResponseInfo(None, "gemini-2.5-flash")
    assert assemble(deltas)["content"] == [
        {"type": "text", "text": reply["candidates"][0]["content"]["parts"][0]["text"]}
    ]
    assert UsageUpdate(input=770, output=88, cache_read=11243, reasoning=73) in deltas
    assert deltas[-1] == Finish("stop")
    # streamGenerateContent without alt=sse answers with a JSON array of the chunks.
    array = chunks(fixture_bytes(f"{DIR}/function-calls-parallel.sse"))
    message = assemble(google_generative_ai.parse_response(array, "google"))
    assert [b["name"] for b in message["content"]] == ["weather", "weather"] and message["stopReason"] == "toolUse"


def test_parse_response_raises_for_errors() -> None:
    body = orjson.loads(fixture_bytes(f"{DIR}/errors/429-resource-exhausted-retry-info.json"))
    with pytest.raises(UpstreamStreamError) as caught:
        google_generative_ai.parse_response(body, "google")
    assert caught.value.status == 429 and "RESOURCE_EXHAUSTED" in str(caught.value)
    (blocked,) = chunks(fixture_bytes(f"{DIR}/prompt-blocked-safety.sse"))
    with pytest.raises(UpstreamStreamError) as caught:
        google_generative_ai.parse_response(blocked, "google")
    assert caught.value.status == 400
    with pytest.raises(UpstreamProtocolError):
        google_generative_ai.parse_response("nope", "google")
    with pytest.raises(UpstreamProtocolError):
        google_generative_ai.parse_response({"candidates": []}, "google")  # no finishReason


# ----- the pi route through the running sidecar ---------------------------------------------------------------------


@pytest.fixture
def gemini_sidecar(upstream: FakeUpstream, tmp_path: Path) -> Iterator[RunningSidecar]:
    """The real sidecar holding a Gemini key, its google provider pointed at the fake upstream by config."""
    environ = sidecar_environ(upstream.url, tmp_path, GEMINI_API_KEY=CANARY)
    config = FAST_CONFIG + f'\n[providers.google]\nbase_url = "{upstream.url}/v1beta"\n'
    with run_sidecar(environ, write_config(tmp_path, config)) as running:
        yield running


def post_pi(sidecar: RunningSidecar, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{sidecar.url}/v1/pi/stream", json=body, headers={"authorization": f"Bearer {TOKEN}"}, timeout=10
    )


def test_pi_route_streams_gemini(gemini_sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    data = fixture_bytes(f"{DIR}/thought-summary-then-function-call-signature.sse")
    upstream.push(Reply.sse(data, split=7))
    response = post_pi(
        gemini_sidecar, pi_body("google/gemini-2.5-flash", "Days until New Year's Eve?", reasoning="medium")
    )
    assert response.status_code == 200
    events = read_events(response)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["start", "thinking_start"] and kinds[-3:] == ["toolcall_delta", "toolcall_end", "done"]
    message: Any = events[-1]["message"]
    assert (message["api"], message["provider"], message["model"]) == (
        "google-generative-ai",
        "google",
        "gemini-2.5-flash",
    )
    assert (message["stopReason"], message["responseId"]) == ("toolUse", "48SHaPHpHKbG-8YPtZCawAk")
    thinking, call = message["content"]
    assert thinking == {"type": "thinking", "thinking": thoughts(data)}
    assert (call["name"], call["arguments"], call["thoughtSignature"]) == ("now", {}, signatures(data)[0])
    assert events[-2]["toolCall"] == call
    usage = message["usage"]
    assert (usage["input"], usage["output"], usage["cacheRead"], usage["reasoningTokens"]) == (38, 174, 0, 168)
    assert usage["cost"]["total"] == pytest.approx(38 * 0.3e-6 + 174 * 2.5e-6, rel=1e-12)

    (received,) = upstream.received
    assert received.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert received.headers["x-goog-api-key"] == CANARY
    assert "authorization" not in received.headers
    assert TOKEN not in repr(received.headers) and TOKEN.encode() not in received.body
    assert CANARY not in response.text
    assert received.json() == {
        "contents": [{"role": "user", "parts": [{"text": "Days until New Year's Eve?"}]}],
        "generationConfig": {"thinkingConfig": {"includeThoughts": True, "thinkingBudget": 8192}},
    }


@pytest.mark.parametrize("name", sorted(ERROR_BODIES))
def test_pi_route_errors_before_the_first_byte(
    gemini_sidecar: RunningSidecar, upstream: FakeUpstream, name: str
) -> None:
    status, says = ERROR_BODIES[name]
    body = fixture_bytes(f"{DIR}/errors/{name}").replace(b"key1234", CANARY.encode())
    upstream.push(Reply.json(status, body))
    response = post_pi(gemini_sidecar, pi_body("google/gemini-2.5-flash"))
    events = read_events(response)
    assert [e["type"] for e in events] == ["start", "error"]
    error: Any = events[-1]["error"]
    assert error["errorStatus"] == status and says in error["errorMessage"]
    assert CANARY not in response.text


def test_pi_route_safety_stop_is_an_error_event(gemini_sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    upstream.push(Reply.sse(fixture_bytes(f"{DIR}/finish-reason-safety-vertex.sse")))
    events = read_events(post_pi(gemini_sidecar, pi_body("google/gemini-2.5-flash")))
    error: Any = events[-1]["error"]
    assert events[-1]["type"] == "error" and error["errorStatus"] == 400
    assert "safety" in error["errorMessage"] and error["content"] == [{"type": "text", "text": "<redacted>"}]
    assert (error["usage"]["input"], error["usage"]["output"]) == (10, 66)


def test_openai_chat_format_reaches_gemini(gemini_sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    """An OpenAI-format request for a Gemini model is translated, not relayed: Gemini's native wire upstream."""
    upstream.push(Reply.sse(fixture_bytes(f"{DIR}/function-calls-parallel.sse")))
    body = {
        "model": "google/gemini-2.5-flash",
        "messages": [{"role": "user", "content": "Weather in SF and Santa Cruz?"}],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
    }
    response = httpx.post(
        f"{gemini_sidecar.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    calls = choice["message"]["tool_calls"]
    assert [orjson.loads(c["function"]["arguments"]) for c in calls] == [
        {"city": "San Francisco"},
        {"city": "Santa Cruz"},
    ]
    assert upstream.received[0].path.endswith(":streamGenerateContent?alt=sse")
    assert upstream.received[0].json()["tools"][0]["functionDeclarations"][0]["name"] == "weather"


# ----- parse speed (a figure for the report, and a guard against a quadratic slip) --------------------------------


def test_parse_cost_per_event() -> None:
    from httpx_sse import ServerSentEvent

    events = [
        ServerSentEvent(data=orjson.dumps(c).decode())
        for c in chunks(fixture_bytes(f"{DIR}/thought-summary-then-text.sse"))
    ]
    rounds = 2000
    started = time.perf_counter()
    for _ in range(rounds):
        parser = google_generative_ai.GeminiStreamParser("google")
        for event in events:
            parser.feed(event)
        parser.end()
    per_event_us = (time.perf_counter() - started) / (rounds * len(events)) * 1e6
    assert per_event_us < 200, per_event_us
