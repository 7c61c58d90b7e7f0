"""Interop: the unmodified real client ``@oh-my-pi/pi-ai@18.2.3`` (under Bun) streams Gemini through the sidecar.

The sidecar (``python -m sidecar serve``) holds a canary ``GEMINI_API_KEY`` and its ``google`` provider, on the native
``google-generative-ai`` wire API, points at a FakeUpstream replaying recorded Gemini streams. The client is driven by
the same driver as the other pi-ai scenarios (``pi_client.ts``); the assertions are on what it reported (events,
``.result()``, usage and cost) and on the requests the upstream received (key header, body, replayed signatures).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
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
from tests.interop.test_pi_ai_interop import (
    BUN_VERSION,
    DRIVER_TIMEOUT_S,
    PI_AI_VERSION,
    ClientRun,
    assert_usage,
    assert_well_formed,
    user,
)

pytestmark = pytest.mark.interop

API = "google-generative-ai"
DIR = "google-gemini"


def gemini(model_id: str, cost: list[float], reasoning: bool = True) -> dict[str, Any]:
    """A client-side Model; ``cost`` is the sidecar catalog's row (the client trusts the sidecar's figures)."""
    return {
        "provider": "google",
        "id": model_id,
        "api": API,
        "reasoning": reasoning,
        "cost": dict(zip(("input", "output", "cacheRead", "cacheWrite"), cost, strict=True)),
        "contextWindow": 1_048_576,
        "maxTokens": 65_536,
    }


FLASH_2 = gemini("gemini-2.0-flash", [0.1, 0.4, 0.025, 0], reasoning=False)
FLASH = gemini("gemini-2.5-flash", [0.3, 2.5, 0.075, 0])
PRO_3 = gemini("gemini-3-pro-preview", [2, 12, 0.2, 0])
WEATHER_TOOL: dict[str, Any] = {
    "name": "weather",
    "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="session")
def bun() -> Path:
    npm_install()
    assert installed_version("@oh-my-pi/pi-ai") == PI_AI_VERSION, f"run `npm ci` in {INTEROP_DIR}"
    version = subprocess.run([str(BUN), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert version.returncode == 0 and version.stdout.strip() == BUN_VERSION, (version.stdout, version.stderr)
    return BUN


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def canary() -> str:
    return f"AIzaSy-canary{secrets.token_hex(16)}"


@pytest.fixture(scope="module")
def sidecar(upstream: FakeUpstream, canary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    config = f'[upstream]\nmax_retries = 0\n\n[providers.google]\nbase_url = "{upstream.url}/v1beta"\n'
    token = f"gw-{secrets.token_urlsafe(24)}"
    with run_sidecar(tmp_path_factory.mktemp("sidecar"), config, token, {"GEMINI_API_KEY": canary}) as sc:
        yield sc


@pytest.fixture(autouse=True)
def _fresh_upstream(upstream: FakeUpstream, sidecar: Sidecar) -> None:
    reset_upstream(upstream)
    sidecar.mark()


RunClient = Callable[..., ClientRun]


@pytest.fixture
def run_client(bun: Path, sidecar: Sidecar, tmp_path_factory: pytest.TempPathFactory, canary: str) -> RunClient:
    home = tmp_path_factory.mktemp("client-home")

    def run(
        model: dict[str, Any],
        messages: list[dict[str, Any]],
        *,
        entry: str = "streamPiNative",
        tools: list[dict[str, Any]] | None = None,
        options: dict[str, Any] | None = None,
    ) -> ClientRun:
        context: dict[str, Any] = {"messages": messages}
        if tools is not None:
            context["tools"] = tools
        scenario = {
            "entry": entry,
            "baseUrl": sidecar.url,
            "token": sidecar.token,
            "model": model,
            "context": context,
            "options": {"maxTokens": 1024, **(options or {})},
        }
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "PI_STREAM_IDLE_TIMEOUT_MS": "15000",
            "PI_STREAM_FIRST_EVENT_TIMEOUT_MS": "15000",
        }
        cmd = [str(bun), str(INTEROP_DIR / "pi_client.ts")]
        proc, lines = run_driver("client", cmd, scenario, env, DRIVER_TIMEOUT_S)
        client_run = ClientRun(proc.stdout, proc.stderr, lines)
        if proc.returncode != 0 or not lines or lines[-1]["kind"] not in ("result", "thrown"):
            pytest.fail(driver_broke("client", proc))
        assert canary not in proc.stdout and canary[-32:] not in proc.stdout, "the Gemini key reached the client"
        return client_run

    return run


def recorded_parts(name: str) -> list[dict[str, Any]]:
    data = fixture_bytes(f"{DIR}/{name}")
    chunks = [json.loads(line[6:]) for line in data.splitlines() if line.startswith(b"data: ")]
    return [p for c in chunks for cand in c.get("candidates", []) for p in cand.get("content", {}).get("parts", [])]


def thoughts(name: str) -> str:
    return "".join(p["text"] for p in recorded_parts(name) if p.get("thought"))


def answer(name: str) -> str:
    return "".join(p.get("text", "") for p in recorded_parts(name) if not p.get("thought"))


@pytest.mark.parametrize("entry", ["streamPiNative", "streamSimple"])
def test_text_turn(entry: str, run_client: RunClient, upstream: FakeUpstream, sidecar: Sidecar, canary: str) -> None:
    upstream.push(Reply.sse(fixture_bytes(f"{DIR}/text-basic.sse"), split=7))
    run = run_client(FLASH_2, [user("What is the capital of Wyoming?")], entry=entry)

    assert_well_formed(run)
    assert run.types == ["start", "text_start", *["text_delta"] * 3, "text_end", "done"]
    assert run.deltas("text_delta", 0) == ["The", " capital of Wyoming", " is **Cheyenne**.\n"]
    msg = run.result
    assert msg["content"] == [{"type": "text", "text": "The capital of Wyoming is **Cheyenne**.\n"}]
    assert (msg["api"], msg["provider"], msg["model"], msg["stopReason"]) == (API, "google", "gemini-2.0-flash", "stop")
    assert_usage(msg, FLASH_2["cost"], input=7, output=10, cacheRead=0, cacheWrite=0, totalTokens=17)
    assert msg["usage"]["cost"]["total"] == pytest.approx(7 * 0.1e-6 + 10 * 0.4e-6)

    (req,) = upstream.received
    assert req.path == "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    assert req.headers["x-goog-api-key"] == canary
    assert canary not in req.path and canary.encode() not in req.body
    assert sidecar.token not in json.dumps(req.headers) + req.body.decode(), "the gateway bearer went upstream"
    assert req.json()["contents"] == [{"role": "user", "parts": [{"text": "What is the capital of Wyoming?"}]}]


def test_thinking_turn(run_client: RunClient, upstream: FakeUpstream) -> None:
    name = "thought-summary-then-text.sse"
    upstream.push(Reply.sse(fixture_bytes(f"{DIR}/{name}"), split=64))
    run = run_client(FLASH, [user("Why is the sky blue?")], options={"reasoning": "medium"})

    assert_well_formed(run)
    assert run.types == [
        "start",
        "thinking_start",
        *["thinking_delta"] * 3,
        "thinking_end",
        "text_start",
        *["text_delta"] * 2,
        "text_end",
        "done",
    ]
    msg = run.result
    assert msg["content"] == [{"type": "thinking", "thinking": thoughts(name)}, {"type": "text", "text": answer(name)}]
    assert msg["responseId"] == "0J-HaJetAqv0jrEPwu-tsQ0"
    # output = candidatesTokenCount 48 + thoughtsTokenCount 540; the thoughts are also reasoningTokens.
    assert_usage(msg, FLASH["cost"], input=10, output=588, cacheRead=0, cacheWrite=0, totalTokens=598)
    assert msg["usage"]["reasoningTokens"] == 540
    assert msg["usage"]["cost"]["total"] == pytest.approx(10 * 0.3e-6 + 588 * 2.5e-6)

    body = upstream.received[0].json()
    assert body["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 8192}


def test_tool_call_turn_and_the_next_turn_replays_its_signature(run_client: RunClient, upstream: FakeUpstream) -> None:
    name = "thought-then-function-call-gemini-3.sse"
    upstream.push(Reply.sse(fixture_bytes(f"{DIR}/{name}"), split=7))
    question = user("Do I need a coat in San Francisco?")
    run = run_client(PRO_3, [question], tools=[WEATHER_TOOL], options={"reasoning": "high"})

    assert_well_formed(run)
    assert run.types == [
        "start",
        "thinking_start",
        *["thinking_delta"] * 2,
        "thinking_end",
        "toolcall_start",
        "toolcall_delta",
        "toolcall_end",
        "done",
    ]
    msg = run.result
    assert msg["stopReason"] == "toolUse" and msg["responseId"] == "B94haYr_OovWjMcPjJy_6Qk"
    thinking, call = msg["content"]
    assert thinking == {"type": "thinking", "thinking": thoughts(name)}
    (recorded_call,) = [p for p in recorded_parts(name) if "functionCall" in p]
    assert (call["name"], call["arguments"]) == ("weather", {"city": "San Francisco"})
    assert call["thoughtSignature"] == recorded_call["thoughtSignature"]  # kept on the call, as pi-ai stores it
    assert run.events[-2]["toolCall"] == call
    assert_usage(msg, PRO_3["cost"], input=131, output=110, cacheRead=0, cacheWrite=0, totalTokens=241)
    assert msg["usage"]["reasoningTokens"] == 95
    first = upstream.received[0].json()
    assert first["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingLevel": "HIGH"}
    assert first["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"] == WEATHER_TOOL["parameters"]

    # The next turn: the client sends its own history back; the signature goes upstream on the function call part.
    reset_upstream(upstream)
    upstream.push(Reply.sse(fixture_bytes(f"{DIR}/text-basic.sse")))
    result = {
        "role": "toolResult",
        "toolCallId": call["id"],
        "toolName": "weather",
        "content": [{"type": "text", "text": "11°C, windy"}],
        "isError": False,
        "timestamp": 1_767_225_600_500,
    }
    second = run_client(PRO_3, [question, msg, result], tools=[WEATHER_TOOL], options={"reasoning": "high"})
    assert second.result["stopReason"] == "stop"
    contents = upstream.received[0].json()["contents"]
    assert contents[1] == {
        "role": "model",
        "parts": [
            {"text": f"```thinking\n{thoughts(name)}\n```"},  # the summaries came unsigned: replayed as text
            {
                "functionCall": {"name": "weather", "args": {"city": "San Francisco"}, "id": call["id"]},
                "thoughtSignature": recorded_call["thoughtSignature"],
            },
        ],
    }
    assert contents[2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "weather", "response": {"output": "11°C, windy"}, "id": call["id"]}}],
    }


def test_parallel_calls(run_client: RunClient, upstream: FakeUpstream) -> None:
    upstream.push(Reply.sse(fixture_bytes(f"{DIR}/function-calls-parallel.sse"), split=2))
    run = run_client(FLASH, [user("Weather in SF and Santa Cruz?")], tools=[WEATHER_TOOL])

    assert_well_formed(run)
    assert run.types == ["start", *["toolcall_start", "toolcall_delta", "toolcall_end"] * 2, "done"]
    msg = run.result
    first, second = msg["content"]
    assert (first["arguments"], second["arguments"]) == ({"city": "San Francisco"}, {"city": "Santa Cruz"})
    assert first["id"] != second["id"]
    assert "thoughtSignature" in first and "thoughtSignature" not in second  # only the first part was signed
    assert_usage(msg, FLASH["cost"], input=68, output=107, cacheRead=0, cacheWrite=0, totalTokens=175)
    # No reasoning asked: 2.5 Flash is told not to think (Gemini thinks by default), as pi-ai does.
    assert upstream.received[0].json()["generationConfig"]["thinkingConfig"] == {
        "includeThoughts": False,
        "thinkingBudget": 0,
    }


def test_safety_stop_reaches_the_client_as_an_error(run_client: RunClient, upstream: FakeUpstream) -> None:
    upstream.push(Reply.sse(fixture_bytes(f"{DIR}/finish-reason-safety-vertex.sse")))
    run = run_client(FLASH, [user("hi")])
    assert_well_formed(run)
    last = run.events[-1]
    assert last["type"] == "error" and last["error"]["errorStatus"] == 400
    assert "safety" in last["error"]["errorMessage"]
