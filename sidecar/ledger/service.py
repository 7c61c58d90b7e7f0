"""The ledger as the app sees it: ``record()`` on the hot path, batched writes behind it, reads that see both.

``record()`` only appends to an in-memory batch (no I/O, no await). A writer task commits the batch every
``flush_interval`` seconds, or at once when ``batch_size`` rows are waiting. Lookups and budget checks consult the
unwritten batch too, so a generation can be looked up the moment its stream ends. On a clean shutdown ``stop()``
writes everything that is left; a crash loses at most the rows of the current window (plus any backlog that built
up while the database was unreachable).
"""

from __future__ import annotations

import asyncio
import logging
import time
from itertools import islice
from typing import Any

from sidecar.errors import LedgerUnavailable

from .record import GenerationRecord
from .store import GenerationsQuery, LedgerStore, ReportQuery

log = logging.getLogger("sidecar.ledger")

DEFAULT_FLUSH_INTERVAL = 0.2
DEFAULT_BATCH_SIZE = 256
DEFAULT_SPEND_CACHE_SECONDS = 1.0
"""How long a database spend total is reused by budget checks. This process's own spend is always counted at once;
other replicas' spend on a shared ledger is seen within this window."""
DEFAULT_MAX_PENDING = 100_000
"""Rows kept while the database is unreachable; beyond this the oldest are dropped (and counted) to bound memory."""
_MAX_BACKOFF = 5.0


class Ledger:
    def __init__(
        self,
        store: LedgerStore,
        *,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_pending: int = DEFAULT_MAX_PENDING,
        spend_cache_seconds: float = DEFAULT_SPEND_CACHE_SECONDS,
    ) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.max_pending = max_pending
        self._pending: dict[str, GenerationRecord] = {}  # insertion order = write order
        # Per identity → day → USD: what is pending, and what this process committed (ever). With a cached database
        # total they answer budget checks without a database round trip per request (see spent()).
        self._unwritten: dict[str, dict[str, float]] = {}
        self._committed: dict[str, dict[str, float]] = {}
        self._spend_cache: dict[tuple[str, str], tuple[float, float, float]] = {}
        self.spend_cache_seconds = spend_cache_seconds
        self._wake = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._fill: asyncio.Task[None] | None = None
        self._stopping = False
        self.written = 0
        self.dropped = 0
        self.write_errors = 0
        """Failed flushes (the rows stay pending and are retried): ``/metrics``."""
        self.last_error: str | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        await self.store.open()
        self._task = asyncio.create_task(self._run(), name="ledger-writer")
        log.info("ledger: %s", self.store.description)
        if not self.store.presummed:
            self._fill = asyncio.create_task(self._fill_summaries(), name="ledger-fill-summaries")

    async def _fill_summaries(self) -> None:
        """A ledger an older sidecar wrote: its generations are summed into the report tables in the background."""
        log.info("ledger: summing the stored generations into the report tables; reports are slower until then")
        started = time.monotonic()
        try:
            await self.store.fill_summaries()
        except LedgerUnavailable as exc:  # reports keep reading the generations; the next start tries again
            log.error("ledger: the report tables were not filled: %s", exc)
            return
        log.info("ledger: the report tables are filled (%.1f s)", time.monotonic() - started)

    async def stop(self, grace: float = 10.0) -> None:
        """Write what is pending (retrying for up to ``grace`` seconds), then close the store."""
        self._stopping = True
        if self._fill is not None:  # its transaction rolls back; the next start goes on from there
            self._fill.cancel()
            await asyncio.gather(self._fill, return_exceptions=True)
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace)
            except TimeoutError:
                self._task.cancel()
        if self._pending:
            log.error("ledger: %d generation records could not be written before shutdown", len(self._pending))
        await self.store.close()

    # ----- the hot path -----------------------------------------------------------------------------------------

    def record(self, record: GenerationRecord) -> None:
        self._pending[record.id] = record
        _add(self._unwritten, record, 1)
        if len(self._pending) > self.max_pending:
            oldest = self._pending.pop(next(iter(self._pending)))
            _add(self._unwritten, oldest, -1)
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("ledger: backlog over %d rows; %d records dropped so far", self.max_pending, self.dropped)
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    # ----- reads ------------------------------------------------------------------------------------------------

    async def get(self, identity: str, generation_id: str) -> GenerationRecord | None:
        record = self._pending.get(generation_id)
        if record is not None:
            return record if record.identity == identity else None
        return await self.store.get(identity, generation_id)

    async def spent(self, identity: str, since_day: str) -> float:
        """The identity's spend since ``since_day``: the database total (cached for ``spend_cache_seconds``), plus
        what this process committed since that total was read, plus what it has not written yet.

        A row committed while the total is being read may be counted twice, never zero times: errors go in the
        budget's favour.
        """
        key = (identity, since_day)
        cached = self._spend_cache.get(key)
        now = time.monotonic()
        if cached is None or now - cached[2] > self.spend_cache_seconds:
            committed_before = _since(self._committed, identity, since_day)
            cached = (await self.store.spent(identity, since_day), committed_before, now)
            self._spend_cache[key] = cached
        stored, committed_then, _ = cached
        committed_since = _since(self._committed, identity, since_day) - committed_then
        return stored + committed_since + _since(self._unwritten, identity, since_day)

    async def report(self, identity: str | None, query: ReportQuery) -> list[dict[str, Any]]:
        """``identity=None``: every identity's rows (an admin's view on ``/ui``)."""
        await self.flush()  # the report groups in SQL, so it must see this sidecar's unwritten rows there
        return await self.store.report(identity, query)

    async def generations(self, identity: str | None, query: GenerationsQuery) -> list[GenerationRecord]:
        await self.flush()  # pages are read in SQL too
        return await self.store.generations(identity, query)

    async def identities(self) -> list[str]:
        await self.flush()
        return await self.store.identities()

    # ----- writing ----------------------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write everything pending now; raises ``LedgerUnavailable`` when the database refuses."""
        while self._pending:
            await self._write_batch()

    async def _write_batch(self) -> None:
        async with self._write_lock:
            batch = list(islice(self._pending.values(), self.batch_size))  # not a copy of a long backlog per batch
            if not batch:
                return
            await self.store.write(batch)
            for record in batch:
                if self._pending.pop(record.id, None) is not None:
                    _add(self._committed, record, 1)
                    _add(self._unwritten, record, -1)
            self.written += len(batch)
            if self.last_error is not None:
                log.warning("ledger: writing again after an outage (%d rows waiting)", len(self._pending))
                self.last_error = None

    async def _run(self) -> None:
        backoff = self.flush_interval
        while True:
            if not self._stopping:
                # asyncio.timeout, not wait_for: no extra task, so on a busy loop the wake-up costs no extra turns.
                try:
                    async with asyncio.timeout(backoff):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            self._wake.clear()
            try:
                await self.flush()
                backoff = self.flush_interval
            except LedgerUnavailable as exc:
                self.write_errors += 1
                if exc.message != self.last_error:
                    log.error("ledger: %s; %d rows kept for retry", exc.message, len(self._pending))
                self.last_error = exc.message
                backoff = min(max(backoff * 2, 0.05), _MAX_BACKOFF)
                if self._stopping:
                    await asyncio.sleep(backoff)  # stop() bounds the retries with its timeout
            except Exception:
                self.write_errors += 1
                log.exception("ledger: unexpected error while writing")
                await asyncio.sleep(_MAX_BACKOFF)
            if self._stopping and not self._pending:
                return


def _add(table: dict[str, dict[str, float]], record: GenerationRecord, sign: int) -> None:
    days = table.setdefault(record.identity, {})
    day = record.day
    days[day] = days.get(day, 0.0) + sign * record.cost_total


def _since(table: dict[str, dict[str, float]], identity: str, since_day: str) -> float:
    return sum(cost for day, cost in table.get(identity, {}).items() if day >= since_day)
