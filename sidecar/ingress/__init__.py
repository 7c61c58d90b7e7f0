"""The ingress table: one module per client wire format, each exposing ``FORMAT`` (``sidecar.ingress.base``).

Adding a format means one module here, one row in ``FORMATS`` and its paths in ``sidecar.model_routes.ROUTES``.
"""

from __future__ import annotations

from sidecar.ingress import ai_gateway, anthropic_messages, openai_chat, openai_responses, pi
from sidecar.ingress.base import IngressFormat

FORMATS: dict[str, IngressFormat] = {
    "pi": pi.FORMAT,
    "ai-gateway": ai_gateway.FORMAT,
    "openai-chat": openai_chat.FORMAT,
    "openai-responses": openai_responses.FORMAT,
    "anthropic-messages": anthropic_messages.FORMAT,
}
