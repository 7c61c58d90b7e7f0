"""What the browser side of a realtime session speaks: a ``Dialect`` per client contract, one relay for both.

- ``GatewayDialect``: the AI SDK Gateway's normalized events (``session-update``, ``audio-delta`` …), translated with
  ``mapping`` both ways; ``response-done`` gets the ledger's ``generationId``.
- ``OpenAIDialect``: OpenAI's own realtime events, relayed untranslated both ways (``sidecar.realtime.openai``): the
  sidecar reads them only to price ``response.done`` and to check the budget before ``response.create``.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from ulid import ULID

from sidecar.identifiers import shown
from sidecar.ledger.record import Attribution, GenerationRecord

from .mapping import RealtimeEventError, from_openai, gateway_options, to_openai

log = logging.getLogger("sidecar.realtime")

Event = dict[str, Any]


class Dialect(Protocol):
    unredacted: frozenset[str]
    """Browser-bound event types sent without redaction: the model's own output deltas (audio, text, transcript,
    tool arguments), by far the most frequent frames. The model never sees the provider key, so they cannot hold it."""
    creates_response: str
    """The client event type that starts a response (the budget is checked before it goes upstream)."""

    def up(self, event: Event, model_id: str) -> Event | None:
        """The OpenAI event for one browser event; ``None``: nothing to send. ``RealtimeEventError``: refused."""

    def down(self, event: Event) -> Event | None:
        """The browser event for one OpenAI event; ``None``: the upstream's frame as it came."""

    def error(self, message: str, code: str) -> Event:
        """The sidecar's own error event, in this dialect."""

    def generation_done(self, browser_event: Event | None, record: GenerationRecord) -> None:
        """A ``response.done`` was recorded as ``record``; ``browser_event`` is what the browser gets for it."""

    def attribution(self, event: Event, current: Attribution, configured: bool) -> Attribution | None:
        """The session's new attribution if ``event`` (from the browser) sets one."""


class GatewayDialect:
    unredacted = frozenset({"audio-delta", "text-delta", "audio-transcript-delta", "function-call-arguments-delta"})
    creates_response = "response-create"

    def up(self, event: Event, model_id: str) -> Event | None:
        return to_openai(event, model_id)

    def down(self, event: Event) -> Event | None:
        return from_openai(event)

    def error(self, message: str, code: str) -> Event:
        return {"type": "error", "message": message, "code": code, "raw": None}

    def generation_done(self, browser_event: Event | None, record: GenerationRecord) -> None:
        if browser_event is not None:
            browser_event["generationId"] = record.id

    def attribution(self, event: Event, current: Attribution, configured: bool) -> Attribution | None:
        # The gateway options of the first session-update attribute the whole session (later ones may refine it).
        if event.get("type") != "session-update" or not isinstance(event.get("config"), dict):
            return None
        options = gateway_options(event["config"])
        if options or not configured:
            return Attribution.from_gateway_options(options, "config.providerOptions.gateway")
        return current


class OpenAIDialect:
    unredacted = frozenset(
        {
            "response.output_audio.delta",
            "response.output_text.delta",
            "response.output_audio_transcript.delta",
            "response.function_call_arguments.delta",
            "response.audio.delta",  # the beta names, which OpenAI still sends to beta clients
            "response.text.delta",
            "response.audio_transcript.delta",
        }
    )
    creates_response = "response.create"

    def up(self, event: Event, model_id: str) -> Event | None:
        kind = event.get("type")
        if not isinstance(kind, str) or not kind:
            raise RealtimeEventError("a client event must be a JSON object with a string `type`")
        session = event.get("session")
        if kind == "session.update" and isinstance(session, dict) and "model" in session:
            # The socket was opened (and is priced, and its secret bound) for one model; a client's default model
            # (@openai/agents-realtime sends one in every update) must not switch it.
            named = str(session["model"]).removeprefix("openai/")
            if named != model_id:
                log.info(
                    "realtime: a session.update naming model %s on a %s socket; the model is kept",
                    shown(named),
                    model_id,
                )
            return {**event, "session": {k: v for k, v in session.items() if k != "model"}}
        return event

    def down(self, event: Event) -> Event | None:
        return None

    def error(self, message: str, code: str) -> Event:
        """OpenAI's ``error`` server event, so an OpenAI client reports the sidecar's errors as it reports OpenAI's."""
        return {
            "type": "error",
            "event_id": f"event_{ULID()}",
            "error": {"type": "invalid_request_error", "code": code, "message": message, "param": None},
        }

    def generation_done(self, browser_event: Event | None, record: GenerationRecord) -> None:
        return None  # untranslated: the generation id is in the ledger (upstream_response_id), not in the event

    def attribution(self, event: Event, current: Attribution, configured: bool) -> Attribution | None:
        return None
