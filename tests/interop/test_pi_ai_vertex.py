"""Interop: the unmodified real client ``@oh-my-pi/pi-ai`` (under Bun) streams Gemini on Vertex AI through the sidecar.

The sidecar (``python -m sidecar serve``) holds a service-account key (``GOOGLE_APPLICATION_CREDENTIALS``) whose
``token_uri`` is a fake OAuth token endpoint on 127.0.0.1 (``FakeGoogle``, which checks the JWT's RS256 signature),
and its ``[providers.vertex] base_url`` points at a FakeUpstream replaying recorded Gemini streams. The client driver,
its runner and the protocol checks are those of ``test_pi_ai_interop``; this module brings its own sidecar.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.canaries import leaks
from tests.fakeupstream import FakeUpstream, Reply, fixture_bytes
from tests.interop.harness import Sidecar, run_sidecar
from tests.interop.test_pi_ai_interop import (  # noqa: F401 (fixtures, used by name)
    RunClient,
    _fresh_upstream,
    assert_usage,
    assert_well_formed,
    bun,
    client_home,
    run_client,
    sse_reply,
    user,
)
from tests.test_vertex_auth import FakeGoogle, service_account_doc

pytestmark = pytest.mark.interop

# genai-prices' google rates for gemini-2.5-flash (USD per 1M tokens), which the catalog's vertex rows use.
RATES = {"input": 0.3, "output": 2.5, "cacheRead": 0.03, "cacheWrite": 0.3}
FLASH: dict[str, Any] = {
    "provider": "vertex",
    "id": "gemini-2.5-flash",
    "api": "google-vertex",
    "reasoning": True,
    "cost": RATES,
    "contextWindow": 1_048_576,
    "maxTokens": 65_536,
}
PROJECT = "canary-project-4711"
STREAM_PATH = f"/v1/projects/{PROJECT}/locations/global/publishers/google/models/gemini-2.5-flash"
NOW_TOOL: dict[str, Any] = {
    "name": "now",
    "description": "The current date and time.",
    "parameters": {"type": "object", "properties": {}},
}
DIR = "google-gemini"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def google() -> Iterator[FakeGoogle]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with FakeGoogle(key.public_key()) as fake:
        fake.key = key  # type: ignore[attr-defined]
        yield fake


@pytest.fixture(scope="module")
def service_account(google: FakeGoogle) -> dict[str, str]:
    doc = service_account_doc(google.key, google.token_uri)  # type: ignore[attr-defined]
    doc["private_key_id"] = f"canary{secrets.token_hex(16)}"
    return doc


@pytest.fixture(scope="module")
def canaries(service_account: dict[str, str]) -> dict[str, str]:
    """What the sidecar holds and no client may see (run_client checks each scenario's output for them)."""
    return {
        "vertex key id": service_account["private_key_id"],
        "vertex private key": service_account["private_key"].splitlines()[1],
    }


@pytest.fixture(scope="module")
def sidecar(
    upstream: FakeUpstream, service_account: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Sidecar]:
    work = tmp_path_factory.mktemp("vertex-sidecar")
    key_file = work / "service-account.json"
    key_file.write_text(json.dumps(service_account))
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(key_file), "GOOGLE_CLOUD_PROJECT": PROJECT, "NO_GCE_CHECK": "true"}
    config = f'[upstream]\nmax_retries = 0\n\n[providers.vertex]\nbase_url = "{upstream.url}/v1"\n'
    token = f"gw-{secrets.token_urlsafe(24)}"
    with run_sidecar(work, config, token, env) as sc:
        yield sc


def assert_no_google_secret(raw: str, sidecar: Sidecar, google: FakeGoogle, sa: dict[str, str]) -> None:
    """No access token, signed assertion or key reached the client or the sidecar's log."""
    pem = "".join(sa["private_key"].splitlines()[1:-1])
    secrets_ = [*google.issued, *(f["assertion"] for f in google.forms), pem]
    log = sidecar.log()
    for secret in secrets_:
        assert not leaks(raw, secret)
        assert not leaks(log, secret)


def last_usage(name: str) -> dict[str, int]:
    """The recording's final usageMetadata, read independently of the adapter."""
    data = fixture_bytes(f"{DIR}/{name}")
    chunks = [orjson.loads(line[6:]) for line in data.splitlines() if line.startswith(b"data: ")]
    usage: dict[str, int] = chunks[-1]["usageMetadata"]
    return usage


# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["streamPiNative", "streamSimple"])
def test_text_turn(
    entry: str,
    run_client: RunClient,  # noqa: F811
    upstream: FakeUpstream,
    sidecar: Sidecar,
    google: FakeGoogle,
    service_account: dict[str, str],
) -> None:
    upstream.push(sse_reply(f"{DIR}/text-basic.sse", split=5))
    run = run_client(FLASH, [user("What is the capital of Wyoming?")], entry=entry)

    assert_well_formed(run)
    assert run.types == ["start", "text_start", "text_delta", "text_delta", "text_delta", "text_end", "done"]
    assert run.deltas("text_delta", 0) == ["The", " capital of Wyoming", " is **Cheyenne**.\n"]
    msg = run.result
    assert msg == run.events[-1]["message"]
    assert msg["content"] == [{"type": "text", "text": "The capital of Wyoming is **Cheyenne**.\n"}]
    assert (msg["api"], msg["provider"], msg["model"], msg["stopReason"]) == (
        "google-vertex",
        "vertex",
        "gemini-2.5-flash",
        "stop",
    )
    # Hand-computed from the recording: promptTokenCount 7, candidatesTokenCount 10.
    assert_usage(msg, RATES, input=7, output=10, cacheRead=0, cacheWrite=0)
    assert msg["usage"]["cost"]["total"] == pytest.approx(7 * 0.3e-6 + 10 * 2.5e-6, rel=1e-12)

    [received] = upstream.received
    assert received.path == f"{STREAM_PATH}:streamGenerateContent?alt=sse"
    assert received.headers["authorization"] == f"Bearer {google.issued[-1]}"
    assert received.json()["contents"] == [{"role": "user", "parts": [{"text": "What is the capital of Wyoming?"}]}]
    assert_no_google_secret(run.raw, sidecar, google, service_account)


def test_thinking_turn(
    run_client: RunClient,  # noqa: F811
    upstream: FakeUpstream,
    sidecar: Sidecar,
    google: FakeGoogle,
    service_account: dict[str, str],
) -> None:
    upstream.push(sse_reply(f"{DIR}/thought-summary-then-text.sse"))
    run = run_client(FLASH, [user("Why is the sky blue?")], options={"reasoning": "low"})

    assert_well_formed(run)
    types = run.types
    assert types[:2] == ["start", "thinking_start"] and types[-1] == "done"
    assert types.index("thinking_end") < types.index("text_start")
    msg = run.result
    assert [b["type"] for b in msg["content"]] == ["thinking", "text"]
    thinking, text = msg["content"][0]["thinking"], msg["content"][1]["text"]
    assert thinking.startswith("**Exploring Sky Color**") and "**Constructing a Concise Answer**" in thinking
    assert text.startswith("The sky is blue because tiny gas molecules in Earth's atmosp")
    # promptTokenCount 10; candidatesTokenCount 48 + thoughtsTokenCount 540 (598 total - 10 - 48) = 588 output.
    usage = last_usage("thought-summary-then-text.sse")
    assert (usage["promptTokenCount"], usage["candidatesTokenCount"], usage["thoughtsTokenCount"]) == (10, 48, 540)
    assert_usage(msg, RATES, input=10, output=588, cacheRead=0, cacheWrite=0)

    body = upstream.received[0].json()
    assert body["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 2048}
    assert_no_google_secret(run.raw, sidecar, google, service_account)


def test_tool_call_turn_and_the_next_turn_replays_the_signature_as_vertex_wants_it(
    run_client: RunClient,  # noqa: F811
    upstream: FakeUpstream,
    sidecar: Sidecar,
    google: FakeGoogle,
    service_account: dict[str, str],
) -> None:
    name = "thought-summary-then-function-call-signature.sse"
    recorded_signature = next(
        part["thoughtSignature"]
        for line in fixture_bytes(f"{DIR}/{name}").splitlines()
        if line.startswith(b"data: ")
        for part in orjson.loads(line[6:])["candidates"][0]["content"]["parts"]
        if "functionCall" in part
    )
    upstream.push(sse_reply(f"{DIR}/{name}", split=3))
    question = user("How many days until New Year's Eve?")
    run = run_client(FLASH, [question], tools=[NOW_TOOL], options={"reasoning": "low"})

    assert_well_formed(run)
    assert run.events[-1]["reason"] == "toolUse"
    msg = run.result
    assert [b["type"] for b in msg["content"]] == ["thinking", "toolCall"]
    call = msg["content"][1]
    assert (call["name"], call["arguments"]) == ("now", {})
    assert call["id"] and call["thoughtSignature"] == recorded_signature
    # promptTokenCount 38; candidatesTokenCount 6 + thoughtsTokenCount 168 (212 - 38 - 6) = 174 output.
    usage = last_usage(name)
    assert (usage["promptTokenCount"], usage["candidatesTokenCount"], usage["thoughtsTokenCount"]) == (38, 6, 168)
    assert_usage(msg, RATES, input=38, output=174, cacheRead=0, cacheWrite=0)
    sent_tools = upstream.received[0].json()["tools"]
    assert [d["name"] for d in sent_tools[0]["functionDeclarations"]] == ["now"]

    # The next turn: the client sends the assistant message back with the tool's result.
    result = {
        "role": "toolResult",
        "toolCallId": call["id"],
        "toolName": "now",
        "content": [{"type": "text", "text": "2026-11-30T09:00:00Z"}],
        "isError": False,
        "timestamp": 1_767_225_601_000,
    }
    upstream.push(sse_reply(f"{DIR}/text-basic.sse"))
    second = run_client(FLASH, [question, msg, result], tools=[NOW_TOOL], options={"reasoning": "low"})
    assert second.result["stopReason"] == "stop"
    contents = upstream.received[1].json()["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    function_parts = [p for p in contents[1]["parts"] if "functionCall" in p]
    # Vertex: the signature goes back on the part it came with, and function parts carry no id (Vertex rejects it).
    assert function_parts == [{"functionCall": {"name": "now", "args": {}}, "thoughtSignature": recorded_signature}]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "now", "response": {"output": "2026-11-30T09:00:00Z"}}}
    ]
    assert len(google.forms) == 1  # one token for every request of the module so far: cached
    assert_no_google_secret(run.raw + second.raw, sidecar, google, service_account)


def test_vertex_refusing_the_token_twice_is_an_in_band_401(
    run_client: RunClient,  # noqa: F811
    upstream: FakeUpstream,
    sidecar: Sidecar,
    google: FakeGoogle,
    service_account: dict[str, str],
) -> None:
    refusal = {
        "error": {
            "code": 401,
            "message": "Request had invalid authentication credentials.",
            "status": "UNAUTHENTICATED",
        }
    }
    upstream.push(Reply.json(401, refusal), Reply.json(401, refusal))
    fetched = len(google.issued)
    run = run_client(FLASH, [user("hi")])

    msg = run.result
    assert (msg["stopReason"], msg["errorStatus"]) == ("error", 401)
    assert "UNAUTHENTICATED" in msg["errorMessage"] and "invalid authentication credentials" in msg["errorMessage"]
    # The first refusal dropped the cached token; the retry carried a new one.
    assert len(google.issued) == fetched + 1
    assert [r.headers["authorization"] for r in upstream.received] == [
        f"Bearer {google.issued[-2]}",
        f"Bearer {google.issued[-1]}",
    ]
    assert_no_google_secret(run.raw, sidecar, google, service_account)
