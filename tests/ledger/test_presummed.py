"""The pre-summed report tables (``sidecar/ledger/rollup.py``) on both backends: every report they answer equals the
same report added up from the generations, they follow every write (retried batches, concurrent writers), and a
ledger of schema version 1 gets them, filled, at its first start."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import pytest

from sidecar.ledger import rollup
from sidecar.ledger.record import GenerationRecord
from sidecar.ledger.service import Ledger
from sidecar.ledger.sqlite import SQLiteStore
from sidecar.ledger.store import LedgerStore, ReportQuery, report_rows, report_sql, summed_table
from tests.ledger.records import record, wait_for

MODELS = ("anthropic/claude-sonnet-4-5", "anthropic/claude-haiku-4-5", "openai/gpt-4o", "google/gemini-2.5-flash")
TAGS = ("ci", "eval", "prod", "nightly")
IDENTITIES = ("bearer:a", "bearer:b", "bearer:c")


def dataset(count: int = 400, seed: int = 15) -> list[GenerationRecord]:
    """Three days of mixed traffic: several identities, models, users, tags (none to three), errors and aborts."""
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        stamp = f"2026-11-{rng.randrange(1, 4):02d}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:{n % 60:02d}"
        fields: dict[str, Any] = {}
        roll = rng.random()
        if roll < 0.08:
            status = rng.choice((429, 500, 529))
            fields = {"finish_reason": "error", "error_type": "api_error", "error_status": status}
        elif roll < 0.12:
            fields = {"finish_reason": "aborted", "error_type": "request_aborted", "error_status": 499}
        elif roll < 0.14:
            fields = {"finish_reason": "error", "error_type": "stream_error"}  # failed, with no status: 200
        rows.append(
            record(
                stamp,
                rng.choice(MODELS),
                rng.randrange(1, 2_000) / 1024,  # binary fractions: sums are exact in any order
                identity=rng.choice(IDENTITIES),
                input_tokens=rng.randrange(1_000),
                output_tokens=rng.randrange(500),
                cache_read_tokens=rng.choice((0, 0, rng.randrange(300))),
                cache_write_tokens=rng.choice((0, 0, 0, rng.randrange(100))),
                reasoning_tokens=rng.choice((0, rng.randrange(50))),
                credential_type=rng.choice(("system", "system", "byok")),
                user=rng.choice((None, "alice", "bob", "carol")),
                tags=tuple(rng.sample(TAGS, rng.choice((0, 1, 1, 2, 3)))),
                **fields,
            )
        )
    return rows


GROUPINGS: list[dict[str, Any]] = [
    {"group_by": key} for key in ("day", "model", "tag", "provider", "credential_type", "workload", "status", "user")
] + [
    {"group_by": "day", "date_part": "hour"},
    {"group_by": "day", "split_by": ("model",)},
    {"group_by": "day", "split_by": ("workload",)},
    {"group_by": "day", "split_by": ("tag",)},
    {"group_by": "day", "date_part": "hour", "split_by": ("provider",)},
    {"group_by": "day", "date_part": "hour", "split_by": ("tag",)},
    {"group_by": "day", "split_by": ("provider", "status"), "errors_only": True},
    {"group_by": "day", "date_part": "hour", "split_by": ("provider", "status"), "errors_only": True},
]
FILTERS: list[dict[str, Any]] = [
    {},
    {"model": "gpt-4o"},
    {"model": "anthropic/claude-haiku-4-5"},
    {"provider": "anthropic"},
    {"credential_type": "byok"},
    {"tags": ("eval",)},
    {"tags": ("eval", "prod")},
    {"user": "alice"},
    {"errors_only": True},
]
CASES = [{**filters, **grouping} for grouping, filters in itertools.product(GROUPINGS, FILTERS)]


async def fetch(store: LedgerStore, identity: str | None, query: ReportQuery, *, presummed: bool) -> list[Any]:
    sql, params = report_sql(identity, query, presummed=presummed)
    return report_rows(query, await store._fetch(sql, params))  # type: ignore[attr-defined]


def comparable(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(tuple(sorted((k, str(v)) for k, v in row.items())) for row in rows)


async def assert_same_reports(store: LedgerStore) -> int:
    """Every case, for one identity and for all: the pre-summed answer equals the generations' answer. Returns how
    many cases a pre-summed table answered (so a test can tell the tables were used at all)."""
    summed = 0
    for case, identity in itertools.product(CASES, ("bearer:a", None)):
        query = ReportQuery("2026-11-01", "2026-11-02", **case)
        expected = await fetch(store, identity, query, presummed=False)
        got = await fetch(store, identity, query, presummed=True)
        assert comparable(got) == comparable(expected), (case, identity)
        summed += summed_table(query) is not None
    return summed


async def test_every_presummed_report_equals_the_generations_report(store: LedgerStore) -> None:
    await store.write(dataset())
    summed = await assert_same_reports(store)
    assert summed >= len(CASES)  # most cases (x2 identities) read a pre-summed table; the rest check the fallback


def test_the_table_each_query_reads() -> None:
    day = ReportQuery("2026-11-01", "2026-11-02")
    cases = {
        "day": (day, rollup.DAYS),
        "hour": (ReportQuery("2026-11-01", "2026-11-02", date_part="hour"), rollup.HOURS),
        "tag": (ReportQuery("2026-11-01", "2026-11-02", group_by="tag"), rollup.DAY_TAGS),
        "one tag": (ReportQuery("2026-11-01", "2026-11-02", tags=("x",)), rollup.DAY_TAGS),
        "split by tag": (ReportQuery("2026-11-01", "2026-11-02", split_by=("tag",)), rollup.DAY_TAGS),
        "two tags": (ReportQuery("2026-11-01", "2026-11-02", tags=("x", "y")), None),
        "tag by tag": (ReportQuery("2026-11-01", "2026-11-02", group_by="tag", tags=("x",)), None),
        "hourly tags": (ReportQuery("2026-11-01", "2026-11-02", date_part="hour", split_by=("tag",)), None),
        "user": (ReportQuery("2026-11-01", "2026-11-02", group_by="user"), None),
        "for a user": (ReportQuery("2026-11-01", "2026-11-02", user="alice"), None),
    }
    assert {name: summed_table(query) for name, (query, _) in cases.items()} == {
        name: table for name, (_, table) in cases.items()
    }
    sql, _ = report_sql("bearer:a", day)
    assert " FROM report_days g " in sql
    sql, _ = report_sql("bearer:a", day, presummed=False)
    assert " FROM generations g " in sql


async def test_a_retried_batch_is_summed_once(store: LedgerStore) -> None:
    batch = dataset(60)
    await store.write(batch)
    await store.write(batch)  # the commit's acknowledgement was lost; the writer sends it again
    await store.write([*batch[:10], *dataset(5, seed=99)])  # and a batch half old, half new
    await assert_same_reports(store)
    report = await store.report(None, ReportQuery("2026-11-01", "2026-11-03", group_by="workload"))
    assert sum(r["request_count"] for r in report) == 65


async def test_concurrent_batches_sum_exactly(store_factory: Callable[[], LedgerStore]) -> None:
    """Two stores (two sidecars' pools) write overlapping keys at once: no lost update, no deadlock."""
    rows = dataset(600)
    stores = [store_factory(), store_factory()]
    for s in stores:
        await s.open()
    try:
        batches = [rows[n : n + 25] for n in range(0, len(rows), 25)]
        await asyncio.gather(*(stores[n % 2].write(b) for n, b in enumerate(batches)))
        await assert_same_reports(stores[0])
        report = await stores[1].report(None, ReportQuery("2026-11-01", "2026-11-03", group_by="model"))
        assert sum(r["request_count"] for r in report) == 600
    finally:
        for s in stores:
            await s.close()


async def downgrade_to_version_1(store: LedgerStore) -> None:
    """Make the ledger what a version 1 sidecar left: no trigger, nothing summed, schema version 1 (the empty tables
    stay: the next start would create them anyway, and this store's writes may then empty its queue into them)."""
    empty = [f"DELETE FROM {table.name}" for table in rollup.TABLES]
    version = "UPDATE ledger_meta SET value = '1' WHERE key = 'schema_version'"
    if isinstance(store, SQLiteStore):
        for statement in ["DROP TRIGGER ledger_report_rollup", *empty, f"DELETE FROM {rollup.PENDING}", version]:
            await store._conn().execute(statement)
        return
    pool: asyncpg.Pool = store._get_pool()  # type: ignore[attr-defined]
    async with pool.acquire() as conn:
        for statement in ["DROP TRIGGER ledger_report_rollup ON generations", *empty, version]:
            await conn.execute(statement)


async def version_1_ledger(store_factory: Callable[[], LedgerStore], rows: list[GenerationRecord]) -> None:
    old = store_factory()
    await old.open()
    await old.write(rows[:300])
    await downgrade_to_version_1(old)
    await old.write(rows[300:350])  # written by the version 1 sidecar: no table keeps them yet
    await old.close()


async def schema_version(store: LedgerStore) -> str:
    rows = await store._fetch("SELECT value FROM ledger_meta WHERE key = 'schema_version'", ())  # type: ignore[attr-defined]
    return str(rows[0][0])


async def test_a_version_1_ledger_is_summed_after_its_first_start(store_factory: Callable[[], LedgerStore]) -> None:
    rows = dataset()
    await version_1_ledger(store_factory, rows)
    new = store_factory()
    await new.open()  # the trigger from now on; the rows already there are left to fill_summaries
    try:
        assert not new.presummed
        assert await schema_version(new) == "1"
        await new.write(rows[350:370])
        expected = await fetch(new, None, ReportQuery("2026-11-01", "2026-11-03", group_by="tag"), presummed=False)
        assert await new.report(None, ReportQuery("2026-11-01", "2026-11-03", group_by="tag")) == expected

        async def write_meanwhile() -> None:  # the sidecar goes on writing while the tables are filled
            for n in range(370, len(rows), 10):
                await new.write(rows[n : n + 10])
                await asyncio.sleep(0)

        await asyncio.gather(new.fill_summaries(), write_meanwhile())
        assert new.presummed
        assert await schema_version(new) == "2"
        await assert_same_reports(new)
        report = await new.report(None, ReportQuery("2026-11-01", "2026-11-03", group_by="tag"))
        assert sum(r["request_count"] for r in report) == sum(len(r.tags) for r in rows)
    finally:
        await new.close()
    again = store_factory()
    await again.open()  # a second start finds the tables complete and fills nothing again
    try:
        assert again.presummed
        report = await again.report(None, ReportQuery("2026-11-01", "2026-11-03", group_by="workload"))
        assert sum(r["request_count"] for r in report) == len(rows)
    finally:
        await again.close()


async def test_an_interrupted_fill_goes_on_where_it_stopped(sqlite_path: Path) -> None:
    """SQLite fills a day per transaction: a sidecar stopped after the first day leaves it summed, and the next start
    sums the other days only (summing the first one twice would double it)."""
    rows = dataset()
    await version_1_ledger(lambda: SQLiteStore(sqlite_path), rows)
    first = SQLiteStore(sqlite_path)
    await first.open()
    db = await aiosqlite.connect(sqlite_path, isolation_level=None)
    try:
        assert not await first._fill_one_day(db)  # one day summed, then the sidecar stops
    finally:
        await db.close()
        await first.close()
    second = SQLiteStore(sqlite_path)
    await second.open()
    try:
        assert not second.presummed
        await second.fill_summaries()
        await assert_same_reports(second)
    finally:
        await second.close()


async def test_a_new_ledger_is_presummed_at_once(store: LedgerStore) -> None:
    assert store.presummed
    assert await schema_version(store) == "2"


async def test_untagged_generations_are_their_own_row_when_split_by_tag(store: LedgerStore) -> None:
    await store.write(
        [
            record("2026-11-01T10:00", "openai/gpt-4o", 0.5, tags=("x", "y")),
            record("2026-11-01T11:00", "openai/gpt-4o", 0.25),
        ]
    )
    query = ReportQuery("2026-11-01", "2026-11-01", split_by=("tag",))
    assert summed_table(query) is rollup.DAY_TAGS
    rows = await store.report("bearer:a", query)
    assert [(r.get("tag"), r["total_cost"], r["request_count"]) for r in rows] == [
        (None, 0.25, 1),
        ("x", 0.5, 1),
        ("y", 0.5, 1),
    ]


async def test_the_ledger_service_fills_in_the_background_and_says_so(
    store_factory: Callable[[], LedgerStore], caplog: pytest.LogCaptureFixture
) -> None:
    """Start-up does not wait for the fill; the service logs it, serves meanwhile, and reports read the tables after."""
    rows = dataset()
    await version_1_ledger(store_factory, rows)
    caplog.set_level(logging.INFO, logger="sidecar")
    ledger = Ledger(store_factory(), flush_interval=0.05)
    await ledger.start()
    try:
        assert not ledger.store.presummed  # started without waiting for it
        for row in rows[350:]:
            ledger.record(row)  # the hot path goes on meanwhile
        await wait_for(lambda: ledger.store.presummed, within=30)  # the fill
        report = await ledger.report(None, ReportQuery("2026-11-01", "2026-11-03", group_by="workload"))
        assert sum(r["request_count"] for r in report) == len(rows)
        await assert_same_reports(ledger.store)
    finally:
        await ledger.stop()
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("sidecar")]
    assert any(m.startswith("ledger: summing the stored generations") for m in messages)
    assert any(m.startswith("ledger: the report tables are filled") for m in messages)


async def test_a_stop_during_the_fill_leaves_a_ledger_the_next_start_completes(
    store_factory: Callable[[], LedgerStore],
) -> None:
    rows = dataset()
    await version_1_ledger(store_factory, rows)
    ledger = Ledger(store_factory())
    await ledger.start()
    await ledger.stop()  # at once: the fill is cancelled wherever it was, its transaction rolled back
    again = Ledger(store_factory())
    await again.start()
    try:
        await wait_for(lambda: again.store.presummed, within=30)  # the fill
        await assert_same_reports(again.store)
    finally:
        await again.stop()
