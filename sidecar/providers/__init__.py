"""The adapter table: one module per upstream wire API, all with the signature ``stream(call, client)``.

Adding a provider that speaks an existing wire API needs only catalog data (``catalog.toml`` or the config file);
adding a wire API means one module here and one row in ``ADAPTERS``.
"""

from __future__ import annotations

from sidecar.providers import (
    anthropic_messages,
    bedrock_converse_stream,
    echo,
    google_generative_ai,
    google_vertex,
    openai_completions,
    openai_responses,
)
from sidecar.providers.base import StreamFn

ADAPTERS: dict[str, StreamFn] = {
    "anthropic-messages": anthropic_messages.stream,
    "openai-completions": openai_completions.stream,
    "openai-responses": openai_responses.stream,
    "google-generative-ai": google_generative_ai.stream,
    "google-vertex": google_vertex.stream,
    "bedrock-converse-stream": bedrock_converse_stream.stream,
    "echo": echo.stream,
}
