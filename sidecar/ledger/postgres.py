"""The shared ledger: PostgreSQL through an asyncpg pool, for several sidecars writing one ledger.

A batch is one transaction: a single ``INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING RETURNING`` (one round
trip whatever the batch size), then the tags and the spend_daily upsert for the rows that were really inserted, so
a batch retried after an unacknowledged commit is not counted twice against a budget. The pre-summed report tables
follow from a statement trigger over the same inserted rows (``rollup.POSTGRES_TRIGGER``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from sidecar.errors import LedgerUnavailable

from . import rollup
from .record import GenerationRecord
from .store import (
    ADD_SPEND,
    INSERT_TAG,
    NEW_SCHEMA_VERSION,
    SELECT_GENERATION,
    SELECT_IDENTITIES,
    SELECT_SCHEMA_VERSION,
    SELECT_SPENT,
    SET_META,
    STORED_COLUMNS,
    GenerationsQuery,
    LedgerStore,
    ReportQuery,
    check_schema_version,
    column_types,
    generations_sql,
    quote,
    record_from_row,
    report_rows,
    report_sql,
    row_values,
    schema,
    spend_by_day,
    to_numbered,
)

_SCHEMA_LOCK = 0x70695F6C6564  # pg_advisory_xact_lock key: serialises schema creation across sidecars starting at once
_FILL_LOCK = _SCHEMA_LOCK + 1  # and the filling of the report tables (fill_summaries), apart from start-ups
_ARRAY_TYPES = {"TEXT": "text", "BIGINT": "int8", "INTEGER": "int4", "DOUBLE": "float8", "BOOLEAN": "bool"}


def _insert_batch_sql() -> str:
    types = column_types(real="DOUBLE PRECISION", boolean="BOOLEAN")
    arrays = ", ".join(f"${i}::{_ARRAY_TYPES[types[name].split()[0]]}[]" for i, name in enumerate(STORED_COLUMNS, 1))
    return (
        f"INSERT INTO generations ({', '.join(map(quote, STORED_COLUMNS))}) SELECT * FROM unnest({arrays}) "
        "ON CONFLICT (id) DO NOTHING RETURNING id"
    )


_INSERT_BATCH = _insert_batch_sql()
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def describe_url(url: str) -> str:
    """``postgresql host:port/db`` for logs: the user's password never appears."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "postgresql (malformed URL)"
    return f"postgresql {host}{port}{parts.path or '/'}"


class PostgresStore(LedgerStore):
    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 4) -> None:
        self._url = url
        self._sizes = (min_size, max_size)
        self.description = describe_url(url)
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        try:
            pool = await asyncpg.create_pool(
                self._url, min_size=self._sizes[0], max_size=self._sizes[1], command_timeout=30
            )
        except ValueError:  # a malformed URL; its text may hold a password, so it is not repeated
            raise LedgerUnavailable(f"the ledger URL is not a valid PostgreSQL URL ({self.description})") from None
        except _DB_ERRORS as exc:
            raise LedgerUnavailable(f"cannot connect to the ledger ({self.description}): {_reason(exc)}") from None
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                for statement in schema(real="DOUBLE PRECISION", boolean="BOOLEAN"):
                    await conn.execute(statement)
                found = await conn.fetchval(SELECT_SCHEMA_VERSION)
                if not check_schema_version(found, self.description):
                    self.presummed = True
                elif not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM generations)"):
                    await _add_summaries(conn)  # a new ledger: nothing to sum, at once
                    self.presummed = True
        except _DB_ERRORS as exc:
            await pool.close()
            raise LedgerUnavailable(f"cannot initialise the ledger ({self.description}): {_reason(exc)}") from None
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def fill_summaries(self) -> None:
        if self.presummed:
            return
        try:
            async with self._get_pool().acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _FILL_LOCK)  # one sidecar fills; others wait
                found = await conn.fetchval(SELECT_SCHEMA_VERSION)
                if check_schema_version(found, self.description):
                    await _add_summaries(conn)
        except _DB_ERRORS as exc:
            raise LedgerUnavailable(f"filling the report tables failed ({self.description}): {_reason(exc)}") from None
        self.presummed = True

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise LedgerUnavailable("the ledger is closed")
        return self._pool

    async def write(self, records: Sequence[GenerationRecord]) -> None:
        rows = [row_values(r) for r in records]
        columns = [list(col) for col in zip(*rows, strict=True)]
        try:
            async with self._get_pool().acquire() as conn, conn.transaction():
                inserted_ids = {row["id"] for row in await conn.fetch(_INSERT_BATCH, *columns)}
                inserted = [r for r in records if r.id in inserted_ids]
                tag_rows = [(r.id, tag) for r in inserted for tag in r.tags]
                if tag_rows:
                    await conn.executemany(to_numbered(INSERT_TAG), tag_rows)
                # In key order, as the report tables' trigger upserts: two sidecars' batches never deadlock.
                spend = [(ident, day, cost, n) for (ident, day), (cost, n) in sorted(spend_by_day(inserted).items())]
                if spend:
                    await conn.executemany(to_numbered(ADD_SPEND), spend)
        except _DB_ERRORS as exc:
            raise LedgerUnavailable(f"ledger write failed ({self.description}): {_reason(exc)}") from None

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        try:
            async with self._get_pool().acquire() as conn:
                return list(await conn.fetch(to_numbered(sql), *params))
        except _DB_ERRORS as exc:
            raise LedgerUnavailable(f"ledger read failed ({self.description}): {_reason(exc)}") from None

    async def get(self, identity: str, generation_id: str) -> GenerationRecord | None:
        rows = await self._fetch(SELECT_GENERATION, (generation_id, identity))
        return record_from_row(tuple(rows[0])) if rows else None

    async def spent(self, identity: str, since_day: str) -> float:
        rows = await self._fetch(SELECT_SPENT, (identity, since_day))
        return float(rows[0][0])

    async def report(self, identity: str | None, query: ReportQuery) -> list[dict[str, Any]]:
        sql, params = report_sql(identity, query, presummed=self.presummed)
        rows = await self._fetch(sql, params)
        return report_rows(query, [tuple(r) for r in rows])

    async def generations(self, identity: str | None, query: GenerationsQuery) -> list[GenerationRecord]:
        sql, params = generations_sql(identity, query)
        return [record_from_row(tuple(row)) for row in await self._fetch(sql, params)]

    async def identities(self) -> list[str]:
        return [row[0] for row in await self._fetch(SELECT_IDENTITIES, ())]


async def _add_summaries(conn: asyncpg.Connection) -> None:
    """To ``SCHEMA_VERSION`` in the caller's transaction: the pre-summed report tables' trigger, then the tables
    filled from the generations. Creating the trigger locks ``generations`` against writes until the commit, so no
    row is written between the two (other sidecars' batches wait meanwhile)."""
    for statement in rollup.POSTGRES_TRIGGER:
        await conn.execute(statement)
    for table in rollup.TABLES:
        await conn.execute(f"DELETE FROM {table.name}")
    for statement in rollup.POSTGRES_BACKFILL:
        await conn.execute(statement)
    await conn.execute(to_numbered(SET_META), *NEW_SCHEMA_VERSION)


def _reason(exc: BaseException) -> str:
    # asyncpg's messages name the server and the failing statement, never the password of the URL.
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
