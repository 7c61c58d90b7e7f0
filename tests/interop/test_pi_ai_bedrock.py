"""Interop: the unmodified real ``@oh-my-pi/pi-ai`` client (under Bun) streams Amazon Bedrock models via the sidecar.

The sidecar (``python -m sidecar serve``) holds AWS keys and points ``[providers.bedrock] base_url`` at a FakeUpstream
that answers with the assembled ConverseStream event streams of ``tests/fixtures/bedrock-converse-stream``. The
client driver is ``pi_client.ts`` and the client runner, checks and helpers are those of ``test_pi_ai_interop``; this
module brings its own sidecar (AWS credentials) and canaries (the AWS secret key and session token), which the
shared ``run_client`` fixture picks up by name and checks the client never sees.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakeupstream import FakeUpstream, Reply, fixture_bytes
from tests.interop import test_pi_ai_interop as shared
from tests.interop.harness import Sidecar, run_sidecar
from tests.interop.test_pi_ai_interop import RunClient, assert_usage, assert_well_formed, user
from tests.providers.test_bedrock_converse_stream import SIG, SIG2, TEXT, THINKING, TOP_SONG, verify_sigv4

pytestmark = pytest.mark.interop

# The shared module's fixtures, used here by name: `run_client` asks for `sidecar` and `canaries`, which resolve to
# this module's own.
bun = shared.bun
client_home = shared.client_home
upstream = shared.upstream
run_client = shared.run_client
_fresh_upstream = shared._fresh_upstream

API = "bedrock-converse-stream"
DIR = "bedrock-converse-stream"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"

# Client-side Model objects; the sidecar resolves its own model (and price) from `${provider}/${id}`.
SONNET: dict[str, Any] = {
    "provider": "bedrock",
    "id": "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
    "api": API,
    "reasoning": True,
    "cost": {"input": 3.3, "output": 16.5, "cacheRead": 0.33, "cacheWrite": 4.125},
    "contextWindow": 200_000,
    "maxTokens": 64_000,
}
NOVA_LITE: dict[str, Any] = {
    "provider": "bedrock",
    "id": "us.amazon.nova-lite-v1:0",
    "api": API,
    "cost": {"input": 0.06, "output": 0.24, "cacheRead": 0.015, "cacheWrite": 0.06},
    "contextWindow": 300_000,
    "maxTokens": 10_000,
}
SONNET_PATH = "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream"


@pytest.fixture(scope="module")
def canaries() -> dict[str, str]:
    """The AWS secrets the sidecar holds: the secret key must reach nothing, the session token only AWS."""
    return {
        "aws secret key": f"awsSecretCanary{secrets.token_hex(16)}",
        "aws session token": f"awsSessionCanary{secrets.token_hex(16)}",
    }


@pytest.fixture(scope="module")
def sidecar(
    upstream: FakeUpstream,
    canaries: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Sidecar]:
    env = {
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": canaries["aws secret key"],
        "AWS_SESSION_TOKEN": canaries["aws session token"],
        "AWS_REGION": "us-west-2",
    }
    config = f'[upstream]\nmax_retries = 0\n[providers.bedrock]\nbase_url = "{upstream.url}"\n'
    token = f"gw-{secrets.token_urlsafe(24)}"
    with run_sidecar(tmp_path_factory.mktemp("sidecar-bedrock"), config, token, env) as sc:
        yield sc


def stream_reply(name: str, split: int | None = None) -> Reply:
    headers = {"content-type": "application/vnd.amazon.eventstream", "x-amzn-requestid": f"req-{name[:12]}"}
    return Reply.sse(fixture_bytes(f"{DIR}/{name}.ASSEMBLED.eventstream"), split=split, headers=headers)


def check_upstream(upstream: FakeUpstream, canaries: dict[str, str], sidecar: Sidecar) -> dict[str, Any]:
    """The one request the sidecar sent: SigV4-valid for us-west-2/bedrock, the session token only where AWS wants
    it, no secret key, no gateway bearer. Returns its body."""
    (req,) = upstream.received
    parts = verify_sigv4("POST", req.path, req.headers, req.body, canaries["aws secret key"])
    assert parts["key_id"] == KEY_ID and parts["scope"].endswith("/us-west-2/bedrock/aws4_request")
    assert req.headers["x-amz-security-token"] == canaries["aws session token"]
    others = json.dumps({k: v for k, v in req.headers.items() if k != "x-amz-security-token"}) + req.body.decode()
    for secret in canaries.values():
        assert secret not in others
    assert sidecar.token not in others, "the gateway bearer went upstream"
    for secret in canaries.values():
        assert secret not in sidecar.log(), "an AWS secret reached the sidecar's log"
    body: dict[str, Any] = req.json()
    return body


@pytest.mark.parametrize("entry", ["streamPiNative", "streamSimple"])
def test_text_turn(
    entry: str, run_client: RunClient, upstream: FakeUpstream, sidecar: Sidecar, canaries: dict[str, str]
) -> None:
    upstream.push(stream_reply("text-nova-lite", split=3))
    prompt = "Describe the purpose of a 'hello world' program in one line."
    run = run_client(NOVA_LITE, [user(prompt)], entry=entry, options={"temperature": 0.5})

    assert_well_formed(run)
    assert run.types == ["start", "text_start", *["text_delta"] * 3, "text_end", "done"]
    assert "".join(run.deltas("text_delta", 0)) == TEXT
    msg = run.result
    assert msg == run.events[-1]["message"]
    assert msg["content"] == [{"type": "text", "text": TEXT}]
    assert (msg["api"], msg["provider"], msg["model"], msg["stopReason"]) == (API, "bedrock", NOVA_LITE["id"], "stop")
    assert msg["responseId"] == "req-text-nova-li"
    assert_usage(msg, NOVA_LITE["cost"], input=14, output=31, cacheRead=0, cacheWrite=0, totalTokens=45)
    assert msg["usage"]["cost"]["total"] == pytest.approx(0.00000828, rel=1e-12)

    body = check_upstream(upstream, canaries, sidecar)
    assert upstream.received[0].path == "/model/us.amazon.nova-lite-v1%3A0/converse-stream"
    assert body["messages"] == [{"role": "user", "content": [{"text": prompt}, {"cachePoint": {"type": "default"}}]}]
    assert body["inferenceConfig"] == {"maxTokens": 1024, "temperature": 0.5}


def test_thinking_with_signature(
    run_client: RunClient, upstream: FakeUpstream, sidecar: Sidecar, canaries: dict[str, str]
) -> None:
    upstream.push(stream_reply("thinking-claude", split=1))
    run = run_client(SONNET, [user("What is 27 * 453?")], options={"reasoning": "low"})

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
    assert "".join(run.deltas("thinking_delta", 0)) == THINKING
    msg = run.result
    assert msg["content"] == [
        {"type": "thinking", "thinking": THINKING, "thinkingSignature": SIG},
        {"type": "text", "text": "27 × 453 = 12,231."},
    ]
    assert msg["stopReason"] == "stop"
    assert_usage(msg, SONNET["cost"], input=48, output=96, cacheRead=0, cacheWrite=0, totalTokens=144)
    assert msg["usage"]["cost"]["total"] == pytest.approx(0.0017424, rel=1e-12)

    body = check_upstream(upstream, canaries, sidecar)
    assert upstream.received[0].path == SONNET_PATH
    assert body["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 4096}}
    assert body["inferenceConfig"]["maxTokens"] == 1024 + 4096


def test_tool_call_turn_with_cache_usage(
    run_client: RunClient, upstream: FakeUpstream, sidecar: Sidecar, canaries: dict[str, str]
) -> None:
    upstream.push(stream_reply("tool-use-cached-claude", split=7))
    run = run_client(
        SONNET,
        [user("What is the most popular song on WZPZ?")],
        system=["You are a radio assistant."],
        tools=[TOP_SONG],
        options={"toolChoice": "auto"},
    )

    assert_well_formed(run)
    types = run.types
    assert types[:2] == ["start", "text_start"] and types[-3:] == ["toolcall_delta", "toolcall_end", "done"]
    assert "".join(run.deltas("toolcall_delta", 1)) == '{"sign": "WZPZ"}'
    msg = run.result
    assert msg["content"] == [
        {"type": "text", "text": "I'll look up the most popular song on WZPZ."},
        {"type": "toolCall", "id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "top_song", "arguments": {"sign": "WZPZ"}},
    ]
    assert msg["stopReason"] == "toolUse" and run.events[-1]["reason"] == "toolUse"
    assert_usage(msg, SONNET["cost"], input=12, output=54, cacheRead=1536, cacheWrite=412, totalTokens=2014)
    assert msg["usage"]["cost"]["total"] == pytest.approx(0.00313698, rel=1e-12)

    body = check_upstream(upstream, canaries, sidecar)
    assert body["system"] == [{"text": "You are a radio assistant."}, {"cachePoint": {"type": "default"}}]
    assert body["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "top_song",
                    "inputSchema": {"json": TOP_SONG["parameters"]},
                    "description": TOP_SONG["description"],
                }
            }
        ],
        "toolChoice": {"auto": {}},
    }


def test_second_turn_replays_the_signed_reasoning_and_the_call(
    run_client: RunClient, upstream: FakeUpstream, sidecar: Sidecar, canaries: dict[str, str]
) -> None:
    """The client keeps the first turn as the sidecar gave it; sent back, it reaches Bedrock as Bedrock requires:
    the signed reasoningContent before the toolUse, the toolResult paired with its id."""
    question = user("What is the most popular song on WZPZ?")
    upstream.push(stream_reply("thinking-then-tool-use-claude", split=11))
    first = run_client(SONNET, [question], tools=[TOP_SONG], options={"reasoning": "low"}).result
    assert first["stopReason"] == "toolUse"
    assert first["content"][0]["thinkingSignature"] == SIG2
    call = first["content"][1]

    upstream.received.clear()
    upstream.push(stream_reply("text-nova-lite"))
    result = {
        "role": "toolResult",
        "toolCallId": call["id"],
        "toolName": "top_song",
        "content": [{"type": "text", "text": "Elemental Hotel by 8 Storey Hike"}],
        "isError": False,
        "timestamp": 1_767_225_601_000,
    }
    second = run_client(SONNET, [question, first, result], tools=[TOP_SONG], options={"reasoning": "low"})
    assert second.result["stopReason"] == "stop"

    body = check_upstream(upstream, canaries, sidecar)
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {
                    "reasoningContent": {
                        "reasoningText": {
                            "text": "The user wants WZPZ's most popular song. The top_song tool takes a call sign.",
                            "signature": SIG2,
                        }
                    }
                },
                {"toolUse": {"toolUseId": call["id"], "name": "top_song", "input": {"sign": "WZPZ"}}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "toolResult": {
                        "toolUseId": call["id"],
                        "content": [{"text": "Elemental Hotel by 8 Storey Hike"}],
                        "status": "success",
                    }
                },
                {"cachePoint": {"type": "default"}},
            ],
        },
    ]


def test_throttling_mid_stream_is_an_error_that_keeps_the_text(
    run_client: RunClient, upstream: FakeUpstream, sidecar: Sidecar, canaries: dict[str, str]
) -> None:
    upstream.push(stream_reply("throttling-exception-mid-stream"))
    run = run_client(NOVA_LITE, [user("Describe the purpose of a 'hello world' program in one line.")])

    assert_well_formed(run)
    assert run.types[-1] == "error"
    msg = run.result
    assert msg["stopReason"] == "error" and msg["errorStatus"] == 429
    assert "throttlingException" in msg["errorMessage"] and "Too many tokens" in msg["errorMessage"]
    assert msg["content"] == [{"type": "text", "text": "A “hello world” program "}]
    check_upstream(upstream, canaries, sidecar)
