"""The shared-file token store: realtime client secrets for the workers of one sidecar (``[server] workers`` > 1)
when no Redis is configured. One SQLite file in the sidecar's home (WAL), one connection per worker (aiosqlite):
a secret minted by one worker is redeemed by whichever worker the browser's connection reaches, exactly once.

Redeeming is one ``BEGIN IMMEDIATE`` transaction (read the row, delete it): SQLite lets one writer in at a time, so
of any number of concurrent redemptions, in any number of processes, exactly one finds the row. Expired rows are
deleted whenever a secret is minted.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import aiosqlite

from sidecar.errors import TokenStoreUnavailable

from .tokens import Grant, TokenStore, decode_grant, encode_grant

BUSY_TIMEOUT_SECONDS = 5.0
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS realtime_tokens (key TEXT PRIMARY KEY, grant_json BLOB NOT NULL, "
    "expires_at REAL NOT NULL)"
)


class SqliteTokenStore(TokenStore):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"sqlite {path}"
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()  # one connection: this process's transactions must not interleave on it

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            db = await aiosqlite.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_SECONDS)
        except (OSError, sqlite3.Error) as exc:
            raise TokenStoreUnavailable(f"cannot open the realtime token store {self.path}: {exc}") from None
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            await db.close()
            raise TokenStoreUnavailable(f"cannot initialise the realtime token store {self.path}: {exc}") from None
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise TokenStoreUnavailable("the realtime token store is closed")
        return self._db

    async def put(self, key: str, grant: Grant) -> None:
        db = self._conn()
        try:
            async with self._lock:  # autocommit statements, but never inside another coroutine's redemption
                await db.execute("DELETE FROM realtime_tokens WHERE expires_at <= ?", (time.time(),))
                await db.execute(
                    "INSERT INTO realtime_tokens (key, grant_json, expires_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    (key, encode_grant(grant), grant.expires_at),
                )
        except sqlite3.Error as exc:
            raise TokenStoreUnavailable(f"realtime token store failed ({self.description}): {exc}") from None

    async def consume(self, key: str) -> Grant | None:
        db = self._conn()
        try:
            async with self._lock:
                row = await self._take(db, key)
        except sqlite3.Error as exc:
            raise TokenStoreUnavailable(f"realtime token store failed ({self.description}): {exc}") from None
        return None if row is None else decode_grant(row[0])

    @staticmethod
    async def _take(db: aiosqlite.Connection, key: str) -> sqlite3.Row | None:
        await db.execute("BEGIN IMMEDIATE")
        try:
            async with db.execute("SELECT grant_json FROM realtime_tokens WHERE key = ?", (key,)) as cursor:
                row = await cursor.fetchone()
            if row is not None:
                await db.execute("DELETE FROM realtime_tokens WHERE key = ?", (key,))
            await db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise
        return row
