"""The embedded ledger: one SQLite file in WAL mode, through aiosqlite (one connection, one worker thread).

WAL lets readers run beside the writer and lets several sidecar processes share the file (each write transaction
is ``BEGIN IMMEDIATE`` and waits up to ``BUSY_TIMEOUT_MS`` for the lock instead of failing). ``synchronous=NORMAL``:
a committed batch survives a crash of the sidecar; only an OS crash or power loss can lose the last commits.

A batch is three round trips to the connection's thread whatever its size (BEGIN, one ``executemany``, COMMIT): on a
busy event loop each round trip waits for the loop, so a round trip per row made commits take seconds under load.
The tags and the spend_daily totals follow from a trigger on the inserted rows (see ``_ON_INSERT``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from sidecar.errors import LedgerUnavailable

from .record import GenerationRecord
from .store import (
    INSERT_GENERATION,
    SCHEMA_VERSION,
    SELECT_GENERATION,
    SELECT_IDENTITIES,
    SELECT_SPENT,
    GenerationsQuery,
    LedgerStore,
    ReportQuery,
    add_spend,
    check_schema_version,
    generations_sql,
    record_from_row,
    report_rows,
    report_sql,
    row_values,
    schema,
)

BUSY_TIMEOUT_MS = 10_000

# Counts and tags only the rows really inserted: a row that ON CONFLICT DO NOTHING skips (a batch retried after a
# commit whose acknowledgement was lost) fires no INSERT trigger, so it is not added to a budget twice, and a whole
# batch stays one ``executemany``. TEMP: the trigger belongs to this connection, not to the file, so ledger files
# written by earlier versions need no migration, and a process that maintains spend_daily itself (an older sidecar on
# the same file) does not have its rows counted a second time.
_ON_INSERT = (
    "CREATE TEMP TRIGGER IF NOT EXISTS ledger_generation_inserted AFTER INSERT ON generations BEGIN "
    f"{add_spend('NEW.identity, NEW.day, NEW.cost_total, 1')}; "
    "INSERT INTO generation_tags (generation_id, tag) SELECT NEW.id, value FROM json_each(NEW.tags) WHERE true "
    "ON CONFLICT DO NOTHING; "
    "END"
)


class SQLiteStore(LedgerStore):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"sqlite {path}"
        self._db: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()  # one connection: its transactions must not interleave

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            db = await aiosqlite.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerUnavailable(f"cannot open the ledger {self.path}: {exc}") from None
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute("BEGIN IMMEDIATE")
            for statement in schema(real="REAL", boolean="INTEGER"):
                await db.execute(statement)
            await db.execute(_ON_INSERT)
            async with db.execute("SELECT value FROM ledger_meta WHERE key = 'schema_version'") as cursor:
                row = await cursor.fetchone()
            if row is None:
                await db.execute(
                    "INSERT INTO ledger_meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
            await db.execute("COMMIT")
            check_schema_version(row[0] if row else None, self.description)
        except sqlite3.Error as exc:
            await db.close()
            raise LedgerUnavailable(f"cannot initialise the ledger {self.path}: {exc}") from None
        except BaseException:
            await db.close()
            raise
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise LedgerUnavailable("the ledger is closed")
        return self._db

    async def write(self, records: Sequence[GenerationRecord]) -> None:
        async with self._write_lock:
            await self._write(self._conn(), records)

    async def _write(self, db: aiosqlite.Connection, records: Sequence[GenerationRecord]) -> None:
        rows = map(row_values, records)  # consumed in the connection's thread, not on the event loop
        try:
            await db.execute("BEGIN IMMEDIATE")
            try:
                await db.executemany(INSERT_GENERATION, rows)  # _ON_INSERT adds the tags and the spend
                await db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    await db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"ledger write failed ({self.path}): {exc}") from None

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        try:
            async with self._conn().execute(sql, params) as cursor:
                return list(await cursor.fetchall())
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"ledger read failed ({self.path}): {exc}") from None

    async def get(self, identity: str, generation_id: str) -> GenerationRecord | None:
        rows = await self._fetch(SELECT_GENERATION, (generation_id, identity))
        return record_from_row(rows[0]) if rows else None

    async def spent(self, identity: str, since_day: str) -> float:
        rows = await self._fetch(SELECT_SPENT, (identity, since_day))
        return float(rows[0][0])

    async def report(self, identity: str | None, query: ReportQuery) -> list[dict[str, Any]]:
        sql, params = report_sql(identity, query)
        return report_rows(query, await self._fetch(sql, params))

    async def generations(self, identity: str | None, query: GenerationsQuery) -> list[GenerationRecord]:
        sql, params = generations_sql(identity, query)
        return [record_from_row(row) for row in await self._fetch(sql, params)]

    async def identities(self) -> list[str]:
        return [row[0] for row in await self._fetch(SELECT_IDENTITIES, ())]
