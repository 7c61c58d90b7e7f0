"""Ledger reports on 1,000,000 rows (issue #15): ``/v1/report`` and the ``/ui`` JSON API, SQLite and PostgreSQL.

Seeds ``--rows`` generations (default 1,000,000) over the 90 days ending ``END_DAY`` into a temporary SQLite file and
a temporary PostgreSQL database (created on ``--pg-admin-url``'s server and dropped afterwards), through the ledger's
own ``LedgerStore.write`` (so the tags and the per-day spend are written as in production), then starts the real
sidecar (``bench/run.py``'s ``start_sidecar``: ``python -m sidecar serve``) on each and asks over HTTP, one request at
a time, each query ``--repeat`` times after 3 unmeasured warm-ups. Reported: p50 and p95 of the wall time per request.

Rows: 8 identities with skewed shares (the bench bearer, ``ONE``, has 30 %), 8 models of 3 providers, 0-3 of 12 tags,
200 users, 3 % errors (429, 500, 529) and 2 % aborted. The admin bearer (``[[workloads]] admin = true``) sees every
identity; ``one`` is the bench bearer, which sees its own rows (``/v1/report`` is always scoped to the caller).

    .venv/bin/python bench/ledger_report.py                    # 1,000,000 rows, both backends (~10 min)
    .venv/bin/python bench/ledger_report.py --rows 100000 --repeat 10 --backends sqlite   # a quick look
    .venv/bin/python bench/ledger_report.py --json out.json

Goal (issue #15): ``/v1/report`` p95 <= 200 ms on both backends at 1,000,000 rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from run import TOKEN, Processes, free_port, start_sidecar
from ulid import ULID

from sidecar.auth import identity_of
from sidecar.ledger.postgres import PostgresStore
from sidecar.ledger.record import GenerationRecord
from sidecar.ledger.sqlite import SQLiteStore
from sidecar.ledger.store import LedgerStore

END_DAY = date(2026, 11, 30)
DAYS = 90
BATCH = 5_000
GOAL_P95_MS = 200.0
ADMIN_TOKEN = "bench-admin-bearer-0123456789abcdef"
ONE = identity_of(TOKEN)
IDENTITIES = [
    (ONE, 30),
    ("workload:boss", 2),
    *((f"workload:team-{n}", share) for n, share in enumerate((20, 15, 12, 10, 6, 5))),
]
MODELS = [
    ("anthropic/claude-sonnet-4-5", 30, (3.0, 15.0)),
    ("anthropic/claude-haiku-4-5", 15, (1.0, 5.0)),
    ("anthropic/claude-opus-4-5", 5, (5.0, 25.0)),
    ("openai/gpt-4o", 15, (2.5, 10.0)),
    ("openai/gpt-4o-mini", 15, (0.15, 0.6)),
    ("openai/gpt-5", 10, (1.25, 10.0)),
    ("google/gemini-2.5-pro", 5, (1.25, 10.0)),
    ("google/gemini-2.5-flash", 5, (0.3, 2.5)),
]
TAGS = [f"tag-{n}" for n in range(12)]
ERRORS = [("rate_limit_error", 429), ("api_error", 500), ("overloaded_error", 529)]


def seed_rows(count: int, rng: random.Random) -> Iterator[GenerationRecord]:
    identities, identity_weights = zip(*IDENTITIES, strict=True)
    models = [m for m, _, _ in MODELS]
    model_weights = [w for _, w, _ in MODELS]
    prices = {m: p for m, _, p in MODELS}
    end = datetime(END_DAY.year, END_DAY.month, END_DAY.day, tzinfo=UTC) + timedelta(days=1)
    span_ms = DAYS * 86_400_000
    end_ms = int(end.timestamp() * 1000)
    for _ in range(count):
        created = end_ms - rng.randrange(span_ms) - 1
        model = rng.choices(models, model_weights)[0]
        inp, out = rng.randrange(100, 20_000), rng.randrange(10, 2_000)
        cache_read = rng.randrange(0, 10_000) if rng.random() < 0.4 else 0
        cost_in, cost_out = prices[model]
        roll = rng.random()
        failure: dict[str, Any] = {}
        if roll < 0.03:
            error_type, status = rng.choice(ERRORS)
            failure = {"finish_reason": "error", "error_type": error_type, "error_status": status}
            out = 0
        elif roll < 0.05:
            failure = {"finish_reason": "aborted", "error_type": "request_aborted", "error_status": 499}
        cost = (inp * cost_in + out * cost_out + cache_read * cost_in / 10) / 1e6
        yield GenerationRecord(
            id=f"gen_{ULID.from_timestamp(created / 1000)}",
            created_at_ms=created,
            identity=rng.choices(identities, identity_weights)[0],
            model=model,
            provider=model.split("/", 1)[0],
            api="bench",
            streamed=True,
            ttft_ms=rng.uniform(50, 2_000),
            generation_ms=rng.uniform(500, 60_000),
            input_tokens=inp,
            output_tokens=out,
            cache_read_tokens=cache_read,
            reasoning_tokens=rng.randrange(0, out + 1) if model.endswith("gpt-5") else 0,
            cost_total=cost,
            user=f"user-{rng.randrange(200)}" if rng.random() < 0.7 else None,
            tags=tuple(rng.sample(TAGS, rng.choice((0, 1, 1, 2, 3)))),
            **failure,
        )


async def vacuum(url: str) -> None:
    """What autovacuum does some time after a bulk insert (statistics, the visibility map that lets a report read
    only its covering index): done at once, so every run measures the same steady state."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def seed(store: LedgerStore, rows: int) -> float:
    started = time.monotonic()
    await store.open()
    try:
        rng = random.Random(15)
        batch: list[GenerationRecord] = []
        for n, row in enumerate(seed_rows(rows, rng), 1):
            batch.append(row)
            if len(batch) == BATCH or n == rows:
                await store.write(batch)
                batch = []
            if n % 200_000 == 0:
                print(f"  {n:,} rows, {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    finally:
        await store.close()
    return time.monotonic() - started


def queries(days: int) -> list[tuple[str, str, str, dict[str, str]]]:
    """(name, who, path, params): every /v1/report grouping the issue names and each /ui query."""
    start = (END_DAY - timedelta(days=days - 1)).isoformat()
    span = {"start_date": start, "end_date": END_DAY.isoformat()}
    out: list[tuple[str, str, str, dict[str, str]]] = []
    for group in ("day", "model", "tag"):
        out.append((f"/v1/report group_by={group}", "one", "/v1/report", {**span, "group_by": group}))
    for who in ("admin", "one"):
        for group, part in (("model", "day"), ("workload", "day"), ("tag", "day"), ("model", "hour")):
            out.append(
                (f"usage {group} by {part}", who, "/ui/api/usage", {**span, "group_by": group, "date_part": part})
            )
        out.append(("errors by day", who, "/ui/api/errors", span))
    return out


def page_queries() -> list[tuple[str, str, str, dict[str, str]]]:
    out: list[tuple[str, str, str, dict[str, str]]] = []
    for who in ("admin", "one"):
        out.append(("generations, first page", who, "/ui/api/generations", {"limit": "50"}))
        out.append(("generations, page 20 (before=)", who, "/ui/api/generations", {"limit": "50", "before": ""}))
        out.append(("generations status=error", who, "/ui/api/generations", {"limit": "50", "status": "error"}))
        out.append(("generations model=gpt-5", who, "/ui/api/generations", {"limit": "50", "model": "gpt-5"}))
        out.append(("budgets", who, "/ui/api/budgets", {}))
        out.append(("me", who, "/ui/api/me", {}))
    return out


def measure(
    client: httpx.Client, path: str, params: dict[str, str], headers: dict[str, str], repeat: int
) -> list[float]:
    for _ in range(3):
        response = client.get(path, params=params, headers=headers)
        response.raise_for_status()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path, params=params, headers=headers)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return times


def page_20_anchor(client: httpx.Client, headers: dict[str, str]) -> str:
    before = ""
    for _ in range(19):
        body = client.get(
            "/ui/api/generations", params={"limit": "50", **({"before": before} if before else {})}, headers=headers
        ).json()
        before = body["next"]
    return before


def run_backend(name: str, ledger_toml: str, workdir: Path, repeat: int) -> list[dict[str, Any]]:
    admin_token = workdir / "admin.token"
    admin_token.write_text(ADMIN_TOKEN, encoding="utf-8")
    config = f'{ledger_toml}\n[[workloads]]\nname = "boss"\ntoken = "file:{admin_token}"\nadmin = true\n'
    procs = Processes()
    results = []
    try:
        _, port, _ = start_sidecar(procs, sys.executable, None, workdir, free_port(), None, None, None, [], config)
        headers = {"admin": {"authorization": f"Bearer {ADMIN_TOKEN}"}, "one": {"authorization": f"Bearer {TOKEN}"}}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            anchors = {who: page_20_anchor(client, h) for who, h in headers.items()}
            plan = [(d, q) for d in (30, 90) for q in queries(d)] + [(0, q) for q in page_queries()]
            for days, (query, who, path, params) in plan:
                if "before" in params:
                    params = {**params, "before": anchors[who]}
                times = measure(client, path, params, headers[who], repeat)
                row = {
                    "backend": name,
                    "query": query,
                    "who": who,
                    "days": days or None,
                    "p50_ms": statistics.median(times),
                    "p95_ms": statistics.quantiles(times, n=20)[18],
                }
                results.append(row)
                print(
                    f"  {name:8} {query:34} {who:5} {days or '-':>3} d  p50 {row['p50_ms']:7.1f} ms  "
                    f"p95 {row['p95_ms']:7.1f} ms",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        procs.stop_all()
    return results


def _backend_cpu(pid: int) -> float:
    """Seconds of CPU a PostgreSQL backend process used (utime + stime in /proc, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def write_cost_once(
    backend: str, rows: list[GenerationRecord], summed: bool, admin_url: str
) -> tuple[float, float]:
    """CPU per row written (this process, the aiosqlite thread included; and the PostgreSQL backend), with the report
    tables kept or without them (their trigger dropped: what a version 1 ledger cost)."""
    with tempfile.TemporaryDirectory(prefix="ledger-write-") as tmp:
        name = await create_database(admin_url) if backend == "postgres" else ""
        store: LedgerStore
        if backend == "postgres":
            store = PostgresStore(admin_url.rsplit("/", 1)[0] + f"/{name}", min_size=1, max_size=1)
        else:
            store = SQLiteStore(Path(tmp) / "ledger.db")
        await store.open()
        try:
            pid = 0
            if isinstance(store, PostgresStore):
                async with store._get_pool().acquire() as conn:
                    pid = await conn.fetchval("SELECT pg_backend_pid()")
                    if not summed:
                        await conn.execute("DROP TRIGGER ledger_report_rollup ON generations")
            elif not summed:
                await store._conn().execute("DROP TRIGGER ledger_report_rollup")
            before, server_before = time.process_time(), _backend_cpu(pid) if pid else 0.0
            for n in range(0, len(rows), 256):  # the writer's batch size
                await store.write(rows[n : n + 256])
            own, server = time.process_time() - before, (_backend_cpu(pid) - server_before) if pid else 0.0
        finally:
            await store.close()
            if name:
                await drop_database(admin_url, name)
    return own / len(rows) * 1e6, server / len(rows) * 1e6


def write_cost(backends: list[str], count: int, admin_url: str) -> None:
    """What keeping the report tables costs each write: ``count`` rows in time order (as a sidecar writes them),
    3 rounds alternating with and without the tables; medians of CPU µs per row."""
    rows = sorted(seed_rows(count, random.Random(7)), key=lambda r: r.created_at_ms)
    for backend in backends:
        figures: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(3):
            for summed in (False, True):
                figures[summed].append(asyncio.run(write_cost_once(backend, rows, summed, admin_url)))
        for summed, runs in figures.items():
            own = statistics.median(r[0] for r in runs)
            server = statistics.median(r[1] for r in runs)
            where = f", PostgreSQL backend {server:.1f}" if backend == "postgres" else ""
            print(
                f"  write {backend:8} {'with' if summed else 'without':7} the report tables: {own:.1f} µs CPU per row"
                f" in the sidecar{where}",
                file=sys.stderr,
                flush=True,
            )


async def create_database(admin_url: str) -> str:
    name = f"ledger_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name


async def drop_database(admin_url: str, name: str) -> None:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def print_table(results: list[dict[str, Any]]) -> None:
    backends = sorted({r["backend"] for r in results}, reverse=True)  # sqlite, postgres
    keys = list(dict.fromkeys((r["query"], r["who"], r["days"]) for r in results))
    by = {(r["backend"], r["query"], r["who"], r["days"]): r for r in results}
    header = "| query | bearer | days | " + " | ".join(f"{b} p50 / p95 ms" for b in backends) + " |"
    print(header)
    print("|---|---|---:|" + "---:|" * len(backends))
    for query, who, days in keys:
        cells = []
        for backend in backends:
            r = by.get((backend, query, who, days))
            cells.append(f"{r['p50_ms']:.1f} / {r['p95_ms']:.1f}" if r else "-")
        print(f"| {query} | {who} | {days or '-'} | " + " | ".join(cells) + " |")
    worst = {
        b: max(r["p95_ms"] for r in results if r["backend"] == b and r["query"].startswith("/v1/report"))
        for b in backends
    }
    for backend, p95 in worst.items():
        verdict = "meets" if p95 <= GOAL_P95_MS else "MISSES"
        print(f"\n{backend}: worst /v1/report p95 {p95:.1f} ms ({verdict} the {GOAL_P95_MS:.0f} ms goal)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30, help="measured requests per query (default 30)")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--json", type=Path, help="also write every figure as JSON")
    parser.add_argument(
        "--write-rows",
        type=int,
        default=40_000,
        help="rows per write-cost run, with and without the report tables (0: skip; default 40,000)",
    )
    args = parser.parse_args()
    backends = args.backends.split(",")
    if args.write_rows:
        write_cost(backends, args.write_rows, args.pg_admin_url)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
        workdir = Path(tmp)
        if "sqlite" in backends:
            path = workdir / "ledger.db"
            print(f"seeding {args.rows:,} rows into SQLite {path}", file=sys.stderr)
            took = asyncio.run(seed(SQLiteStore(path), args.rows))
            print(f"  seeded in {took:.0f} s; {path.stat().st_size / 2**20:.0f} MiB", file=sys.stderr)
            results += run_backend("sqlite", f'[ledger]\npath = "{path}"\n', workdir, args.repeat)
        if "postgres" in backends:
            name = asyncio.run(create_database(args.pg_admin_url))
            url = args.pg_admin_url.rsplit("/", 1)[0] + f"/{name}"
            try:
                print(f"seeding {args.rows:,} rows into PostgreSQL database {name}", file=sys.stderr)
                took = asyncio.run(seed(PostgresStore(url), args.rows))
                asyncio.run(vacuum(url))
                print(f"  seeded in {took:.0f} s", file=sys.stderr)
                results += run_backend("postgres", f'[ledger]\nurl = "{url}"\n', workdir, args.repeat)
            finally:
                asyncio.run(drop_database(args.pg_admin_url, name))
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
