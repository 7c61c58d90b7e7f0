"""Gemini on Vertex AI (``google-vertex``): the Gemini API's request and stream (``google_generative_ai``) at Vertex's
URL, authenticated with an OAuth access token from Google's application default credentials (``sidecar.cloud.google``).

URL: ``{base_url}/projects/{project}/locations/{location}/publishers/google/models/{model}:streamGenerateContent
?alt=sse``, from the model's provider data (``[providers.vertex]`` in ``catalog.toml``, overridable in the config):

- ``project``: ``compat.project``, else the environment's (``GOOGLE_CLOUD_PROJECT``, carried in the credential value by
  the resolver), else the service-account key's ``project_id`` or the metadata server's project;
- ``location``: ``compat.location``, else ``GOOGLE_CLOUD_LOCATION`` (same way), else ``compat.default_location``;
- ``base_url``: ``{location}`` in it is filled in (``https://{location}-aiplatform.googleapis.com/v1``), except for
  the locations ``compat.location_base_urls`` names (``global`` is ``aiplatform.googleapis.com``; the ``us``/``eu``
  multi-regions have hosts of their own). A base URL without ``{location}`` (a proxy, a test server) is used as is.

Headers: ``authorization: Bearer <access token>`` (never the key or the credential document),
``x-goog-user-project`` for an authorized user's quota project, and pi's ``serviceTier: "priority"`` as Vertex's
``x-vertex-ai-llm-shared-request-type`` header (Vertex ignores the body field). A 401 before the stream starts means
the token was revoked or expired early: it is dropped, a new one fetched and the request sent once more.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import quote

from sidecar.cloud.google import GoogleAuthError, TokenSource, token_source
from sidecar.errors import ConfigError, UpstreamStatusError
from sidecar.providers import google_generative_ai as gemini
from sidecar.providers.base import Delta, UpstreamCall
from sidecar.upstream import Upstream

_LOCATION = re.compile(r"[a-z][a-z0-9-]{0,62}")
"""A Google Cloud location (``us-central1``, ``europe-west4``, ``global``): it becomes part of a host name."""
_PRIORITY_HEADER = "x-vertex-ai-llm-shared-request-type"


async def stream(call: UpstreamCall, client: Upstream) -> AsyncIterator[Delta]:
    """Send ``call`` to Vertex AI and yield its stream as deltas."""
    provider = call.model.provider
    if not call.api_key:
        raise GoogleAuthError(f"{provider}: no Google credential was resolved", 401)
    source = token_source(call.api_key, provider)
    token = await source.token(client.http, provider)
    url = endpoint(call, source)
    started = False
    try:
        async for delta in _attempt(call, client, url, source, token):
            started = True
            yield delta
    except UpstreamStatusError as exc:
        if exc.status != 401 or started:
            raise
        source.invalidate(token)
        token = await source.token(client.http, provider)
        async for delta in _attempt(call, client, url, source, token):
            yield delta


def _attempt(call: UpstreamCall, client: Upstream, url: str, source: TokenSource, token: str) -> AsyncIterator[Delta]:
    # The token is the credential this request carries: open_stream and the parser redact it from upstream errors.
    sent = replace(call, api_key=token)
    return gemini.stream_request(
        sent, client, url, build_headers(sent, source), secrets=source.secrets(), text_signatures=True
    )


def build_headers(call: UpstreamCall, source: TokenSource) -> dict[str, str]:
    """``call.api_key`` is the access token here."""
    headers = gemini.build_headers(replace(call, api_key=None))
    if call.options.get("serviceTier") == "priority":
        headers[_PRIORITY_HEADER] = "priority"
    if source.quota_project:
        headers["x-goog-user-project"] = source.quota_project
    headers["authorization"] = f"Bearer {call.api_key}"  # last: a pass-through header must not replace it
    return headers


def endpoint(call: UpstreamCall, source: TokenSource) -> str:
    """The ``streamGenerateContent`` URL of ``call``'s model (see the module docstring)."""
    model, compat = call.model, call.model.compat
    project = _text(compat.get("project")) or source.project
    if not project:
        raise ConfigError(
            f"{model.provider}: no Google Cloud project for Vertex AI: set GOOGLE_CLOUD_PROJECT, or "
            f'[providers.{model.provider}] compat = {{ project = "…" }} in the config'
        )
    location = (
        _text(compat.get("location")) or source.credential.location or _text(compat.get("default_location")) or "global"
    )
    if not _LOCATION.fullmatch(location):
        raise ConfigError(
            f"{model.provider}: {location[:64]!r} is not a Google Cloud location (like us-central1 or global): fix "
            "GOOGLE_CLOUD_LOCATION or compat.location"
        )
    base = model.base_url
    if "{location}" in base:
        hosts = compat.get("location_base_urls")
        special = hosts.get(location) if isinstance(hosts, Mapping) else None
        base = special if isinstance(special, str) and special else base.replace("{location}", location)
    model_path = quote(model.id, safe="")  # one path segment, whatever the requested id holds
    return (
        f"{base.rstrip('/')}/projects/{quote(project, safe=':')}/locations/{location}/publishers/google/models/"
        f"{model_path}:streamGenerateContent?alt=sse"
    )


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None
