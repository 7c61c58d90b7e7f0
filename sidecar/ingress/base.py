"""The seam between a client's wire format and the generation machinery: one ``IngressFormat`` per format.

A format is four pieces of data and code, mirroring ``providers/`` (one module per upstream wire API):

- ``decode``: the request body and headers → ``IngressRequest`` (the pi ``Context`` and options the adapters take), with
  ``BadRequest`` messages that name the field to fix;
- ``encoder``: a ``sidecar.stream.Encoder`` writing the generation's block lifecycle as that format's event stream;
- ``render``: the final ``AssistantMessage`` → that format's non-streaming body;
- ``error_body``: a status, the sidecar's error type and a message → that format's error body.

``wire_api`` names the upstream wire API of the same family (Chat Completions → ``openai-completions``): a request
for a model on that API is relayed untranslated (``sidecar.relay``). ``preferred_provider`` resolves a bare model
id (``claude-sonnet-4-5`` on ``/v1/messages`` → ``anthropic``) before the registry's catalog-order rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from client.types import AssistantMessage, Context
from sidecar.config import Limits
from sidecar.ledger.record import Attribution
from sidecar.models import ModelSpec
from sidecar.stream import Encoder


@dataclass(frozen=True, slots=True)
class IngressRequest:
    model_id: str
    """As the client named it (``provider/id`` or a bare id), checked by ``check_model_id``."""
    context: Context
    options: dict[str, Any]
    """pi options (camelCase), as ``/v1/pi/stream`` takes them: ``maxTokens``, ``reasoning``, ``toolChoice`` …"""
    stream: bool
    session_id: str
    body: Mapping[str, Any] = field(default_factory=dict)
    """The decoded request body as the client sent it: the relay forwards it, encoders read their switches
    (``stream_options.include_usage`` …) from it."""
    relay_only: str | None = None
    """Why this request cannot be translated (a ``BadRequest`` message naming the field): it names what only the
    upstream of the format's own family has (an OpenAI hosted tool, a response OpenAI stored). ``relay.plan`` raises
    it when the model is of another family; decode runs before the model is resolved, so it cannot."""
    attribution: Attribution = Attribution()
    """The end user and tags the client named (OpenAI ``user``, Anthropic ``metadata.user_id``), for the ledger."""
    fallbacks: tuple[str, ...] = ()
    """Models to serve the request when ``model_id`` fails before its first byte, in order (``sidecar.failover``);
    empty: the model's own ``fallbacks`` from the config."""


@dataclass(frozen=True, slots=True)
class IngressFormat:
    name: str
    """Shown in logs and in the relay's errors: ``openai-chat``, ``anthropic-messages`` …"""
    decode: Callable[[bytes, Mapping[str, str], Limits], IngressRequest]
    """``(body, request headers, limits)``: headers carry what some formats keep out of the body (the AI SDK
    Gateway's ``ai-language-model-id``)."""
    encoder: Callable[[IngressRequest, ModelSpec, str], Encoder]
    """``(request, model, generation_id)`` → a fresh encoder for one streamed generation."""
    render: Callable[[IngressRequest, AssistantMessage, str], Any]
    """``(request, final message, generation_id)`` → the non-streaming JSON body."""
    error_body: Callable[[int, str, str], Any]
    """``(status, sidecar error type, message)`` → the format's JSON error body."""
    wire_api: str | None = None
    preferred_provider: str | None = None
    prime: bool = True
    """Wait for the upstream's first event before answering, so refusals keep their HTTP status (every format but
    pi-native, whose clients expect the 200 at once and errors in-band)."""
