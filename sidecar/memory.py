"""Memory handed back to the operating system once a burst of streams is over (issue #12).

A thousand open streams take ~130 MiB; when they end, Python frees their objects, but the C allocator keeps the
freed pages for reuse, so the process stayed 45-85 % above its idle size for good (bench/README.md, "Footprint and
long streams"). A sidecar sits beside every agent: what it holds after a burst is what the pod's memory request
must allow for. glibc's ``malloc_trim`` returns the free pages, and a collection first frees what is left in
reference cycles.

Both cost milliseconds, so they run only when the process is quiet: ``QUIET_SECONDS`` after the last stream ended,
with none admitted meanwhile, and again ``AGAIN_SECONDS`` later for as long as a trim still releases something.
Streams in flight never wait for it, and a busy process never trims.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
from collections.abc import Callable

QUIET_SECONDS = 2.0
AGAIN_SECONDS = 35.0
"""After a trim that released memory, another this much later if still quiet: the upstream connections a burst left
in the pool close after their keep-alive (``Upstream``: 30 s), and what they held is freed only then."""


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None (musl, macOS: their allocators return memory on their own terms)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


class MemoryTrim:
    """``idle()`` when the last stream ends; ``busy()`` when one is admitted. ``quiet``: whether no stream is in
    flight now. Event loop only: no lock."""

    def __init__(
        self,
        quiet: Callable[[], bool],
        quiet_seconds: float = QUIET_SECONDS,
        trim: Callable[[int], int] | None = None,
        again_seconds: float = AGAIN_SECONDS,
    ) -> None:
        self._quiet = quiet
        self.quiet_seconds = quiet_seconds
        self.again_seconds = again_seconds
        self._trim = trim if trim is not None else _malloc_trim()
        self._timer: asyncio.TimerHandle | None = None
        self._admitted = 0
        self._armed_at = 0
        self.trims = 0

    def busy(self) -> None:
        self._admitted += 1

    def idle(self, after: float | None = None) -> None:
        if self._timer is not None or self._trim is None:
            return  # one timer at a time: at one stream after another, this is all an idle() costs
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # released outside the event loop (a synchronous test): nothing to schedule on
            return
        self._armed_at = self._admitted
        self._timer = loop.call_later(self.quiet_seconds if after is None else after, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if not self._quiet():
            return  # streams in flight: the last of them to end arms it again
        if self._admitted != self._armed_at:
            self.idle()  # quiet now, but not for the whole while: wait a whole while from now
            return
        gc.collect()
        released = self._trim is not None and self._trim(0) == 1
        self.trims += 1
        if released:  # more may be freed a while later (pooled connections closing): look again then
            self.idle(self.again_seconds)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
