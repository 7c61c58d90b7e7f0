"""Credential health: does each provider's credential work right now? (``GET /v1/credentials/check``,
``sidecar credentials check``.)

Each provider of the catalog is probed once, all at the same time, each within ``CHECK_TIMEOUT_SECONDS``, with the
cheapest call its key authenticates: a models list of one row, with the headers its adapter sends (the adapters'
own ``build_headers``, so Azure's ``api-key`` or Gemini's ``x-goog-api-key`` are not restated here), at the URL its
adapter would use (the configured base URL; ``providers.base.endpoint`` for Azure's path). The key goes only there;
redirects are not followed, and the response body is never read, so a provider that echoes the key cannot pass it on.

- ``anthropic-messages``: ``GET {base}/v1/models?limit=1``;
- ``openai-completions`` / ``openai-responses``: ``GET {base}/models``, or ``compat.credential_check_path`` for a
  provider whose models list answers without a key (OpenRouter's ``/key`` is one that needs it);
- ``google-generative-ai``: ``GET {base}/models?pageSize=1``;
- the cloud kinds (``google`` for Vertex, ``aws`` for Bedrock): getting the credential is the check. Vertex's access
  token is fetched (the token exchange or the metadata server), a Bedrock web identity is exchanged with STS; static
  AWS keys or a Bedrock API key are reported ``ok`` once they parse, with a reason saying that nothing was sent.
  Bedrock's runtime host has no read-only call, and its control-plane host is not the provider's base URL, which is
  the only place a key may go.

A status is ``ok`` (2xx), ``invalid`` (401/403, or a cloud credential refused or unusable), ``unreachable`` (no
connection, a timeout, any other status, or a configuration that keeps the call from being made, such as Azure's
placeholder endpoint), ``missing`` (no credential: the reason says where to put one) or ``not needed`` (a local
server such as Ollama: not probed). Reasons name a status, an exception class or our own message: never a key,
a response body or a URL (only the probe's path, without its query, is reported).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import httpx2

from .cloud import aws, google, secret_values
from .config import Settings
from .credentials import Credential, CredentialStore, missing_credential_message
from .errors import ConfigError, SidecarError, UpstreamError, redact
from .identifiers import escape_controls
from .models import ProviderSpec, model_spec
from .providers import anthropic_messages, google_generative_ai, openai_completions, openai_responses
from .providers.base import UpstreamCall, endpoint
from .upstream import Upstream

CHECK_TIMEOUT_SECONDS = 5.0
"""Per provider; the probes run at the same time, so the whole check takes about this long at most."""
_MAX_REASON = 300

Status = Literal["ok", "invalid", "unreachable", "missing", "not needed"]
FAILED: frozenset[Status] = frozenset({"invalid", "unreachable"})
"""A credential that is there but does not work; ``sidecar credentials check`` exits 1 when any provider has one."""


@dataclass(frozen=True, slots=True)
class CredentialStatus:
    provider: str
    kind: str
    """``api_key``, or the cloud credential kind (``google``, ``aws``)."""
    status: Status
    location: str | None
    """``Credential.source`` (``env:OPENAI_API_KEY``, ``config:file``, ``secrets-dir`` …): where, never what."""
    reason: str
    probe: str | None = None
    """The path of the URL probed (``/v1/models``): no host, no query."""
    latency_ms: float | None = None

    @property
    def ok(self) -> bool | None:
        """The reference gateway's tri-state: ``None`` when the check could not tell (unreachable, not needed)."""
        if self.status == "ok":
            return True
        return False if self.status in ("invalid", "missing") else None


async def check_credentials(
    settings: Settings, store: CredentialStore, upstream: Upstream, *, probe_seconds: float = CHECK_TIMEOUT_SECONDS
) -> list[CredentialStatus]:
    """One status per provider of ``settings.catalog``, in catalog order; one per key for a key pool."""
    checks = [
        _check(settings, store, upstream, provider, credential, probe_seconds)
        for provider in settings.catalog.providers.values()
        for credential in _credentials(store, provider)
    ]
    return list(await asyncio.gather(*checks))


def _credentials(store: CredentialStore, provider: ProviderSpec) -> list[Credential | ConfigError | None]:
    """What to check for ``provider``: each of its keys, or the reason it has none (``None``: it has none)."""
    try:
        found: list[Credential | ConfigError | None] = list(store.resolve_all(provider))
    except ConfigError as exc:  # a keyring: location without a keyring, an unknown credential kind
        return [exc]
    return found or [None]


async def _check(
    settings: Settings,
    store: CredentialStore,
    upstream: Upstream,
    provider: ProviderSpec,
    credential: Credential | ConfigError | None,
    probe_seconds: float,
) -> CredentialStatus:
    kind = "api_key" if provider.credential == "key" else provider.credential
    if isinstance(credential, ConfigError):
        return CredentialStatus(provider.id, kind, "missing", None, credential.message)
    if not provider.needs_credential:
        where = credential.source if credential else None
        return CredentialStatus(provider.id, kind, "not needed", where, "needs no credential; not probed")
    if credential is None:
        why = missing_credential_message(provider, store.why_missing(provider))
        return CredentialStatus(provider.id, kind, "missing", None, why)
    started = time.monotonic()
    probe: str | None = None
    try:
        async with asyncio.timeout(probe_seconds):
            if kind == "api_key":
                url, headers = _key_request(settings, provider, credential)
                probe = urlsplit(url).path
                state, reason = await _get(upstream, url, headers)
            else:
                state, reason = await _probe_cloud(upstream, provider, credential)
    except TimeoutError:
        state, reason = "unreachable", f"timed out after {probe_seconds:g} s"
    except SidecarError as exc:  # our own messages, which never hold a key; redacted once more all the same
        state = "invalid" if exc.status in (400, 401, 403) else "unreachable"
        reason = _safe(exc.message, provider, credential)
    latency = round((time.monotonic() - started) * 1000, 1)
    return CredentialStatus(provider.id, kind, state, credential.source, reason, probe, latency)


# ----- API keys: one authenticated GET ----------------------------------------------------------------------------


def _probe_call(settings: Settings, provider: ProviderSpec, credential: Credential) -> UpstreamCall:
    """The call an adapter would make for ``provider``'s default model, so its own header and URL logic apply."""
    base_url = settings.base_urls.get(provider.id, provider.base_url)
    model = model_spec(provider, provider.default_model or "", None, base_url)
    return UpstreamCall(model, {"messages": []}, {}, credential.value, "credential-check")


def _anthropic(call: UpstreamCall) -> tuple[str, dict[str, str]]:
    return f"{call.model.base_url.rstrip('/')}/v1/models?limit=1", anthropic_messages.build_headers(call, False)


def _openai(build: Callable[[UpstreamCall], dict[str, str]]) -> Callable[[UpstreamCall], tuple[str, dict[str, str]]]:
    def probe(call: UpstreamCall) -> tuple[str, dict[str, str]]:
        return endpoint(call, str(call.model.compat.get("credential_check_path") or "/models")), build(call)

    return probe


def _gemini(call: UpstreamCall) -> tuple[str, dict[str, str]]:
    return f"{call.model.base_url.rstrip('/')}/models?pageSize=1", google_generative_ai.build_headers(call)


_PROBES: dict[str, Callable[[UpstreamCall], tuple[str, dict[str, str]]]] = {
    "anthropic-messages": _anthropic,
    "openai-completions": _openai(openai_completions.build_headers),
    "openai-responses": _openai(openai_responses.build_headers),
    "google-generative-ai": _gemini,
}
"""Per wire API: the probe's URL and headers (a GET of the cheapest list the key unlocks)."""


def _key_request(settings: Settings, provider: ProviderSpec, credential: Credential) -> tuple[str, dict[str, str]]:
    build = _PROBES.get(provider.api)
    if build is None:
        raise ConfigError(f"{provider.id}: no way to check a key of API {provider.api!r} without a model call")
    url, headers = build(_probe_call(settings, provider, credential))
    headers.pop("content-type", None)  # the adapters' headers are for a JSON POST; this is a GET of JSON
    headers["accept"] = "application/json"
    return url, headers


async def _get(upstream: Upstream, url: str, headers: dict[str, str]) -> tuple[Status, str]:
    try:
        async with upstream.http.stream("GET", url, headers=headers) as response:
            code = response.status_code  # the body is never read: it may echo the key
    except httpx2.HTTPError as exc:
        return "unreachable", _transport_reason(exc)
    except ValueError as exc:  # a key no header can carry: its message quotes the character
        return "unreachable", f"the request could not be sent ({type(exc).__name__})"
    if 200 <= code < 300:
        return "ok", f"HTTP {code}"
    if code in (401, 403):
        return "invalid", f"HTTP {code}: the provider refused the credential"
    return "unreachable", f"HTTP {code}"


def _transport_reason(exc: httpx2.HTTPError) -> str:
    """What went wrong, from the exception chain's types: their messages may hold the URL."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < 8:
        chain.append(cause)
        cause = cause.__cause__ or getattr(cause, "os_error", None)
    for cause in chain:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "host name not found (DNS)"
        if isinstance(cause, ssl.SSLError):
            return "TLS handshake failed"
    if isinstance(exc, httpx2.TimeoutException):
        return "timed out"
    return f"connection failed ({type(exc).__name__})"


# ----- cloud credentials: getting one is the check ----------------------------------------------------------------


async def _probe_cloud(upstream: Upstream, provider: ProviderSpec, credential: Credential) -> tuple[Status, str]:
    if provider.credential == "google":
        await google.token_source(credential.value, provider.id).token(upstream.http, provider.id)
        return "ok", "an access token was obtained; no Vertex AI call is made"
    if provider.credential == "aws":
        parsed = aws.parse(credential.value)
        if parsed.web_identity is not None:
            await aws.web_identity_keys(parsed.web_identity, upstream.http, provider.id)
            return "ok", "AWS STS gave temporary keys for the web identity; no Bedrock call is made"
        what = "a Bedrock API key" if parsed.bearer is not None else "AWS keys"
        return "ok", f"{what} found; not verified: no Bedrock call is made"
    raise UpstreamError(f"{provider.id}: no way to check a {provider.credential!r} credential")


def _safe(message: str, provider: ProviderSpec, credential: Credential) -> str:
    secrets = tuple(secret_values(provider.credential, credential.value))
    return escape_controls(redact(message, secrets))[:_MAX_REASON]
