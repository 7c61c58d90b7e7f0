"""The generation ledger: one row per generation (cost, usage, timing, attribution), lookups, budgets, reports.

record.py    GenerationRecord and request Attribution
store.py     the backend interface and the SQL both backends share
sqlite.py    embedded default (WAL file)          postgres.py   shared ledger (asyncpg)
service.py   Ledger: hot-path record(), batched writer, reads that include unwritten rows
budget.py    per-bearer USD budgets               views.py      AI Gateway wire shapes, query parsing
"""

from __future__ import annotations

from sidecar.config import Settings

from .service import Ledger
from .store import LedgerStore


def store_for(settings: Settings) -> LedgerStore:
    """PostgreSQL when ``[ledger] url`` is set, else the SQLite file at ``[ledger] path``."""
    if settings.ledger_url:
        from .postgres import PostgresStore

        return PostgresStore(settings.ledger_url)
    from .sqlite import SQLiteStore

    return SQLiteStore(settings.ledger_file)


def ledger_for(settings: Settings) -> Ledger:
    return Ledger(
        store_for(settings), flush_interval=settings.ledger_flush_interval, batch_size=settings.ledger_batch_size
    )


__all__ = ["Ledger", "LedgerStore", "ledger_for", "store_for"]
