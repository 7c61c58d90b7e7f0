"""Pre-summed report tables (ledger schema version 2): what keeps ``/v1/report`` and ``/ui`` fast on a large ledger.

A report over 90 days of a busy gateway would otherwise add up every generation in the range (300,000 rows for one
workload, 1,000,000 for an admin's view of all of them: 0.3-1.8 s; bench/README.md, "Ledger reports on 1,000,000
rows"). Every key a report groups or filters by, except the end user, is a column of these tables, so most reports
add up a few thousand pre-summed rows instead:

    report_days      (identity, day, model, provider, credential_type, status, failed) → the sums
    report_hours     the same per hour: the hourly reports
    report_day_tags  the same per (day, tag): the tag reports; a generation counts once under each of its tags, an
                     untagged one under the tag '' (so a report split by tag still shows it, as "no tag")

``status`` is the status a generation ended with (as ``store.GROUP_COLUMNS["status"]`` computes it) and ``failed``
is 1 for an ``error`` or ``aborted`` one. The end user is left out on purpose: it has thousands of values (one row
per generation again), so a report by or for a user, a filter on several tags at once, a tag report filtered by a
tag, and an hourly tag report read the generations as before (``store.report_sql`` decides).

A trigger on ``generations`` sees every inserted row. PostgreSQL: one statement trigger per batch sums its
transition table and upserts the sums, in key order, so that two sidecars' batches never wait for each other in a
cycle. SQLite: a row trigger queues the row (``report_pending``) and the writer sums the queue before it commits
(``SQLITE_FOLD``). A row that ``ON CONFLICT DO NOTHING`` skips (a retried batch) fires nothing, so nothing is counted
twice, and a row written by any process on the ledger is counted, whatever it runs.

A ledger of version 1 gets the tables and the trigger at the first start of a sidecar that knows them; the
generations already stored are summed into them in the background after start-up (``LedgerStore.fill_summaries``),
and until that is done the reports read the generations. Then the ledger is version 2, which a version 1 sidecar
refuses (``store.check_schema_version``). SQLite fills a day per transaction, after the rows up to the boundary
rowid recorded with the trigger; PostgreSQL in one transaction, which holds off other sidecars' inserts (about 24 s
per 1,000,000 generations; their batches wait in memory meanwhile).
"""

from __future__ import annotations

from dataclasses import dataclass

ROLLUP_VERSION = 2
"""The ledger schema version that has these tables."""

KEY_COLUMNS = ("identity", "day", "model", "provider", "credential_type", "status", "failed")
SUM_COLUMNS = (
    "requests",
    "cost_total",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    key: tuple[str, ...]
    """The primary key: identity and day first, so one workload's range is one range of it."""


DAYS = Table("report_days", KEY_COLUMNS)
HOURS = Table("report_hours", (*KEY_COLUMNS[:2], "hour", *KEY_COLUMNS[2:]))
DAY_TAGS = Table("report_day_tags", (*KEY_COLUMNS[:2], "tag", *KEY_COLUMNS[2:]))
TABLES = (DAYS, HOURS, DAY_TAGS)

UNTAGGED = ""
"""The tag under which an untagged generation is counted in ``report_day_tags`` (a tag is never empty)."""

# A generation's key values and summed values, from a row of ``generations`` (or of a batch's) named ``g``.
_STATUS = "COALESCE(g.error_status, CASE WHEN g.finish_reason = 'aborted' THEN 499 ELSE 200 END)"
_FAILED = "CASE WHEN g.finish_reason IN ('error', 'aborted') THEN 1 ELSE 0 END"
_SUMMED = {column: "1" if column == "requests" else f"g.{column}" for column in SUM_COLUMNS}


def _key_value(column: str, tag: str) -> str:
    if column == "status":
        return _STATUS
    if column == "failed":
        return _FAILED
    if column == "tag":
        return tag
    return f"g.{column}"


def create_tables(real: str) -> list[str]:
    """DDL for both dialects (``real``: the floating-point type name)."""
    statements = []
    for table in TABLES:
        columns = [f"{c} {'INTEGER' if c in ('status', 'failed') else 'TEXT'} NOT NULL" for c in table.key]
        columns += [f"{c} {real if c == 'cost_total' else 'BIGINT'} NOT NULL" for c in SUM_COLUMNS]
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {table.name} ({', '.join(columns)}, PRIMARY KEY ({', '.join(table.key)}))"
        )
    return statements


def _upsert_tail(table: Table) -> str:
    added = ", ".join(f"{c} = {table.name}.{c} + excluded.{c}" for c in SUM_COLUMNS)
    return f"ON CONFLICT ({', '.join(table.key)}) DO UPDATE SET {added}"


def _insert_head(table: Table) -> str:
    return f"INSERT INTO {table.name} ({', '.join((*table.key, *SUM_COLUMNS))}) "


# ----- SQLite: a row trigger queues, the writer sums the batch -------------------------------------------------

PENDING = "report_pending"
SQLITE_PENDING = f"CREATE TABLE IF NOT EXISTS {PENDING} (generation_rowid INTEGER PRIMARY KEY)"
SQLITE_TRIGGER = (
    "CREATE TRIGGER IF NOT EXISTS ledger_report_rollup AFTER INSERT ON generations BEGIN "
    f"INSERT INTO {PENDING} (generation_rowid) VALUES (NEW.rowid); END"
)
"""SQLite has no statement trigger: a row trigger of the file (not of a connection, so every writer of the file
queues its rows, whatever it runs) notes each inserted row, and ``SQLITE_FOLD`` sums the queue into the tables in the
writer's transaction. Three upserts per row in the trigger cost about half again as much CPU as one queued rowid
and three grouped upserts per batch (+33 against +21 µs per row written; bench/README.md, "Ledger reports")."""


# ----- the summing statements -----------------------------------------------------------------------------------


def _add_rows(table: Table, rows: str, tags: tuple[str, str], where: str = "", *, in_key_order: bool = False) -> str:
    """``INSERT … SELECT`` adding the generations ``rows`` (a FROM item named ``g``) that ``where`` keeps to
    ``table``'s sums. ``tags``: the dialect's set-returning function over ``g.tags`` (a JSON array as text) as a FROM
    item, and its value; an untagged generation has no element, so the outer join keeps it with a null tag, counted
    under ``UNTAGGED``. ``in_key_order``: upsert the keys sorted (see ``POSTGRES_TRIGGER``)."""
    keys = [_key_value(c, f"COALESCE({tags[1]}, '{UNTAGGED}')") for c in table.key]
    sums = [f"SUM({_SUMMED[c]})" for c in SUM_COLUMNS]
    source = f"{rows} LEFT JOIN {tags[0]} ON true" if table is DAY_TAGS else rows
    positions = ", ".join(str(n) for n in range(1, len(keys) + 1))
    order = f" ORDER BY {positions}" if in_key_order else ""
    return (
        f"{_insert_head(table)}SELECT {', '.join([*keys, *sums])} FROM {source}{where} GROUP BY {positions}{order} "
        f"{_upsert_tail(table)}"
    )


_SQLITE_TAGS = ("json_each(g.tags) AS t", "t.value")
_POSTGRES_TAGS = ("LATERAL jsonb_array_elements_text(g.tags::jsonb) AS t(tag)", "t.tag")

SQLITE_FOLD = [
    *(
        _add_rows(t, "generations g", _SQLITE_TAGS, f" WHERE g.rowid IN (SELECT generation_rowid FROM {PENDING})")
        for t in TABLES
    ),
    f"DELETE FROM {PENDING}",
]
"""The queued rows into the tables: run by every SQLite write, in its transaction, after its inserts."""

POSTGRES_TRIGGER = [
    "CREATE OR REPLACE FUNCTION ledger_report_rollup() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    + "; ".join(_add_rows(t, "new_rows g", _POSTGRES_TAGS, in_key_order=True) for t in TABLES)
    + "; RETURN NULL; END $$",
    "DROP TRIGGER IF EXISTS ledger_report_rollup ON generations",
    "CREATE TRIGGER ledger_report_rollup AFTER INSERT ON generations REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION ledger_report_rollup()",
]
"""One statement trigger per batch: it sums the batch's transition table and upserts the sums in key order, so two
sidecars' batches upserting the same keys lock them in the same order and never deadlock."""


# ----- filling the tables of a version 1 ledger -----------------------------------------------------------------

SQLITE_BACKFILL_DAY = [_add_rows(t, "generations g", _SQLITE_TAGS, " WHERE g.day = ? AND g.rowid <= ?") for t in TABLES]
"""One day of the generations that were there before the trigger (rowid up to the boundary): SQLite fills the tables
a day per transaction, so the other writers of the file wait for one day's sums at a time, never for all of them."""
POSTGRES_BACKFILL = [_add_rows(t, "generations g", _POSTGRES_TAGS) for t in TABLES]
