"""The Ledger between the hot path and the database: batching, read-your-writes, shutdown flush, outages."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from sidecar.ledger.postgres import PostgresStore
from sidecar.ledger.service import Ledger
from sidecar.ledger.sqlite import SQLiteStore
from sidecar.ledger.store import LedgerStore, ReportQuery
from tests.ledger.conftest import PG_ADMIN_URL
from tests.ledger.records import record, wait_for


async def test_unwritten_rows_are_visible_to_lookups_budgets_and_reports(
    store_factory: Callable[[], LedgerStore],
) -> None:
    ledger = Ledger(store_factory(), flush_interval=60.0)  # nothing is written on its own during this test
    await ledger.start()
    try:
        row = record("2026-11-07T09:00", "openai/gpt-4o", 0.5, user="alice", tags=("x",))
        ledger.record(row)
        assert ledger.pending == 1
        assert await ledger.get("bearer:a", row.id) == row
        assert await ledger.get("bearer:b", row.id) is None  # scoped even before it is written
        assert await ledger.store.get("bearer:a", row.id) is None  # not yet in the database
        assert await ledger.spent("bearer:a", "2026-11-01") == pytest.approx(0.5)
        report = await ledger.report("bearer:a", ReportQuery("2026-11-07", "2026-11-07", group_by="tag"))
        assert report == [
            {
                "tag": "x",
                "total_cost": 0.5,
                "market_cost": 0.5,
                "input_tokens": 0,
                "output_tokens": 0,
                "cached_input_tokens": 0,
                "cache_creation_input_tokens": 0,
                "reasoning_tokens": 0,
                "request_count": 1,
            }
        ]
        assert ledger.pending == 0  # the report wrote the batch first
    finally:
        await ledger.stop()


async def test_a_full_batch_is_written_without_waiting_for_the_interval(
    store_factory: Callable[[], LedgerStore],
) -> None:
    ledger = Ledger(store_factory(), flush_interval=60.0, batch_size=5)
    await ledger.start()
    try:
        rows = [record("2026-11-07T09:00", "openai/gpt-4o", 0.125) for _ in range(5)]
        for row in rows:
            ledger.record(row)
        await wait_for(lambda: ledger.written == 5)
        assert await ledger.store.get("bearer:a", rows[-1].id) == rows[-1]
    finally:
        await ledger.stop()


async def test_the_interval_writes_a_partial_batch(store_factory: Callable[[], LedgerStore]) -> None:
    ledger = Ledger(store_factory(), flush_interval=0.05)
    await ledger.start()
    try:
        row = record("2026-11-07T09:00", "openai/gpt-4o", 0.125)
        ledger.record(row)
        await wait_for(lambda: ledger.written == 1, within=2.0)
    finally:
        await ledger.stop()


async def test_a_clean_shutdown_writes_everything_pending(store_factory: Callable[[], LedgerStore]) -> None:
    ledger = Ledger(store_factory(), flush_interval=60.0, batch_size=1000)
    await ledger.start()
    rows = [record("2026-11-07T09:00", "openai/gpt-4o", 0.25, user=f"u{n}") for n in range(700)]
    for row in rows:
        ledger.record(row)
    await ledger.stop()
    reopened = store_factory()
    await reopened.open()
    try:
        assert await reopened.spent("bearer:a", "2026-11-07") == pytest.approx(175.0)
        assert await reopened.get("bearer:a", rows[0].id) == rows[0]
    finally:
        await reopened.close()


async def test_rows_wait_out_a_database_outage(pg_url: str) -> None:
    """PostgreSQL refuses connections for a while: rows stay pending, stay visible, and land when it is back."""
    name = pg_url.rsplit("/", 1)[1]
    ledger = Ledger(PostgresStore(pg_url), flush_interval=0.02)
    await ledger.start()
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        rows = [record("2026-11-08T10:00", "openai/gpt-4o", 0.5) for _ in range(3)]
        for row in rows:
            ledger.record(row)
        await wait_for(lambda: ledger.last_error is not None)
        assert ledger.pending == 3
        assert await ledger.get("bearer:a", rows[0].id) == rows[0]
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await wait_for(lambda: ledger.pending == 0)
        assert ledger.last_error is None
        assert await ledger.store.spent("bearer:a", "2026-11-08") == pytest.approx(1.5)
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
        await ledger.stop()


async def test_the_backlog_is_bounded(sqlite_path: Path) -> None:
    ledger = Ledger(SQLiteStore(sqlite_path), flush_interval=60.0, batch_size=1000, max_pending=10)
    await ledger.start()
    try:
        rows = [record("2026-11-07T09:00", "openai/gpt-4o", 0.25) for _ in range(12)]
        for row in rows:
            ledger.record(row)
        assert (ledger.pending, ledger.dropped) == (10, 2)
        assert await ledger.get("bearer:a", rows[0].id) is None  # the oldest went first
        assert await ledger.get("bearer:a", rows[-1].id) == rows[-1]
    finally:
        await ledger.stop()


async def test_budget_reads_count_own_spend_at_once_and_other_replicas_within_the_cache_window(pg_url: str) -> None:
    mine = Ledger(PostgresStore(pg_url), flush_interval=60.0, spend_cache_seconds=0.3)
    other = Ledger(PostgresStore(pg_url), flush_interval=60.0)
    await mine.start()
    await other.start()
    try:
        assert await mine.spent("bearer:a", "2026-11-01") == 0.0  # now cached for 0.3 s
        mine.record(record("2026-11-09T10:00", "openai/gpt-4o", 0.5))
        assert await mine.spent("bearer:a", "2026-11-01") == pytest.approx(0.5)  # pending, counted at once
        await mine.flush()
        assert await mine.spent("bearer:a", "2026-11-01") == pytest.approx(0.5)  # committed: still counted once
        other.record(record("2026-11-09T11:00", "openai/gpt-4o", 2.0))
        await other.flush()
        assert await mine.spent("bearer:a", "2026-11-01") == pytest.approx(0.5)  # the cached total is reused...
        await asyncio.sleep(0.35)
        assert await mine.spent("bearer:a", "2026-11-01") == pytest.approx(2.5)  # ...until it expires
        mine.record(record("2026-11-09T12:00", "openai/gpt-4o", 0.25))
        await mine.flush()
        assert await mine.spent("bearer:a", "2026-11-01") == pytest.approx(2.75)
    finally:
        await mine.stop()
        await other.stop()
