"""The pi-native protocol (``POST /v1/pi/stream``, protocol §2–§3) as an ingress format: the sidecar's own.

Its errors before the stream are ``{"error": {"type", "message"}}`` (``{"error": "unauthorized"}`` for a bad
bearer, as the reference gateway sends it); once the 200 is sent every failure is an in-band ``error`` event, so the
response is never primed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from client.types import AssistantMessage
from sidecar.config import Limits
from sidecar.ingress.base import IngressFormat, IngressRequest
from sidecar.ledger.record import Attribution
from sidecar.models import ModelSpec
from sidecar.request import parse_request
from sidecar.stream import Encoder, PiEncoder


def decode(body: bytes, headers: Mapping[str, str], limits: Limits) -> IngressRequest:
    pi = parse_request(body, limits)
    return IngressRequest(
        model_id=pi.model_id,
        context=pi.context,
        options=pi.options,
        stream=pi.stream,
        session_id=pi.session_id,
        attribution=Attribution.from_pi_options(pi.options),
        fallbacks=tuple(pi.options.get("models", ())),
    )


def encoder(request: IngressRequest, model: ModelSpec, generation_id: str) -> Encoder:
    return PiEncoder()


def render(request: IngressRequest, message: AssistantMessage, generation_id: str) -> Any:
    return {"message": message}


def error_body(status: int, type_: str, message: str) -> Any:
    if type_ == "unauthorized":
        return {"error": "unauthorized"}  # a string, as the reference gateway sends it
    return {"error": {"type": type_, "message": message}}


FORMAT = IngressFormat(name="pi", decode=decode, encoder=encoder, render=render, error_body=error_body, prime=False)
