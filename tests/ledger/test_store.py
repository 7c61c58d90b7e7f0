"""Both ledger backends against real databases: the same tests run on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sidecar.errors import LedgerUnavailable
from sidecar.ledger.postgres import PostgresStore, describe_url
from sidecar.ledger.sqlite import SQLiteStore
from sidecar.ledger.store import LedgerStore, ReportQuery
from tests.ledger.records import record

ROOT = Path(__file__).resolve().parents[2]

FULL = record(
    "2026-11-01T10:15:30",
    "anthropic/claude-sonnet-4-5",
    0.5,
    finish_reason="toolUse",
    ttft_ms=412.5,
    generation_ms=1830.25,
    input_tokens=100,
    output_tokens=50,
    cache_read_tokens=20,
    cache_write_tokens=10,
    reasoning_tokens=5,
    cost_input=0.3,
    cost_output=0.15,
    cost_cache_read=0.02,
    cost_cache_write=0.03,
    credential_source="env:ANTHROPIC_API_KEY",
    user="alice",
    tags=("x", "y"),
    quota_entity_id="team-7",
    upstream_response_id="msg_013nnniYDrJDocdy5nrMU7cH",
    upstream_model="claude-sonnet-4-5-20250929",
)


async def test_a_record_round_trips_with_every_field(store: LedgerStore) -> None:
    await store.write([FULL])
    assert await store.get("bearer:a", FULL.id) == FULL


async def test_lookup_is_scoped_to_the_identity(store: LedgerStore) -> None:
    await store.write([FULL])
    assert await store.get("bearer:b", FULL.id) is None
    assert await store.get("bearer:a", "gen_01JXXXXXXXXXXXXXXXXXXXXXXX") is None


async def test_error_rows_keep_type_and_status(store: LedgerStore) -> None:
    failed = record(
        "2026-11-01T10:00", "openai/gpt-4o", 0.0, finish_reason="error", error_type="rate_limit_error", error_status=429
    )
    await store.write([failed])
    got = await store.get("bearer:a", failed.id)
    assert got is not None and (got.finish_reason, got.error_type, got.error_status) == (
        "error",
        "rate_limit_error",
        429,
    )
    assert got.ttft_ms is None and got.streamed is True


async def test_a_retried_batch_is_not_counted_twice(store: LedgerStore) -> None:
    batch = [FULL, record("2026-11-01T11:00", "openai/gpt-4o", 0.25, tags=("x",))]
    await store.write(batch)
    await store.write(batch)  # as after a commit whose acknowledgement was lost
    assert await store.spent("bearer:a", "2026-11-01") == pytest.approx(0.75)
    report = await store.report("bearer:a", ReportQuery("2026-11-01", "2026-11-01", group_by="tag"))
    assert {r["tag"]: r["request_count"] for r in report} == {"x": 2, "y": 1}


async def test_spent_counts_from_the_given_day(store: LedgerStore) -> None:
    await store.write(
        [
            record("2026-10-31T23:59", "openai/gpt-4o", 4.0),
            record("2026-11-01T00:00", "openai/gpt-4o", 0.5),
            record("2026-11-20T12:00", "openai/gpt-4o", 0.25),
            record("2026-11-20T12:00", "openai/gpt-4o", 16.0, identity="bearer:b"),
        ]
    )
    assert await store.spent("bearer:a", "2026-11-01") == pytest.approx(0.75)
    assert await store.spent("bearer:a", "0000-00-00") == pytest.approx(4.75)
    assert await store.spent("bearer:c", "0000-00-00") == 0.0


# ----- the report, against a table computed by hand -------------------------------------------------------------

DATASET = [
    record(
        "2026-11-01T10:15",
        "anthropic/claude-sonnet-4-5",
        0.5,
        input_tokens=100,
        cache_read_tokens=20,
        cache_write_tokens=10,
        output_tokens=50,
        reasoning_tokens=5,
        user="alice",
        tags=("x", "y"),
    ),
    record("2026-11-01T10:45", "openai/gpt-4o", 0.25, input_tokens=200, output_tokens=20, user="bob", tags=("x",)),
    record("2026-11-01T11:05", "anthropic/claude-sonnet-4-5", 0.125, input_tokens=10, output_tokens=10, user="alice"),
    record(
        "2026-11-02T09:00",
        "openai/gpt-4o",
        1.0,
        input_tokens=1000,
        cache_read_tokens=500,
        output_tokens=100,
        tags=("y",),
    ),
    record(
        "2026-11-02T12:00",
        "anthropic/claude-haiku-4-5",
        0.03125,
        input_tokens=8,
        output_tokens=2,
        user="alice",
        tags=("x",),
        finish_reason="aborted",
    ),
    # Outside 2026-11-01..2026-11-02, or another bearer's: never in the reports below.
    record("2026-11-03T00:00", "openai/gpt-4o-mini", 0.0625, user="bob", tags=("x",)),
    record("2026-10-31T23:59", "openai/gpt-4o", 2.0, user="alice", tags=("x",)),
    record("2026-11-01T10:20", "openai/gpt-4o", 8.0, identity="bearer:b", user="alice", tags=("x",)),
]

TOKENS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_creation_input_tokens", "reasoning_tokens")


def row(
    key: str | None, value: str | None, cost: float, count: int, tokens: tuple[int, ...] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"total_cost": cost, "market_cost": cost, "request_count": count}
    if key is not None and value is not None:
        out[key] = value
    if tokens is not None:
        out.update(zip(TOKENS, tokens, strict=True))
    return out


HAND_COMPUTED: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [
    (
        {"group_by": "day"},
        [
            # input tokens include cached ones: (100+20+10) + 200 + 10 = 340
            row("day", "2026-11-01", 0.875, 3, (340, 80, 20, 10, 5)),
            row("day", "2026-11-02", 1.03125, 2, (1508, 102, 500, 0, 0)),
        ],
    ),
    (
        {"group_by": "day", "date_part": "hour"},
        [
            row("hour", "2026-11-01T10:00:00Z", 0.75, 2, (330, 70, 20, 10, 5)) | {"day": "2026-11-01"},
            row("hour", "2026-11-01T11:00:00Z", 0.125, 1, (10, 10, 0, 0, 0)) | {"day": "2026-11-01"},
            row("hour", "2026-11-02T09:00:00Z", 1.0, 1, (1500, 100, 500, 0, 0)) | {"day": "2026-11-02"},
            row("hour", "2026-11-02T12:00:00Z", 0.03125, 1, (8, 2, 0, 0, 0)) | {"day": "2026-11-02"},
        ],
    ),
    (
        {"group_by": "user"},
        [row("user", None, 1.0, 1), row("user", "alice", 0.65625, 3), row("user", "bob", 0.25, 1)],
    ),
    (
        {"group_by": "model"},
        [
            row("model", "anthropic/claude-haiku-4-5", 0.03125, 1),
            row("model", "anthropic/claude-sonnet-4-5", 0.625, 2),
            row("model", "openai/gpt-4o", 1.25, 2),
        ],
    ),
    ({"group_by": "tag"}, [row("tag", "x", 0.78125, 3), row("tag", "y", 1.5, 2)]),  # untagged rows have no tag row
    ({"group_by": "provider"}, [row("provider", "anthropic", 0.65625, 3), row("provider", "openai", 1.25, 2)]),
    ({"group_by": "credential_type"}, [row("credential_type", "system", 1.90625, 5)]),
    ({"group_by": "day", "tags": ("y",)}, [row("day", "2026-11-01", 0.5, 1), row("day", "2026-11-02", 1.0, 1)]),
    (
        {"group_by": "day", "tags": ("y", "x")},
        [row("day", "2026-11-01", 0.75, 2), row("day", "2026-11-02", 1.03125, 2)],
    ),
    (
        {"group_by": "model", "user": "alice"},
        [row("model", "anthropic/claude-haiku-4-5", 0.03125, 1), row("model", "anthropic/claude-sonnet-4-5", 0.625, 2)],
    ),
    ({"group_by": "day", "model": "gpt-4o"}, [row("day", "2026-11-01", 0.25, 1), row("day", "2026-11-02", 1.0, 1)]),
    ({"group_by": "day", "model": "openai/gpt-4o-mini"}, []),
    ({"group_by": "user", "provider": "anthropic"}, [row("user", "alice", 0.65625, 3)]),
    ({"group_by": "provider", "credential_type": "byok"}, []),
]


def _sort_key(r: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(r.get(k, "")) for k in ("day", "hour", "user", "model", "tag", "provider", "credential_type"))


@pytest.mark.parametrize(("params", "expected"), HAND_COMPUTED, ids=[str(p) for p, _ in HAND_COMPUTED])
async def test_report_matches_the_hand_computed_table(
    store: LedgerStore, params: dict[str, Any], expected: list[dict[str, Any]]
) -> None:
    await store.write(DATASET)
    got = await store.report("bearer:a", ReportQuery("2026-11-01", "2026-11-02", **params))
    got = sorted(got, key=_sort_key)
    assert [{k: r[k] for k in e} for r, e in zip(got, expected, strict=False)] == expected
    assert len(got) == len(expected)
    for r in got:  # every documented number is present, and nothing else than the group keys and the sums
        assert set(r) <= {
            "day",
            "hour",
            "user",
            "model",
            "tag",
            "provider",
            "credential_type",
            *TOKENS,
            "total_cost",
            "market_cost",
            "request_count",
        }
        assert isinstance(r["total_cost"], float) and isinstance(r["request_count"], int)


# ----- durability and concurrency -------------------------------------------------------------------------------


async def test_rows_survive_a_restart(store_factory: Callable[[], LedgerStore]) -> None:
    first = store_factory()
    await first.open()
    await first.write([FULL])
    await first.close()
    second = store_factory()
    await second.open()
    try:
        assert await second.get("bearer:a", FULL.id) == FULL
        assert await second.spent("bearer:a", "2026-11-01") == pytest.approx(0.5)
    finally:
        await second.close()


async def test_concurrent_writer_processes(store_factory: Callable[[], LedgerStore], backend: str) -> None:
    """Four sidecar-like processes write the same ledger at once; every row lands, spend adds up."""
    probe = store_factory()
    await probe.open()  # create the schema first, as the first sidecar to start would
    location = str(probe.path) if isinstance(probe, SQLiteStore) else probe._url  # type: ignore[attr-defined]
    writers, rows = 4, 150
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.ledger.records",
            location,
            str(n),
            str(rows),
            cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
        )
        for n in range(writers)
    ]
    results = await asyncio.gather(*(p.communicate() for p in procs))
    try:
        for proc, (_, err) in zip(procs, results, strict=True):
            assert proc.returncode == 0, err.decode()
        assert await probe.spent("bearer:writer", "2026-11-05") == pytest.approx(writers * rows * 0.001)
        report = await probe.report("bearer:writer", ReportQuery("2026-11-05", "2026-11-05", group_by="user"))
        assert {r["user"]: r["request_count"] for r in report} == {f"w{n}": rows for n in range(writers)}
    finally:
        await probe.close()
    assert backend in ("sqlite", "postgres")


async def test_many_concurrent_batches_in_one_process(store: LedgerStore) -> None:
    batches = [[record("2026-11-06T08:00", "openai/gpt-4o", 0.5, user=f"u{n}") for _ in range(20)] for n in range(10)]
    await asyncio.gather(*(store.write(b) for b in batches))
    assert await store.spent("bearer:a", "2026-11-06") == pytest.approx(100.0)


# ----- failures say what is wrong, and never print a password ----------------------------------------------------


async def test_a_ledger_from_a_newer_sidecar_is_refused(store_factory: Callable[[], LedgerStore]) -> None:
    first = store_factory()
    await first.open()
    if isinstance(first, SQLiteStore):
        await first._conn().execute("UPDATE ledger_meta SET value = '99' WHERE key = 'schema_version'")
    else:
        async with first._get_pool().acquire() as conn:  # type: ignore[attr-defined]
            await conn.execute("UPDATE ledger_meta SET value = '99' WHERE key = 'schema_version'")
    await first.close()
    with pytest.raises(LedgerUnavailable, match="schema version 99"):
        await store_factory().open()


async def test_unreachable_postgres_is_a_clear_error_without_the_password() -> None:
    store = PostgresStore("postgresql://ledger:hunter2-secret@127.0.0.1:1/ledger")
    with pytest.raises(LedgerUnavailable) as info:
        await store.open()
    assert "cannot connect to the ledger (postgresql 127.0.0.1:1/ledger)" in info.value.message
    assert "hunter2" not in info.value.message and "hunter2" not in store.description


async def test_a_malformed_postgres_url_does_not_echo_it() -> None:
    store = PostgresStore("postgresql://u:hunter2-secret@127.0.0.1:notaport/db")
    with pytest.raises(LedgerUnavailable) as info:
        await store.open()
    assert "hunter2" not in info.value.message


def test_describe_url_drops_credentials() -> None:
    assert (
        describe_url("postgresql://u:pw@db.internal:6432/ledger?sslmode=require")
        == "postgresql db.internal:6432/ledger"
    )


def test_records_are_plain_data() -> None:
    # The ledger row type holds no prompt, completion or credential field.
    names = {f.name for f in dataclasses.fields(FULL)}
    assert not names & {"prompt", "completion", "content", "messages", "api_key", "key", "token", "credential"}
