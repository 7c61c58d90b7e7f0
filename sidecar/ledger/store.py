"""What a ledger backend does, and the SQL both backends share.

A backend stores ``GenerationRecord`` batches atomically and answers its reads: one generation (scoped to the
caller's identity), a caller's spend since a day (for budgets), the grouped spend report (``report_sql``: the one
aggregation, for ``/v1/report`` and the ``/ui`` page alike), a page of generations, and the identities in the ledger.
The schema and the queries are written once in portable SQL with ``?`` placeholders; the PostgreSQL backend
renumbers them.

Tables:
    generations      one row per generation (columns = ``COLUMNS``)
    generation_tags  (generation_id, tag): one row per tag, for the report's tag grouping and filter
    spend_daily      (identity, day) → cost and request count, kept in the same transaction as the inserts, so a
                     budget check reads at most a few hundred small rows instead of scanning generations
    report_*         the report's sums per day, hour and tag, kept by a trigger (``rollup``), so a report adds up
                     pre-summed rows instead of every generation in its range

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

from . import rollup
from .record import GenerationRecord

SCHEMA_VERSION = rollup.ROLLUP_VERSION
"""1: generations, generation_tags, spend_daily. 2: the pre-summed report tables (``rollup``)."""

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


REPORT_INDEX_COLUMNS = (
    'model, provider, credential_type, finish_reason, error_status, "user", cost_total, input_tokens, output_tokens, '
    "cache_read_tokens, cache_write_tokens, reasoning_tokens, id"
)
"""With identity, day and hour: every column ``report_sql`` reads (filters, group keys, sums, the tag join's id)."""


def schema(real: str, boolean: str) -> list[str]:
    """DDL for both dialects."""
    types = column_types(real, boolean)
    columns = ",\n  ".join(f"{quote(name)} {types[name]}" for name in STORED_COLUMNS)
    return [
        "CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS generations (\n  {columns}\n)",
        "CREATE INDEX IF NOT EXISTS generations_identity_day ON generations (identity, day)",
        # Issue #15. Created at start-up when missing, so a ledger written by an earlier version gets them on its
        # first start (building them on 1,000,000 rows takes seconds). The report's covering indexes: a report reads
        # only the index, in (identity,) day order, never the table (7x faster at 1,000,000 rows; bench/README.md).
        "CREATE INDEX IF NOT EXISTS generations_report_identity ON generations "
        f"(identity, day, hour, {REPORT_INDEX_COLUMNS})",
        "CREATE INDEX IF NOT EXISTS generations_report_day ON generations "
        f"(day, hour, identity, {REPORT_INDEX_COLUMNS})",
        # The generations list, newest first, of one identity or of all.
        "CREATE INDEX IF NOT EXISTS generations_identity_created ON generations (identity, created_at_ms, id)",
        "CREATE INDEX IF NOT EXISTS generations_created ON generations (created_at_ms, id)",
        "CREATE TABLE IF NOT EXISTS generation_tags (generation_id TEXT NOT NULL, tag TEXT NOT NULL, "
        "PRIMARY KEY (generation_id, tag))",
        "CREATE INDEX IF NOT EXISTS generation_tags_tag ON generation_tags (tag)",
        f"CREATE TABLE IF NOT EXISTS spend_daily (identity TEXT NOT NULL, day TEXT NOT NULL, cost {real} NOT NULL, "
        "requests BIGINT NOT NULL, PRIMARY KEY (identity, day))",
        *rollup.create_tables(real),
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
    "workload": "g.identity",
    # The status a generation ended with, as the metrics label it: the provider's error status, 499 for aborted.
    "status": "COALESCE(g.error_status, CASE WHEN g.finish_reason = 'aborted' THEN 499 ELSE 200 END)",
}
FAILED_REASONS = "('error', 'aborted')"
MODEL_MATCHES = "(g.model = ? OR substr(g.model, length(g.provider) + 2) = ?)"
"""``provider/id`` matches exactly; a bare id matches that id under any provider (the model twice as parameters)."""
REPORT_SUMS = {
    "total_cost": "SUM(g.cost_total)",
    "input_tokens": "SUM(g.input_tokens + g.cache_read_tokens + g.cache_write_tokens)",
    "output_tokens": "SUM(g.output_tokens)",
    "cached_input_tokens": "SUM(g.cache_read_tokens)",
    "cache_creation_input_tokens": "SUM(g.cache_write_tokens)",
    "reasoning_tokens": "SUM(g.reasoning_tokens)",
    "request_count": "COUNT(*)",
}


SUMMED_GROUP_COLUMNS = {**GROUP_COLUMNS, "tag": f"NULLIF(g.tag, '{rollup.UNTAGGED}')", "status": "g.status"}
"""The group keys in the pre-summed tables (``rollup``): the tag '' is an untagged generation's row."""
SUMMED_SUMS = {**REPORT_SUMS, "request_count": "SUM(g.requests)"}
"""The same sums over pre-summed rows: the token and cost columns have the same names; a row counts ``requests``."""


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
    split_by: tuple[str, ...] = ()
    """Further group keys after ``group_by`` (``/ui``: time × model, provider × status…); not on ``/v1/report``."""
    errors_only: bool = False
    """Only generations that failed (``FAILED_REASONS``)."""

    @property
    def key(self) -> str:
        """The row key of the grouping: ``hour`` when grouping by day at hour resolution."""
        return "hour" if self.group_by == "day" and self.date_part == "hour" else self.group_by


def _model_and_provider(where: list[str], params: list[Any], model: str | None, provider: str | None) -> None:
    """The model and provider filters the report and the generations list share."""
    if model is not None:
        where.append(MODEL_MATCHES)
        params.extend((model, model))
    if provider is not None:
        where.append("g.provider = ?")
        params.append(provider)


def summed_table(query: ReportQuery) -> rollup.Table | None:
    """The pre-summed table that answers ``query`` exactly, or None when only the generations can.

    None for the end user (not a column of those tables: ``rollup``), and where a generation's tags must be seen
    together: a filter on several tags counts a generation with two of them once, and a tag report filtered by a tag
    shows the other tags of the generations that have it. No hourly tag table: an hourly tag report reads the
    generations (the tag rows per hour are nearly as many as the generations)."""
    keys = {query.key, *query.split_by}
    if query.user is not None or "user" in keys:
        return None
    tagged = "tag" in keys
    if query.tags:
        if len(query.tags) > 1 or tagged:
            return None
        tagged = True
    if "hour" in keys:
        return None if tagged else rollup.HOURS
    return rollup.DAY_TAGS if tagged else rollup.DAYS


def report_sql(identity: str | None, query: ReportQuery, *, presummed: bool = True) -> tuple[str, list[Any]]:
    """The report's one SQL statement: ``/v1/report`` and the ``/ui`` data both run it. ``identity=None``: every
    identity's rows (an admin's view on ``/ui``; ``/v1/report`` always passes the caller's). It reads a pre-summed
    table where one answers the query (``summed_table``), else the generations; ``presummed=False`` always reads the
    generations (the tests compare the two)."""
    table = summed_table(query) if presummed else None
    group_columns, sums_of = (GROUP_COLUMNS, REPORT_SUMS) if table is None else (SUMMED_GROUP_COLUMNS, SUMMED_SUMS)
    key = query.key
    column = group_columns[key]
    splits = [group_columns[name] for name in query.split_by]
    params: list[Any] = [query.start_day, query.end_day]
    where = ["g.day >= ?", "g.day <= ?"]
    if identity is not None:
        where.insert(0, "g.identity = ?")
        params.insert(0, identity)
    if query.user is not None:
        where.append('g."user" = ?')
        params.append(query.user)
    _model_and_provider(where, params, query.model, query.provider)
    if query.credential_type is not None:
        where.append("g.credential_type = ?")
        params.append(query.credential_type)
    if query.tags:
        marks = ", ".join("?" for _ in query.tags)
        if table is None:
            where.append(
                f"EXISTS (SELECT 1 FROM generation_tags x WHERE x.generation_id = g.id AND x.tag IN ({marks}))"
            )
        else:
            where.append(f"g.tag IN ({marks})")  # one tag (summed_table): each generation is one row of it
        params.extend(query.tags)
    if query.errors_only:
        where.append(f"g.finish_reason IN {FAILED_REASONS}" if table is None else "g.failed = 1")
    source = "generations g" if table is None else f"{table.name} g"
    if table is not None:
        if key == "tag":  # a tag report has a row per tag; untagged generations have none
            where.append(f"g.tag <> '{rollup.UNTAGGED}'")
    elif key == "tag":
        source += " JOIN generation_tags t ON t.generation_id = g.id"
    elif "tag" in query.split_by:  # an untagged generation is a row of its own, with a null tag
        source += " LEFT JOIN generation_tags t ON t.generation_id = g.id"
    sums = ", ".join(f"{expr} AS {name}" for name, expr in sums_of.items())
    extra_day = ", MIN(g.day) AS day" if key == "hour" else ""
    split_columns = "".join(f", {c} AS split_{n}" for n, c in enumerate(splits))
    groups = ", ".join([column, *splits])
    order = ", ".join([column, *(f"{c} NULLS FIRST" for c in splits)])
    sql = (
        f"SELECT {column} AS group_key{split_columns}{extra_day}, {sums} FROM {source} "
        f"WHERE {' AND '.join(where)} GROUP BY {groups} ORDER BY {order}"
    )
    return sql, params


def report_rows(query: ReportQuery, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Shape SQL result rows as the documented report rows; a null group key is left out of its row, a null value of
    a ``split_by`` key is kept (as ``None``)."""
    key = query.key
    names = ["group_key", *query.split_by, *(["day"] if key == "hour" else []), *REPORT_SUMS]
    out = []
    for row in rows:
        values = dict(zip(names, row, strict=True))
        group = values.pop("group_key")
        shaped: dict[str, Any] = {}
        if group is not None:
            shaped[key] = group
        for name in query.split_by:
            shaped[name] = values.pop(name)
        if "day" in values:
            shaped["day"] = values.pop("day")
        for name in REPORT_SUMS:
            value = values[name]
            shaped[name] = float(value or 0) if name == "total_cost" else int(value or 0)
        shaped["market_cost"] = shaped["total_cost"]  # no markup: the market price is what the provider charges
        out.append(shaped)
    return out


# ----- the generations list (/ui) ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GenerationsQuery:
    """One page of generations, newest first; ``before``: the id of the last row of the previous page."""

    limit: int = 50
    before: str | None = None
    model: str | None = None
    provider: str | None = None
    failed: bool | None = None
    """True: only ``error``/``aborted`` rows; False: only the others; None: all."""


def generations_sql(identity: str | None, query: GenerationsQuery) -> tuple[str, list[Any]]:
    """Keyset pagination on ``(created_at_ms, id)``: a page costs the same wherever it is, and rows written while
    the user pages never shift it (no duplicates, no gaps)."""
    where: list[str] = []
    params: list[Any] = []
    if identity is not None:
        where.append("g.identity = ?")
        params.append(identity)
    if query.before is not None:
        # A row value comparison: both databases make it a range of the (identity,) created_at_ms, id index. The
        # anchor is looked up in the caller's own rows, so an id of someone else's reveals nothing (an empty page).
        scope = " AND identity = ?" if identity is not None else ""
        where.append(f"(g.created_at_ms, g.id) < (SELECT created_at_ms, id FROM generations WHERE id = ?{scope})")
        params.extend((query.before, identity) if identity is not None else (query.before,))
    _model_and_provider(where, params, query.model, query.provider)
    if query.failed is not None:
        where.append(f"g.finish_reason {'IN' if query.failed else 'NOT IN'} {FAILED_REASONS}")
    condition = f" WHERE {' AND '.join(where)}" if where else ""
    sql = (
        f"SELECT {', '.join(f'g.{quote(c)}' for c in COLUMNS)} FROM generations g{condition} "
        "ORDER BY g.created_at_ms DESC, g.id DESC LIMIT ?"
    )
    return sql, [*params, query.limit]


SELECT_IDENTITIES = "SELECT DISTINCT identity FROM spend_daily ORDER BY identity"
"""Every identity with a generation in the ledger: from the small per-day totals, not the generations table."""


class LedgerStore(abc.ABC):
    """A backend. Every method may raise ``LedgerUnavailable``."""

    description: str
    """For logs: the kind and location, never a password."""

    presummed = False
    """Reports read the pre-summed tables where they can (``report_sql``): set by ``open`` on a ledger whose tables
    are complete, by ``fill_summaries`` on one whose tables an older sidecar never kept."""

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def fill_summaries(self) -> None:
        """Sum the generations an older sidecar wrote into the pre-summed tables (``rollup``), if ``open`` found a
        ledger of an older schema version; meanwhile the store serves as before. ``open`` never waits for this: it
        takes seconds per 100,000 generations."""

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
    async def report(self, identity: str | None, query: ReportQuery) -> list[dict[str, Any]]:
        """``identity=None``: every identity's rows."""

    @abc.abstractmethod
    async def generations(self, identity: str | None, query: GenerationsQuery) -> list[GenerationRecord]: ...

    @abc.abstractmethod
    async def identities(self) -> list[str]: ...


def check_schema_version(found: str | None, where: str) -> bool:
    """Refuse a ledger written by a newer sidecar rather than misread it. True: the ledger is new or of an older
    version, and must be brought to ``SCHEMA_VERSION`` (its pre-summed tables filled) before use."""
    if found is not None and int(found) > SCHEMA_VERSION:
        raise LedgerUnavailable(
            f"the ledger at {where} has schema version {found}; this sidecar understands up to {SCHEMA_VERSION} "
            "(upgrade the sidecar)"
        )
    return found is None or int(found) < SCHEMA_VERSION


SELECT_SCHEMA_VERSION = "SELECT value FROM ledger_meta WHERE key = 'schema_version'"
SET_META = "INSERT INTO ledger_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
NEW_SCHEMA_VERSION = ("schema_version", str(SCHEMA_VERSION))
"""``SET_META``'s parameters once a ledger is brought to this version."""


def to_numbered(sql: str) -> str:
    """``?`` → ``$1, $2…`` for PostgreSQL (our SQL has no ``?`` inside string literals)."""
    counter = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)
