"""sidecar.realtime.mapping: normalized realtime protocol <-> OpenAI Realtime, checked against the DOCS fixtures.

The fixtures are OpenAI's published examples (tests/fixtures/openai-realtime/PROVENANCE.md): GA names in ``ga-*``,
the pre-GA preview dialect in ``beta-*``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sidecar.realtime.mapping import (
    RealtimeEventError,
    build_session_config,
    from_openai,
    gateway_options,
    to_openai,
    usage_from_response_done,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "openai-realtime"
MODEL = "gpt-realtime"


def events(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines()]


GA_TURN = events("ga-text-turn.DOCS.server.jsonl")
BETA_TURN = events("beta-text-and-audio-transcript.DOCS.server.jsonl")
GA_CLIENT = events("ga-client-events.DOCS.client.jsonl")
ERROR_EVENT = json.loads((FIXTURES / "errors" / "error-event-invalid-event.DOCS.json").read_text(encoding="utf-8"))


# ----- OpenAI -> normalized -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "expected_types"),
    [
        (GA_TURN, ["response-created", "output-item-added", "text-delta", "text-done", "response-done"]),
        (
            BETA_TURN,
            [
                "session-created",
                "response-created",
                "text-delta",
                "text-done",
                "audio-transcript-delta",
                "audio-transcript-done",
                "response-done",
            ],
        ),
    ],
    ids=["ga", "beta"],
)
def test_every_fixture_event_maps_to_its_normalized_type_and_keeps_raw(
    fixture: list[dict[str, Any]], expected_types: list[str]
) -> None:
    untouched = json.loads(json.dumps(fixture))
    normalized = [from_openai(event) for event in fixture]
    assert [n["type"] for n in normalized] == expected_types
    for n, event in zip(normalized, fixture, strict=True):
        assert n["raw"] is event
    assert fixture == untouched  # mapping never mutates the upstream event


def test_ga_text_turn_exact_events() -> None:
    created, item_added, delta, done, response_done = (from_openai(e) for e in GA_TURN)
    assert created == {"type": "response-created", "responseId": "resp_C9G8p7IH2WxLbkgPNouYL", "raw": GA_TURN[0]}
    # The output item carries the item itself, so the itemId comes from item.id.
    assert item_added == {"type": "output-item-added", "responseId": "resp_001", "itemId": "msg_007", "raw": GA_TURN[1]}
    assert delta == {
        "type": "text-delta",
        "responseId": "resp_001",
        "itemId": "msg_007",
        "delta": "Sure, I can h",
        "raw": GA_TURN[2],
    }
    assert done == {
        "type": "text-done",
        "responseId": "resp_001",
        "itemId": "msg_007",
        "text": "Sure, I can help with that.",
        "raw": GA_TURN[3],
    }
    assert response_done == {
        "type": "response-done",
        "responseId": "resp_CCXHw0UJld10EzIUXQCNh",
        "status": "completed",
        "usage": {
            "inputTokens": 132,
            "outputTokens": 121,
            "cachedInputTokens": 64,
            "inputTextTokens": 119,
            "inputAudioTokens": 13,
            "outputTextTokens": 30,
            "outputAudioTokens": 91,
            "cachedInputTextTokens": 64,
            "cachedInputAudioTokens": 0,
        },
        "raw": GA_TURN[4],
    }
    assert usage_from_response_done(GA_TURN[4]) == response_done["usage"]


def test_beta_names_map_like_their_ga_names() -> None:
    session, _, delta, _, transcript_delta, transcript_done, response_done = (from_openai(e) for e in BETA_TURN)
    assert session == {"type": "session-created", "sessionId": "sess_001", "raw": BETA_TURN[0]}
    assert delta["type"] == "text-delta" and delta["delta"] == "Sure, I can h"
    assert transcript_delta == {
        "type": "audio-transcript-delta",
        "responseId": "resp_001",
        "itemId": "msg_008",
        "delta": "Hello, how can I a",
        "raw": BETA_TURN[4],
    }
    assert transcript_done["transcript"] == "Hello, how can I assist you today?"
    # DOCS example numbers (cached > input is the published example's, not ours); each is a plain rename.
    assert response_done["usage"] == {
        "inputTokens": 127,
        "outputTokens": 148,
        "cachedInputTokens": 384,
        "inputTextTokens": 119,
        "inputAudioTokens": 8,
        "outputTextTokens": 36,
        "outputAudioTokens": 112,
        "cachedInputTextTokens": 128,
        "cachedInputAudioTokens": 256,
    }


def test_error_event_names_the_client_event() -> None:
    assert from_openai(ERROR_EVENT) == {
        "type": "error",
        "message": "The 'type' field is missing.",
        "code": "invalid_event",
        "clientEventId": "event_567",
        "raw": ERROR_EVENT,
    }
    bare = {"type": "error", "message": "top-level message"}
    assert from_openai(bare) == {"type": "error", "message": "top-level message", "raw": bare}
    assert from_openai({"type": "error"})["message"] == "Unknown error"


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"type": "session.updated", "session": {}}, {"type": "session-updated"}),
        ({"type": "input_audio_buffer.speech_started", "item_id": "i1"}, {"type": "speech-started", "itemId": "i1"}),
        ({"type": "input_audio_buffer.speech_stopped", "item_id": "i1"}, {"type": "speech-stopped", "itemId": "i1"}),
        (
            {"type": "input_audio_buffer.committed", "item_id": "i2", "previous_item_id": "i1"},
            {"type": "audio-committed", "itemId": "i2", "previousItemId": "i1"},
        ),
        (  # OpenAI sends previous_item_id null for the first item; absent and null both leave the field out
            {"type": "input_audio_buffer.committed", "item_id": "i1", "previous_item_id": None},
            {"type": "audio-committed", "itemId": "i1"},
        ),
        (
            {"type": "conversation.item.added", "item": {"id": "i1", "type": "message"}},
            {"type": "conversation-item-added", "itemId": "i1", "item": {"id": "i1", "type": "message"}},
        ),
        (
            {"type": "conversation.item.created", "item": {"id": "i1", "type": "message"}},
            {"type": "conversation-item-added", "itemId": "i1", "item": {"id": "i1", "type": "message"}},
        ),
        (
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": "i1",
                "transcript": "hi",
                "usage": {"type": "tokens", "input_tokens": 7, "output_tokens": 2, "total_tokens": 9},
            },
            {
                "type": "input-transcription-completed",
                "itemId": "i1",
                "transcript": "hi",
                "usage": {"inputTokens": 7, "outputTokens": 2},
            },
        ),
        (
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": "i1",
                "usage": {"type": "duration", "seconds": 2.5},
            },
            {"type": "input-transcription-completed", "itemId": "i1", "transcript": "", "usage": {"seconds": 2.5}},
        ),
        (
            {"type": "response.done", "response": {"id": "r1", "usage": None}},
            {"type": "response-done", "responseId": "r1", "status": "completed"},
        ),
        (
            {"type": "response.done", "response": {"id": "r1", "status": "cancelled"}},
            {"type": "response-done", "responseId": "r1", "status": "cancelled"},
        ),
        (
            {"type": "response.output_item.done", "response_id": "r1", "item": {"id": "i1"}},
            {"type": "output-item-done", "responseId": "r1", "itemId": "i1"},
        ),
        (
            {"type": "response.content_part.added", "response_id": "r1", "item_id": "i1", "part": {}},
            {"type": "content-part-added", "responseId": "r1", "itemId": "i1"},
        ),
        (
            {"type": "response.content_part.done", "response_id": "r1", "item_id": "i1", "part": {}},
            {"type": "content-part-done", "responseId": "r1", "itemId": "i1"},
        ),
        (
            {"type": "response.output_audio.delta", "response_id": "r1", "item_id": "i1", "delta": "AAA="},
            {"type": "audio-delta", "responseId": "r1", "itemId": "i1", "delta": "AAA="},
        ),
        (
            {"type": "response.audio.delta", "response_id": "r1", "item_id": "i1", "delta": "AAA="},
            {"type": "audio-delta", "responseId": "r1", "itemId": "i1", "delta": "AAA="},
        ),
        (
            {"type": "response.output_audio.done", "response_id": "r1", "item_id": "i1"},
            {"type": "audio-done", "responseId": "r1", "itemId": "i1"},
        ),
        (
            {"type": "response.audio.done", "response_id": "r1", "item_id": "i1"},
            {"type": "audio-done", "responseId": "r1", "itemId": "i1"},
        ),
        (
            {"type": "response.output_audio_transcript.done", "response_id": "r1", "item_id": "i1", "transcript": "t"},
            {"type": "audio-transcript-done", "responseId": "r1", "itemId": "i1", "transcript": "t"},
        ),
        (
            {
                "type": "response.function_call_arguments.delta",
                "response_id": "r1",
                "item_id": "i1",
                "call_id": "c1",
                "delta": '{"ci',
            },
            {
                "type": "function-call-arguments-delta",
                "responseId": "r1",
                "itemId": "i1",
                "callId": "c1",
                "delta": '{"ci',
            },
        ),
        (
            {
                "type": "response.function_call_arguments.done",
                "response_id": "r1",
                "item_id": "i1",
                "call_id": "c1",
                "name": "weather",
                "arguments": '{"city":"Oslo"}',
            },
            {
                "type": "function-call-arguments-done",
                "responseId": "r1",
                "itemId": "i1",
                "callId": "c1",
                "name": "weather",
                "arguments": '{"city":"Oslo"}',
            },
        ),
        (
            {"type": "rate_limits.updated", "rate_limits": []},
            {"type": "custom", "rawType": "rate_limits.updated"},
        ),
        ({"type": "conversation.item.done", "item": {}}, {"type": "custom", "rawType": "conversation.item.done"}),
        ({"no_type": True}, {"type": "custom"}),
        ({"type": ["not", "a", "string"]}, {"type": "custom"}),
    ],
    ids=lambda v: v.get("type") if isinstance(v, dict) and isinstance(v.get("type"), str) else None,
)
def test_server_event_mapping(event: dict[str, Any], expected: dict[str, Any]) -> None:
    assert from_openai(event) == {**expected, "raw": event}


# ----- normalized -> OpenAI ---------------------------------------------------------------------------------

PALETTE_PARAMETERS = {
    "type": "object",
    "properties": {
        "theme": {"type": "string", "description": "Description of the theme for the color scheme."},
        "colors": {
            "type": "array",
            "description": "Array of five hex color codes based on the theme.",
            "items": {"type": "string", "description": "Hex color code"},
        },
    },
    "required": ["theme", "colors"],
}


def test_client_events_reproduce_the_ga_client_fixture() -> None:
    normalized: list[dict[str, Any]] = [
        {
            "type": "session-update",
            "config": {
                "instructions": "You are a creative assistant that helps with design tasks.",
                "tools": [
                    {
                        "type": "function",
                        "name": "display_color_palette",
                        "description": "Call this function when a user asks for a color palette.",
                        "parameters": PALETTE_PARAMETERS,
                    }
                ],
            },
        },
        {"type": "input-audio-append", "audio": "Base64EncodedAudioData", "eventId": "event_456"},
        {"type": "input-audio-commit", "eventId": "event_789"},
        {"type": "response-create"},
    ]
    sent = [to_openai(event, MODEL) for event in normalized]
    # The one difference: the mapper always names the model in the session (as @ai-sdk/openai does), while the
    # docs example leaves it to the connection URL's ?model=.
    assert sent[0] is not None and sent[0]["session"].pop("model") == MODEL
    assert json.dumps(sent, sort_keys=True) == json.dumps(GA_CLIENT, sort_keys=True)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            {"type": "input-audio-append", "audio": "AAA="},
            {"type": "input_audio_buffer.append", "audio": "AAA="},
        ),
        ({"type": "input-audio-clear", "eventId": "e1"}, {"type": "input_audio_buffer.clear", "event_id": "e1"}),
        ({"type": "response-cancel"}, {"type": "response.cancel"}),
        (
            {"type": "conversation-item-create", "item": {"type": "text-message", "role": "user", "text": "hi"}},
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            },
        ),
        (
            {
                "type": "conversation-item-create",
                "eventId": "e2",
                "item": {"type": "audio-message", "role": "user", "audio": "AAA="},
            },
            {
                "type": "conversation.item.create",
                "event_id": "e2",
                "item": {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": "AAA="}]},
            },
        ),
        (
            {
                "type": "conversation-item-create",
                "item": {"type": "function-call-output", "callId": "c1", "name": "weather", "output": '{"t":21}'},
            },
            {
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": "c1", "output": '{"t":21}'},
            },
        ),
        (
            {"type": "conversation-item-truncate", "itemId": "i1", "contentIndex": 0, "audioEndMs": 1500},
            {"type": "conversation.item.truncate", "item_id": "i1", "content_index": 0, "audio_end_ms": 1500},
        ),
        (
            {
                "type": "response-create",
                "options": {"modalities": ["text"], "instructions": "Be brief.", "metadata": {"k": "v"}},
            },
            {
                "type": "response.create",
                "response": {"output_modalities": ["text"], "instructions": "Be brief.", "metadata": {"k": "v"}},
            },
        ),
        ({"type": "response-create", "options": {}}, {"type": "response.create", "response": {}}),
        ({"type": "response-create", "options": None}, {"type": "response.create"}),
    ],
    ids=lambda v: v["type"] if isinstance(v, dict) and "_" not in v["type"] else None,
)
def test_client_event_mapping(event: dict[str, Any], expected: dict[str, Any]) -> None:
    assert to_openai(event, MODEL) == expected


@pytest.mark.parametrize(
    "kind", ["session-start", "session-close", "input-audio-mute", "input-audio-unmute", "context-append"]
)
def test_events_without_an_openai_counterpart_map_to_none(kind: str) -> None:
    assert to_openai({"type": kind, "config": {}, "content": "x", "delegationId": None}, MODEL) is None


def test_full_session_config() -> None:
    config = {
        "instructions": "Speak slowly.",
        "voice": "marin",
        "outputModalities": ["audio"],
        "inputAudioFormat": {"type": "audio/pcm", "rate": 24000},
        "outputAudioFormat": {"type": "audio/pcmu"},
        "inputAudioTranscription": {"language": "en", "prompt": "Names: Ada."},
        "outputAudioTranscription": {"model": "ignored"},
        "turnDetection": {"type": "semantic-vad", "threshold": 0.6, "silenceDurationMs": 400, "prefixPaddingMs": 200},
        "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}],
        "providerOptions": {"openai": {"max_output_tokens": 512, "tracing": "auto"}, "anthropic": {"x": 1}},
    }
    assert build_session_config(config, MODEL) == {
        "type": "realtime",
        "model": MODEL,
        "instructions": "Speak slowly.",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "turn_detection": {
                    "type": "semantic_vad",
                    "threshold": 0.6,
                    "silence_duration_ms": 400,
                    "prefix_padding_ms": 200,
                },
                "transcription": {"model": "gpt-realtime-whisper", "language": "en", "prompt": "Names: Ada."},
            },
            "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
        },
        "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}],
        "tool_choice": "auto",
        "max_output_tokens": 512,
        "tracing": "auto",
    }


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, {"type": "realtime", "model": MODEL}),
        ({"tools": []}, {"type": "realtime", "model": MODEL}),
        ({"instructions": None, "voice": None}, {"type": "realtime", "model": MODEL}),
        (
            {"turnDetection": {"type": "disabled"}},
            {"type": "realtime", "model": MODEL, "audio": {"input": {"turn_detection": None}}},
        ),
        ({"turnDetection": None}, {"type": "realtime", "model": MODEL, "audio": {"input": {"turn_detection": None}}}),
        (
            {"turnDetection": {"type": "server-vad"}},
            {"type": "realtime", "model": MODEL, "audio": {"input": {"turn_detection": {"type": "server_vad"}}}},
        ),
        (
            {"inputAudioTranscription": {"model": "gpt-4o-mini-transcribe"}},
            {
                "type": "realtime",
                "model": MODEL,
                "audio": {"input": {"transcription": {"model": "gpt-4o-mini-transcribe"}}},
            },
        ),
        ({"voice": "alloy"}, {"type": "realtime", "model": MODEL, "audio": {"output": {"voice": "alloy"}}}),
        ({"providerOptions": {"openai": {"model": MODEL}}}, {"type": "realtime", "model": MODEL}),
    ],
)
def test_session_config_sends_only_what_was_given(config: dict[str, Any], expected: dict[str, Any]) -> None:
    assert build_session_config(config, MODEL) == expected


def test_gateway_provider_options_never_reach_openai() -> None:
    gateway = {"tags": ["team-secret-tag"], "user": "user-4711", "byok": {"openai": [{"apiKey": "sk-byok-secret"}]}}
    config = {"instructions": "hi", "providerOptions": {"gateway": gateway, "openai": {"tracing": "auto"}}}
    sent = to_openai({"type": "session-update", "config": config}, MODEL)
    assert sent == {
        "type": "session.update",
        "session": {"type": "realtime", "model": MODEL, "instructions": "hi", "tracing": "auto"},
    }
    wire = json.dumps(sent)
    assert "gateway" not in wire and "team-secret-tag" not in wire and "sk-byok-secret" not in wire
    assert gateway_options(config) == gateway
    assert gateway_options({}) == {}
    assert gateway_options({"providerOptions": {"openai": {}}}) == {}


# ----- malformed client events ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (["not", "an", "object"], "an event must be a JSON object (got array)"),
        ({"eventId": "e1"}, "event.type must be a string naming the event (got null)"),
        (
            {"type": "session.update", "session": {}},
            "unknown event type 'session.update'; expected one of context-append, conversation-item-create, "
            "conversation-item-truncate, input-audio-append, input-audio-clear, input-audio-commit, input-audio-mute, "
            "input-audio-unmute, response-cancel, response-create, session-close, session-start, session-update",
        ),
        ({"type": "session-update"}, "session-update: config must be an object (missing)"),
        ({"type": "session-update", "config": "x"}, "session-update: config must be an object (got string)"),
        (
            {"type": "session-update", "config": {"tools": [{"type": "function", "parameters": {}}]}},
            "session-update: config.tools[0].name must be a string (missing)",
        ),
        (
            {"type": "session-update", "config": {"tools": [{"name": "f", "parameters": {}}]}},
            "session-update: config.tools[0].type must be 'function' (got None)",
        ),
        (
            {"type": "session-update", "config": {"tools": [{"type": "function", "name": "f"}]}},
            "session-update: config.tools[0].parameters must be an object (missing)",
        ),
        (
            {"type": "session-update", "config": {"turnDetection": {"type": "server_vad"}}},
            "session-update: config.turnDetection.type must be one of 'server-vad', 'semantic-vad', 'disabled' "
            "(got 'server_vad')",
        ),
        (
            {"type": "session-update", "config": {"turnDetection": {"type": "server-vad", "silenceDurationMs": "5"}}},
            "session-update: config.turnDetection.silenceDurationMs must be a non-negative integer (got string)",
        ),
        (
            {"type": "session-update", "config": {"outputModalities": ["video"]}},
            "session-update: config.outputModalities must be an array of 'text' and/or 'audio' (got array)",
        ),
        (
            {"type": "session-update", "config": {"inputAudioFormat": {"rate": 24000}}},
            "session-update: config.inputAudioFormat.type must be a string (missing)",
        ),
        (
            {"type": "session-update", "config": {"providerOptions": {"openai": {"model": "gpt-realtime-pro"}}}},
            "session-update: config.providerOptions.openai.model cannot change the session model 'gpt-realtime': "
            "it is fixed by the connection",
        ),
        (
            {"type": "session-update", "config": {"providerOptions": {"openai": {"type": "transcription"}}}},
            "session-update: config.providerOptions.openai.type cannot change the session type 'realtime': "
            "it is fixed by the connection",
        ),
        ({"type": "input-audio-append"}, "input-audio-append: audio must be a string (missing)"),
        ({"type": "input-audio-append", "audio": None}, "input-audio-append: audio must be a string (got null)"),
        (
            {"type": "input-audio-commit", "eventId": 7},
            "input-audio-commit: eventId must be a string (got number)",
        ),
        ({"type": "conversation-item-create"}, "conversation-item-create: item must be an object (missing)"),
        (
            {"type": "conversation-item-create", "item": {"type": "text-message", "role": "user"}},
            "conversation-item-create: item.text must be a string (missing)",
        ),
        (
            {"type": "conversation-item-create", "item": {"type": "text-message", "role": "user", "text": 5}},
            "conversation-item-create: item.text must be a string (got number)",
        ),
        (
            {"type": "conversation-item-create", "item": {"type": "text-message", "text": "hi"}},
            "conversation-item-create: item.role must be a string (missing)",
        ),
        (
            {"type": "conversation-item-create", "item": {"type": "image", "url": "x"}},
            "conversation-item-create: item.type must be one of 'text-message', 'audio-message', "
            "'function-call-output' (got 'image')",
        ),
        (
            {"type": "conversation-item-create", "item": {"type": "function-call-output", "callId": "c1"}},
            "conversation-item-create: item.output must be a string (missing)",
        ),
        (
            {"type": "conversation-item-truncate", "itemId": "i1", "contentIndex": -1, "audioEndMs": 0},
            "conversation-item-truncate: contentIndex must be a non-negative integer (got number)",
        ),
        (
            {"type": "conversation-item-truncate", "itemId": "i1", "contentIndex": 0, "audioEndMs": True},
            "conversation-item-truncate: audioEndMs must be a non-negative integer (got boolean)",
        ),
        (
            {"type": "response-create", "options": {"modalities": "text"}},
            "response-create: options.modalities must be an array of 'text' and/or 'audio' (got string)",
        ),
    ],
)
def test_malformed_client_events_say_what_to_fix(event: Any, message: str) -> None:
    with pytest.raises(RealtimeEventError) as raised:
        to_openai(event, MODEL)
    assert str(raised.value) == message
    assert isinstance(raised.value, ValueError)


def test_malformed_gateway_options_are_rejected() -> None:
    with pytest.raises(RealtimeEventError, match=r"^config\.providerOptions\.gateway must be an object \(got array\)$"):
        gateway_options({"providerOptions": {"gateway": ["tags"]}})
