"""The embedded ledger: one SQLite file in WAL mode, through aiosqlite (one connection, one worker thread).

WAL lets readers run beside the writer and lets several sidecar processes share the file (each write transaction
is ``BEGIN IMMEDIATE`` and waits up to ``BUSY_TIMEOUT_MS`` for the lock instead of failing). ``synchronous=NORMAL``:
a committed batch survives a crash of the sidecar; only an OS crash or power loss can lose the last commits.
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
    ADD_SPEND,
    INSERT_GENERATION,
    INSERT_TAG,
    SCHEMA_VERSION,
    SELECT_GENERATION,
    SELECT_SPENT,
    LedgerStore,
    ReportQuery,
    check_schema_version,
    record_from_row,
    report_rows,
    report_sql,
    row_values,
    schema,
    spend_by_day,
)

BUSY_TIMEOUT_MS = 10_000


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
        try:
            await db.execute("BEGIN IMMEDIATE")
            try:
                inserted: list[GenerationRecord] = []
                for record in records:
                    cursor = await db.execute(INSERT_GENERATION, row_values(record))
                    if cursor.rowcount == 1:
                        inserted.append(record)
                tag_rows = [(r.id, tag) for r in inserted for tag in r.tags]
                if tag_rows:
                    await db.executemany(INSERT_TAG, tag_rows)
                spend = [(ident, day, cost, n) for (ident, day), (cost, n) in spend_by_day(inserted).items()]
                if spend:
                    await db.executemany(ADD_SPEND, spend)
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

    async def report(self, identity: str, query: ReportQuery) -> list[dict[str, Any]]:
        sql, params = report_sql(identity, query)
        return report_rows(query.key, await self._fetch(sql, params))
