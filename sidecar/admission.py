"""Admission control: how many generations may be in flight, in this process and per caller.

A request over a limit is refused before the 200 and before any upstream call (503 ``overloaded`` for the process,
429 ``rate_limit_exceeded`` for one workload, both with ``retry-after``), instead of being accepted and then starved.
Counting is a dict update on the event loop: no lock, no await.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .auth import Caller
from .errors import Overloaded, TooManyStreams
from .memory import MemoryTrim

RETRY_AFTER_SECONDS = 1.0
"""Streams finish in seconds; a client told to retry after one second finds a slot or is told again."""


class Slot:
    """One admitted generation. ``release()`` is idempotent, so every exit path may call it."""

    __slots__ = ("_admission", "_identity")

    def __init__(self, admission: Admission, identity: str) -> None:
        self._admission: Admission | None = admission
        self._identity = identity

    def release(self) -> None:
        admission, self._admission = self._admission, None
        if admission is not None:
            admission._release(self._identity)


class Admission:
    def __init__(
        self,
        max_streams: int,
        per_workload: int,
        overrides: Mapping[str, int] | None = None,
        *,
        trim_memory: bool = False,
    ) -> None:
        """``overrides``: identity → its own limit (``[[workloads]] max_streams``). ``trim_memory``: give memory back
        to the operating system once the process has been quiet a while (``memory.MemoryTrim``)."""
        self.max_streams = max_streams
        self.per_workload = per_workload
        self._overrides = dict(overrides or {})
        self._by_identity: dict[str, int] = {}
        self.in_flight = 0
        self.refused = 0
        self.refused_by_status = {429: 0, 503: 0}
        """The refusals split by the status they were answered with (``/ui``'s errors view without metrics)."""
        self.memory = MemoryTrim(lambda: self.in_flight == 0) if trim_memory else None

    def limit_for(self, identity: str) -> int:
        return self._overrides.get(identity, self.per_workload)

    def admit(self, caller: Caller) -> Slot:
        identity = caller.identity
        mine = self._by_identity.get(identity, 0)
        if mine >= self.limit_for(identity):
            self.refused += 1
            self.refused_by_status[429] += 1
            raise TooManyStreams(
                f"{identity} already has {mine} generations in flight, its limit; retry after one finishes (raise "
                "[server] max_streams_per_workload or the workload's max_streams to allow more)",
                retry_after=RETRY_AFTER_SECONDS,
            )
        if self.in_flight >= self.max_streams:
            self.refused += 1
            self.refused_by_status[503] += 1
            raise Overloaded(
                f"the sidecar is serving {self.in_flight} generations, its limit ([server] max_streams); retry shortly",
                retry_after=RETRY_AFTER_SECONDS,
            )
        self.in_flight += 1
        self._by_identity[identity] = mine + 1
        if self.memory is not None:
            self.memory.busy()
        return Slot(self, identity)

    def _release(self, identity: str) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self.memory is not None:
            self.memory.idle()
        left = self._by_identity[identity] - 1
        if left:
            self._by_identity[identity] = left
        else:
            del self._by_identity[identity]  # the table holds only identities with streams in flight

    def snapshot(self) -> dict[str, Any]:
        """For ``/healthz``: how full the process is."""
        return {
            "inFlight": self.in_flight,
            "max": self.max_streams,
            "saturated": self.in_flight >= self.max_streams,
            "refused": self.refused,
        }
