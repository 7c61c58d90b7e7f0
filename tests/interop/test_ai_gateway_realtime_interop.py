"""Interop: the unmodified real client ``@ai-sdk/gateway@4.0.146`` (under Node 20) against the sidecar's realtime.

One sidecar process (``python -m sidecar serve``) serves the module. Its OpenAI base URL is a FakeRealtime (a real
WebSocket server replaying OpenAI's documented GA text turn) and its OpenAI key a canary. The driver
``realtime_client.mjs`` runs under ``node --experimental-websocket`` with baseURL ``<sidecar>/v4/ai``:

* the browser flow: ``gateway.experimental_realtime.getToken()`` mints a ``vcst_`` secret at the origin's
  ``/v1/realtime/client-secrets`` (server side: no ``window``), then ``new WebSocket(url,
  getGatewayRealtimeProtocols(token))`` opens the returned baseURL-relative URL exactly as a browser would, sends the
  normalized events a realtime session sends and reads the normalized server events through ``response-done``; a
  second socket with the same secret must fail to open;
* the server-owned flow: the realtime model's ``getServerWebSocketConfig({intent: 'conversation'})`` → Node's
  WebSocket with those headers (undici's ``{headers}`` init), one text turn;
* mint errors, as the client's Gateway error classes.

Expected costs and tokens come from the fixture's recorded usage and the catalog rates, never from the sidecar.
Run with ``.venv/bin/python -m pytest tests/interop -q``; the suite fails, and never skips, without Node >= 20 / npm.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.fakerealtime import GA_TEXT_TURN, Connection, FakeRealtime, fixture_lines
from tests.interop.harness import (
    INTEROP_DIR,
    Sidecar,
    driver_broke,
    node_env,
    ok,
    run_driver,
    run_sidecar,
)

pytestmark = pytest.mark.interop

DRIVER = INTEROP_DIR / "realtime_client.mjs"
DRIVER_TIMEOUT_S = 60
BASE_PATH = "/v4/ai"
MODEL = "openai/gpt-realtime"
MODEL_QUERY = "ai-model-id=openai%2Fgpt-realtime"
TTL_S = 60
REALTIME_SUBPROTOCOL = "ai-gateway-realtime.v1"
SERVER_EVENT_TYPES = {"session-created", "session-updated", "response-created", "text-delta", "text-done"}

# gpt-realtime catalog rates (sidecar/catalog.toml), USD per 1M tokens.
TEXT_RATES = {"input": 4, "output": 16, "cached": 0.4}
AUDIO_RATES = {"input": 32, "output": 64, "cached": 0.4}


# ---------------------------------------------------------------------------------------------------------------------
# Expected values, from the recorded fixture


@dataclass(frozen=True)
class RealtimeUsage:
    """``response.done``'s usage in the fixture. Input buckets include the cached tokens, as OpenAI reports them."""

    input: int
    output: int
    text_in: int
    audio_in: int
    cached_text: int
    cached_audio: int
    text_out: int
    audio_out: int

    @property
    def cached(self) -> int:
        return self.cached_text + self.cached_audio

    def normalized(self) -> dict[str, int]:
        """The ``RealtimeModelV4Usage`` the OpenAI mapping (protocol §2.6) makes of it."""
        return {
            "inputTokens": self.input,
            "outputTokens": self.output,
            "cachedInputTokens": self.cached,
            "inputTextTokens": self.text_in,
            "inputAudioTokens": self.audio_in,
            "outputTextTokens": self.text_out,
            "outputAudioTokens": self.audio_out,
            "cachedInputTextTokens": self.cached_text,
            "cachedInputAudioTokens": self.cached_audio,
        }

    @property
    def cost(self) -> float:
        return (
            (self.text_in - self.cached_text) * TEXT_RATES["input"]
            + (self.audio_in - self.cached_audio) * AUDIO_RATES["input"]
            + self.cached_text * TEXT_RATES["cached"]
            + self.cached_audio * AUDIO_RATES["cached"]
            + self.text_out * TEXT_RATES["output"]
            + self.audio_out * AUDIO_RATES["output"]
        ) / 1e6


def fixture_usage() -> RealtimeUsage:
    (done,) = [e for e in map(json.loads, fixture_lines(GA_TEXT_TURN)) if e["type"] == "response.done"]
    usage = done["response"]["usage"]
    details_in, details_out = usage["input_token_details"], usage["output_token_details"]
    cached = details_in["cached_tokens_details"]
    return RealtimeUsage(
        input=usage["input_tokens"],
        output=usage["output_tokens"],
        text_in=details_in["text_tokens"],
        audio_in=details_in["audio_tokens"],
        cached_text=cached["text_tokens"],
        cached_audio=cached["audio_tokens"],
        text_out=details_out["text_tokens"],
        audio_out=details_out["audio_tokens"],
    )


USAGE = fixture_usage()


def session_events(text: str, gateway: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The driver's ``send`` script: what ``ai``'s realtime session sends on open, then one text turn once the
    session is configured."""
    config = {"instructions": "Be brief.", "outputModalities": ["text"], "providerOptions": {"gateway": gateway}}
    return {
        "open": [{"type": "session-update", "config": config}],
        "session-updated": [
            {"type": "conversation-item-create", "item": {"type": "text-message", "role": "user", "text": text}},
            {"type": "response-create"},
        ],
    }


# ---------------------------------------------------------------------------------------------------------------------
# Infrastructure


@pytest.fixture(scope="module")
def realtime_upstream() -> Iterator[FakeRealtime]:
    with FakeRealtime() as up:
        yield up


@pytest.fixture(scope="module")
def canary() -> str:
    """The OpenAI key the sidecar holds: only the upstream handshake may carry it."""
    return f"sk-canary-KEY-do-not-leak-{secrets.token_hex(12)}"


@pytest.fixture(scope="module")
def sidecar(
    realtime_upstream: FakeRealtime, canary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Sidecar]:
    work = tmp_path_factory.mktemp("sidecar-realtime")
    config = f"""
[ledger]
path = "{work / "ledger.db"}"
"""
    env = {"OPENAI_API_KEY": canary, "OPENAI_BASE_URL": realtime_upstream.url.replace("ws://", "http://")}
    with run_sidecar(work, config, f"rt-{secrets.token_urlsafe(24)}", env) as sc:
        yield sc


@pytest.fixture(autouse=True)
def _mark_log(sidecar: Sidecar) -> None:
    sidecar.mark()


@dataclass
class DriverRun:
    lines: dict[str, dict[str, Any]]
    """One result per step, by step name."""
    output: str
    """Everything the Node process printed (stdout and stderr)."""
    started: float
    finished: float


def run_realtime(node: str, sidecar: Sidecar, api_key: str, steps: list[dict[str, Any]]) -> DriverRun:
    """Run ``steps`` through the real client in one ``node --experimental-websocket`` process."""
    scenario = {"baseURL": f"{sidecar.url}{BASE_PATH}", "apiKey": api_key, "steps": steps}
    started = time.time()
    proc, lines = run_driver(
        "realtime", [node, "--experimental-websocket", str(DRIVER)], scenario, node_env(), DRIVER_TIMEOUT_S
    )
    finished = time.time()
    if proc.returncode != 0 or [line["step"] for line in lines] != [step["name"] for step in steps]:
        pytest.fail(driver_broke("realtime", proc))
    return DriverRun({line["step"]: line for line in lines}, proc.stdout + proc.stderr, started, finished)


def failed(line: dict[str, Any]) -> dict[str, Any]:
    assert line["ok"] is False, line
    error: dict[str, Any] = line["error"]
    return error


def realtime_url(sidecar: Sidecar) -> str:
    return f"{sidecar.url.replace('http://', 'ws://')}{BASE_PATH}/realtime-model?{MODEL_QUERY}"


def new_connections(up: FakeRealtime, before: int, expected: int) -> list[Connection]:
    """The upstream connections made since ``before`` of them existed, once all ``expected`` have closed."""
    closed = up.wait_closed(count=before + expected)
    return closed[before:]


def assert_turn(socket: dict[str, Any], text: str) -> dict[str, Any]:
    """The socket ran one text turn through ``response-done``: the normalized events, each with ``raw``. Returns
    the ``response-done`` event."""
    assert socket["error"] is None and socket["timedOut"] is False, socket
    assert socket["sentTypes"] == ["session-update", "conversation-item-create", "response-create"], socket
    events = socket["events"]
    types = [e["type"] for e in events]
    assert types[:2] == ["session-created", "session-updated"], types
    assert types[-1] == "response-done", types
    assert SERVER_EVENT_TYPES <= set(types), types
    assert "error" not in types, events
    assert types.index("response-created") < types.index("text-delta") < types.index("text-done"), types
    for event in events:
        assert isinstance(event.get("raw"), dict), event  # the OpenAI event it was mapped from
    assert events[0]["sessionId"] == "sess_fake" and events[0]["raw"]["type"] == "session.created"
    delta = next(e for e in events if e["type"] == "text-delta")
    assert delta["delta"] == text and delta["raw"]["type"] == "response.output_text.delta", delta
    assert (delta["responseId"], delta["itemId"]) == ("resp_001", "msg_007"), delta
    done_text = next(e for e in events if e["type"] == "text-done")
    assert done_text["text"] == "Sure, I can help with that.", done_text
    done = events[-1]
    assert done["raw"]["type"] == "response.done" and done["status"] == "completed", done
    assert done["usage"] == USAGE.normalized(), done["usage"]
    assert isinstance(done["generationId"], str) and done["generationId"].startswith("gen_"), done
    # The client closed the socket itself, cleanly, after response-done.
    assert socket["close"]["code"] == 1000 and socket["close"]["wasClean"] is True, socket["close"]
    return done


def assert_upstream(connection: Connection, canary: str, instructions: str) -> None:
    """One upstream session: the real key in the handshake only, the OpenAI frames of one text turn."""
    assert connection.path == "/v1/realtime?model=gpt-realtime", connection.path
    assert connection.headers["authorization"] == f"Bearer {canary}"
    assert [f["type"] for f in connection.frames] == ["session.update", "conversation.item.create", "response.create"]
    update, item, _ = connection.frames
    assert "gateway" not in json.dumps(update), update  # the attribution stays in the sidecar
    session = update["session"]
    assert (session["type"], session["model"], session["instructions"]) == ("realtime", "gpt-realtime", instructions)
    assert session["output_modalities"] == ["text"], session
    assert item["item"] == {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hi."}]}
    assert connection.close_code == 1000, connection.close_code  # closed because the client closed


def ledger_generation(sidecar: Sidecar, generation_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{sidecar.url}/v1/generation",
        params={"id": generation_id},
        headers={"authorization": f"Bearer {sidecar.token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def assert_priced(data: dict[str, Any], generation_id: str, user: str, tags: list[str]) -> None:
    assert data["id"] == generation_id
    assert data["model"] == MODEL and data["provider_name"] == "openai" and data["api"] == "openai-realtime", data
    assert data["total_cost"] == pytest.approx(USAGE.cost, rel=1e-12), data
    assert (data["native_tokens_prompt"], data["native_tokens_cached"], data["native_tokens_completion"]) == (
        USAGE.input,
        USAGE.cached,
        USAGE.output,
    ), data
    assert (data["user"], data["tags"]) == (user, tags), data
    assert data["streamed"] is True and data["finish_reason"] == "stop", data


# ---------------------------------------------------------------------------------------------------------------------
# Scenarios


def test_the_fixture_usage_is_read_as_intended() -> None:
    """The reference cost, written out: text in 119 (64 cached), audio in 13, text out 30, audio out 91."""
    assert USAGE.cost == pytest.approx(((119 - 64) * 4 + 64 * 0.4 + 13 * 32 + 30 * 16 + 91 * 64) / 1e6, rel=1e-12)
    assert (USAGE.input, USAGE.cached, USAGE.output) == (132, 64, 121)


@pytest.fixture(scope="module")
def browser_flow(node: str, sidecar: Sidecar, realtime_upstream: FakeRealtime, canary: str) -> Any:
    """Mint, one browser-style session, the same secret again, the generation looked up: one Node process."""
    before = len(realtime_upstream.connections)
    run = run_realtime(
        node,
        sidecar,
        sidecar.token,
        [
            {"name": "mint", "op": "getToken", "model": MODEL, "expiresAfterSeconds": TTL_S},
            {
                "name": "browser",
                "op": "browserSocket",
                "tokenFrom": "mint",
                "send": session_events("Say hi.", {"tags": ["interop"], "user": "dana"}),
                "until": "response-done",
            },
            {"name": "reuse", "op": "browserSocket", "tokenFrom": "mint", "send": {}, "timeoutMs": 5000},
            {"name": "generation", "op": "getGenerationInfo", "idFrom": "browser"},
        ],
    )
    # The reuse step has finished (its socket closed) before the lookup, so any upstream connection it caused would
    # be here by now; the browser session's own upstream closes once the sidecar sees the client's close.
    return run, new_connections(realtime_upstream, before, 1), realtime_upstream.connections[before:]


def test_get_token_mints_a_secret_at_the_origin(browser_flow: Any, sidecar: Sidecar) -> None:
    run, _, _ = browser_flow
    line = run.lines["mint"]
    minted = ok(line)
    assert set(minted) == {"token", "url", "expiresAt", "webSocketConfig"}, minted
    assert minted["token"].startswith("vcst_") and len(minted["token"]) > 40, minted
    assert run.started + TTL_S - 1 <= minted["expiresAt"] <= run.finished + TTL_S, (minted, run.started)
    # The mint is origin-relative (§2.1), the socket URL baseURL-relative (§2.2).
    assert [(r["method"], r["url"], r["status"]) for r in line["requests"]] == [
        ("POST", f"{sidecar.url}/v1/realtime/client-secrets", 200)
    ]
    assert minted["url"] == realtime_url(sidecar)
    assert minted["webSocketConfig"] == {
        "url": minted["url"],
        "protocols": [REALTIME_SUBPROTOCOL, f"ai-gateway-auth.{minted['token']}"],
    }


def test_browser_socket_runs_a_text_turn(browser_flow: Any, sidecar: Sidecar) -> None:
    run, _, _ = browser_flow
    minted, socket = ok(run.lines["mint"]), ok(run.lines["browser"])
    assert socket["url"] == realtime_url(sidecar)
    assert socket["protocols"] == [REALTIME_SUBPROTOCOL, f"ai-gateway-auth.{minted['token']}"]
    assert socket["opened"] is True and socket["protocol"] == REALTIME_SUBPROTOCOL, socket
    assert_turn(socket, "Sure, I can h")
    assert run.lines["browser"]["requests"] == []  # no HTTP besides the upgrade


def test_browser_session_reaches_the_upstream_once_with_the_real_key(
    browser_flow: Any, sidecar: Sidecar, canary: str
) -> None:
    run, closed, _ = browser_flow
    (upstream,) = closed
    assert_upstream(upstream, canary, "Be brief.")
    assert canary not in run.output  # nothing the Node side saw carries the provider key
    assert canary not in sidecar.log()


def test_a_used_secret_does_not_open_a_second_socket(browser_flow: Any) -> None:
    run, _, seen = browser_flow
    reuse = ok(run.lines["reuse"])
    assert reuse["opened"] is False and reuse["protocol"] is None, reuse
    assert reuse["events"] == [] and reuse["timedOut"] is False, reuse
    assert reuse["error"] is not None and reuse["error"]["type"] == "error", reuse
    # A browser then fires close 1006 (readyState CLOSED). Node 20's undici 6 fires only the error and leaves the
    # socket CONNECTING for good (nodejs/undici#3546); either way it never opened.
    if reuse["close"] is None:
        assert reuse["readyState"] == 0, reuse
    else:
        assert reuse["close"]["code"] == 1006 and reuse["close"]["wasClean"] is False, reuse
        assert reuse["readyState"] == 3, reuse
    assert len(seen) == 1, seen  # the refusal happened before any upstream connection


def test_the_generation_is_priced_and_attributed(browser_flow: Any, sidecar: Sidecar) -> None:
    run, _, _ = browser_flow
    generation_id = ok(run.lines["browser"])["events"][-1]["generationId"]

    info = ok(run.lines["generation"])  # the client's getGenerationInfo, at the origin's /v1/generation
    assert [(r["url"].split("?")[0], r["status"]) for r in run.lines["generation"]["requests"]] == [
        (f"{sidecar.url}/v1/generation", 200)
    ]
    assert info["id"] == generation_id and info["model"] == MODEL and info["providerName"] == "openai", info
    assert info["totalCost"] == pytest.approx(USAGE.cost, rel=1e-12), info
    assert (info["promptTokens"], info["cachedTokens"], info["completionTokens"]) == (
        USAGE.input,
        USAGE.cached,
        USAGE.output,
    ), info
    assert info["streamed"] is True and info["finishReason"] == "stop" and info["isByok"] is False, info

    assert_priced(ledger_generation(sidecar, generation_id), generation_id, "dana", ["interop"])


def test_server_owned_socket_runs_a_text_turn(
    node: str, sidecar: Sidecar, realtime_upstream: FakeRealtime, canary: str
) -> None:
    before = len(realtime_upstream.connections)
    run = run_realtime(
        node,
        sidecar,
        sidecar.token,
        [
            {
                "name": "server",
                "op": "serverSocket",
                "model": MODEL,
                "intent": "conversation",
                "send": session_events("Say hi.", {"tags": ["interop", "server"], "user": "erin"}),
                "until": "response-done",
            }
        ],
    )
    socket = ok(run.lines["server"])
    assert socket["url"] == realtime_url(sidecar)
    assert socket["authorization"] == f"Bearer {sidecar.token}"
    assert {"authorization", "ai-gateway-auth-method", "ai-gateway-protocol-version"} <= set(socket["headerNames"])
    # No subprotocol offered, none selected: the handshake authenticated with the Authorization header.
    assert socket["opened"] is True and socket["protocol"] == "", socket
    done = assert_turn(socket, "Sure, I can h")

    (upstream,) = new_connections(realtime_upstream, before, 1)
    assert_upstream(upstream, canary, "Be brief.")
    assert canary not in run.output
    generation_id = done["generationId"]
    assert_priced(ledger_generation(sidecar, generation_id), generation_id, "erin", ["interop", "server"])


def test_mint_errors_are_gateway_errors(
    node: str, sidecar: Sidecar, realtime_upstream: FakeRealtime, canary: str
) -> None:
    before = len(realtime_upstream.connections)
    steps = [
        {"name": "unknown", "op": "getToken", "model": "openai/nope"},
        {"name": "not-realtime", "op": "getToken", "model": "openai/gpt-4o"},
        {"name": "too-long", "op": "getToken", "model": MODEL, "expiresAfterSeconds": 3600},
    ]
    run = run_realtime(node, sidecar, sidecar.token, steps)
    wrong_key = run_realtime(node, sidecar, f"not-the-token-{secrets.token_hex(8)}", [steps[0]])

    expected = {
        "unknown": ("GatewayModelNotFoundError", "model_not_found", 404, "Unknown realtime model"),
        "not-realtime": ("GatewayInvalidRequestError", "invalid_request_error", 400, "not a realtime model"),
        "too-long": ("GatewayInvalidRequestError", "invalid_request_error", 400, "maximum"),
    }
    for name, (cls, type_, status, fragment) in expected.items():
        error = failed(run.lines[name])
        assert (error["name"], error["type"], error["statusCode"], error["isRetryable"]) == (cls, type_, status, False)
        assert fragment in error["message"], error
        assert [r["status"] for r in run.lines[name]["requests"]] == [status]
    auth = failed(wrong_key.lines["unknown"])
    assert (auth["name"], auth["type"], auth["statusCode"]) == (
        "GatewayAuthenticationError",
        "authentication_error",
        401,
    )
    assert "Invalid API key" in auth["message"], auth
    assert len(realtime_upstream.connections) == before
    assert canary not in run.output + wrong_key.output
