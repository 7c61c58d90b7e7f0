"""Interop: the unmodified real client ``@oh-my-pi/pi-ai@18.2.3`` (under Bun) against a live sidecar.

One sidecar process (``python -m sidecar serve``) serves the whole module. Its Anthropic and OpenAI base URLs point
at a FakeUpstream that replays recorded provider bytes, and it holds canary API keys. Each scenario runs the client
driver ``pi_client.ts`` in a fresh ``bun`` process. The driver reports every event the client yielded, its
``onResponse`` headers, and the final ``.result()`` or the thrown error. The tests assert on that report and on the
upstream requests the FakeUpstream recorded.

Run with ``.venv/bin/python -m pytest tests/interop -q``. The first run installs ``node_modules`` with ``npm ci``.
The suite fails, and never skips, when npm or Bun is unavailable.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fakeupstream import FakeUpstream, Reply, fixture_bytes
from tests.interop.harness import (
    BUN,
    INTEROP_DIR,
    Sidecar,
    driver_broke,
    installed_version,
    npm_install,
    reset_upstream,
    run_driver,
    run_sidecar,
)

pytestmark = pytest.mark.interop

PI_AI_VERSION = "18.2.3"
BUN_VERSION = "1.4.5"
DRIVER_TIMEOUT_S = 30

ANTHROPIC = "anthropic-messages"
OPENAI = "openai-completions"

# Client-side Model objects; the sidecar resolves its own model from `${provider}/${id}`.
SONNET: dict[str, Any] = {
    "provider": "anthropic",
    "id": "claude-sonnet-4-5",
    "api": ANTHROPIC,
    "reasoning": True,
    "cost": {"input": 3, "output": 15, "cacheRead": 0.3, "cacheWrite": 3.75},
    "contextWindow": 1_000_000,
    "maxTokens": 64_000,
}
GPT4O: dict[str, Any] = {
    "provider": "openai",
    "id": "gpt-4o",
    "api": OPENAI,
    "cost": {"input": 2.5, "output": 10, "cacheRead": 1.25, "cacheWrite": 0},
    "contextWindow": 128_000,
    "maxTokens": 16_384,
}
ECHO: dict[str, Any] = {"provider": "echo", "id": "echo", "api": "echo"}

# A 1x1 transparent PNG.
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="

WEATHER_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "Current weather for a location.",
    "parameters": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "City and region"},
            "units": {"type": "string", "enum": ["c", "f"]},
        },
        "required": ["location"],
        "additionalProperties": False,
    },
}

TEXT_FIXTURE = "anthropic-messages/text-basic-padded.sse"
TEXT_DELTAS = ["[", "12", "345,", "67890]"]
TEXT_RESPONSE_ID = "msg_013nnniYDrJDocdy5nrMU7cH"


# ---------------------------------------------------------------------------------------------------------------------
# Infrastructure: npm install, FakeUpstream, the sidecar process (tests/interop/harness.py), the client driver


@pytest.fixture(scope="session")
def bun() -> Path:
    """The Bun binary from tests/interop/node_modules, installed with ``npm ci`` from the lock file if missing."""
    npm_install()
    installed = installed_version("@oh-my-pi/pi-ai")
    assert installed == PI_AI_VERSION, f"node_modules has @oh-my-pi/pi-ai {installed}; run `npm ci` in {INTEROP_DIR}"
    version = subprocess.run([str(BUN), "--version"], capture_output=True, text=True, timeout=60, check=False)
    if version.returncode != 0 or version.stdout.strip() != BUN_VERSION:
        pytest.fail(f"`{BUN} --version` gave {version.returncode} {version.stdout!r} {version.stderr!r}")
    return BUN


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def canaries() -> dict[str, str]:
    """Provider keys the sidecar holds; they must reach the upstream and nothing else."""
    return {
        "anthropic": f"sk-ant-api03-canary{secrets.token_hex(16)}",
        "openai": f"sk-proj-canary{secrets.token_hex(16)}",
    }


@pytest.fixture(scope="module")
def sidecar(
    upstream: FakeUpstream, canaries: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Sidecar]:
    env = {
        "ANTHROPIC_API_KEY": canaries["anthropic"],
        "ANTHROPIC_BASE_URL": upstream.url,
        "OPENAI_API_KEY": canaries["openai"],
        "OPENAI_BASE_URL": f"{upstream.url}/v1",
    }
    token = f"gw-{secrets.token_urlsafe(24)}"
    with run_sidecar(tmp_path_factory.mktemp("sidecar"), "[upstream]\nmax_retries = 0\n", token, env) as sc:
        yield sc


@pytest.fixture(autouse=True)
def _fresh_upstream(upstream: FakeUpstream, sidecar: Sidecar) -> None:
    """Each scenario starts with no recorded requests, no leftover scripted replies and a fresh log mark."""
    reset_upstream(upstream)
    sidecar.mark()


@dataclass
class ClientRun:
    """What the real client reported for one scenario."""

    raw: str
    stderr: str
    lines: list[dict[str, Any]] = field(default_factory=list)

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["kind"] == kind]

    @property
    def events(self) -> list[dict[str, Any]]:
        return [line["event"] for line in self.kinds("event")]

    @property
    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    @property
    def result(self) -> dict[str, Any]:
        final = self.lines[-1]
        assert final["kind"] == "result", f"client did not resolve .result(): {final}"
        message: dict[str, Any] = final["message"]
        return message

    @property
    def thrown(self) -> dict[str, Any]:
        final = self.lines[-1]
        assert final["kind"] == "thrown", f"client did not throw; last line: {json.dumps(final)[:2000]}"
        return final

    @property
    def response(self) -> dict[str, Any]:
        (response,) = self.kinds("response")
        return response

    def deltas(self, type_: str, index: int | None = None) -> list[str]:
        return [e["delta"] for e in self.events if e["type"] == type_ and index in (None, e["contentIndex"])]


RunClient = Callable[..., ClientRun]


@pytest.fixture(scope="module")
def client_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("client-home")  # pi-utils writes ~/.omp/install-id


@pytest.fixture
def run_client(bun: Path, sidecar: Sidecar, client_home: Path, canaries: dict[str, str]) -> RunClient:
    def run(
        model: dict[str, Any],
        messages: list[dict[str, Any]],
        *,
        entry: str = "streamPiNative",
        system: list[str] | None = None,
        tools: list[dict[str, Any]] | None = None,
        options: dict[str, Any] | None = None,
        token: str | None = None,
        **extra: Any,
    ) -> ClientRun:
        context: dict[str, Any] = {"messages": messages}
        if system is not None:
            context["systemPrompt"] = system
        if tools is not None:
            context["tools"] = tools
        scenario = {
            "entry": entry,
            "baseUrl": sidecar.url,
            "token": sidecar.token if token is None else token,
            "model": model,
            "context": context,
            "options": {"maxTokens": 1024, **(options or {})},
            **extra,
        }
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(client_home),
            "LANG": "C.UTF-8",
            # Fail in seconds rather than the 300 s defaults if the sidecar stalls.
            "PI_STREAM_IDLE_TIMEOUT_MS": "15000",
            "PI_STREAM_FIRST_EVENT_TIMEOUT_MS": "15000",
        }
        proc, lines = run_driver(
            "client", [str(bun), str(INTEROP_DIR / "pi_client.ts")], scenario, env, DRIVER_TIMEOUT_S
        )
        run_ = ClientRun(proc.stdout, proc.stderr, lines)
        if proc.returncode != 0 or not run_.lines or run_.lines[-1]["kind"] not in ("result", "thrown"):
            pytest.fail(driver_broke("client", proc))
        for provider, key in canaries.items():  # key isolation, checked on every scenario
            assert key not in proc.stdout and key[-32:] not in proc.stdout, f"the {provider} key reached the client"
        return run_

    return run


# ---------------------------------------------------------------------------------------------------------------------
# Helpers


def user(content: str | list[dict[str, Any]]) -> dict[str, Any]:
    return {"role": "user", "content": content, "timestamp": 1_767_225_600_000}


def sse_reply(relative: str, **kw: Any) -> Reply:
    return Reply.sse(fixture_bytes(relative), **kw)


def sse_frames(data: bytes) -> list[bytes]:
    """``data`` cut after each blank line, one SSE event per piece."""
    return [frame + b"\n\n" for frame in data.split(b"\n\n") if frame.strip()]


def recorded_error(relative_json: str, status: int, headers_file: str | None = None) -> Reply:
    """An error body from fixtures/ with its recorded headers (framing headers dropped: FakeUpstream chunks)."""
    headers: dict[str, str] = {}
    if headers_file:
        for line in fixture_bytes(headers_file).decode().splitlines()[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() not in ("content-length", "connection", "transfer-encoding", ""):
                headers[name.strip().lower()] = value.strip()
    return Reply.json(status, fixture_bytes(relative_json), headers)


BLOCK_TYPE = {"text": "text", "thinking": "thinking", "toolcall": "toolCall"}


def assert_well_formed(run: ClientRun) -> None:
    """The protocol invariants of §5/§14, as the real client delivered them."""
    events = run.events
    assert events, "no events"
    assert events[0]["type"] == "start", run.types
    terminals = [i for i, e in enumerate(events) if e["type"] in ("done", "error")]
    assert terminals == [len(events) - 1], f"expected exactly one terminal event, last: {run.types}"
    for e in events[:-1]:
        partial = e["partial"]
        assert partial["role"] == "assistant"
        if e["type"] == "start":
            continue
        kind = e["type"].split("_")[0]
        block = partial["content"][e["contentIndex"]]  # §14.2: must exist
        assert block["type"] == BLOCK_TYPE[kind], (e["type"], block)
        if kind == "toolcall":
            assert block.get("id") and block.get("name"), block
    last = events[-1]
    final = last["message"] if last["type"] == "done" else last["error"]
    assert final["stopReason"] == last["reason"]
    assert set(final["usage"]) >= {"input", "output", "cacheRead", "cacheWrite", "totalTokens", "cost"}


def assert_usage(message: dict[str, Any], rates: dict[str, float], **tokens: int) -> None:
    usage = message["usage"]
    for name, value in tokens.items():
        assert usage[name] == value, (name, usage)
    assert usage["totalTokens"] == sum(usage[k] for k in ("input", "output", "cacheRead", "cacheWrite"))
    expected = {k: rates[k] / 1e6 * usage[k] for k in ("input", "output", "cacheRead", "cacheWrite")}
    expected["total"] = sum(expected.values())
    assert usage["cost"] == pytest.approx(expected, rel=1e-9, abs=1e-15), usage["cost"]


# ---------------------------------------------------------------------------------------------------------------------
# Scenarios


@pytest.mark.parametrize("entry", ["streamPiNative", "streamSimple"])
def test_text_turn(
    entry: str, run_client: RunClient, upstream: FakeUpstream, sidecar: Sidecar, canaries: dict[str, str]
) -> None:
    upstream.push(sse_reply(TEXT_FIXTURE))
    run = run_client(SONNET, [user("Give me a JSON array with 12345 and 67890.")], entry=entry)

    assert_well_formed(run)
    assert run.types == ["start", "text_start", *["text_delta"] * 4, "text_end", "done"]
    assert run.deltas("text_delta", 0) == TEXT_DELTAS
    text_end = run.events[-2]
    assert (text_end["contentIndex"], text_end["content"]) == (0, "[12345,67890]")
    assert run.events[-1]["reason"] == "stop"
    assert run.response["status"] == 200
    assert run.response["headers"]["content-type"].startswith("text/event-stream")

    msg = run.result
    assert msg == run.events[-1]["message"]
    assert msg["content"] == [{"type": "text", "text": "[12345,67890]"}]
    assert (msg["role"], msg["api"], msg["provider"], msg["model"]) == (
        "assistant",
        ANTHROPIC,
        "anthropic",
        "claude-sonnet-4-5",
    )
    assert msg["stopReason"] == "stop"
    assert msg["responseId"] == TEXT_RESPONSE_ID
    assert 0 <= msg["ttft"] <= msg["duration"], (msg.get("ttft"), msg.get("duration"))
    assert_usage(msg, SONNET["cost"], input=135, output=10, cacheRead=0, cacheWrite=0, totalTokens=145)
    assert msg["usage"]["cost"]["input"] == pytest.approx(0.000405)
    assert msg["usage"]["cost"]["output"] == pytest.approx(0.00015)
    assert msg["usage"]["cost"]["total"] == pytest.approx(0.000555)
    assert "errorMessage" not in msg

    (req,) = upstream.received
    assert (req.method, req.path) == ("POST", "/v1/messages")
    assert req.headers["x-api-key"] == canaries["anthropic"]
    assert not [name for name in req.headers if name.startswith("x-omp-")], "attribution headers stay local"
    assert sidecar.token not in json.dumps(req.headers) + req.body.decode(), "the gateway bearer went upstream"
    body = req.json()
    assert body["model"] == "claude-sonnet-4-5"
    assert body["stream"] is True
    assert body["max_tokens"] >= 1024
    first = body["messages"][0]
    assert first["role"] == "user"
    content = first["content"]
    text = content if isinstance(content, str) else "".join(b["text"] for b in content if b["type"] == "text")
    assert text == "Give me a JSON array with 12345 and 67890."


def test_sequential_requests_on_kept_alive_sockets(run_client: RunClient, upstream: FakeUpstream) -> None:
    """One client process, many requests: Bun's fetch reuses sockets, which the sidecar must not drop (§14.4)."""
    n = 25
    upstream.push(*[sse_reply(TEXT_FIXTURE) for _ in range(n)])
    run = run_client(SONNET, [user("hi")], repeat=n)

    finals = [line for line in run.lines if line["kind"] in ("result", "thrown")]
    assert [line["run"] for line in finals] == list(range(n))
    failures = [line for line in finals if line["kind"] != "result" or line["message"]["stopReason"] != "stop"]
    assert failures == [], f"{len(failures)} of {n} requests failed; first: {json.dumps(failures[0])[:1500]}"
    assert {line["message"]["content"][0]["text"] for line in finals} == {"[12345,67890]"}
    assert len(upstream.received) == n


def test_thinking_with_signature(run_client: RunClient, upstream: FakeUpstream) -> None:
    upstream.push(sse_reply("anthropic-messages/thinking-signature-delta.sse"))
    run = run_client(SONNET, [user("What is the meaning of life in popular fiction?")], options={"reasoning": "low"})

    assert_well_formed(run)
    assert run.types == [
        "start",
        "thinking_start",
        *["thinking_delta"] * 23,
        "thinking_end",
        "text_start",
        *["text_delta"] * 15,
        "text_end",
        "done",
    ]
    thinking = "".join(run.deltas("thinking_delta", 0))
    text = "".join(run.deltas("text_delta", 1))
    assert thinking.startswith("The question is asking about") and thinking.endswith("different fictional works.")
    assert len(thinking) == 1311 and len(text) == 837

    msg = run.result
    assert msg["stopReason"] == "stop"
    assert msg["responseId"] == "msg_01TuBJwobCPKinTJ6vChw6Yc"
    assert msg["content"][0]["type"] == "thinking"
    assert msg["content"][0]["thinking"] == thinking
    assert msg["content"][0]["thinkingSignature"].startswith("ErUBCkYIARgCIkCMkRFgNNhwET9y5IN2hGVaMO+tPgd5T2aSXprE")
    assert msg["content"][0]["thinkingSignature"].endswith("ubXurHJa0E8yOLOfa1mCFe43e4r7g==")
    assert msg["content"][1] == {"type": "text", "text": text}
    assert_usage(msg, SONNET["cost"], input=50, output=452, cacheRead=0, cacheWrite=0)

    body = upstream.received[0].json()
    assert body.get("thinking", {}).get("type") in ("enabled", "adaptive"), body.get("thinking")


def test_anthropic_tool_call(run_client: RunClient, upstream: FakeUpstream) -> None:
    upstream.push(sse_reply("anthropic-messages/tool-use-input-json-delta-padded.sse", split=7))
    run = run_client(SONNET, [user("Weather in San Francisco, in F?")], tools=[WEATHER_TOOL])

    assert_well_formed(run)
    types = run.types
    assert types[:2] == ["start", "toolcall_start"] and types[-2:] == ["toolcall_end", "done"]
    assert set(types[2:-2]) == {"toolcall_delta"}
    assert "".join(run.deltas("toolcall_delta", 0)) == '{"location": "San Francisco, CA", "units": "f"}'
    tool_call = {
        "type": "toolCall",
        "id": "toolu_018acGYLtfR52q9yDbWaEdQZ",
        "name": "get_weather",
        "arguments": {"location": "San Francisco, CA", "units": "f"},
    }
    end = run.events[-2]
    assert end["contentIndex"] == 0
    assert {k: end["toolCall"][k] for k in tool_call} == tool_call
    assert run.events[-1]["reason"] == "toolUse"

    msg = run.result
    assert msg["stopReason"] == "toolUse"
    assert len(msg["content"]) == 1
    assert {k: msg["content"][0][k] for k in tool_call} == tool_call
    assert_usage(msg, SONNET["cost"], input=656, output=74)

    sent_tools = upstream.received[0].json()["tools"]
    assert [t["name"] for t in sent_tools] == ["get_weather"]


def test_openai_parallel_tool_calls(run_client: RunClient, upstream: FakeUpstream, canaries: dict[str, str]) -> None:
    upstream.push(sse_reply("openai-chat-completions/tool-calls-parallel.sse"))
    stock_tool = {
        "name": "get_stock_price",
        "description": "Latest price for a ticker.",
        "parameters": {
            "type": "object",
            "properties": {"ticker": {"type": "string"}, "exchange": {"type": "string"}},
            "required": ["ticker", "exchange"],
        },
    }
    weather = {**WEATHER_TOOL, "name": "GetWeatherArgs"}
    run = run_client(GPT4O, [user("Weather in Edinburgh and the AAPL price?")], tools=[weather, stock_tool])

    assert_well_formed(run)
    starts = [e["contentIndex"] for e in run.events if e["type"] == "toolcall_start"]
    ends = [e for e in run.events if e["type"] == "toolcall_end"]
    assert starts == [0, 1] and [e["contentIndex"] for e in ends] == [0, 1]
    assert "".join(run.deltas("toolcall_delta", 0)) == '{"city": "Edinburgh", "country": "GB", "units": "c"}'
    assert "".join(run.deltas("toolcall_delta", 1)) == '{"ticker": "AAPL", "exchange": "NASDAQ"}'
    assert run.events[-1]["reason"] == "toolUse"

    msg = run.result
    assert msg["stopReason"] == "toolUse"
    assert (msg["api"], msg["provider"], msg["model"]) == (OPENAI, "openai", "gpt-4o")
    calls = [(c["type"], c["id"], c["name"], c["arguments"]) for c in msg["content"]]
    assert calls == [
        (
            "toolCall",
            "call_JMW1whyEaYG438VE1OIflxA2",
            "GetWeatherArgs",
            {"city": "Edinburgh", "country": "GB", "units": "c"},
        ),
        ("toolCall", "call_DNYTawLBoN8fj3KN6qU9N1Ou", "get_stock_price", {"ticker": "AAPL", "exchange": "NASDAQ"}),
    ]
    assert [e["toolCall"]["arguments"] for e in ends] == [c[3] for c in calls]
    assert_usage(msg, GPT4O["cost"], input=149, output=60, cacheRead=0, totalTokens=209)

    (req,) = upstream.received
    assert (req.method, req.path) == ("POST", "/v1/chat/completions")
    assert req.headers["authorization"] == f"Bearer {canaries['openai']}"
    body = req.json()
    assert body["model"] == "gpt-4o" and body["stream"] is True
    assert [t["function"]["name"] for t in body["tools"]] == ["GetWeatherArgs", "get_stock_price"]


def test_rich_context_reaches_anthropic(run_client: RunClient, upstream: FakeUpstream) -> None:
    """Image, signed thinking in history, a tool call, its result and a JSON-schema tool, translated upstream."""
    upstream.push(sse_reply(TEXT_FIXTURE))
    assistant_turn = {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "The user wants the weather.", "thinkingSignature": "sig-EqQBCkYIBhgCIkB"},
            {"type": "text", "text": "Let me check."},
            {"type": "toolCall", "id": "toolu_01Paris", "name": "get_weather", "arguments": {"location": "Paris"}},
        ],
        "api": ANTHROPIC,
        "provider": "anthropic",
        "model": "claude-sonnet-4-5",
        "usage": {
            "input": 10,
            "output": 20,
            "cacheRead": 0,
            "cacheWrite": 0,
            "totalTokens": 30,
            "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0, "total": 0},
        },
        "stopReason": "toolUse",
        "timestamp": 1_767_225_601_000,
    }
    tool_result = {
        "role": "toolResult",
        "toolCallId": "toolu_01Paris",
        "toolName": "get_weather",
        "content": [{"type": "text", "text": "18 C and sunny"}],
        "isError": False,
        "timestamp": 1_767_225_602_000,
    }
    messages = [
        user(
            [
                {"type": "text", "text": "What is in this picture? Then get the weather in Paris."},
                {"type": "image", "data": PNG_B64, "mimeType": "image/png"},
            ]
        ),
        assistant_turn,
        tool_result,
    ]
    run = run_client(SONNET, messages, system=["You are terse."], tools=[WEATHER_TOOL], options={"reasoning": "low"})
    assert_well_formed(run)
    assert run.result["stopReason"] == "stop"

    (req,) = upstream.received
    body = req.json()
    system = body["system"]
    system_text = system if isinstance(system, str) else "".join(b.get("text", "") for b in system)
    assert "You are terse." in system_text

    blocks = [
        (m["role"], b) for m in body["messages"] for b in (m["content"] if isinstance(m["content"], list) else [])
    ]
    images = [b for role, b in blocks if b["type"] == "image"]
    assert [(b["source"]["type"], b["source"]["media_type"], b["source"]["data"]) for b in images] == [
        ("base64", "image/png", PNG_B64)
    ]
    thinking = [(role, b) for role, b in blocks if b["type"] == "thinking"]
    assert thinking == [
        (
            "assistant",
            {"type": "thinking", "thinking": "The user wants the weather.", "signature": "sig-EqQBCkYIBhgCIkB"},
        )
    ]
    tool_uses = [(role, b["id"], b["name"], b["input"]) for role, b in blocks if b["type"] == "tool_use"]
    assert tool_uses == [("assistant", "toolu_01Paris", "get_weather", {"location": "Paris"})]
    results = [(role, b) for role, b in blocks if b["type"] == "tool_result"]
    assert len(results) == 1 and results[0][0] == "user"
    result_block = results[0][1]
    assert result_block["tool_use_id"] == "toolu_01Paris"
    content = result_block["content"]
    assert "18 C and sunny" in (content if isinstance(content, str) else "".join(c.get("text", "") for c in content))
    assert not result_block.get("is_error", False)

    (tool,) = body["tools"]
    assert tool["name"] == "get_weather"
    assert tool["description"] == WEATHER_TOOL["description"]
    assert tool["input_schema"]["type"] == "object"
    assert tool["input_schema"]["properties"] == WEATHER_TOOL["parameters"]["properties"]
    assert tool["input_schema"]["required"] == ["location"]


ERRORS = "anthropic-messages/errors"


@pytest.mark.parametrize(
    ("body", "headers", "status", "needle"),
    [
        (f"{ERRORS}/401-authentication-error.ASSEMBLED.json", None, 401, "invalid x-api-key"),
        (f"{ERRORS}/429-rate-limit-error.json", f"{ERRORS}/429-rate-limit-error.ASSEMBLED.headers", 429, "rate limit"),
        (f"{ERRORS}/529-overloaded-error.json", None, 529, "Overloaded"),
    ],
    ids=["401", "429", "529"],
)
def test_upstream_http_error_is_in_band(
    body: str, headers: str | None, status: int, needle: str, run_client: RunClient, upstream: FakeUpstream
) -> None:
    upstream.push(recorded_error(body, status, headers))
    started = time.monotonic()
    run = run_client(SONNET, [user("hi")])

    assert run.response["status"] == 200, "upstream failures must be in-band (HTTP 200 + error event)"
    assert_well_formed(run)
    assert run.types == ["start", "error"]
    error_event = run.events[-1]
    assert error_event["reason"] == "error"
    err = error_event["error"]
    assert err["stopReason"] == "error"
    assert err["errorStatus"] == status
    assert needle in err["errorMessage"], err["errorMessage"]
    assert (err["api"], err["provider"], err["model"]) == (ANTHROPIC, "anthropic", "claude-sonnet-4-5")
    assert run.result["stopReason"] == "error" and run.result["errorStatus"] == status
    assert len(upstream.received) == 1, "max_retries = 0: exactly one upstream attempt"
    assert time.monotonic() - started < 10


def test_a_fallback_model_in_options_serves_an_overloaded_one(run_client: RunClient, upstream: FakeUpstream) -> None:
    """pi-ai sends its options through unmodified: ``options.models`` names a fallback, which serves the generation
    when the model fails before its first byte; the done message names it, priced as it."""
    upstream.push(
        recorded_error(f"{ERRORS}/529-overloaded-error.json", 529),
        sse_reply("openai-chat-completions/text-basic-include-usage.sse"),
    )
    expected = openai_chat_text("openai-chat-completions/text-basic-include-usage.sse")
    run = run_client(SONNET, [user("hi")], options={"models": ["openai/gpt-4o-mini"]})

    assert run.response["status"] == 200
    assert_well_formed(run)
    assert run.types[-1] == "done"
    result = run.result
    assert (result["api"], result["provider"], result["model"]) == ("openai-completions", "openai", "gpt-4o-mini")
    assert result["content"] == [{"type": "text", "text": expected}]
    assert result["usage"]["cost"]["total"] > 0
    assert [r.path for r in upstream.received] == ["/v1/messages", "/v1/chat/completions"]
    assert upstream.received[1].json()["model"] == "gpt-4o-mini"


def openai_chat_text(relative: str) -> str:
    """The text a recorded Chat Completions stream carries, read from the fixture."""
    parts = []
    for line in fixture_bytes(relative).decode().splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices") or ():
                parts.append(choice.get("delta", {}).get("content") or "")
    return "".join(parts)


def test_upstream_error_mid_stream_keeps_partial_content(run_client: RunClient, upstream: FakeUpstream) -> None:
    upstream.push(sse_reply("anthropic-messages/overloaded-error-mid-stream.ASSEMBLED.sse"))
    run = run_client(SONNET, [user("hi")])

    assert run.response["status"] == 200
    assert_well_formed(run)
    assert run.types[:4] == ["start", "text_start", "text_delta", "text_delta"]
    assert run.types[-1] == "error" and set(run.types[4:-1]) <= {"text_end"}
    assert run.deltas("text_delta", 0) == ["[", "12"]
    err = run.events[-1]["error"]
    assert run.events[-1]["reason"] == "error" and err["stopReason"] == "error"
    assert err["content"] == [{"type": "text", "text": "[12"}]
    assert "Overloaded" in err["errorMessage"] or "overloaded" in err["errorMessage"], err["errorMessage"]
    assert err["usage"]["input"] == 135
    assert run.result == err


@pytest.mark.parametrize("entry", ["streamPiNative", "streamSimple"])
def test_wrong_bearer_throws_auth_gateway_error(entry: str, run_client: RunClient, upstream: FakeUpstream) -> None:
    run = run_client(SONNET, [user("hi")], entry=entry, token="not-the-token")
    thrown = run.thrown
    assert thrown["name"] == "AuthGatewayError", thrown
    assert thrown["status"] == 401
    assert run.events == []
    assert upstream.received == []


def test_unknown_model_is_404(run_client: RunClient, upstream: FakeUpstream) -> None:
    # A provider the sidecar does not know. (Uncatalogued ids under a known provider are forwarded upstream at
    # cost 0 by design, unlike the reference gateway, so they cannot stand for "unknown" here.)
    model = {**SONNET, "provider": "no-such-provider", "id": "claude-does-not-exist-9"}
    run = run_client(model, [user("hi")])
    thrown = run.thrown
    assert thrown["name"] == "AuthGatewayError", thrown
    assert thrown["status"] == 404
    assert thrown.get("code") == "invalid_request_error"
    assert thrown["message"].startswith("Unknown model: no-such-provider/claude-does-not-exist-9"), thrown["message"]
    assert run.events == []
    assert upstream.received == []


def test_caller_abort_closes_upstream(run_client: RunClient, upstream: FakeUpstream) -> None:
    """Abort after the first text delta while the upstream is still streaming (pings every 0.1 s)."""
    frames = sse_frames(fixture_bytes(TEXT_FIXTURE))
    first_delta = next(i for i, f in enumerate(frames) if b"text_delta" in f)
    pings = [b'event: ping\ndata: {"type": "ping"}\n\n'] * 80
    upstream.push(Reply(chunks=frames[: first_delta + 1] + pings + frames[first_delta + 1 :], delay_between=0.1))

    disconnects_before = upstream.disconnects
    run = run_client(SONNET, [user("hi")], abortAfterEvents=3)
    exited = time.monotonic()

    assert run.types[:3] == ["start", "text_start", "text_delta"]
    (abort,) = run.kinds("abort")
    assert abort["afterEvents"] == 3
    assert "done" not in run.types
    assert run.types[-1] == "error" and run.events[-1]["reason"] == "aborted"
    assert run.result["stopReason"] == "aborted"

    while upstream.disconnects == disconnects_before and time.monotonic() - exited < 2.0:
        time.sleep(0.05)
    assert upstream.disconnects == disconnects_before + 1, "the sidecar kept reading the upstream after the abort"
    assert len(upstream.received) == 1


def test_echo_through_stream_simple(run_client: RunClient, upstream: FakeUpstream) -> None:
    run = run_client(ECHO, [user("first message"), user("hello brave new world")], entry="streamSimple")
    assert_well_formed(run)
    deltas = run.deltas("text_delta", 0)
    assert "".join(deltas) == "hello brave new world"
    assert len(deltas) == 4, deltas
    msg = run.result
    assert msg["stopReason"] == "stop"
    assert msg["content"] == [{"type": "text", "text": "hello brave new world"}]
    assert (msg["provider"], msg["model"]) == ("echo", "echo")
    assert upstream.received == []


def test_key_never_reaches_client_or_log(
    run_client: RunClient, upstream: FakeUpstream, sidecar: Sidecar, canaries: dict[str, str]
) -> None:
    """Upstreams that echo the key in an error body must not leak it to the client; nor may the log."""
    echo_anthropic = {
        "type": "error",
        "error": {"type": "authentication_error", "message": f"bad key {canaries['anthropic']}"},
    }
    echo_openai = {
        "error": {
            "message": f"Incorrect API key provided: {canaries['openai']}. You can find your API key at ...",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    upstream.push(sse_reply(TEXT_FIXTURE), Reply.json(401, echo_anthropic), Reply.json(401, echo_openai))
    runs = [
        run_client(SONNET, [user("hi")], entry="streamSimple"),
        run_client(SONNET, [user("hi")]),
        run_client(GPT4O, [user("hi")]),
    ]
    assert runs[0].result["stopReason"] == "stop"
    for run in runs[1:]:
        assert run.result["stopReason"] == "error" and run.result["errorStatus"] == 401

    anthropic_reqs, openai_reqs = upstream.received[:2], upstream.received[2:]
    assert [r.headers.get("x-api-key") for r in anthropic_reqs] == [canaries["anthropic"]] * 2
    assert [r.headers.get("authorization") for r in openai_reqs] == [f"Bearer {canaries['openai']}"]
    for reqs, other in ((anthropic_reqs, canaries["openai"]), (openai_reqs, canaries["anthropic"])):
        assert not any(other in json.dumps(r.headers) + r.body.decode() for r in reqs), "a key went to the wrong vendor"

    secrets_and_parts = [*canaries.values(), *(key[-32:] for key in canaries.values())]
    for run in runs:
        for secret in secrets_and_parts:
            assert secret not in run.raw, "a provider key reached the client"
        headers = json.dumps([r["headers"] for r in run.kinds("response")])
        assert not any(secret in headers for secret in secrets_and_parts)
    log = sidecar.log()  # the whole module's log, all scenarios so far
    for secret in secrets_and_parts:
        assert secret not in log, "a provider key reached the sidecar's log"
