"""What a ledger backend does, and the SQL both backends share.

A backend stores ``GenerationRecord`` batches atomically and answers three reads: one generation (scoped to the
caller's identity), a caller's spend since a day (for budgets), and the grouped spend report. The schema and the
queries are written once in portable SQL with ``?`` placeholders; the PostgreSQL backend renumbers them.

Tables:
    generations      one row per generation (columns = ``COLUMNS``)
    generation_tags  (generation_id, tag): one row per tag, for the report's tag grouping and filter
    spend_daily      (identity, day) → cost and request count, kept in the same transaction as the inserts, so a
                     budget check reads at most a few hundred small rows instead of scanning generations

A batch retried after a commit whose acknowledgement was lost must not count its rows twice: the tags and the spend
follow only the rows an insert really added (SQLite: a trigger on the connection; PostgreSQL: ``RETURNING``).
"""

from __future__ import annotations

import abc
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import orjson

from sidecar.errors import LedgerUnavailable

from .record import GenerationRecord

SCHEMA_VERSION = 1

COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(GenerationRecord))
# Columns that are not plain record fields in the table: tags are stored as a JSON array, day/hour are derived.
STORED_COLUMNS = (*COLUMNS, "day", "hour")


def column_types(real: str, boolean: str) -> dict[str, str]:
    """Column → SQL type of the ``generations`` table; only the floating-point and boolean names differ."""
    types = {
        "id": "TEXT PRIMARY KEY",
        "created_at_ms": "BIGINT NOT NULL",
        "identity": "TEXT NOT NULL",
        "model": "TEXT NOT NULL",
        "provider": "TEXT NOT NULL",
        "api": "TEXT NOT NULL",
        "streamed": f"{boolean} NOT NULL",
        "finish_reason": "TEXT NOT NULL",
        "ttft_ms": real,
        "generation_ms": f"{real} NOT NULL",
        "credential_type": "TEXT NOT NULL",
        "credential_source": "TEXT",
        "user": "TEXT",
        "tags": "TEXT NOT NULL",
        "quota_entity_id": "TEXT",
        "upstream_response_id": "TEXT",
        "upstream_model": "TEXT",
        "error_type": "TEXT",
        "error_status": "INTEGER",
        "day": "TEXT NOT NULL",
        "hour": "TEXT NOT NULL",
    }
    for name in COLUMNS:
        if name.endswith("_tokens"):
            types[name] = "BIGINT NOT NULL"
        elif name.startswith("cost_"):
            types[name] = f"{real} NOT NULL"
    return {name: types[name] for name in STORED_COLUMNS}


def schema(real: str, boolean: str) -> list[str]:
    """DDL for both dialects."""
    types = column_types(real, boolean)
    columns = ",\n  ".join(f"{quote(name)} {types[name]}" for name in STORED_COLUMNS)
    return [
        "CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS generations (\n  {columns}\n)",
        "CREATE INDEX IF NOT EXISTS generations_identity_day ON generations (identity, day)",
        "CREATE TABLE IF NOT EXISTS generation_tags (generation_id TEXT NOT NULL, tag TEXT NOT NULL, "
        "PRIMARY KEY (generation_id, tag))",
        "CREATE INDEX IF NOT EXISTS generation_tags_tag ON generation_tags (tag)",
        f"CREATE TABLE IF NOT EXISTS spend_daily (identity TEXT NOT NULL, day TEXT NOT NULL, cost {real} NOT NULL, "
        "requests BIGINT NOT NULL, PRIMARY KEY (identity, day))",
    ]


def quote(name: str) -> str:
    return '"user"' if name == "user" else name  # USER is a reserved word in PostgreSQL


INSERT_GENERATION = (
    f"INSERT INTO generations ({', '.join(map(quote, STORED_COLUMNS))}) "
    f"VALUES ({', '.join('?' for _ in STORED_COLUMNS)}) ON CONFLICT (id) DO NOTHING"
)
INSERT_TAG = "INSERT INTO generation_tags (generation_id, tag) VALUES (?, ?) ON CONFLICT DO NOTHING"


def add_spend(values: str) -> str:
    """The spend_daily upsert adding ``values``: four SQL expressions for identity, day, cost and requests."""
    return (
        f"INSERT INTO spend_daily (identity, day, cost, requests) VALUES ({values}) "
        "ON CONFLICT (identity, day) DO UPDATE SET cost = spend_daily.cost + excluded.cost, "
        "requests = spend_daily.requests + excluded.requests"
    )


ADD_SPEND = add_spend("?, ?, ?, ?")
SELECT_GENERATION = f"SELECT {', '.join(map(quote, COLUMNS))} FROM generations WHERE id = ? AND identity = ?"
SELECT_SPENT = "SELECT COALESCE(SUM(cost), 0) FROM spend_daily WHERE identity = ? AND day >= ?"


def row_values(record: GenerationRecord) -> tuple[Any, ...]:
    values = [getattr(record, name) for name in COLUMNS]
    values[COLUMNS.index("tags")] = orjson.dumps(list(record.tags)).decode()
    return (*values, record.day, record.hour)


def record_from_row(row: Sequence[Any]) -> GenerationRecord:
    values = dict(zip(COLUMNS, row, strict=True))
    values["streamed"] = bool(values["streamed"])
    values["tags"] = tuple(orjson.loads(values["tags"]))
    return GenerationRecord(**values)


def spend_by_day(records: Sequence[GenerationRecord]) -> dict[tuple[str, str], tuple[float, int]]:
    """(identity, day) → (cost, requests) for the spend_daily upsert."""
    totals: dict[tuple[str, str], tuple[float, int]] = {}
    for record in records:
        key = (record.identity, record.day)
        cost, count = totals.get(key, (0.0, 0))
        totals[key] = (cost + record.cost_total, count + 1)
    return totals


# ----- the spend report -----------------------------------------------------------------------------------------

GROUP_COLUMNS = {
    "day": "g.day",
    "hour": "g.hour",
    "user": 'g."user"',
    "model": "g.model",
    "tag": "t.tag",
    "provider": "g.provider",
    "credential_type": "g.credential_type",
}
REPORT_SUMS = {
    "total_cost": "SUM(g.cost_total)",
    "input_tokens": "SUM(g.input_tokens + g.cache_read_tokens + g.cache_write_tokens)",
    "output_tokens": "SUM(g.output_tokens)",
    "cached_input_tokens": "SUM(g.cache_read_tokens)",
    "cache_creation_input_tokens": "SUM(g.cache_write_tokens)",
    "reasoning_tokens": "SUM(g.reasoning_tokens)",
    "request_count": "COUNT(*)",
}


@dataclass(frozen=True, slots=True)
class ReportQuery:
    """A validated ``GET /v1/report`` (see ``views.parse_report_query``); dates are inclusive UTC days."""

    start_day: str
    end_day: str
    group_by: str = "day"
    date_part: str = "day"
    user: str | None = None
    model: str | None = None
    provider: str | None = None
    credential_type: str | None = None
    tags: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The row key of the grouping: ``hour`` when grouping by day at hour resolution."""
        return "hour" if self.group_by == "day" and self.date_part == "hour" else self.group_by


def report_sql(identity: str, query: ReportQuery) -> tuple[str, list[Any]]:
    key = query.key
    column = GROUP_COLUMNS[key]
    params: list[Any] = [identity, query.start_day, query.end_day]
    where = ["g.identity = ?", "g.day >= ?", "g.day <= ?"]
    if query.user is not None:
        where.append('g."user" = ?')
        params.append(query.user)
    if query.model is not None:
        # ``provider/id`` matches exactly; a bare id matches that id under any provider.
        where.append("(g.model = ? OR substr(g.model, length(g.provider) + 2) = ?)")
        params.extend((query.model, query.model))
    if query.provider is not None:
        where.append("g.provider = ?")
        params.append(query.provider)
    if query.credential_type is not None:
        where.append("g.credential_type = ?")
        params.append(query.credential_type)
    if query.tags:
        marks = ", ".join("?" for _ in query.tags)
        where.append(f"EXISTS (SELECT 1 FROM generation_tags x WHERE x.generation_id = g.id AND x.tag IN ({marks}))")
        params.extend(query.tags)
    join = " JOIN generation_tags t ON t.generation_id = g.id" if key == "tag" else ""
    sums = ", ".join(f"{expr} AS {name}" for name, expr in REPORT_SUMS.items())
    extra_day = ", MIN(g.day) AS day" if key == "hour" else ""
    sql = (
        f"SELECT {column} AS group_key{extra_day}, {sums} FROM generations g{join} "
        f"WHERE {' AND '.join(where)} GROUP BY {column} ORDER BY {column}"
    )
    return sql, params


def report_rows(key: str, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Shape SQL result rows as the documented report rows; a null group key is left out of its row."""
    names = ["group_key", *(["day"] if key == "hour" else []), *REPORT_SUMS]
    out = []
    for row in rows:
        values = dict(zip(names, row, strict=True))
        group = values.pop("group_key")
        shaped: dict[str, Any] = {}
        if group is not None:
            shaped[key] = group
        if "day" in values:
            shaped["day"] = values.pop("day")
        for name in REPORT_SUMS:
            value = values[name]
            shaped[name] = float(value or 0) if name == "total_cost" else int(value or 0)
        shaped["market_cost"] = shaped["total_cost"]  # no markup: the market price is what the provider charges
        out.append(shaped)
    return out


class LedgerStore(abc.ABC):
    """A backend. Every method may raise ``LedgerUnavailable``."""

    description: str
    """For logs: the kind and location, never a password."""

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def write(self, records: Sequence[GenerationRecord]) -> None:
        """Insert the batch in one transaction; rows already stored (a retried batch) are skipped, not re-counted."""

    @abc.abstractmethod
    async def get(self, identity: str, generation_id: str) -> GenerationRecord | None: ...

    @abc.abstractmethod
    async def spent(self, identity: str, since_day: str) -> float: ...

    @abc.abstractmethod
    async def report(self, identity: str, query: ReportQuery) -> list[dict[str, Any]]: ...


def check_schema_version(found: str | None, where: str) -> None:
    """Refuse a ledger written by a newer sidecar rather than misread it."""
    if found is not None and int(found) > SCHEMA_VERSION:
        raise LedgerUnavailable(
            f"the ledger at {where} has schema version {found}; this sidecar understands up to {SCHEMA_VERSION} "
            "(upgrade the sidecar)"
        )


def to_numbered(sql: str) -> str:
    """``?`` → ``$1, $2…`` for PostgreSQL (our SQL has no ``?`` inside string literals)."""
    counter = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)
