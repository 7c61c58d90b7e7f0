"""The only module of the client that reads the environment.

Variables (all optional):

- ``SIDECAR_URL``: the gateway root, used when neither ``base_url=`` nor the model's ``baseUrl`` is given.
- ``SIDECAR_TOKEN``: the gateway bearer, used when neither ``token=`` nor ``options["apiKey"]`` is given.
- ``PI_STREAM_IDLE_TIMEOUT_MS`` (alias ``PI_OPENAI_STREAM_IDLE_TIMEOUT_MS``): longest silence between two events.
- ``PI_STREAM_FIRST_EVENT_TIMEOUT_MS``: longest wait for the first event that is not ``start``.

Timeout values are parsed like the reference (``idle-iterator.ts``): a number of milliseconds, truncated;
``0`` or a negative number disables the watchdog; a value that is not a number falls back to the default
(300 000 ms). Like JavaScript's ``Number("")``, an empty value counts as ``0`` and so disables it.
"""

from __future__ import annotations

import math
import os

DEFAULT_STREAM_IDLE_TIMEOUT_MS = 300_000
DEFAULT_STREAM_FIRST_EVENT_TIMEOUT_MS = 300_000


def _non_empty(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def sidecar_url() -> str | None:
    """``SIDECAR_URL``, or ``None`` when unset or blank."""
    return _non_empty("SIDECAR_URL")


def sidecar_token() -> str | None:
    """``SIDECAR_TOKEN``, or ``None`` when unset or blank."""
    return _non_empty("SIDECAR_TOKEN")


def normalize_timeout_ms(value: str | None, fallback: int) -> int | None:
    """A timeout env value in ms: ``None`` means disabled (``<= 0``), unparsable values give ``fallback``."""
    if value is None:
        return fallback
    text = value.strip()
    if not text:
        return None  # JavaScript: Number("") === 0, which disables the watchdog
    try:
        parsed = float(text)
    except ValueError:
        return fallback
    if not math.isfinite(parsed):
        return fallback
    if parsed <= 0:
        return None
    return int(parsed)


def stream_idle_timeout_ms(fallback_ms: int = DEFAULT_STREAM_IDLE_TIMEOUT_MS) -> int | None:
    """Idle timeout from ``PI_STREAM_IDLE_TIMEOUT_MS`` (else ``PI_OPENAI_STREAM_IDLE_TIMEOUT_MS``); ``None`` = off."""
    raw = os.environ.get("PI_STREAM_IDLE_TIMEOUT_MS")
    if raw is None:
        raw = os.environ.get("PI_OPENAI_STREAM_IDLE_TIMEOUT_MS")
    return normalize_timeout_ms(raw, fallback_ms)


def stream_first_event_timeout_ms(
    idle_timeout_ms: int | None, fallback_ms: int = DEFAULT_STREAM_FIRST_EVENT_TIMEOUT_MS
) -> int | None:
    """First-event timeout from ``PI_STREAM_FIRST_EVENT_TIMEOUT_MS``; default ``max(300 000, idle)``."""
    fallback = fallback_ms if idle_timeout_ms is None else max(fallback_ms, idle_timeout_ms)
    return normalize_timeout_ms(os.environ.get("PI_STREAM_FIRST_EVENT_TIMEOUT_MS"), fallback)
