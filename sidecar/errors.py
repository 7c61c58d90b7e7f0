"""The sidecar's one exception tree. Each class knows the HTTP status and envelope ``type`` it maps to.

    SidecarError                      status / type before the stream starts
    ├── BadRequest                    400 invalid_request_error
    │   ├── PayloadTooLarge           413 invalid_request_error
    │   └── UnsupportedMediaType      415 invalid_request_error (the body is not JSON)
    ├── Unauthorized                  401 (body is the string ``{"error":"unauthorized"}``, as the reference server)
    ├── InvalidToken                  401 authentication_error (the AI Gateway routes' form of Unauthorized)
    ├── Forbidden                     403 forbidden (a realtime client secret used for another model)
    ├── NotFound                      404 not_found (an unknown generation id)
    ├── ModelNotFound                 404 model_not_found (the AI Gateway routes' form of UnknownModel)
    ├── FailedDependency              424 failed_dependency (the AI Gateway routes' form of MissingCredential)
    ├── UnknownModel                  404 invalid_request_error
    ├── BudgetExceeded                429 rate_limit_exceeded (the caller's USD budget is spent)
    ├── TooManySessions               429 rate_limit_exceeded (realtime sessions per bearer)
    ├── TooManyStreams                429 rate_limit_exceeded + retry-after (the workload's generations in flight)
    ├── UnpricedModel                 403 forbidden (no known price, and the caller has a budget)
    ├── ModelNotAllowed               403 model_not_allowed (the caller's ``models`` patterns do not match it)
    ├── RateLimited                   429 rate_limit_exceeded + retry-after (requests / tokens per minute)
    ├── Overloaded                    503 overloaded + retry-after (this process's generations in flight)
    ├── LedgerUnavailable             503 internal_server_error (the ledger database cannot be reached)
    ├── TokenStoreUnavailable         503 internal_server_error (the realtime token store cannot be reached)
    ├── MissingCredential             401 authentication_error
    ├── ConfigError                   500 internal_error (bad config file / credential location; raised at startup)
    └── UpstreamError                 failures talking to the provider; once the stream has started they become
        │                             in-band ``error`` events carrying ``status`` as ``errorStatus``
        ├── UpstreamStatusError       the provider answered non-2xx (status = the provider's)
        ├── UpstreamStreamError       the provider reported an error inside a 200 stream
        ├── UpstreamProtocolError     the provider sent something we cannot parse (502)
        ├── UpstreamConnectError      connecting or sending failed (502)
        └── UpstreamTimeout           first-event or idle timeout on the upstream read (504)

Messages never contain credentials: the only text taken from a provider is its error body, which is passed through
``redact`` before it is stored in an exception.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx2

from .redaction import redact as redact  # re-exported: adapters and the stream import it from here

_MAX_BODY_EXCERPT = 2000


class SidecarError(Exception):
    """Base class: an error the sidecar reports to its caller."""

    status: int = 500
    type: str = "internal_error"
    retry_after: float | None = None
    """Seconds, sent as ``retry-after`` when set (admission refusals, rate limits)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retry_after is not None:
            self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"retry-after": str(max(1, round(self.retry_after)))} if self.retry_after is not None else {}


class BadRequest(SidecarError):
    status = 400
    type = "invalid_request_error"


class PayloadTooLarge(BadRequest):
    status = 413


class UnsupportedMediaType(BadRequest):
    status = 415


class Unauthorized(SidecarError):
    status = 401
    type = "unauthorized"


class InvalidToken(SidecarError):
    status = 401
    type = "authentication_error"


class NotFound(SidecarError):
    status = 404
    type = "not_found"


class Forbidden(SidecarError):
    status = 403
    type = "forbidden"


class ModelNotFound(SidecarError):
    status = 404
    type = "model_not_found"


class FailedDependency(SidecarError):
    status = 424
    type = "failed_dependency"


class TooManySessions(SidecarError):
    status = 429
    type = "rate_limit_exceeded"


class BudgetExceeded(SidecarError):
    status = 429
    type = "rate_limit_exceeded"


class TooManyStreams(SidecarError):
    status = 429
    type = "rate_limit_exceeded"


class Overloaded(SidecarError):
    status = 503
    type = "overloaded"


class UnpricedModel(SidecarError):
    status = 403
    type = "forbidden"


class ModelNotAllowed(SidecarError):
    status = 403
    type = "model_not_allowed"


class RateLimited(SidecarError):
    status = 429
    type = "rate_limit_exceeded"


class LedgerUnavailable(SidecarError):
    status = 503
    type = "internal_server_error"


class TokenStoreUnavailable(SidecarError):
    status = 503
    type = "internal_server_error"


class UnknownModel(SidecarError):
    status = 404
    type = "invalid_request_error"

    def __init__(self, model_id: str) -> None:
        super().__init__(f"Unknown model: {model_id}. GET /v1/models lists the models this sidecar can serve.")
        self.model_id = model_id


class MissingCredential(SidecarError):
    status = 401
    type = "authentication_error"


class ConfigError(SidecarError):
    status = 500
    type = "internal_error"


class UpstreamError(SidecarError):
    """The provider call failed. ``status`` is reported as ``errorStatus`` on the in-band error event."""

    status = 502
    type = "upstream_error"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.type = classify_status(self.status)


class UpstreamStatusError(UpstreamError):
    """Non-2xx from the provider. ``retry_after`` is seconds, when the provider said.

    The body is redacted before it is cut to an excerpt, with ``secrets`` (the key sent upstream) as known values:
    ``redact`` decodes the escapes a body may spell the key with, so the excerpt is the decoded text.
    """

    def __init__(self, status: int, body: str, retry_after: float | None = None, secrets: tuple[str, ...] = ()) -> None:
        excerpt = redact(body.strip(), secrets)[:_MAX_BODY_EXCERPT]
        super().__init__(f"{status} {excerpt}" if excerpt else f"{status} (empty body)", status)
        self.retry_after = retry_after


class UpstreamStreamError(UpstreamError):
    """An error event inside a 200 stream (Anthropic ``event: error``, OpenAI ``data: {"error":…}``)."""


class UpstreamProtocolError(UpstreamError):
    pass


class UpstreamConnectError(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    status = 504


def classify_status(status: int) -> str:
    """The envelope ``type`` for a status, bucketed as the reference gateway does (§8)."""
    if status in (401, 403):
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    if status == 499:
        return "request_aborted"
    if 400 <= status < 500:
        return "invalid_request_error"
    return "upstream_error"


@contextmanager
def map_transport_errors(provider: str) -> Iterator[None]:
    """Translate httpx2's exceptions into the tree above; the one place the transport's errors are caught."""
    # Map to the most specific error we can; the provider name helps the operator, the URL is left out on purpose
    # (Gemini-style APIs put the key in the query string).
    try:
        yield
    except httpx2.TimeoutException as exc:
        raise UpstreamTimeout(f"{provider}: upstream timed out ({type(exc).__name__})") from None
    except (httpx2.ConnectError, httpx2.WriteError, httpx2.RemoteProtocolError, httpx2.ReadError) as exc:
        raise UpstreamConnectError(f"{provider}: upstream connection failed ({type(exc).__name__})") from None
    except httpx2.SSEError as exc:
        # httpx2's event-stream reader (wrong content type, an oversized event) is a TransportError subclass: the
        # upstream answered, but with something unreadable, so it is not a connection failure to retry.
        raise UpstreamProtocolError(f"{provider}: unreadable event stream ({exc})") from None
    except httpx2.TransportError as exc:
        raise UpstreamConnectError(f"{provider}: upstream transport error ({type(exc).__name__})") from None
