"""``stream`` / ``complete`` and their synchronous twins."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

import httpx

from ._request import prepare
from ._stream import AsyncEventStream, EventStream
from .types import AssistantMessage, Context


def stream(
    model: str | Mapping[str, Any],
    context: Context | Mapping[str, Any],
    options: Mapping[str, Any] | None = None,
    *,
    base_url: str | None = None,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    abort: asyncio.Event | threading.Event | None = None,
    http_client: httpx.AsyncClient | None = None,
) -> AsyncEventStream:
    """Stream one turn through the auth-gateway: ``POST {base_url}/v1/pi/stream``.

    ``model``: ``"provider/id"``, or a dict with ``provider`` and ``id`` (its ``baseUrl``, ``headers`` and ``api``
    are used too). ``context``: the pi ``Context``. ``options``: pi stream options, camelCase as on the wire; all
    cross the wire except abort handles, the bearer (``apiKey``), callables and session-state objects, and
    ``None`` values; a ``sessionId`` is added when missing. ``streamIdleTimeoutMs`` /
    ``streamFirstEventTimeoutMs`` also set this client's timeouts (``0`` disables).

    ``base_url`` (else the model's ``baseUrl``, else ``SIDECAR_URL``) is the gateway root, a path prefix
    allowed. ``token`` (else ``options["apiKey"]``, else ``SIDECAR_TOKEN``) goes in ``Authorization: Bearer``.
    ``headers`` are added to the request. ``abort`` aborts the stream when set (``options["signal"]`` is used
    when it is an event). ``http_client`` replaces the pooled client (it is not closed by the stream).

    Returns at once, without I/O; the request starts with the first ``__anext__`` or ``result()``.
    Raises :class:`ConfigurationError` now when no base URL is known or ``model`` is unusable, and ``TypeError``
    when ``context``/``options`` are not JSON-serializable.
    """
    request = prepare(model, context, options, base_url=base_url, token=token, headers=headers, abort=abort)
    return AsyncEventStream(request, http_client)


async def complete(
    model: str | Mapping[str, Any],
    context: Context | Mapping[str, Any],
    options: Mapping[str, Any] | None = None,
    *,
    base_url: str | None = None,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    abort: asyncio.Event | threading.Event | None = None,
    http_client: httpx.AsyncClient | None = None,
) -> AssistantMessage:
    """The final ``AssistantMessage`` of a streamed turn, as the reference ``complete()``.

    Failures after the request went out are returned, not raised: check ``stopReason`` (``"error"`` /
    ``"aborted"``) and ``errorMessage``. Raises what ``stream()`` raises before the stream starts.
    """
    s = stream(
        model, context, options, base_url=base_url, token=token, headers=headers, abort=abort, http_client=http_client
    )
    try:
        return await s.result()
    finally:
        await s.aclose()


def stream_sync(
    model: str | Mapping[str, Any],
    context: Context | Mapping[str, Any],
    options: Mapping[str, Any] | None = None,
    *,
    base_url: str | None = None,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    abort: threading.Event | None = None,
    http_client: httpx.AsyncClient | None = None,
) -> EventStream:
    """The synchronous twin of :func:`stream` (iterate it with ``for``; same arguments, same guarantees).

    It runs on a private event loop thread; an ``http_client`` given here is used on that thread.
    """
    request = prepare(model, context, options, base_url=base_url, token=token, headers=headers, abort=abort)
    return EventStream(lambda: AsyncEventStream(request, http_client))


def complete_sync(
    model: str | Mapping[str, Any],
    context: Context | Mapping[str, Any],
    options: Mapping[str, Any] | None = None,
    *,
    base_url: str | None = None,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    abort: threading.Event | None = None,
    http_client: httpx.AsyncClient | None = None,
) -> AssistantMessage:
    """The synchronous twin of :func:`complete`."""
    with stream_sync(
        model, context, options, base_url=base_url, token=token, headers=headers, abort=abort, http_client=http_client
    ) as s:
        return s.result()
