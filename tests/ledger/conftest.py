"""Real databases for the ledger tests: a SQLite file per test and a fresh PostgreSQL database per test.

PostgreSQL must be running on 127.0.0.1:5432 with trust auth (``.ci/run`` starts it); when it is not, these tests
fail with a message that says so. They never skip.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from sidecar.ledger.postgres import PostgresStore
from sidecar.ledger.sqlite import SQLiteStore
from sidecar.ledger.store import LedgerStore

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


async def _admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({type(exc).__name__}: {exc}). Start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` (.ci/run does).",
            pytrace=False,
        )


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A new empty database; dropped afterwards."""
    name = f"ledger_test_{secrets.token_hex(6)}"
    admin = await _admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    admin = await _admin()
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "ledger" / "ledger.db"


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_factory(backend: str, request: pytest.FixtureRequest) -> object:
    """A callable returning a new (unopened) store on the same database each time: for restarts and writers."""
    if backend == "sqlite":
        path: Path = request.getfixturevalue("sqlite_path")
        return lambda: SQLiteStore(path)
    url: str = request.getfixturevalue("pg_url")
    return lambda: PostgresStore(url)


@pytest.fixture
async def store(store_factory: object) -> AsyncIterator[LedgerStore]:
    s: LedgerStore = store_factory()  # type: ignore[operator]
    await s.open()
    yield s
    await s.close()
