"""The embedded ledger: one SQLite file in WAL mode, through aiosqlite (one connection, one worker thread).

WAL lets readers run beside the writer and lets several sidecar processes share the file (each write transaction
is ``BEGIN IMMEDIATE`` and waits up to ``BUSY_TIMEOUT_MS`` for the lock instead of failing). ``synchronous=NORMAL``:
a committed batch survives a crash of the sidecar; only an OS crash or power loss can lose the last commits.

A batch is a fixed number of round trips to the connection's thread whatever its size (BEGIN, one ``executemany``,
the report tables' ``rollup.SQLITE_FOLD``, COMMIT): on a busy event loop each round trip waits for the loop, so a
round trip per row made commits take seconds under load.
The tags and the spend_daily totals follow from a trigger on the inserted rows (see ``_ON_INSERT``), the
pre-summed report tables from another (``rollup.SQLITE_TRIGGER``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from sidecar.errors import LedgerUnavailable

from . import rollup
from .record import GenerationRecord
from .store import (
    INSERT_GENERATION,
    NEW_SCHEMA_VERSION,
    SCHEMA_VERSION,
    SELECT_GENERATION,
    SELECT_IDENTITIES,
    SELECT_SCHEMA_VERSION,
    SELECT_SPENT,
    SET_META,
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
_BOUNDARY = "summaries_boundary_rowid"
"""ledger_meta, while a version 1 ledger's report tables are filled: the last rowid the trigger did not sum."""
_FILLED_THROUGH = "summaries_filled_through"
"""ledger_meta, likewise: the last day summed ('' before the first)."""

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
            await db.execute(rollup.SQLITE_PENDING)
            await db.execute(_ON_INSERT)
            async with db.execute(SELECT_SCHEMA_VERSION) as cursor:
                row = await cursor.fetchone()
            if check_schema_version(row[0] if row else None, self.description):
                await self._start_summaries(db)
            else:
                self.presummed = True
            await db.execute("COMMIT")
        except sqlite3.Error as exc:
            await db.close()
            raise LedgerUnavailable(f"cannot initialise the ledger {self.path}: {exc}") from None
        except BaseException:
            await db.close()
            raise
        self._db = db

    async def _start_summaries(self, db: aiosqlite.Connection) -> None:
        """Inside the start-up transaction, which holds the file's write lock: the trigger that sums every row from
        now on, and the boundary (the last rowid before it) up to which ``fill_summaries`` adds the rows already
        there. A new ledger has none: it is version 2 at once."""
        async with db.execute(f"SELECT value FROM ledger_meta WHERE key = '{_BOUNDARY}'") as cursor:
            if await cursor.fetchone() is not None:
                return  # a fill interrupted by a restart: it goes on from the day it reached
        await db.execute(rollup.SQLITE_TRIGGER)
        for name in (*(table.name for table in rollup.TABLES), rollup.PENDING):
            await db.execute(f"DELETE FROM {name}")
        async with db.execute("SELECT MAX(rowid) FROM generations") as cursor:
            row = await cursor.fetchone()
        if row is None or row[0] is None:
            await db.execute(SET_META, NEW_SCHEMA_VERSION)
            self.presummed = True
            return
        await db.executemany(SET_META, [(_BOUNDARY, str(row[0])), (_FILLED_THROUGH, "")])

    async def fill_summaries(self) -> None:
        if self.presummed:
            return
        # A connection of its own, so that the reads and writes of the sidecar go on meanwhile: each day is one short
        # write transaction, and another process's fill simply takes the next day.
        try:
            db = await aiosqlite.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"cannot open the ledger {self.path}: {exc}") from None
        try:
            while not await self._fill_one_day(db):
                pass
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"filling the report tables failed ({self.path}): {exc}") from None
        finally:
            await db.close()
        self.presummed = True

    async def _fill_one_day(self, db: aiosqlite.Connection) -> bool:
        """Sum the next day of the rows before the boundary; True when none is left (the ledger is version 2)."""
        await db.execute("BEGIN IMMEDIATE")
        try:
            meta = {key: value for key, value in await db.execute_fetchall("SELECT key, value FROM ledger_meta")}
            if int(meta.get("schema_version", "0")) >= SCHEMA_VERSION:
                await db.execute("COMMIT")
                return True
            async with db.execute("SELECT MIN(day) FROM generations WHERE day > ?", (meta[_FILLED_THROUGH],)) as cur:
                row = await cur.fetchone()
            day = row[0] if row else None
            if day is None:
                await db.execute(f"DELETE FROM ledger_meta WHERE key IN ('{_BOUNDARY}', '{_FILLED_THROUGH}')")
                await db.execute(SET_META, NEW_SCHEMA_VERSION)
            else:
                for statement in rollup.SQLITE_BACKFILL_DAY:
                    await db.execute(statement, (day, int(meta[_BOUNDARY])))
                await db.execute(SET_META, (_FILLED_THROUGH, day))
            await db.execute("COMMIT")
            return day is None
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise

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
                for statement in rollup.SQLITE_FOLD:  # and the report tables' trigger queued the rows it added
                    await db.execute(statement)
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
        sql, params = report_sql(identity, query, presummed=self.presummed)
        return report_rows(query, await self._fetch(sql, params))

    async def generations(self, identity: str | None, query: GenerationsQuery) -> list[GenerationRecord]:
        sql, params = generations_sql(identity, query)
        return [record_from_row(row) for row in await self._fetch(sql, params)]

    async def identities(self) -> list[str]:
        return [row[0] for row in await self._fetch(SELECT_IDENTITIES, ())]
