"""Driving one wire-API adapter directly, as ``sidecar.stream.Generation`` does, for the adapter tests."""

from __future__ import annotations

from sidecar.providers.base import Delta, StreamFn, UpstreamCall
from sidecar.upstream import Upstream


async def adapter_deltas(
    stream: StreamFn, call: UpstreamCall, catch: type[Exception] | tuple[type[Exception], ...] = Exception
) -> tuple[list[Delta], Exception | None]:
    """Every delta ``stream`` yields for ``call`` (an upstream read's list flattened, in order), and the exception of
    a ``catch`` kind it raised, if any; any other exception propagates."""
    deltas: list[Delta] = []
    async with Upstream() as client:
        try:
            async for item in stream(call, client):
                deltas.extend(item if isinstance(item, list) else [item])
        except catch as exc:
            return deltas, exc
    return deltas, None
