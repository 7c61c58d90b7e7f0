"""Same family, no translation: Anthropic Messages and Chat Completions requests for a model on that same wire API are
relayed byte for byte (``sidecar.relay``), through the running sidecar against recorded upstream bytes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from sidecar import relay
from sidecar.ingress import FORMATS
from sidecar.ingress.base import IngressRequest
from sidecar.models import ModelSpec
from sidecar.providers.anthropic_messages import AnthropicEventParser
from sidecar.providers.base import Delta, Raw, UpstreamCall
from tests.canaries import leaks
from tests.conftest import pi_body
from tests.fakeupstream import FIXTURES, FakeUpstream, Reply, fixture_bytes
from tests.sidecar_server import (
    ANTHROPIC_CANARY,
    OPENAI_CANARY,
    TOKEN,
    RunningSidecar,
    generation_row,
    run_sidecar,
    sidecar_environ,
    write_config,
)

ANTHROPIC_STREAMS = sorted(p.name for p in (FIXTURES / "anthropic-messages").glob("*.sse"))
CHAT_STREAMS = sorted(p.name for p in (FIXTURES / "openai-chat-completions").glob("*.sse"))
TEXT = "anthropic-messages/text-basic-padded.sse"
CHAT_TEXT = "openai-chat-completions/text-basic-include-usage.sse"
BETA = "prompt-caching-2024-07-31,relay-test-2025-01-01"
ANTHROPIC_HEADERS = {
    "x-api-key": TOKEN,
    "anthropic-version": "2023-06-01",
    "anthropic-beta": BETA,
    "x-stainless-lang": "python",
}
CHAT_HEADERS = {"authorization": f"Bearer {TOKEN}", "openai-organization": "org-relay"}
LEDGER_HEADERS = {"authorization": f"Bearer {TOKEN}"}


def messages_body(stream: bool = True, **extra: Any) -> dict[str, Any]:
    """A body with fields the translation would drop or rewrite (server tool, cache_control, top_k, an unknown key)."""
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "stream": stream,
        "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "citations": None}]}],
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
        "top_k": 5,
        "x_future_field": {"kept": True},
        **extra,
    }


def chat_body(stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "model": "openai/gpt-4o",
        "stream": stream,
        "messages": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "logit_bias": {"1734": -100},
        "seed": 7,
        "x_future_field": [1, 2],
        **extra,
    }


def post_messages(sidecar: RunningSidecar, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{sidecar.url}/v1/messages", json=body, headers=ANTHROPIC_HEADERS, timeout=10)


def post_chat(sidecar: RunningSidecar, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{sidecar.url}/v1/chat/completions", json=body, headers=CHAT_HEADERS, timeout=10)


def ledger_row(sidecar: RunningSidecar, response: httpx.Response) -> dict[str, Any]:
    return generation_row(sidecar.url, response.headers["x-generation-id"])


def assert_clean_upstream_request(upstream: FakeUpstream) -> None:
    """The workload bearer never goes upstream, in any header or the body."""
    (received,) = upstream.received
    assert TOKEN not in repr(received.headers) and TOKEN.encode() not in received.body
    assert "cookie" not in received.headers


def events(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in data.split(b"\n") if line.startswith(b"data: {")]


def anthropic_usage(data: bytes) -> dict[str, int]:
    """The fixture's final usage, read as the Anthropic SDK accumulates it (message_start, then non-null updates)."""
    usage: dict[str, Any] = {}
    for event in events(data):
        if event["type"] == "message_start":
            usage.update(event["message"]["usage"])
        elif event["type"] == "message_delta":
            usage.update({k: v for k, v in event["usage"].items() if v is not None})
    cache_read = usage.get("cache_read_input_tokens") or 0
    cache_write = usage.get("cache_creation_input_tokens") or 0
    return {
        "native_tokens_prompt": usage["input_tokens"] + cache_read + cache_write,
        "native_tokens_completion": usage["output_tokens"],
        "native_tokens_cached": cache_read,
        "native_tokens_cache_creation": cache_write,
    }


def chat_usage(data: bytes) -> dict[str, int]:
    (usage,) = [e["usage"] for e in events(data) if e.get("usage")][-1:]
    details = usage.get("prompt_tokens_details") or {}
    return {
        "native_tokens_prompt": usage["prompt_tokens"],
        "native_tokens_completion": usage["completion_tokens"],
        "native_tokens_cached": details.get("cached_tokens", usage.get("prompt_cache_hit_tokens", 0)),
    }


def tokens(row: dict[str, Any], expected: dict[str, int]) -> dict[str, int]:
    return {name: row[name] for name in expected}


# ----- streams: the client gets the upstream's bytes ------------------------------------------------------------


@pytest.mark.parametrize("name", ANTHROPIC_STREAMS)
def test_anthropic_stream_is_relayed_byte_for_byte(sidecar: RunningSidecar, upstream: FakeUpstream, name: str) -> None:
    recorded = fixture_bytes(f"anthropic-messages/{name}")
    upstream.push(Reply.sse(recorded, split=7))
    body = messages_body()
    response = post_messages(sidecar, body)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.content == recorded  # nothing added, nothing re-encoded, also after an upstream error event
    (received,) = upstream.received
    assert received.path == "/v1/messages"
    assert received.json() == {**body, "model": "claude-sonnet-4-5"}
    assert received.headers["x-api-key"] == ANTHROPIC_CANARY
    assert received.headers["anthropic-beta"] == BETA  # the client's betas, as sent (no interleaved-thinking added)
    assert received.headers["anthropic-version"] == "2023-06-01"
    assert received.headers["x-stainless-lang"] == "python"
    assert received.headers["accept"] == "text/event-stream"
    assert "authorization" not in received.headers
    assert_clean_upstream_request(upstream)


@pytest.mark.parametrize("name", CHAT_STREAMS)
def test_chat_stream_is_relayed_byte_for_byte(sidecar: RunningSidecar, upstream: FakeUpstream, name: str) -> None:
    recorded = fixture_bytes(f"openai-chat-completions/{name}")
    upstream.push(Reply.sse(recorded, split=7))
    body = chat_body()
    response = post_chat(sidecar, body)

    assert response.status_code == 200
    assert response.content == recorded
    (received,) = upstream.received
    assert received.path == "/v1/chat/completions"
    # The model id without its provider, and usage asked for so the ledger gets it (the client then sees it too).
    assert received.json() == {**body, "model": "gpt-4o", "stream_options": {"include_usage": True}}
    assert received.headers["authorization"] == f"Bearer {OPENAI_CANARY}"
    assert received.headers["openai-organization"] == "org-relay"
    assert_clean_upstream_request(upstream)


def test_chat_client_stream_options_are_kept(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    upstream.push(Reply.sse(fixture_bytes(CHAT_TEXT)))
    body = chat_body(stream_options={"include_usage": True, "include_obfuscation": False})
    assert post_chat(sidecar, body).status_code == 200
    assert upstream.received[0].json() == {**body, "model": "gpt-4o"}


def test_include_usage_follows_the_model_compat() -> None:
    family = relay.FAMILIES["openai-completions"]
    without = call_for(
        ModelSpec("local", "m", "openai-completions", "http://x", compat={"supports_usage_in_streaming": False})
    )
    assert family.body({"model": "local/m", "stream": True}, without, True) == {"model": "m", "stream": True}
    default = call_for(ModelSpec("openai", "gpt-4o", "openai-completions", "http://x"))
    assert family.body({"model": "gpt-4o", "stream": False}, default, False) == {"model": "gpt-4o", "stream": False}
    assert family.body({"model": "x", "stream_options": {"include_usage": False}}, default, True) == {
        "model": "gpt-4o",
        "stream_options": {"include_usage": True},
    }


# ----- what only a relay gives: the official SDKs see every provider feature ---------------------------------------


@pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")
def test_anthropic_sdk_sees_server_tool_blocks(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    """Server tool blocks (code execution here) and their usage reach the unmodified SDK; a translation drops them."""
    recorded = fixture_bytes("anthropic-messages/prompt-cache-usage-server-tools.sse")
    upstream.push(Reply.sse(recorded, split=7))
    tools: Any = [{"type": "code_execution_20250825", "name": "code_execution"}]
    with (
        anthropic.Anthropic(base_url=sidecar.url, api_key=TOKEN, max_retries=0) as sdk,
        sdk.messages.stream(
            model="claude-sonnet-4-5",
            max_tokens=256,
            messages=[{"role": "user", "content": "Run 2+2"}],
            tools=tools,
            extra_headers={"anthropic-beta": "code-execution-2025-08-25"},
        ) as stream,
    ):
        final = stream.get_final_message()
    kinds = [block.type for block in final.content]
    assert kinds.count("server_tool_use") == 2 and kinds.count("bash_code_execution_tool_result") == 2
    expected = anthropic_usage(recorded)
    assert final.usage.cache_read_input_tokens == expected["native_tokens_cached"]
    assert upstream.received[0].headers["anthropic-beta"] == "code-execution-2025-08-25"
    assert upstream.received[0].json()["tools"] == tools


def test_openai_sdk_sees_the_refusal_field(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    """A refusal reaches the unmodified SDK as ``delta.refusal`` (a translation turns it into content), and the
    stream helper assembles it."""
    recorded = fixture_bytes("openai-chat-completions/refusal-delta.sse")
    upstream.push(Reply.sse(recorded, split=7))
    with (
        openai.OpenAI(base_url=f"{sidecar.url}/v1", api_key=TOKEN, max_retries=0) as sdk,
        sdk.chat.completions.stream(model="gpt-4o", messages=[{"role": "user", "content": "hi"}]) as stream,
    ):
        final = stream.get_final_completion()
    expected = "".join(e["choices"][0]["delta"].get("refusal") or "" for e in events(recorded) if e.get("choices"))
    assert expected and final.choices[0].message.refusal == expected
    assert not final.choices[0].message.content
    assert final.usage is not None and final.usage.completion_tokens == chat_usage(recorded)["native_tokens_completion"]


# ----- the ledger reads the relayed stream -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["text-basic-padded.sse", "prompt-cache-usage-server-tools.sse", "thinking-signature-sonnet-4.5.sse"]
)
def test_anthropic_ledger_row_has_the_stream_usage(sidecar: RunningSidecar, upstream: FakeUpstream, name: str) -> None:
    recorded = fixture_bytes(f"anthropic-messages/{name}")
    upstream.push(Reply.sse(recorded, split=7))
    response = post_messages(sidecar, messages_body())
    row = ledger_row(sidecar, response)
    expected = anthropic_usage(recorded)
    assert tokens(row, expected) == expected
    assert row["finish_reason"] in ("stop", "tool-calls") and row["error_status"] is None
    assert row["upstream_response_id"] == events(recorded)[0]["message"]["id"]
    assert row["total_cost"] > 0 and row["streamed"] is True
    assert row["latency"] > 0  # the time to the first token, from the first content event


@pytest.mark.parametrize(
    "name",
    [
        "text-basic-include-usage.sse",
        "usage-details-gpt-4.1-nano-trimmed.sse",
        "deepseek-parallel-tool-calls-cached.sse",
    ],
)
def test_chat_ledger_row_has_the_stream_usage(sidecar: RunningSidecar, upstream: FakeUpstream, name: str) -> None:
    recorded = fixture_bytes(f"openai-chat-completions/{name}")
    upstream.push(Reply.sse(recorded, split=7))
    row = ledger_row(sidecar, post_chat(sidecar, chat_body()))
    expected = chat_usage(recorded)
    assert tokens(row, expected) == expected
    assert row["native_tokens_completion"] > 0 and row["error_status"] is None and row["latency"] > 0
    assert row["upstream_response_id"] == events(recorded)[0]["id"]


# ----- errors ---------------------------------------------------------------------------------------------------


def cut_at_event(data: bytes, size: int) -> bytes:
    """``data[:size]`` shortened to its last complete event."""
    head = data[:size]
    return head[: head.rfind(b"\n\n") + 2]


def test_anthropic_dropped_upstream_ends_with_the_format_error_event(
    sidecar: RunningSidecar, upstream: FakeUpstream
) -> None:
    recorded = fixture_bytes(TEXT)
    upstream.push(Reply.sse(recorded, split=7, drop_after=120))  # 840 bytes: inside an event
    response = post_messages(sidecar, messages_body())

    relayed = cut_at_event(recorded, 840)
    assert len(relayed) > 300 and response.content.startswith(relayed)
    tail = response.content[len(relayed) :]
    assert tail.startswith(b"event: error\ndata: ") and tail.endswith(b"\n\n") and tail.count(b"\n\n") == 1
    error = orjson.loads(tail.split(b"data: ", 1)[1])
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert "connection" in error["error"]["message"]
    row = ledger_row(sidecar, response)
    assert (
        row["error_status"] == 502 and row["native_tokens_prompt"] == anthropic_usage(recorded)["native_tokens_prompt"]
    )


def test_chat_dropped_upstream_ends_with_the_format_error_chunk(
    sidecar: RunningSidecar, upstream: FakeUpstream
) -> None:
    recorded = fixture_bytes(CHAT_TEXT)
    upstream.push(Reply.sse(recorded, split=7, drop_after=300))
    response = post_chat(sidecar, chat_body())

    relayed = cut_at_event(recorded, 2100)
    assert response.content.startswith(relayed)
    tail = response.content[len(relayed) :]
    assert tail.startswith(b"data: {") and tail.count(b"\n\n") == 1 and b"[DONE]" not in tail
    error = orjson.loads(tail[6:])["error"]
    assert error["type"] == "server_error" and "connection" in error["message"]
    assert ledger_row(sidecar, response)["error_status"] == 502


def test_unreadable_event_is_not_relayed_and_the_error_event_follows(
    sidecar: RunningSidecar, upstream: FakeUpstream
) -> None:
    recorded = fixture_bytes(TEXT)
    first = recorded.index(b"\n\n") + 2
    upstream.push(Reply.sse(recorded[:first] + b"event: content_block_start\ndata: {not json\n\n" + recorded[first:]))
    response = post_messages(sidecar, messages_body())
    assert response.content.startswith(recorded[:first] + b"event: error\ndata: ")
    assert b"not json" not in response.content
    assert "unparseable" in events(response.content)[-1]["error"]["message"]


def test_upstream_refusal_in_the_stream_gets_nothing_appended(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    refused = fixture_bytes(TEXT).replace(b'"stop_reason":"end_turn"', b'"stop_reason":"refusal"')
    assert b'"refusal"' in refused
    upstream.push(Reply.sse(refused, split=7))
    response = post_messages(sidecar, messages_body())
    assert response.content == refused
    row = ledger_row(sidecar, response)
    assert row["finish_reason"] == "error" and row["error_status"] == 400


def test_content_filter_gets_nothing_appended(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    filtered = fixture_bytes(CHAT_TEXT).replace(b'"finish_reason":"stop"', b'"finish_reason":"content_filter"')
    assert b"content_filter" in filtered
    upstream.push(Reply.sse(filtered, split=7))
    response = post_chat(sidecar, chat_body())
    assert response.content == filtered
    assert ledger_row(sidecar, response)["error_status"] == 400


@pytest.mark.parametrize(
    ("path", "status", "headers_file"),
    [
        (
            "anthropic-messages/errors/429-rate-limit-error.json",
            429,
            "anthropic-messages/errors/429-rate-limit-error.headers",
        ),
        ("anthropic-messages/errors/529-overloaded-error.json", 529, None),
        ("anthropic-messages/errors/400-invalid-request-error.json", 400, None),
    ],
)
def test_anthropic_refusal_before_the_stream_keeps_status_and_body(
    sidecar: RunningSidecar, upstream: FakeUpstream, path: str, status: int, headers_file: str | None
) -> None:
    recorded = fixture_bytes(path)
    upstream.push(Reply.json(status, recorded, {"retry-after": "7"} if headers_file else None))
    response = post_messages(sidecar, messages_body())
    assert response.status_code == status
    assert response.json() == orjson.loads(recorded)  # the upstream's own error, which the SDK types by error.type
    assert response.headers["x-generation-id"].startswith("gen_")
    if headers_file:
        assert response.headers["retry-after"] == "7"
    assert ledger_row(sidecar, response)["error_status"] == status


def test_chat_refusal_before_the_stream_keeps_status_and_body(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    recorded = fixture_bytes("openai-chat-completions/errors/429-insufficient-quota.json")
    upstream.push(Reply.json(429, recorded))
    response = post_chat(sidecar, chat_body())
    assert response.status_code == 429 and response.json() == orjson.loads(recorded)


def test_upstream_error_body_echoing_the_key_is_redacted(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    recorded = orjson.loads(fixture_bytes("openai-chat-completions/errors/401-invalid-api-key.json"))
    recorded["error"]["message"] = f"Incorrect API key provided: {OPENAI_CANARY}."
    upstream.push(Reply.json(401, recorded))
    response = post_chat(sidecar, chat_body())
    assert response.status_code == 401
    assert not leaks(response.text, OPENAI_CANARY)
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert "[REDACTED]" in response.json()["error"]["message"]


def test_non_json_refusal_falls_back_to_the_format_error(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    upstream.push(
        Reply(status=503, chunks=[b"<html>upstream unavailable</html>"], headers={"content-type": "text/html"})
    )
    response = post_messages(sidecar, messages_body())
    assert response.status_code == 503
    body = response.json()
    assert body["type"] == "error" and "upstream unavailable" in body["error"]["message"]


# ----- non-streaming requests -----------------------------------------------------------------------------------

MESSAGE = {  # a Message as the API returns it (the shape of tests/fixtures' message_start, completed)
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {
            "type": "thinking",
            "thinking": "Short answer.",
            "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pk",
        },
        {"type": "text", "text": "Hello!", "citations": None},
        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 21,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 2000,
        "output_tokens": 37,
        "server_tool_use": {"web_search_requests": 1},
        "service_tier": "standard",
    },
}
COMPLETION = {
    "id": "chatcmpl-CZ1",
    "object": "chat.completion",
    "created": 1767225600,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!", "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 1200,
        "completion_tokens": 9,
        "total_tokens": 1209,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
    "service_tier": "default",
    "system_fingerprint": "fp_1",
}


def test_anthropic_json_reply_is_returned_unchanged(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    reply = orjson.dumps(MESSAGE, option=orjson.OPT_INDENT_2)  # whitespace too is the upstream's
    upstream.push(Reply.json(200, reply))
    body = messages_body(stream=False)
    response = post_messages(sidecar, body)
    assert response.status_code == 200 and response.content == reply
    assert response.headers["content-type"].startswith("application/json")
    (received,) = upstream.received
    assert received.json() == {**body, "model": "claude-sonnet-4-5"}
    assert received.headers["accept"] == "application/json" and received.headers["x-api-key"] == ANTHROPIC_CANARY
    assert_clean_upstream_request(upstream)
    row = ledger_row(sidecar, response)
    assert (row["native_tokens_prompt"], row["native_tokens_completion"]) == (2121, 37)
    assert (row["native_tokens_cached"], row["native_tokens_cache_creation"]) == (2000, 100)
    assert row["finish_reason"] == "tool-calls" and row["streamed"] is False
    assert row["upstream_response_id"] == MESSAGE["id"]


def test_chat_json_reply_is_returned_unchanged(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    reply = orjson.dumps(COMPLETION)
    upstream.push(Reply.json(200, reply))
    body = chat_body(stream=False)
    response = post_chat(sidecar, body)
    assert response.status_code == 200 and response.content == reply
    assert upstream.received[0].json() == {**body, "model": "gpt-4o"}  # no stream_options on a JSON request
    row = ledger_row(sidecar, response)
    assert (row["native_tokens_prompt"], row["native_tokens_completion"], row["native_tokens_cached"]) == (
        1200,
        9,
        1024,
    )
    assert row["finish_reason"] == "stop"


def test_json_refusal_keeps_status_and_body(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    recorded = fixture_bytes("anthropic-messages/errors/529-overloaded-error.json")
    upstream.push(Reply.json(529, recorded))
    response = post_messages(sidecar, messages_body(stream=False))
    assert response.status_code == 529 and response.json() == orjson.loads(recorded)


# ----- the connection and the client ----------------------------------------------------------------------------


def test_client_disconnect_cancels_the_upstream(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    upstream.push(Reply.sse(fixture_bytes(TEXT), split=40, delay_between=0.1))  # several seconds if read to the end
    with httpx.stream(
        "POST", f"{sidecar.url}/v1/messages", json=messages_body(), headers=ANTHROPIC_HEADERS, timeout=10
    ) as response:
        for line in response.iter_lines():
            if "text_delta" in line:
                break  # leaving the block closes the connection mid-stream
    deadline = time.monotonic() + 3
    while upstream.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert upstream.disconnects == 1, "the upstream request was not cancelled after the client left"
    ((_, outcome),) = sidecar.wait_for_outcomes(1)
    assert outcome.reason == "aborted" and outcome.message["usage"]["input"] > 0


@pytest.fixture
def pinging_sidecar(upstream: FakeUpstream, tmp_path: Path) -> Iterator[RunningSidecar]:
    config = write_config(tmp_path, "[server]\nheartbeat_seconds = 0.05\n[upstream]\nmax_retries = 0\n")
    with run_sidecar(sidecar_environ(upstream.url, tmp_path), config) as running:
        yield running


def test_heartbeats_fall_between_upstream_events(pinging_sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    """An upstream chunk that ends inside an event is held to the event's end, so a heartbeat never splits one."""
    recorded = fixture_bytes(TEXT)
    upstream.push(Reply.sse(recorded, split=61, delay_between=0.04))
    response = post_messages(pinging_sidecar, messages_body())
    pieces = response.content.split(b": ping\r\n\r\n")
    assert len(pieces) > 3, "no heartbeats were sent while the upstream was slow"
    assert b"".join(pieces) == recorded
    assert all(piece.endswith(b"\n\n") for piece in pieces[:-1] if piece)


@pytest.mark.parametrize(
    ("path", "body", "recorded"),
    [
        ("/v1/messages", messages_body(), TEXT),
        ("/v1/chat/completions", chat_body(), CHAT_TEXT),
        ("/v1/pi/stream", pi_body("anthropic/claude-sonnet-4-5"), TEXT),  # the adapters read with the same parsers
        ("/v1/pi/stream", pi_body("openai/gpt-4o"), CHAT_TEXT),
    ],
)
def test_a_late_body_end_neither_delays_the_answer_nor_costs_the_connection(
    sidecar: RunningSidecar, upstream: FakeUpstream, path: str, body: dict[str, Any], recorded: str
) -> None:
    """The upstream's chunked terminator comes 0.5 s after the terminal event. The client's answer ends at that event
    (the rest of the body is drained in the background), and the drained connection goes back to the pool: the next
    stream reuses it (an iterator abandoned at the terminal event, or a close before the end of the body, would cost
    every stream a new TCP+TLS handshake)."""
    upstream.push(*(Reply.sse(fixture_bytes(recorded), delay_between=0.5) for _ in range(2)))
    headers = ANTHROPIC_HEADERS if path == "/v1/messages" else CHAT_HEADERS
    started = time.monotonic()
    response = httpx.post(f"{sidecar.url}{path}", json=body, headers=headers, timeout=10)
    assert response.status_code == 200
    assert time.monotonic() - started < 0.4, "the answer waited for the upstream's late end of body"
    time.sleep(0.8)  # the drain has read the terminator by now
    assert httpx.post(f"{sidecar.url}{path}", json=body, headers=headers, timeout=10).status_code == 200
    assert upstream.connections == 1


# ----- what is relayed, and the framing on its own --------------------------------------------------------------


def call_for(model: ModelSpec) -> UpstreamCall:
    return UpstreamCall(model=model, context={"messages": []}, options={}, api_key="k", session_id="s")


def test_only_the_same_family_is_relayed() -> None:
    anthropic = ModelSpec("anthropic", "claude-sonnet-4-5", "anthropic-messages", "http://x")
    openai = ModelSpec("openai", "gpt-4o", "openai-completions", "http://x")
    echo = ModelSpec("echo", "echo", "anthropic-messages", "builtin:echo")
    request = IngressRequest(model_id="m", context={"messages": []}, options={}, stream=True, session_id="s")
    assert relay.plan(FORMATS["anthropic-messages"], request, anthropic) is not None
    assert relay.plan(FORMATS["openai-chat"], request, openai) is not None
    assert relay.plan(FORMATS["anthropic-messages"], request, openai) is None
    assert relay.plan(FORMATS["openai-chat"], request, anthropic) is None
    assert relay.plan(FORMATS["pi"], request, anthropic) is None
    assert relay.plan(FORMATS["anthropic-messages"], request, echo) is None


def framed(data: bytes, size: int) -> tuple[bytes, list[Delta]]:
    """Feed ``data`` in ``size``-byte pieces: the bytes relayed and the deltas parsed."""
    framer = relay._Framer(AnthropicEventParser())
    out, deltas = b"", []
    for i in range(0, len(data), size):
        relayed, parsed, failure = framer.feed(data[i : i + size])
        assert failure is None
        # Every relayed piece ends at an event boundary (a blank line in whatever line ending the stream uses).
        assert not relayed or relayed.endswith((b"\n\n", b"\r\r", b"\r\n\r\n"))
        out += relayed
        deltas += parsed
    relayed, parsed, failure = framer.feed(b"", eof=True)  # a CR at the very end ends its line only at the end
    assert failure is None
    return out + relayed, deltas + parsed


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 100_000])
def test_framer_relays_whole_events_at_any_split(ending: bytes, size: int) -> None:
    data = fixture_bytes("anthropic-messages/thinking-signature-delta.sse").replace(b"\n", ending)
    relayed, deltas = framed(data, size)
    assert relayed == data
    _, whole = framed(fixture_bytes("anthropic-messages/thinking-signature-delta.sse"), len(data))
    assert deltas == whole and not any(isinstance(d, Raw) for d in deltas)
    # What the ledger needs: ids and usage, the content up to the first token (its time), the final usage, the stop.
    kinds = [(type(d).__name__, getattr(d, "text", None)) for d in whole]
    first = next(e for e in events(data.replace(ending, b"\n")) if e.get("delta", {}).get("thinking"))
    assert kinds == [
        ("ResponseInfo", None),
        ("UsageUpdate", None),
        ("ThinkingDelta", ""),  # the block's start
        ("ThinkingDelta", first["delta"]["thinking"]),
        ("UsageUpdate", None),
        ("Finish", None),
    ]


def test_framer_holds_an_incomplete_event() -> None:
    data = fixture_bytes(TEXT)
    first = data.index(b"\n\n") + 2
    framer = relay._Framer(AnthropicEventParser())
    relayed, deltas, _ = framer.feed(data[: first + 30])
    assert relayed == data[:first] and len(deltas) == 2  # message_start: response info and usage
    assert bytes(framer.held) == data[first : first + 30]
    relayed, _, _ = framer.feed(data[first + 30 : first + 31])
    assert relayed == b""
