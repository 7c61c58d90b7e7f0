"""Ledger rows for the store tests, a writer process for the concurrent-writer test, and ``wait_for``.

``python -m tests.ledger.records LOCATION WRITER ROWS`` writes ROWS records for identity ``bearer:writer`` in
batches of 10 through a fresh store on LOCATION (a ``postgresql://`` URL or a SQLite path).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ulid import ULID

from sidecar.ledger.postgres import PostgresStore
from sidecar.ledger.record import GenerationRecord
from sidecar.ledger.sqlite import SQLiteStore
from sidecar.ledger.store import LedgerStore


def at(stamp: str) -> int:
    """``2026-11-01T10:15`` (UTC) → epoch milliseconds."""
    return int(datetime.fromisoformat(stamp).replace(tzinfo=UTC).timestamp() * 1000)


def record(stamp: str, model: str, cost: float, identity: str = "bearer:a", **fields: Any) -> GenerationRecord:
    provider = model.split("/", 1)[0]
    created = at(stamp)
    return GenerationRecord(
        id=f"gen_{ULID.from_timestamp(created / 1000)}",
        created_at_ms=created,
        identity=identity,
        model=model,
        provider=provider,
        api="anthropic-messages" if provider == "anthropic" else "openai-completions",
        streamed=True,
        cost_total=cost,
        **fields,
    )


async def wait_for(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``condition`` on the running loop until it holds; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def store_at(location: str) -> LedgerStore:
    return PostgresStore(location) if location.startswith("postgresql://") else SQLiteStore(Path(location))


async def _write(location: str, writer: int, rows: int) -> None:
    store = store_at(location)
    await store.open()
    try:
        batch: list[GenerationRecord] = []
        for n in range(rows):
            batch.append(
                record("2026-11-05T12:00", "openai/gpt-4o", 0.001, identity="bearer:writer", user=f"w{writer}")
            )
            if len(batch) == 10 or n == rows - 1:
                await store.write(batch)
                batch = []
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(_write(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
