"""Turning ``stream()``'s arguments into one HTTP request: URL, headers, body and the client-side timeouts.

Everything here runs synchronously inside ``stream()``, so configuration mistakes (no base URL, options that
are not JSON-serializable) surface at the call, not at the first event.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from . import _env
from .errors import ConfigurationError

STREAM_PATH = "/v1/pi/stream"
USER_AGENT = "pi-sidecar-client/0.1"

NON_WIRE_KEYS: frozenset[str] = frozenset(
    {
        # the reference list (pi-native-client.ts) plus upstream main's onBeforeRequest
        "signal",
        "apiKey",
        "fetch",
        "onPayload",
        "onResponse",
        "onSseEvent",
        "execHandlers",
        "cursorExecHandlers",
        "cursorOnToolResult",
        "providerSessionState",
        "onBeforeRequest",
        # their Python spellings and equivalents: abort handles, the bearer, the HTTP client, callbacks
        "abort",
        "abort_event",
        "abortEvent",
        "abortSignal",
        "abort_signal",
        "cancel",
        "cancel_event",
        "api_key",
        "token",
        "http_client",
        "httpClient",
        "on_payload",
        "on_response",
        "on_sse_event",
        "on_before_request",
        "exec_handlers",
        "cursor_exec_handlers",
        "cursor_on_tool_result",
        "provider_session_state",
    }
)
"""Option keys that never cross the wire. Any callable value is dropped too, whatever its key."""

AbortHandle = asyncio.Event | threading.Event


def wire_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options as sent: without ``NON_WIRE_KEYS``, callables and ``None`` values, with a ``sessionId``."""
    wire: dict[str, Any] = {}
    if options:
        for key, value in options.items():
            if value is None or key in NON_WIRE_KEYS or callable(value):
                continue
            wire[key] = value
    session_id = wire.get("sessionId")
    if not isinstance(session_id, str) or not session_id.strip():
        wire["sessionId"] = str(uuid.uuid4())
    return wire


@dataclass(frozen=True, slots=True)
class ModelRef:
    model_id: str
    """``provider/id`` as sent in ``modelId``."""
    provider: str
    id: str
    api: str
    """Used only in messages the client synthesizes, until the stream's ``start`` tells the real one."""
    base_url: str | None
    headers: Mapping[str, str] | None


def parse_model(model: str | Mapping[str, Any]) -> ModelRef:
    """``"provider/id"`` (a bare id is passed through for the gateway to resolve), or a pi ``Model``-like dict
    with ``provider`` and ``id`` (and optionally ``api``, ``baseUrl``, ``headers``)."""
    if isinstance(model, str):
        model_id = model.strip()
        if not model_id:
            raise ConfigurationError("model must be a non-empty 'provider/id' string")
        provider, sep, bare = model_id.partition("/")
        if not sep:
            provider, bare = "", model_id
        return ModelRef(model_id, provider, bare, "pi-native", None, None)
    if isinstance(model, Mapping):
        provider_field = model.get("provider")
        id_field = model.get("id")
        if not isinstance(provider_field, str) or not provider_field or not isinstance(id_field, str) or not id_field:
            raise ConfigurationError("a model dict needs non-empty string 'provider' and 'id' fields")
        api = model.get("api")
        base_url = model.get("baseUrl")
        headers = model.get("headers")
        return ModelRef(
            f"{provider_field}/{id_field}",
            provider_field,
            id_field,
            api if isinstance(api, str) and api else "pi-native",
            base_url if isinstance(base_url, str) and base_url.strip() else None,
            headers if isinstance(headers, Mapping) else None,
        )
    raise ConfigurationError(f"model must be a 'provider/id' string or a dict, not {type(model).__name__}")


def resolve_base_url(base_url: str | None, model: ModelRef) -> str:
    """The gateway root without trailing slashes (a path prefix is kept): argument, model, then ``SIDECAR_URL``."""
    for candidate in (base_url, model.base_url, _env.sidecar_url()):
        if candidate is not None and candidate.strip():
            root = candidate.strip().rstrip("/")
            try:
                url = httpx.URL(root)
            except httpx.InvalidURL as exc:
                raise ConfigurationError(f"invalid auth-gateway URL {root!r}: {exc}") from exc
            if url.scheme not in ("http", "https") or not url.host:
                raise ConfigurationError(f"invalid auth-gateway URL {root!r}: expected http(s)://host[:port][/prefix]")
            return root
    raise ConfigurationError(
        f"no auth-gateway URL for model {model.model_id}: pass base_url=, set the model's baseUrl or SIDECAR_URL"
    )


def _timeout_option(options: Mapping[str, Any] | None, key: str) -> float | None:
    """A numeric option in ms (``None`` when absent or not a number)."""
    if not options:
        return None
    value = options.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def resolve_timeouts(options: Mapping[str, Any] | None) -> tuple[float | None, float | None]:
    """``(first_event_s, idle_s)``; ``None`` disables. Options win over the environment, as in the reference:
    ``idle = streamIdleTimeoutMs ?? env``, ``first = streamFirstEventTimeoutMs ?? env-or-max(300 s, idle)``."""
    idle_ms = _timeout_option(options, "streamIdleTimeoutMs")
    if idle_ms is None:
        env_idle = _env.stream_idle_timeout_ms()
        idle_ms = float(env_idle) if env_idle is not None else None
    first_ms = _timeout_option(options, "streamFirstEventTimeoutMs")
    if first_ms is None:
        env_first = _env.stream_first_event_timeout_ms(int(idle_ms) if idle_ms is not None and idle_ms > 0 else None)
        first_ms = float(env_first) if env_first is not None else None
    first_s = first_ms / 1000 if first_ms is not None and first_ms > 0 else None
    idle_s = idle_ms / 1000 if idle_ms is not None and idle_ms > 0 else None
    return first_s, idle_s


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    url: str
    base_url: str
    headers: httpx.Headers
    body: bytes
    model: ModelRef
    first_event_timeout: float | None
    idle_timeout: float | None
    abort: AbortHandle | None


def prepare(
    model: str | Mapping[str, Any],
    context: Mapping[str, Any],
    options: Mapping[str, Any] | None,
    *,
    base_url: str | None,
    token: str | None,
    headers: Mapping[str, str] | None,
    abort: AbortHandle | None,
) -> PreparedRequest:
    ref = parse_model(model)
    root = resolve_base_url(base_url, ref)
    if token is None and options:
        for key in ("apiKey", "api_key"):
            candidate = options.get(key)
            if isinstance(candidate, str) and candidate:
                token = candidate
                break
    if token is None:
        token = _env.sidecar_token()
    request_headers = httpx.Headers(
        {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "Accept-Encoding": "identity",
            "User-Agent": USER_AGENT,
        }
    )
    for extra in (ref.headers, headers):
        if extra:
            request_headers.update(extra)  # case-insensitive: a caller's header replaces ours
    if token and "authorization" not in request_headers:
        request_headers["Authorization"] = f"Bearer {token}"
    if abort is None and options:
        signal = options.get("signal")
        if isinstance(signal, asyncio.Event | threading.Event):
            abort = signal
    body = orjson.dumps(
        {"modelId": ref.model_id, "context": context, "options": wire_options(options), "stream": True},
        option=orjson.OPT_NON_STR_KEYS,
    )
    first_s, idle_s = resolve_timeouts(options)
    return PreparedRequest(root + STREAM_PATH, root, request_headers, body, ref, first_s, idle_s, abort)
