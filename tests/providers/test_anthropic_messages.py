"""The Anthropic Messages adapter against recorded upstream bytes served by a real local HTTP server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from client.types import Context, zero_usage
from sidecar.errors import UpstreamError, UpstreamProtocolError, UpstreamStatusError, UpstreamStreamError
from sidecar.models import ModelSpec
from sidecar.providers.anthropic_messages import stream
from sidecar.providers.base import (
    BlockEnd,
    Delta,
    Finish,
    ResponseInfo,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    UpstreamCall,
    UsageUpdate,
)
from tests.fakeupstream import FIXTURES, FakeUpstream, Reply, fixture_bytes
from tests.providers.adapters import adapter_deltas

CANARY = "sk-ant-canary-1234567890"
FIXTURE_DIR = FIXTURES / "anthropic-messages"
SSE_FIXTURES = sorted(p.name for p in FIXTURE_DIR.glob("*.sse"))


def make_call(
    url: str,
    *,
    context: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    call_headers: dict[str, str] | None = None,
    max_retries: int = 0,
    **model: Any,
) -> UpstreamCall:
    spec = ModelSpec(
        provider="anthropic",
        id="claude-sonnet-4-5",
        api="anthropic-messages",
        base_url=url,
        **{"reasoning": True, **model},
    )
    return UpstreamCall(
        model=spec,
        context=cast(Context, context or {"messages": [{"role": "user", "content": "hi", "timestamp": 1}]}),
        options=options or {},
        api_key=CANARY,
        session_id="s-1",
        headers=call_headers or {},
        max_retries=max_retries,
    )


async def run(call: UpstreamCall) -> tuple[list[Delta], Exception | None]:
    """Every delta the adapter yields, and the ``UpstreamError`` it raised (if any)."""
    return await adapter_deltas(stream, call, catch=UpstreamError)


@pytest.fixture(scope="module")
def shared_upstream() -> Iterator[FakeUpstream]:
    # One server for the module: FakeUpstream's shutdown waits out serve_forever's 0.5 s poll interval.
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
def up(shared_upstream: FakeUpstream) -> FakeUpstream:
    shared_upstream.received.clear()
    return shared_upstream


async def replay(up: FakeUpstream, body: bytes, split: int | None = None) -> tuple[list[Delta], UpstreamError | None]:
    up.push(Reply.sse(body, split=split))
    return await run(make_call(up.url))


async def replay_fixture(up: FakeUpstream, name: str) -> list[Delta]:
    deltas, exc = await replay(up, fixture_bytes(f"anthropic-messages/{name}"))
    assert exc is None, exc
    return deltas


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode()) for e in events)


MESSAGE_START = {
    "type": "message_start",
    "message": {"id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 3, "output_tokens": 1}},
}


def message_end(stop_reason: str) -> list[dict[str, Any]]:
    return [
        {"type": "message_delta", "delta": {"stop_reason": stop_reason}, "usage": {"output_tokens": 7}},
        {"type": "message_stop"},
    ]


def no_cache_control(value: Any) -> bool:
    if isinstance(value, dict):
        return "cache_control" not in value and all(no_cache_control(v) for v in value.values())
    if isinstance(value, list):
        return all(no_cache_control(v) for v in value)
    return True


# ----- response: recorded fixtures ---------------------------------------------------------------------------------


async def test_text_basic_padded(up: FakeUpstream) -> None:
    assert await replay_fixture(up, "text-basic-padded.sse") == [
        ResponseInfo(response_id="msg_013nnniYDrJDocdy5nrMU7cH", upstream_model="claude-sonnet-4-5-20250929"),
        UsageUpdate(input=135, output=1, cache_read=0, cache_write=0),
        TextDelta(0, "["),
        TextDelta(0, "12"),
        TextDelta(0, "345,"),
        TextDelta(0, "67890]"),
        BlockEnd(0),
        UsageUpdate(input=135, output=10, cache_read=0, cache_write=0),
        Finish("stop"),
    ]


async def test_tool_use_input_json_delta_padded(up: FakeUpstream) -> None:
    deltas = await replay_fixture(up, "tool-use-input-json-delta-padded.sse")
    fragments = ['{"', "loca", "tio", 'n": ', '"San Fr', "anci", 'sco, CA"', ', "', 'units": "f"}']
    assert deltas == [
        ResponseInfo(response_id="msg_01AusY9WEbCaj3N7Tv5J4YjH", upstream_model="claude-haiku-4-5-20251001"),
        UsageUpdate(input=656, output=26, cache_read=0, cache_write=0),
        ToolCallDelta(0, id="toolu_018acGYLtfR52q9yDbWaEdQZ", name="get_weather"),
        *(ToolCallDelta(0, arguments=f) for f in fragments),
        BlockEnd(0),
        UsageUpdate(input=656, output=74, cache_read=0, cache_write=0),
        Finish("toolUse"),
    ]
    assert json.loads("".join(fragments)) == {"location": "San Francisco, CA", "units": "f"}


async def test_text_then_tool_use(up: FakeUpstream) -> None:
    assert await replay_fixture(up, "text-then-tool-use.sse") == [
        ResponseInfo(response_id="msg_019Q1hrJbZG26Fb9BQhrkHEr", upstream_model="claude-sonnet-4-20250514"),
        UsageUpdate(input=377, output=1, cache_read=0, cache_write=0),
        TextDelta(0, "I"),
        TextDelta(0, "'ll check the current weather in Paris for you."),
        BlockEnd(0),
        ToolCallDelta(1, id="toolu_01NRLabsLyVHZPKxbKvkfSMn", name="get_weather"),
        ToolCallDelta(1, arguments='{"locati'),
        ToolCallDelta(1, arguments='on": "P'),
        ToolCallDelta(1, arguments="ar"),
        ToolCallDelta(1, arguments='is"}'),
        BlockEnd(1),
        UsageUpdate(output=65),
        Finish("toolUse"),
    ]


async def test_thinking_signature_delta(up: FakeUpstream) -> None:
    deltas = await replay_fixture(up, "thinking-signature-delta.sse")
    assert deltas[:3] == [
        ResponseInfo(response_id="msg_01TuBJwobCPKinTJ6vChw6Yc", upstream_model="claude-3-7-sonnet-20250219"),
        UsageUpdate(input=50, output=5, cache_read=0, cache_write=0),
        ThinkingDelta(0, ""),  # opens the thinking block before its first delta
    ]
    assert deltas[-2:] == [UsageUpdate(output=452), Finish("stop")]
    thinking = [d for d in deltas if isinstance(d, ThinkingDelta)]
    assert all(d.key == 0 and not d.redacted for d in thinking)
    text = "".join(d.text for d in thinking)
    assert text.startswith("The question is asking about") and text.endswith("different fictional works.")
    signatures = [d.signature for d in thinking if d.signature]
    assert len(signatures) == 1 and signatures[0].startswith("ErUBCkYIARgCIkCMkRFg") and signatures[0].endswith("==")
    assert BlockEnd(0) in deltas and deltas.index(BlockEnd(0)) < deltas.index(BlockEnd(1))
    answer = "".join(d.text for d in deltas if isinstance(d, TextDelta))
    assert all(d.key == 1 for d in deltas if isinstance(d, TextDelta))
    assert answer.startswith("In popular fiction,") and answer.endswith("in pop culture.")
    assert deltas[-3] == BlockEnd(1)


async def test_thinking_signature_sonnet_4_5(up: FakeUpstream) -> None:
    deltas = await replay_fixture(up, "thinking-signature-sonnet-4.5.sse")
    signature = "EvQBCkYICxgCKkAxhD4NUKFzudtZ6NzbZdEiBACIScTzqjPViM596iWLZIk4EFKYYBj3B6Ptl3b0dcQv/VeJBNbejNWIWRBn+KPNEgz6HWtKx7p+QRgKsEoaDGjsiqfht7gTRFYHiyIwD1VSmNqHxv3wy8KEMP+LYb/TC4UH3H97tuoaADARFFcA0phdfxnzKQxFnc9lwY+dKlzUsaKSUAFeu1bDL5ikZJ1vL0Fkz6JjoFke0L/wOJRIUDUlDUOFJ1tZ3ea7g6LGE/5hwuvWgLwewdcm64d+43l7F57XrOmqNd6flI2K/oPr/4yzNgvi/EhT6Ca17BgB"  # noqa: E501
    pieces = ["The previous", " result", " was", " 925.", " Now", " I need to divide that", " by 5.\n\n925", " ÷ 5 "]
    assert deltas == [
        ResponseInfo(response_id="msg_01Y6V41gqPaKWEw7iPouH7iW", upstream_model="claude-sonnet-4-5-20250929"),
        UsageUpdate(input=69, output=2, cache_read=0, cache_write=0),
        ThinkingDelta(0, ""),
        *(ThinkingDelta(0, p) for p in [*pieces, "= 185"]),  # the empty thinking_delta before the signature is dropped
        ThinkingDelta(0, "", signature=signature),
        BlockEnd(0),
        TextDelta(1, "925"),
        TextDelta(1, " ÷ 5 "),
        TextDelta(1, "= 185"),
        BlockEnd(1),
        UsageUpdate(input=69, output=53, cache_read=0, cache_write=0),
        Finish("stop"),
    ]


async def test_prompt_cache_usage_and_server_tools_skipped(up: FakeUpstream) -> None:
    assert await replay_fixture(up, "prompt-cache-usage-server-tools.sse") == [
        ResponseInfo(response_id="msg_011CdYfpjpVtBoXyXCQD1tQP", upstream_model="claude-sonnet-5"),
        UsageUpdate(input=2, output=69, cache_read=0, cache_write=3068),
        # server_tool_use and bash_code_execution_tool_result blocks (indices 0-3) ran upstream: nothing of them.
        TextDelta(4, "The"),
        TextDelta(4, " sum of the squares of the numbers 1 through 12 is **650**."),
        BlockEnd(4),
        UsageUpdate(input=6, output=198, cache_read=6289, cache_write=3337, reasoning=0),
        Finish("stop"),
    ]


async def test_overloaded_error_mid_stream(up: FakeUpstream) -> None:
    deltas, exc = await replay(up, fixture_bytes("anthropic-messages/overloaded-error-mid-stream.ASSEMBLED.sse"))
    assert deltas == [
        ResponseInfo(response_id="msg_013nnniYDrJDocdy5nrMU7cH", upstream_model="claude-sonnet-4-5-20250929"),
        UsageUpdate(input=135, output=1, cache_read=0, cache_write=0),
        TextDelta(0, "["),
        TextDelta(0, "12"),
    ]
    assert isinstance(exc, UpstreamStreamError)
    assert exc.status == 529
    assert str(exc) == "Anthropic stream error (overloaded_error): Overloaded"


def test_every_fixture_has_an_explicit_test() -> None:
    assert SSE_FIXTURES == [
        "overloaded-error-mid-stream.ASSEMBLED.sse",
        "prompt-cache-usage-server-tools.sse",
        "text-basic-padded.sse",
        "text-then-tool-use.sse",
        "thinking-signature-delta.sse",
        "thinking-signature-sonnet-4.5.sse",
        "tool-use-input-json-delta-padded.sse",
    ]


@pytest.mark.parametrize("split", [1, 2, 7, 64])
@pytest.mark.parametrize("name", SSE_FIXTURES)
async def test_fixture_split_at_any_byte_gives_the_same_deltas(up: FakeUpstream, name: str, split: int) -> None:
    body = fixture_bytes(f"anthropic-messages/{name}")
    whole, whole_exc = await replay(up, body)
    pieces, pieces_exc = await replay(up, body, split=split)
    assert pieces == whole
    assert (type(pieces_exc), str(pieces_exc)) == (type(whole_exc), str(whole_exc))


# ----- response: synthetic edge cases ------------------------------------------------------------------------------


async def test_block_kinds_and_deltas_without_a_recording(up: FakeUpstream) -> None:
    body = sse(
        MESSAGE_START,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "redacted_thinking", "data": "EmwK"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": "Hello"}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "citations_delta", "citation": {"x": 1}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": " world"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_stop", "index": 2},  # an empty block was never opened: no BlockEnd
        {"type": "content_block_start", "index": 3, "content_block": {"type": "web_search_tool_result"}},
        {"type": "content_block_delta", "index": 3, "delta": {"type": "text_delta", "text": "skipped"}},
        {"type": "content_block_stop", "index": 3},
        {"type": "some_future_event", "index": 9},
        *message_end("max_tokens"),
    )
    deltas, exc = await replay(up, body)
    assert exc is None
    assert deltas == [
        ResponseInfo(response_id="msg_1", upstream_model="claude-x"),
        UsageUpdate(input=3, output=1),
        ThinkingDelta(0, "EmwK", redacted=True),
        BlockEnd(0),
        TextDelta(1, "Hello"),
        TextDelta(1, " world"),
        BlockEnd(1),
        UsageUpdate(output=7),
        Finish("length"),
    ]


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "toolUse"),
        ("a_future_reason", "stop"),
    ],
)
async def test_stop_reasons(up: FakeUpstream, stop_reason: str, finish: str) -> None:
    deltas, exc = await replay(up, sse(MESSAGE_START, *message_end(stop_reason)))
    assert exc is None
    assert deltas[-1] == Finish(finish)  # type: ignore[arg-type]


async def test_refusal_is_an_error(up: FakeUpstream) -> None:
    deltas, exc = await replay(up, sse(MESSAGE_START, *message_end("refusal")))
    assert isinstance(exc, UpstreamStreamError)
    assert exc.status == 400
    assert "refused" in str(exc)
    assert deltas[-1] == UsageUpdate(output=7)


async def test_stream_ending_before_message_stop(up: FakeUpstream) -> None:
    body = sse(
        MESSAGE_START,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "partial"}},
    )
    deltas, exc = await replay(up, body)
    assert deltas[-1] == TextDelta(0, "partial")
    assert isinstance(exc, UpstreamProtocolError)
    assert exc.status == 502
    assert "message_stop" in str(exc)


async def test_unparseable_data_is_a_protocol_error(up: FakeUpstream) -> None:
    deltas, exc = await replay(up, sse(MESSAGE_START) + b"event: content_block_start\ndata: {not json\n\n")
    assert len(deltas) == 2
    assert isinstance(exc, UpstreamProtocolError)
    assert exc.status == 502


@pytest.mark.parametrize(
    ("error_type", "status"),
    [
        ("overloaded_error", 529),
        ("rate_limit_error", 429),
        ("api_error", 500),
        ("authentication_error", 401),
        ("permission_error", 403),
        ("not_found_error", 404),
        ("request_too_large", 413),
        ("invalid_request_error", 400),
        ("brand_new_error", 500),
    ],
)
async def test_error_event_status(up: FakeUpstream, error_type: str, status: int) -> None:
    error = {"type": "error", "error": {"type": error_type, "message": f"bad key {CANARY}"}}
    _, exc = await replay(up, sse(MESSAGE_START, error))
    assert isinstance(exc, UpstreamStreamError)
    assert exc.status == status
    assert str(exc).startswith(f"Anthropic stream error ({error_type}): bad key ")
    assert CANARY not in str(exc)


# ----- upstream status errors ----------------------------------------------------------------------------------------


def read_headers(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()[1:]  # the first line is the status line
    pairs = (line.split(": ", 1) for line in lines if line.strip())
    return {k: v for k, v in pairs if k.lower() not in ("content-length", "connection", "transfer-encoding")}


@pytest.mark.parametrize(
    ("body_file", "status", "headers_file", "text"),
    [
        ("401-authentication-error.ASSEMBLED.json", 401, None, "invalid x-api-key"),
        ("429-rate-limit-error.json", 429, "429-rate-limit-error.ASSEMBLED.headers", "exceed your organization's rate"),
        ("529-overloaded-error.json", 529, None, "Overloaded"),
        ("400-invalid-request-error.json", 400, None, "unexpected `tool_use_id` found in `tool_result` blocks"),
    ],
)
async def test_error_statuses(
    up: FakeUpstream, body_file: str, status: int, headers_file: str | None, text: str
) -> None:
    headers = read_headers(FIXTURE_DIR / "errors" / headers_file) if headers_file else None
    up.push(Reply.json(status, fixture_bytes(f"anthropic-messages/errors/{body_file}"), headers))
    deltas, exc = await run(make_call(up.url, max_retries=0))
    assert len(up.received) == 1
    assert deltas == []
    assert isinstance(exc, UpstreamStatusError)
    assert exc.status == status
    assert text in str(exc)
    assert CANARY not in str(exc)
    if headers_file:
        assert exc.retry_after == 18.0


async def test_error_body_echoing_the_key_is_redacted(up: FakeUpstream) -> None:
    up.push(Reply.json(401, {"type": "error", "error": {"type": "authentication_error", "message": CANARY}}))
    _, exc = await run(make_call(up.url))
    assert isinstance(exc, UpstreamStatusError)
    assert CANARY not in str(exc)


async def test_overloaded_then_success_is_retried(up: FakeUpstream) -> None:
    up.push(
        Reply.json(529, fixture_bytes("anthropic-messages/errors/529-overloaded-error.json")),
        Reply.sse(fixture_bytes("anthropic-messages/text-basic-padded.sse")),
    )
    deltas, exc = await run(make_call(up.url, max_retries=1, options={"maxRetryDelayMs": 1}))
    assert len(up.received) == 2
    assert exc is None
    assert deltas[-1] == Finish("stop")
    assert "".join(d.text for d in deltas if isinstance(d, TextDelta)) == "[12345,67890]"


# ----- request translation -----------------------------------------------------------------------------------------


async def send(up: FakeUpstream, build: Callable[[str], UpstreamCall]) -> tuple[dict[str, Any], dict[str, str], str]:
    """Run the call ``build(url)`` returns; the body, headers and path the upstream received."""
    up.push(Reply.sse(sse(MESSAGE_START, *message_end("end_turn"))))
    _, exc = await run(build(up.url))
    assert exc is None, exc
    (received,) = up.received
    return received.json(), received.headers, received.path


async def test_full_request_translation(up: FakeUpstream) -> None:
    cache = {"type": "ephemeral", "ttl": "1h"}
    zoom_schema = {"type": "object", "properties": {"factor": {"type": "number"}}, "required": ["factor"]}
    context: dict[str, Any] = {
        "systemPrompt": ["You are terse.", "Project rules."],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "text", "text": ""},
                    {"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png"},
                ],
                "timestamp": 1,
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Let me look.", "thinkingSignature": "sig-abc"},
                    {"type": "text", "text": "I'll zoom in."},
                    {"type": "toolCall", "id": "call_1|fc_2", "name": "zoom", "arguments": {"factor": 2}},
                    {"type": "toolCall", "id": "toolu_2", "name": "crop", "arguments": {}},
                ],
                "api": "anthropic-messages",
                "provider": "anthropic",
                "model": "claude-sonnet-4-5",
                "usage": zero_usage(),
                "stopReason": "toolUse",
                "timestamp": 2,
            },
            {
                "role": "toolResult",
                "toolCallId": "call_1|fc_2",
                "toolName": "zoom",
                "content": [
                    {"type": "text", "text": "zoomed"},
                    {"type": "image", "data": "R0lGODlh", "mimeType": "image/gif"},
                ],
                "isError": False,
                "timestamp": 3,
            },
            {
                "role": "toolResult",
                "toolCallId": "toolu_2",
                "toolName": "crop",
                "content": [{"type": "text", "text": "crop failed"}],
                "isError": True,
                "timestamp": 4,
            },
        ],
        "tools": [
            {"name": "zoom", "description": "Zoom the image", "parameters": zoom_schema},
            {"name": "crop", "description": "Crop the image", "parameters": {"type": "object", "properties": {}}},
        ],
    }
    options = {
        "reasoning": "low",
        "cacheRetention": "long",
        "metadata": {"user_id": "user-42", "session": "dropped"},
        "toolChoice": "auto",
        "maxTokens": 1000,
        "temperature": 0.5,
        "topP": 0.97,
        "stopSequences": ["END"],
    }
    body, headers, path = await send(up, lambda url: make_call(url, context=context, options=options))

    assert path == "/v1/messages"
    assert headers["x-api-key"] == CANARY
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert headers["content-type"] == "application/json"
    assert headers["accept"] == "text/event-stream"
    assert "authorization" not in headers

    assert body["model"] == "claude-sonnet-4-5"
    assert body["stream"] is True
    assert body["max_tokens"] == 1000 + 4096  # thinking tokens count against max_tokens
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert "temperature" not in body  # Anthropic rejects it while thinking
    assert body["top_p"] == 0.97
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "user-42"}
    assert body["system"] == [
        {"type": "text", "text": "You are terse."},
        {"type": "text", "text": "Project rules.", "cache_control": cache},
    ]
    assert body["tools"] == [
        {"name": "zoom", "description": "Zoom the image", "input_schema": zoom_schema},
        {"name": "crop", "description": "Crop the image", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert body["tool_choice"] == {"type": "auto"}
    user, assistant, results = body["messages"]
    assert user == {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in this picture?"},  # the empty text block is dropped
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        ],
    }
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Let me look.", "signature": "sig-abc"},
            {"type": "text", "text": "I'll zoom in."},
            {"type": "tool_use", "id": "call_1_fc_2", "name": "zoom", "input": {"factor": 2}},
            {"type": "tool_use", "id": "toolu_2", "name": "crop", "input": {}},
        ],
    }
    assert results == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "call_1_fc_2",
                "is_error": False,
                "content": [
                    {"type": "text", "text": "zoomed"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": "R0lGODlh"}},
                ],
            },
            {
                "type": "tool_result",
                "tool_use_id": "toolu_2",
                "is_error": True,
                "content": [{"type": "text", "text": "crop failed"}],
                "cache_control": cache,
            },
        ],
    }
    assert set(body) == {
        "model",
        "stream",
        "max_tokens",
        "system",
        "messages",
        "tools",
        "tool_choice",
        "thinking",
        "top_p",
        "stop_sequences",
        "metadata",
    }


async def test_message_shapes_without_thinking(up: FakeUpstream) -> None:
    def assistant(content: list[dict[str, Any]], stop: str = "stop") -> dict[str, Any]:
        return {"role": "assistant", "content": content, "stopReason": stop, "timestamp": 0}

    context = {
        "systemPrompt": ["", "  "],
        "messages": [
            {"role": "developer", "content": "Be careful.", "timestamp": 0},
            {"role": "user", "content": "   ", "timestamp": 0},  # whitespace only: dropped entirely
            {"role": "user", "content": [{"type": "image", "url": "https://x.test/a.png", "mimeType": "image/png"}]},
            assistant([{"type": "text", "text": "half"}, {"type": "toolCall", "id": "t9", "name": "x"}], "aborted"),
            assistant([{"type": "text", "text": "oops"}], "error"),
            assistant([{"type": "text", "text": ""}, {"type": "image", "data": "AA==", "mimeType": "image/png"}]),
            assistant(
                [
                    {"type": "thinking", "thinking": "unsigned idea"},
                    {"type": "thinking", "thinking": "  "},
                    {"type": "redactedThinking", "data": "opaque"},
                    {"type": "fallback"},
                    {"type": "text", "text": "answer"},
                ]
            ),
            {"role": "user", "content": "next"},
        ],
    }
    options = {"temperature": 0.2, "topK": 5, "reasoning": "high"}
    body, headers, _ = await send(up, lambda url: make_call(url, context=context, options=options, reasoning=False))
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Be careful."}]},
        {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "unsigned idea"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "answer"},
            ],
        },
        {"role": "user", "content": [{"type": "text", "text": "next", "cache_control": {"type": "ephemeral"}}]},
    ]
    assert "system" not in body and "tools" not in body and "thinking" not in body
    assert body["max_tokens"] == 8192
    assert body["temperature"] == 0.2
    assert body["top_k"] == 5
    assert "anthropic-beta" not in headers


async def test_cache_retention_none_sends_no_cache_control(up: FakeUpstream) -> None:
    context = {"systemPrompt": ["sys"], "messages": [{"role": "user", "content": "hi", "timestamp": 0}]}
    body, _, _ = await send(up, lambda url: make_call(url, context=context, options={"cacheRetention": "none"}))
    assert body["system"] == [{"type": "text", "text": "sys"}]
    assert no_cache_control(body)


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("any", {"type": "any"}),
        ("required", {"type": "any"}),
        ({"type": "function", "name": "zoom"}, {"type": "tool", "name": "zoom"}),
        ({"type": "function", "function": {"name": "zoom"}}, {"type": "tool", "name": "zoom"}),
        ({"type": "tool", "name": "zoom"}, {"type": "tool", "name": "zoom"}),
        ({"type": "computer"}, None),
    ],
)
async def test_tool_choice(up: FakeUpstream, choice: Any, expected: dict[str, str] | None) -> None:
    context = {
        "messages": [{"role": "user", "content": "hi", "timestamp": 0}],
        "tools": [{"name": "zoom", "description": "", "parameters": {"properties": {"f": {"type": "number"}}}}],
    }
    body, _, _ = await send(up, lambda url: make_call(url, context=context, options={"toolChoice": choice}))
    assert body.get("tool_choice") == expected
    # a schema without "type" is completed: Anthropic requires an object schema
    assert body["tools"] == [
        {"name": "zoom", "input_schema": {"type": "object", "properties": {"f": {"type": "number"}}}}
    ]


@pytest.mark.parametrize(
    ("options", "model_max", "thinking", "max_tokens"),
    [
        ({"reasoning": "medium"}, None, {"type": "enabled", "budget_tokens": 10240}, 8192 + 10240),
        ({"reasoning": "minimal", "maxTokens": 100}, None, {"type": "enabled", "budget_tokens": 1024}, 1124),
        ({"reasoning": "max", "maxTokens": 2000}, None, {"type": "enabled", "budget_tokens": 32000}, 34000),
        (
            {"reasoning": "high", "thinkingBudgets": {"high": 5000}},
            64000,
            {"type": "enabled", "budget_tokens": 5000},
            64000,
        ),
        ({"reasoning": "xhigh"}, 64000, {"type": "enabled", "budget_tokens": 32000}, 64000),  # capped at the model's
        ({"reasoning": "high"}, 16000, {"type": "enabled", "budget_tokens": 14976}, 16000),  # budget < max_tokens
        ({"reasoning": "high"}, 1500, None, 1500),  # no room left for a 1024-token budget
        ({"reasoning": "high", "disableReasoning": True}, None, None, 8192),
        ({"reasoning": "bogus"}, None, None, 8192),
    ],
)
async def test_thinking_budget(
    up: FakeUpstream, options: dict[str, Any], model_max: int | None, thinking: dict[str, Any] | None, max_tokens: int
) -> None:
    body, headers, _ = await send(up, lambda url: make_call(url, options=options, max_tokens=model_max))
    assert body.get("thinking") == thinking
    assert body["max_tokens"] == max_tokens
    assert ("anthropic-beta" in headers) == (thinking is not None)


async def test_thinking_enabled_by_compat_flag(up: FakeUpstream) -> None:
    def call(url: str) -> UpstreamCall:
        return make_call(url, options={"reasoning": "low"}, reasoning=False, compat={"supports_thinking": True})

    body, _, _ = await send(up, call)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4096}


async def test_header_merging(up: FakeUpstream) -> None:
    def call(url: str) -> UpstreamCall:
        return make_call(
            url,
            options={"reasoning": "low"},
            call_headers={"Anthropic-Beta": "context-1m-2025-08-07", "X-Trace": "call"},
            headers={"x-trace": "model", "x-app": "sidecar", "anthropic-beta": "model-beta"},
        )

    _, headers, _ = await send(up, call)
    # the call's headers win over the model's, whatever their case; the thinking beta is appended once
    assert headers["anthropic-beta"] == "context-1m-2025-08-07,interleaved-thinking-2025-05-14"
    assert headers["x-trace"] == "call"
    assert headers["x-app"] == "sidecar"


async def test_caller_cannot_replace_the_credential_or_duplicate_betas(up: FakeUpstream) -> None:
    def call(url: str) -> UpstreamCall:
        return make_call(
            url,
            options={"reasoning": "low"},
            call_headers={"X-Api-Key": "sk-ant-other-000000", "anthropic-beta": " interleaved-thinking-2025-05-14 ,"},
        )

    _, headers, _ = await send(up, call)
    assert headers["x-api-key"] == CANARY
    assert headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
