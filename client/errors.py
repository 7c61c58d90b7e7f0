"""The client's exceptions.

Two kinds of failure, two channels:

- **Before the stream starts** the failure is raised: a bad configuration (:class:`ConfigurationError`, raised
  by ``stream()`` itself), a gateway that cannot be reached (:class:`GatewayConnectionError`) or one that answers
  non-2xx or with an empty body (:class:`GatewayError`). These are raised from the first ``__anext__`` /
  ``result()`` of the stream.
- **Once the gateway has accepted the request** (or the request is under way), nothing is raised: every failure
  ends the stream with exactly one terminal ``error`` event carrying a full ``AssistantMessage`` (``stopReason``
  ``"error"`` or ``"aborted"``), so ``result()`` always resolves. When that terminal was made up by the client
  (timeout, abort, a stream cut short), the matching :class:`StreamError` subclass is kept on the stream as
  ``stream.error`` for callers who want the exception anyway (``raise s.error``).
"""

from __future__ import annotations

from collections.abc import Mapping


class ClientError(Exception):
    """Base class of every exception the client raises or records."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigurationError(ClientError):
    """The call cannot be made as configured, e.g. no base URL (argument, model ``baseUrl`` or ``SIDECAR_URL``)."""


class GatewayError(ClientError):
    """The gateway answered non-2xx before the stream started (or 2xx with an empty body).

    ``message`` is ``error.message`` of an ``{"error": {"message", "type"}}`` body (``"auth-gateway <status>"``
    when it has none); any other body gives ``"auth-gateway <status>: <body text>"``. ``type`` is ``error.type``
    when the body has one (the reference client calls it ``code``).
    """

    def __init__(
        self, message: str, status: int, headers: Mapping[str, str] | None = None, type: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers: Mapping[str, str] = headers if headers is not None else {}
        self.type = type

    def __repr__(self) -> str:
        return f"GatewayError({self.message!r}, status={self.status!r}, type={self.type!r})"


class GatewayConnectionError(ClientError, ConnectionError):
    """The request could not be sent: connection refused, DNS failure, reset before any response."""


class StreamError(ClientError):
    """Why the client itself ended a stream with a synthesized terminal ``error`` event (see ``stream.error``)."""


class StreamTimeoutError(StreamError, TimeoutError):
    """No (progress) event within the first-event or idle timeout; the message is the reference one."""


class StreamAbortedError(StreamError):
    """The caller aborted the stream (abort event set, task cancelled, ``aclose()`` before the end)."""


class IncompleteStreamError(StreamError):
    """The stream ended, broke or carried an unreadable frame before a terminal ``done``/``error`` event."""
