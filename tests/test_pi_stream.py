"""``POST /v1/pi/stream`` end to end: real sidecar on 127.0.0.1, fake upstream replaying recorded provider bytes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import pi_body, read_events
from tests.fakeupstream import FIXTURES, FakeUpstream, Reply, fixture_bytes
from tests.sidecar_server import ANTHROPIC_CANARY, OPENAI_CANARY, RunningSidecar

ULID_ID = re.compile(r"^gen_[0-9A-HJKMNP-TV-Z]{26}$")


def post(sidecar: RunningSidecar, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{sidecar.url}/v1/pi/stream", json=body, headers=headers, timeout=30)


def assert_contract(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The protocol's invariants; returns the terminal event."""
    assert events[0]["type"] == "start"
    assert [e["type"] for e in events].count("start") == 1
    terminals = [e for e in events if e["type"] in ("done", "error")]
    assert len(terminals) == 1 and events[-1] is terminals[0]
    open_blocks: dict[int, str] = {}
    for event in events[:-1]:
        partial = event["partial"]
        assert partial["role"] == "assistant" and isinstance(partial["usage"]["cost"]["total"], float)
        if "contentIndex" in event:
            index = event["contentIndex"]
            block = partial["content"][index]  # must exist (protocol §14.2)
            kind = event["type"].split("_")[0]
            if event["type"].endswith("_start"):
                open_blocks[index] = kind
            assert open_blocks.get(index) == kind, event["type"]
            if kind == "toolcall":
                assert block["type"] == "toolCall" and "id" in block and "name" in block
            if event["type"].endswith("_end"):
                del open_blocks[index]
    terminal = terminals[0]
    message = terminal["message"] if terminal["type"] == "done" else terminal["error"]
    assert message["stopReason"] == terminal["reason"]
    usage = message["usage"]
    assert usage["totalTokens"] == usage["input"] + usage["output"] + usage["cacheRead"] + usage["cacheWrite"]
    return terminal


def test_echo_stream_exact_events_and_headers(sidecar: RunningSidecar, auth_headers: dict[str, str]) -> None:
    response = post(sidecar, pi_body("echo/echo", "one two three"), auth_headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert ULID_ID.match(response.headers["x-generation-id"])
    assert response.headers["x-request-id"] == response.headers["x-generation-id"]
    events = read_events(response)
    assert [e["type"] for e in events] == [
        "start",
        "text_start",
        "text_delta",
        "text_delta",
        "text_delta",
        "text_end",
        "done",
    ]
    assert [e["delta"] for e in events if e["type"] == "text_delta"] == ["one ", "two ", "three"]
    done = assert_contract(events)
    message = done["message"]
    assert message["content"] == [{"type": "text", "text": "one two three"}]
    assert (message["api"], message["provider"], message["model"]) == ("echo", "echo", "echo")
    assert message["usage"]["output"] == 3 and message["usage"]["input"] > 0
    assert message["duration"] >= message["ttft"] >= 0


def test_anthropic_text_through_sidecar(
    sidecar: RunningSidecar, upstream: FakeUpstream, auth_headers: dict[str, str]
) -> None:
    upstream.push(Reply.sse(fixture_bytes("anthropic-messages/text-basic-padded.sse")))
    response = post(sidecar, pi_body("anthropic/claude-sonnet-4-5", "hi"), auth_headers)
    events = read_events(response)
    done = assert_contract(events)
    assert done["type"] == "done" and done["reason"] == "stop"
    message = done["message"]
    text = "".join(e["delta"] for e in events if e["type"] == "text_delta")
    assert message["content"] == [{"type": "text", "text": text}] and text
    usage = message["usage"]
    # Rates for claude-sonnet-4-5: $3 / $15 / $0.30 / $3.75 per 1M tokens.
    assert usage["cost"]["input"] == pytest.approx(usage["input"] * 3 / 1e6)
    assert usage["cost"]["output"] == pytest.approx(usage["output"] * 15 / 1e6)
    assert usage["cost"]["total"] == pytest.approx(
        (usage["input"] * 3 + usage["output"] * 15 + usage["cacheRead"] * 0.3 + usage["cacheWrite"] * 3.75) / 1e6
    )
    assert message["responseId"].startswith("msg_")
    # The stored key went upstream; the workload bearer did not.
    received = upstream.received[0]
    assert received.path == "/v1/messages"
    assert received.headers["x-api-key"] == ANTHROPIC_CANARY
    assert "test-workload-bearer" not in str(received.headers)
    assert ANTHROPIC_CANARY not in response.text and ANTHROPIC_CANARY not in str(response.headers)


def test_openai_parallel_tool_calls_through_sidecar(
    sidecar: RunningSidecar, upstream: FakeUpstream, auth_headers: dict[str, str]
) -> None:
    upstream.push(Reply.sse(fixture_bytes("openai-chat-completions/tool-calls-parallel.sse"), split=5))
    events = read_events(post(sidecar, pi_body("openai/gpt-4o"), auth_headers))
    done = assert_contract(events)
    assert done["reason"] == "toolUse"
    calls = [b for b in done["message"]["content"] if b["type"] == "toolCall"]
    assert len(calls) == 2
    assert all(c["id"].startswith("call_") and isinstance(c["arguments"], dict) and c["arguments"] for c in calls)
    ends = [e for e in events if e["type"] == "toolcall_end"]
    assert [e["toolCall"] for e in ends] == calls
    assert upstream.received[0].path == "/v1/chat/completions"
    assert upstream.received[0].headers["authorization"] == f"Bearer {OPENAI_CANARY}"


SSE_FIXTURES = sorted(
    str(p.relative_to(FIXTURES))
    for d in ("anthropic-messages", "openai-chat-completions")
    for p in (FIXTURES / d).glob("*.sse")
)


@pytest.mark.parametrize("fixture", SSE_FIXTURES)
def test_every_fixture_keeps_the_contract_when_split(
    fixture: str, sidecar: RunningSidecar, upstream: FakeUpstream, auth_headers: dict[str, str]
) -> None:
    model = "anthropic/claude-sonnet-4-5" if fixture.startswith("anthropic") else "openai/gpt-4o"
    data = fixture_bytes(fixture)
    upstream.push(Reply.sse(data), Reply.sse(data, split=3))
    whole = read_events(post(sidecar, pi_body(model), auth_headers))
    split = read_events(post(sidecar, pi_body(model), auth_headers))
    terminal = assert_contract(whole)
    assert_contract(split)

    def stable(events: list[dict[str, Any]]) -> list[Any]:
        out = []
        for e in events:
            e = dict(e)
            msg = e.pop("partial", None) or e.get("message") or e.get("error")
            if msg:
                msg = {k: v for k, v in msg.items() if k not in ("timestamp", "duration", "ttft")}
            out.append((e["type"], e.get("delta"), e.get("contentIndex"), msg))
        return out

    assert stable(whole) == stable(split)
    message = terminal["message"] if terminal["type"] == "done" else terminal["error"]
    for event in whole:
        if event["type"] == "text_end":
            deltas = "".join(
                e["delta"]
                for e in whole
                if e.get("contentIndex") == event["contentIndex"] and e["type"] == "text_delta"
            )
            assert event["content"] == deltas == message["content"][event["contentIndex"]]["text"]
    if "error" in fixture:
        assert terminal["type"] == "error" and terminal["error"]["errorMessage"]


@pytest.mark.parametrize(
    ("model", "error_file", "status"),
    [
        ("anthropic/claude-sonnet-4-5", "anthropic-messages/errors/401-authentication-error.ASSEMBLED.json", 401),
        ("anthropic/claude-sonnet-4-5", "anthropic-messages/errors/429-rate-limit-error.json", 429),
        ("anthropic/claude-sonnet-4-5", "anthropic-messages/errors/529-overloaded-error.json", 529),
        ("openai/gpt-4o", "openai-chat-completions/errors/429-insufficient-quota.json", 429),
        ("openai/gpt-4o", "openai-chat-completions/errors/401-invalid-api-key.json", 401),
    ],
)
def test_upstream_error_statuses_are_in_band(
    model: str,
    error_file: str,
    status: int,
    sidecar: RunningSidecar,
    upstream: FakeUpstream,
    auth_headers: dict[str, str],
) -> None:
    upstream.push(Reply.json(status, fixture_bytes(error_file)))
    response = post(sidecar, pi_body(model), auth_headers)
    assert response.status_code == 200  # once the stream has started, failures are in-band (protocol §5)
    events = read_events(response)
    terminal = assert_contract(events)
    assert [e["type"] for e in events] == ["start", "error"]
    error = terminal["error"]
    assert terminal["reason"] == "error" and error["stopReason"] == "error"
    assert error["errorStatus"] == status
    assert error["errorMessage"].startswith(f"{status} ")
    assert error["content"] == [] and error["usage"]["totalTokens"] == 0
    assert "Traceback" not in response.text


def test_mid_stream_error_keeps_partial_content(
    sidecar: RunningSidecar, upstream: FakeUpstream, auth_headers: dict[str, str]
) -> None:
    upstream.push(Reply.sse(fixture_bytes("anthropic-messages/overloaded-error-mid-stream.ASSEMBLED.sse")))
    events = read_events(post(sidecar, pi_body("anthropic/claude-sonnet-4-5"), auth_headers))
    terminal = assert_contract(events)
    error = terminal["error"]
    assert error["errorStatus"] == 529 and "overloaded_error" in error["errorMessage"]
    streamed = "".join(e["delta"] for e in events if e["type"] == "text_delta")
    assert streamed and error["content"][0]["text"] == streamed
    assert error["usage"]["input"] > 0


def test_json_mode(sidecar: RunningSidecar, upstream: FakeUpstream, auth_headers: dict[str, str]) -> None:
    body = {**pi_body("echo/echo", "just json"), "stream": False}
    response = post(sidecar, body, auth_headers)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    assert ULID_ID.match(response.headers["x-generation-id"])
    message = response.json()["message"]
    assert message["content"] == [{"type": "text", "text": "just json"}] and message["stopReason"] == "stop"

    upstream.push(Reply.json(401, fixture_bytes("anthropic-messages/errors/401-authentication-error.ASSEMBLED.json")))
    failed = post(sidecar, {**pi_body("anthropic/claude-sonnet-4-5"), "stream": False}, auth_headers)
    assert failed.status_code == 401
    assert failed.json()["error"]["type"] == "authentication_error"
    assert "invalid x-api-key" in failed.json()["error"]["message"]


def test_request_translation_reaches_upstream(
    sidecar: RunningSidecar, upstream: FakeUpstream, auth_headers: dict[str, str]
) -> None:
    """Options cross the allow-list; pass-through headers reach the provider; x-omp-* and the bearer do not."""
    upstream.push(Reply.sse(fixture_bytes("anthropic-messages/text-basic-padded.sse")))
    body = pi_body(
        "anthropic/claude-sonnet-4-5",
        "hi",
        maxTokens=123,
        temperature=0.5,
        notAnOption=True,
        headers={"anthropic-beta": "files-api-2025-04-14", "x-api-key": "caller-supplied"},
    )
    headers = {**auth_headers, "x-omp-install-id": "11111111-2222", "anthropic-version": "2023-06-01"}
    events = read_events(post(sidecar, body, headers))
    assert events[-1]["type"] == "done"
    sent = upstream.received[0]
    assert sent.json()["max_tokens"] == 123 and sent.json()["temperature"] == 0.5
    assert "notAnOption" not in sent.body.decode()
    assert sent.headers["x-api-key"] == ANTHROPIC_CANARY  # a caller cannot replace the injected key
    assert "files-api-2025-04-14" in sent.headers["anthropic-beta"]
    assert "x-omp-install-id" not in sent.headers


def test_fixture_dir_is_documented() -> None:
    provenance = (Path(__file__).parent / "fixtures" / "PROVENANCE.md").read_text()
    for name in SSE_FIXTURES:
        assert Path(name).name in provenance, name
