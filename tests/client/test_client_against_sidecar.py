"""The Python client against the real sidecar (echo and a model backed by recorded Anthropic bytes)."""

from __future__ import annotations

from typing import Any

import pytest

import client
from tests.fakeupstream import FakeUpstream, Reply, fixture_bytes
from tests.sidecar_server import TOKEN, RunningSidecar

CONTEXT: Any = {"systemPrompt": ["be brief"], "messages": [{"role": "user", "content": "echo me back", "timestamp": 1}]}


async def test_stream_echo(sidecar: RunningSidecar) -> None:
    s = client.stream("echo/echo", CONTEXT, base_url=sidecar.url + "/", token=TOKEN)
    types = [event["type"] async for event in s]
    assert types == ["start", "text_start", "text_delta", "text_delta", "text_delta", "text_end", "done"]
    message = await s.result()
    assert message["content"] == [{"type": "text", "text": "echo me back"}]
    assert message["stopReason"] == "stop" and message["usage"]["output"] == 3
    assert s.response_headers is not None and s.response_headers["x-generation-id"].startswith("gen_")


async def test_fixture_backed_model_and_key_isolation(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    upstream.push(Reply.sse(fixture_bytes("anthropic-messages/thinking-signature-delta.sse"), split=7))
    message = await client.complete(
        "anthropic/claude-sonnet-4-5", CONTEXT, {"reasoning": "low"}, base_url=sidecar.url, token=TOKEN
    )
    assert message["stopReason"] == "stop"
    thinking = message["content"][0]
    assert thinking["type"] == "thinking" and thinking.get("thinkingSignature")
    assert message["content"][1]["type"] == "text"
    assert message["usage"]["cost"]["total"] > 0
    sent = upstream.received[0]
    assert sent.json()["thinking"]["type"] == "enabled"
    assert TOKEN not in str(sent.headers) and TOKEN not in sent.body.decode()


def test_sync_twin_and_env_configuration(sidecar: RunningSidecar, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_URL", sidecar.url)
    monkeypatch.setenv("SIDECAR_TOKEN", TOKEN)
    with client.stream_sync("echo/echo", CONTEXT) as s:
        deltas = [e["delta"] for e in s if e["type"] == "text_delta"]
        assert "".join(deltas) == "echo me back"
        assert s.result()["stopReason"] == "stop"


async def test_gateway_errors_before_the_stream(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    with pytest.raises(client.GatewayError) as wrong_token:
        await client.complete("echo/echo", CONTEXT, base_url=sidecar.url, token="not-the-token")
    assert wrong_token.value.status == 401 and "unauthorized" in str(wrong_token.value)
    with pytest.raises(client.GatewayError) as unknown:
        await client.complete("nobody/nothing", CONTEXT, base_url=sidecar.url, token=TOKEN)
    assert unknown.value.status == 404 and unknown.value.type == "invalid_request_error"
    assert "Unknown model: nobody/nothing" in str(unknown.value)


async def test_upstream_failure_is_one_terminal_error(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    upstream.push(Reply.json(529, fixture_bytes("anthropic-messages/errors/529-overloaded-error.json")))
    s = client.stream("anthropic/claude-sonnet-4-5", CONTEXT, base_url=sidecar.url, token=TOKEN)
    events = [e async for e in s]
    assert [e["type"] for e in events] == ["start", "error"]
    message = await s.result()
    assert message["stopReason"] == "error" and message.get("errorStatus") == 529
