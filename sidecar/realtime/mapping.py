"""Translate between the normalized realtime protocol and OpenAI's Realtime API. Pure functions with no I/O.

This is a port of ``@ai-sdk/openai`` 4.0.118 ``src/realtime/openai-realtime-event-mapper.ts``
(docs/ai-gateway-protocol.md §2.5-2.6). The gateway's realtime socket speaks the normalized protocol (the
``ai`` SDK's gateway codec is the identity), so the relay calls ``to_openai`` on every frame from the browser
and ``from_openai`` on every frame from OpenAI.

Where this port differs from the TypeScript mapper, and why:

* Client events are validated. The TypeScript mapper trusts its own typed caller, but here the caller is a
  remote client. A malformed event raises ``RealtimeEventError``, whose message names the field and says what
  it must be, instead of sending OpenAI something half-built.
* Only ``providerOptions.openai`` is merged into the session. ``providerOptions.gateway`` (tags, user,
  byok …) is our own attribution and must never reach the provider; read it with ``gateway_options``.
  ``providerOptions.openai`` may not change the session's ``model`` or ``type``. The model is fixed by the
  connection and is what gets authorized and billed.
* ``turnDetection: null`` sends ``turn_detection: null`` (turn detection off), the same as ``'disabled'``.
  The TypeScript mapper drops a null.
* ``eventId`` is forwarded as ``event_id`` on every mapped event, so OpenAI's ``error.event_id`` can name the
  client event that caused an error.
* Beta (preview-model) server event names such as ``response.text.delta`` and ``conversation.item.created``
  map to the same normalized events as their GA names.
* Upstream fields that are absent are left out of the normalized event, as ``JSON.stringify`` drops the
  mapper's ``undefined``. Null ones are left out too, e.g. ``previous_item_id: null``, because the normalized
  fields are optional, not nullable. The untouched upstream event is always in ``raw``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

Event = dict[str, Any]

DEFAULT_TRANSCRIPTION_MODEL: Final = "gpt-realtime-whisper"


class RealtimeEventError(ValueError):
    """A client event that cannot be translated. The message names the offending field and what to send instead."""


# ----- validation of client input ----------------------------------------------------------------------------
# Optional fields treat null like absent: that is how the TypeScript mapper's ``!= null`` checks behave.


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _is_count(value: Any) -> bool:
    # bool is an int subclass in Python, but JSON true is not a count.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _field(obj: Event, key: str, path: str, ok: Callable[[Any], bool], expected: str, required: bool) -> Any:
    """``obj[key]`` when it passes ``ok``; otherwise the error says which field (``path + key``) must be what."""
    value = obj.get(key)
    if value is None:
        if required:
            raise RealtimeEventError(f"{path}{key} must be {expected} ({'got null' if key in obj else 'missing'})")
        return None
    if not ok(value):
        raise RealtimeEventError(f"{path}{key} must be {expected} (got {_json_type(value)})")
    return value


def _req_str(obj: Event, key: str, path: str) -> str:
    value: str = _field(obj, key, path, lambda v: isinstance(v, str), "a string", True)
    return value


def _opt_str(obj: Event, key: str, path: str) -> str | None:
    value: str | None = _field(obj, key, path, lambda v: isinstance(v, str), "a string", False)
    return value


def _req_count(obj: Event, key: str, path: str) -> int:
    value: int = _field(obj, key, path, _is_count, "a non-negative integer", True)
    return value


def _opt_count(obj: Event, key: str, path: str) -> int | None:
    value: int | None = _field(obj, key, path, _is_count, "a non-negative integer", False)
    return value


def _opt_number(obj: Event, key: str, path: str) -> float | int | None:
    value: float | int | None = _field(obj, key, path, _is_number, "a number", False)
    return value


def _req_obj(obj: Event, key: str, path: str) -> Event:
    value: Event = _field(obj, key, path, lambda v: isinstance(v, dict), "an object", True)
    return value


def _opt_obj(obj: Event, key: str, path: str) -> Event | None:
    value: Event | None = _field(obj, key, path, lambda v: isinstance(v, dict), "an object", False)
    return value


def _opt_modalities(obj: Event, key: str, path: str) -> list[str] | None:
    value: list[str] | None = _field(
        obj,
        key,
        path,
        lambda v: isinstance(v, list) and all(m in ("text", "audio") for m in v),
        "an array of 'text' and/or 'audio'",
        False,
    )
    return value


def _put(target: Event, key: str, value: Any) -> None:
    """Set ``key`` only when there is a value. OpenAI gets no nulls for settings the client did not give."""
    if value is not None:
        target[key] = value


# ----- normalized client event -> OpenAI client event -----------------------------------------------------------

# Events that exist in the normalized protocol but have no OpenAI counterpart. The ``ai`` SDK drops them too.
UNMAPPED_CLIENT_EVENTS: Final = frozenset(
    {"session-start", "session-close", "input-audio-mute", "input-audio-unmute", "context-append"}
)

# Events that carry nothing but their type (and eventId).
_BARE_CLIENT_EVENTS: Final = {
    "input-audio-commit": "input_audio_buffer.commit",
    "input-audio-clear": "input_audio_buffer.clear",
    "response-cancel": "response.cancel",
}

# conversation-item-create message items: normalized item type -> (OpenAI content part type, field carrying it).
_MESSAGE_ITEMS: Final = {
    "text-message": ("input_text", "text"),
    "audio-message": ("input_audio", "audio"),
}
_ITEM_TYPES: Final = (*_MESSAGE_ITEMS, "function-call-output")


def _session_update(event: Event, model_id: str) -> Event:
    return {"type": "session.update", "session": build_session_config(_req_obj(event, "config", ""), model_id)}


def _input_audio_append(event: Event, model_id: str) -> Event:
    return {"type": "input_audio_buffer.append", "audio": _req_str(event, "audio", "")}


def _conversation_item_create(event: Event, model_id: str) -> Event:
    item = _req_obj(event, "item", "")
    kind = _req_str(item, "type", "item.")
    if kind in _MESSAGE_ITEMS:
        part_type, key = _MESSAGE_ITEMS[kind]
        # The normalized type says role 'user'; other roles are passed on for OpenAI to accept or reject.
        role = _req_str(item, "role", "item.")
        content = [{"type": part_type, key: _req_str(item, key, "item.")}]
        return {"type": "conversation.item.create", "item": {"type": "message", "role": role, "content": content}}
    if kind == "function-call-output":
        _opt_str(item, "name", "item.")  # allowed by the normalized type, but OpenAI's item has no name field
        openai_item = {
            "type": "function_call_output",
            "call_id": _req_str(item, "callId", "item."),
            "output": _req_str(item, "output", "item."),
        }
        return {"type": "conversation.item.create", "item": openai_item}
    expected = ", ".join(repr(t) for t in _ITEM_TYPES)
    raise RealtimeEventError(f"item.type must be one of {expected} (got {kind!r})")


def _conversation_item_truncate(event: Event, model_id: str) -> Event:
    return {
        "type": "conversation.item.truncate",
        "item_id": _req_str(event, "itemId", ""),
        "content_index": _req_count(event, "contentIndex", ""),
        "audio_end_ms": _req_count(event, "audioEndMs", ""),
    }


def _response_create(event: Event, model_id: str) -> Event:
    out: Event = {"type": "response.create"}
    options = _opt_obj(event, "options", "")
    if options is not None:
        # As in the TypeScript mapper, given options always produce a `response` object, even an empty one.
        response: Event = {}
        _put(response, "output_modalities", _opt_modalities(options, "modalities", "options."))
        _put(response, "instructions", _opt_str(options, "instructions", "options."))
        _put(response, "metadata", _opt_obj(options, "metadata", "options."))
        out["response"] = response
    return out


_CLIENT_EVENTS: Final[dict[str, Callable[[Event, str], Event]]] = {
    "session-update": _session_update,
    "input-audio-append": _input_audio_append,
    "conversation-item-create": _conversation_item_create,
    "conversation-item-truncate": _conversation_item_truncate,
    "response-create": _response_create,
}
_KNOWN_CLIENT_EVENTS: Final = sorted({*_CLIENT_EVENTS, *_BARE_CLIENT_EVENTS, *UNMAPPED_CLIENT_EVENTS})


def to_openai(event: Event, model_id: str) -> Event | None:
    """The OpenAI GA client event for a normalized client event, or None for events OpenAI has no use for.

    Raises ``RealtimeEventError`` for an unknown type or a malformed event. The message starts with the event
    type, e.g. ``conversation-item-create: item.text must be a string (missing)``.
    """
    if not isinstance(event, dict):
        raise RealtimeEventError(f"an event must be a JSON object (got {_json_type(event)})")
    kind = event.get("type")
    if not isinstance(kind, str):
        raise RealtimeEventError(f"event.type must be a string naming the event (got {_json_type(kind)})")
    if kind in UNMAPPED_CLIENT_EVENTS:
        return None
    if kind not in _CLIENT_EVENTS and kind not in _BARE_CLIENT_EVENTS:
        raise RealtimeEventError(f"unknown event type {kind!r}; expected one of {', '.join(_KNOWN_CLIENT_EVENTS)}")
    try:
        out = _CLIENT_EVENTS[kind](event, model_id) if kind in _CLIENT_EVENTS else {"type": _BARE_CLIENT_EVENTS[kind]}
        _put(out, "event_id", _opt_str(event, "eventId", ""))
    except RealtimeEventError as exc:
        raise RealtimeEventError(f"{kind}: {exc}") from None
    return out


# ----- SessionConfig -> OpenAI session ----------------------------------------------------------------------------

_TURN_DETECTION_TYPES: Final = {"server-vad": "server_vad", "semantic-vad": "semantic_vad", "disabled": None}

# turnDetection tuning: normalized name -> OpenAI name.
_TURN_DETECTION_SETTINGS: Final = (
    ("threshold", "threshold", _opt_number),
    ("silenceDurationMs", "silence_duration_ms", _opt_count),
    ("prefixPaddingMs", "prefix_padding_ms", _opt_count),
)


def _audio_format(config: Event, key: str) -> Event | None:
    spec = _opt_obj(config, key, "config.")
    if spec is None:
        return None
    path = f"config.{key}."
    audio_format: Event = {"type": _req_str(spec, "type", path)}
    _put(audio_format, "rate", _opt_count(spec, "rate", path))
    return audio_format


def _turn_detection(spec: Any) -> Event | None:
    """OpenAI's ``turn_detection``; None (JSON null) switches turn detection off."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise RealtimeEventError(f"config.turnDetection must be an object or null (got {_json_type(spec)})")
    kind = spec.get("type")
    if not isinstance(kind, str) or kind not in _TURN_DETECTION_TYPES:
        expected = ", ".join(repr(t) for t in _TURN_DETECTION_TYPES)
        raise RealtimeEventError(f"config.turnDetection.type must be one of {expected} (got {kind!r})")
    openai_type = _TURN_DETECTION_TYPES[kind]
    if openai_type is None:
        return None
    detection: Event = {"type": openai_type}
    for name, openai_name, read in _TURN_DETECTION_SETTINGS:
        _put(detection, openai_name, read(spec, name, "config.turnDetection."))
    return detection


def _transcription(config: Event) -> Event | None:
    spec = _opt_obj(config, "inputAudioTranscription", "config.")
    if spec is None:
        return None
    path = "config.inputAudioTranscription."
    # An empty object means "transcribe the input", so the model gets a default.
    transcription: Event = {"model": _opt_str(spec, "model", path) or DEFAULT_TRANSCRIPTION_MODEL}
    _put(transcription, "language", _opt_str(spec, "language", path))
    _put(transcription, "prompt", _opt_str(spec, "prompt", path))
    return transcription


def _audio(config: Event) -> Event:
    audio_input: Event = {}
    _put(audio_input, "format", _audio_format(config, "inputAudioFormat"))
    if "turnDetection" in config:  # present-but-null is meaningful (off), unlike the other settings
        audio_input["turn_detection"] = _turn_detection(config["turnDetection"])
    _put(audio_input, "transcription", _transcription(config))
    # outputAudioTranscription has no OpenAI setting: GA sessions always stream the output transcript.
    audio_output: Event = {}
    _put(audio_output, "format", _audio_format(config, "outputAudioFormat"))
    _put(audio_output, "voice", _opt_str(config, "voice", "config."))
    return {key: part for key, part in (("input", audio_input), ("output", audio_output)) if part}


def _tools(config: Event) -> list[Event]:
    tools = config.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise RealtimeEventError(f"config.tools must be an array (got {_json_type(tools)})")
    out = []
    for i, tool in enumerate(tools):
        path = f"config.tools[{i}]."
        if not isinstance(tool, dict):
            raise RealtimeEventError(f"config.tools[{i}] must be an object (got {_json_type(tool)})")
        if tool.get("type") != "function":
            raise RealtimeEventError(f"{path}type must be 'function' (got {tool.get('type')!r})")
        openai_tool: Event = {"type": "function", "name": _req_str(tool, "name", path)}
        _put(openai_tool, "description", _opt_str(tool, "description", path))
        openai_tool["parameters"] = _req_obj(tool, "parameters", path)
        out.append(openai_tool)
    return out


def _provider_options(config: Event, provider: str) -> Event | None:
    options = _opt_obj(config, "providerOptions", "config.")
    return None if options is None else _opt_obj(options, provider, "config.providerOptions.")


def build_session_config(config: Event, model_id: str) -> Event:
    """The OpenAI ``session`` object (conversation intent) for a normalized ``SessionConfig``."""
    if not isinstance(config, dict):
        raise RealtimeEventError(f"config must be an object (got {_json_type(config)})")
    session: Event = {"type": "realtime", "model": model_id}
    _put(session, "instructions", _opt_str(config, "instructions", "config."))
    _put(session, "output_modalities", _opt_modalities(config, "outputModalities", "config."))
    _put(session, "audio", _audio(config) or None)
    tools = _tools(config)
    if tools:
        session["tools"] = tools
        session["tool_choice"] = "auto"
    openai_options = _provider_options(config, "openai")
    if openai_options is not None:
        for fixed in ("type", "model"):
            if fixed in openai_options and openai_options[fixed] != session[fixed]:
                raise RealtimeEventError(
                    f"config.providerOptions.openai.{fixed} cannot change the session {fixed} "
                    f"{session[fixed]!r}: it is fixed by the connection"
                )
        session.update(openai_options)
    return session


def gateway_options(config: Event) -> Event:
    """``config.providerOptions.gateway`` (tags, user, byok …), which the gateway keeps to itself. Empty if absent."""
    if not isinstance(config, dict):
        raise RealtimeEventError(f"config must be an object (got {_json_type(config)})")
    return _provider_options(config, "gateway") or {}


# ----- OpenAI server event -> normalized server event ---------------------------------------------------------


def get_path(obj: Any, *path: str) -> Any:
    """``obj[p0][p1]…``, or None where a step is missing or not an object (like TypeScript's ``?.``)."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _first(*values: Any) -> Any:
    """The first value that is not None (TypeScript's ``a ?? b``)."""
    return next((v for v in values if v is not None), None)


# OpenAI usage field path -> normalized usage name. OpenAI's input_tokens already include the cached ones, and
# so do the normalized input buckets, so these are renames with no arithmetic.
_USAGE_FIELDS: Final = (
    ("inputTokens", ("input_tokens",)),
    ("outputTokens", ("output_tokens",)),
    ("cachedInputTokens", ("input_token_details", "cached_tokens")),
    ("inputTextTokens", ("input_token_details", "text_tokens")),
    ("inputAudioTokens", ("input_token_details", "audio_tokens")),
    ("outputTextTokens", ("output_token_details", "text_tokens")),
    ("outputAudioTokens", ("output_token_details", "audio_tokens")),
    ("cachedInputTextTokens", ("input_token_details", "cached_tokens_details", "text_tokens")),
    ("cachedInputAudioTokens", ("input_token_details", "cached_tokens_details", "audio_tokens")),
)


def _usage(usage: Any) -> Event | None:
    """Normalized usage from an OpenAI ``usage`` object: only the counts OpenAI reported; None if there are none."""
    if not isinstance(usage, dict):
        return None
    # Transcription models billed by the second report {type: 'duration', seconds} instead of tokens.
    if usage.get("type") == "duration":
        seconds = usage.get("seconds")
        return {"seconds": seconds} if _is_number(seconds) else None
    out: Event = {}
    for name, path in _USAGE_FIELDS:
        count = get_path(usage, *path)
        if _is_count(count):
            out[name] = count
    return out or None


def usage_from_response_done(event: Event) -> Event | None:
    """The normalized usage of an OpenAI ``response.done`` event (``response.usage``), or None when it has none."""
    return _usage(get_path(event, "response", "usage"))


# Beta (preview-model) names for events that GA renamed. Both dialects map to the same normalized event.
_BETA_NAMES: Final = {
    "conversation.item.created": "conversation.item.added",
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
}

# Events that are plain renames: OpenAI type -> (normalized type, ((normalized field, OpenAI field), …)).
_IN_RESPONSE: Final = (("responseId", "response_id"), ("itemId", "item_id"))
_RENAMED: Final[dict[str, tuple[str, tuple[tuple[str, str], ...]]]] = {
    "session.updated": ("session-updated", ()),
    "input_audio_buffer.speech_started": ("speech-started", (("itemId", "item_id"),)),
    "input_audio_buffer.speech_stopped": ("speech-stopped", (("itemId", "item_id"),)),
    "input_audio_buffer.committed": (
        "audio-committed",
        (("itemId", "item_id"), ("previousItemId", "previous_item_id")),
    ),
    "response.content_part.added": ("content-part-added", _IN_RESPONSE),
    "response.content_part.done": ("content-part-done", _IN_RESPONSE),
    "response.output_audio.delta": ("audio-delta", (*_IN_RESPONSE, ("delta", "delta"))),
    "response.output_audio.done": ("audio-done", _IN_RESPONSE),
    "response.output_audio_transcript.delta": ("audio-transcript-delta", (*_IN_RESPONSE, ("delta", "delta"))),
    "response.output_audio_transcript.done": ("audio-transcript-done", (*_IN_RESPONSE, ("transcript", "transcript"))),
    "response.output_text.delta": ("text-delta", (*_IN_RESPONSE, ("delta", "delta"))),
    "response.output_text.done": ("text-done", (*_IN_RESPONSE, ("text", "text"))),
    "response.function_call_arguments.delta": (
        "function-call-arguments-delta",
        (*_IN_RESPONSE, ("callId", "call_id"), ("delta", "delta")),
    ),
    "response.function_call_arguments.done": (
        "function-call-arguments-done",
        (*_IN_RESPONSE, ("callId", "call_id"), ("name", "name"), ("arguments", "arguments")),
    ),
}


def _session_created(event: Event) -> Event:
    return {"type": "session-created", "sessionId": get_path(event, "session", "id")}


def _conversation_item_added(event: Event) -> Event:
    item = event.get("item")
    return {
        "type": "conversation-item-added",
        "itemId": _first(get_path(item, "id"), event.get("item_id")),
        "item": item,
    }


def _input_transcription_completed(event: Event) -> Event:
    return {
        "type": "input-transcription-completed",
        "itemId": event.get("item_id"),
        "transcript": _first(event.get("transcript"), ""),
        "usage": _usage(event.get("usage")),
    }


def _response_id(event: Event) -> Any:
    # response.created/done carry the whole response object; the id is inside it.
    return _first(get_path(event, "response", "id"), event.get("response_id"))


def _response_created(event: Event) -> Event:
    return {"type": "response-created", "responseId": _response_id(event)}


def _response_done(event: Event) -> Event:
    return {
        "type": "response-done",
        "responseId": _response_id(event),
        "status": _first(get_path(event, "response", "status"), "completed"),
        "usage": usage_from_response_done(event),
    }


def _output_item(normalized_type: str) -> Callable[[Event], Event]:
    def convert(event: Event) -> Event:
        # Output-item events carry the item itself, not an item_id.
        item_id = _first(get_path(event, "item", "id"), event.get("item_id"))
        return {"type": normalized_type, "responseId": event.get("response_id"), "itemId": item_id}

    return convert


def _error(event: Event) -> Event:
    return {
        "type": "error",
        "message": _first(get_path(event, "error", "message"), event.get("message"), "Unknown error"),
        "code": _first(get_path(event, "error", "code"), event.get("code")),
        "clientEventId": get_path(event, "error", "event_id"),
    }


_CONVERTED: Final[dict[str, Callable[[Event], Event]]] = {
    "session.created": _session_created,
    "conversation.item.added": _conversation_item_added,
    "conversation.item.input_audio_transcription.completed": _input_transcription_completed,
    "response.created": _response_created,
    "response.done": _response_done,
    "response.output_item.added": _output_item("output-item-added"),
    "response.output_item.done": _output_item("output-item-done"),
    "error": _error,
}


def from_openai(event: Event) -> Event:
    """The normalized server event for an OpenAI server event, with the original object in ``raw``.

    Never raises: an event type we do not know becomes ``custom`` with ``rawType``, so new OpenAI events pass through.
    """
    if not isinstance(event, dict):
        return {"type": "custom", "raw": event}
    raw_type = event.get("type")
    kind = _BETA_NAMES.get(raw_type, raw_type) if isinstance(raw_type, str) else None
    if kind in _CONVERTED:
        out = _CONVERTED[kind](event)
    elif kind in _RENAMED:
        normalized_type, fields = _RENAMED[kind]
        out = {"type": normalized_type, **{name: event.get(openai_name) for name, openai_name in fields}}
    else:
        out = {"type": "custom", "rawType": raw_type if isinstance(raw_type, str) else None}
    normalized = {key: value for key, value in out.items() if value is not None}
    normalized["raw"] = event
    return normalized
