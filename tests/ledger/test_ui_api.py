"""The /ui JSON API (issue #15) through the real app over HTTP, on the SQLite ledger and on PostgreSQL.

The ledger is seeded through the real store (``LedgerStore.write``, the batch writer's own path) with rows whose sums
were worked out by hand (binary fractions, so float sums are exact); the sidecar then reads the same database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar.auth import identity_of
from sidecar.ledger.record import GenerationRecord
from sidecar.ledger.store import LedgerStore
from tests.conftest import pi_body
from tests.fakeupstream import FakeUpstream, Reply, fixture_bytes
from tests.ledger.records import record
from tests.sidecar_server import TOKEN, RunningSidecar, run_sidecar, sidecar_environ, write_config

ME = identity_of(TOKEN)  # the plain bearer: not an admin
OTHER, BOSS, THRIFTY = "workload:other", "workload:boss", "workload:thrifty"
GHOST = "bearer:ghost00000000000"  # in the ledger, not configured (an earlier token, another replica's)
OTHER_TOKEN = "other-workload-bearer-0123456789"
BOSS_TOKEN = "boss-workload-bearer-0123456789ab"
THRIFTY_TOKEN = "thrifty-workload-bearer-01234567"
CONFIG = """
[upstream]
max_retries = 0

[budget]
period = "total"

[[workloads]]
name = "other"
token = "env:OTHER_TOKEN"
budget_usd = 20.0

[[workloads]]
name = "boss"
token = "env:BOSS_TOKEN"
admin = true
budget_usd = 5.0

[[workloads]]
name = "thrifty"
token = "env:THRIFTY_TOKEN"
budget_usd = 1.0
"""
AS_ME = {"authorization": f"Bearer {TOKEN}"}
AS_OTHER = {"authorization": f"Bearer {OTHER_TOKEN}"}
AS_BOSS = {"authorization": f"Bearer {BOSS_TOKEN}"}
AS_THRIFTY = {"authorization": f"Bearer {THRIFTY_TOKEN}"}
SONNET, HAIKU, GPT = "anthropic/claude-sonnet-4-5", "anthropic/claude-haiku-4-5", "openai/gpt-4o"
RANGE = {"start_date": "2026-11-01", "end_date": "2026-11-02"}

DATASET = [
    record(
        "2026-11-01T10:15",
        SONNET,
        0.5,
        ME,
        input_tokens=100,
        cache_read_tokens=20,
        cache_write_tokens=10,
        output_tokens=50,
        reasoning_tokens=5,
        user="alice",
        tags=("x", "y"),
    ),
    record("2026-11-01T10:45", GPT, 0.25, ME, input_tokens=200, output_tokens=20, user="bob", tags=("x",)),
    record("2026-11-01T11:05", SONNET, 0.125, ME, input_tokens=10, output_tokens=10),
    record(
        "2026-11-02T09:00",
        GPT,
        1.0,
        ME,
        input_tokens=1000,
        cache_read_tokens=500,
        output_tokens=100,
        tags=("y",),
        finish_reason="error",
        error_type="rate_limit_error",
        error_status=429,
    ),
    record(
        "2026-11-02T12:00",
        HAIKU,
        0.03125,
        ME,
        input_tokens=8,
        output_tokens=2,
        finish_reason="aborted",
        error_type="request_aborted",
        error_status=499,
    ),
    record("2026-11-03T00:00", "openai/gpt-4o-mini", 0.0625, ME),  # after the range
    # Other identities' rows: never in ME's answers.
    record("2026-11-01T10:20", GPT, 8.0, OTHER, tags=("x",), finish_reason="error", error_status=500),
    record("2026-11-02T08:00", GPT, 16.0, GHOST),
    record("2026-11-01T09:00", GPT, 2.0, THRIFTY),  # over its 1.0 budget
]
MINE = [r for r in DATASET if r.identity == ME]


def sums(cost: float, count: int, tokens: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)) -> dict[str, Any]:
    names = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_creation_input_tokens", "reasoning_tokens")
    return {"total_cost": cost, **dict(zip(names, tokens, strict=True)), "request_count": count}


@pytest.fixture
def ledger_environ(backend: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """Points the sidecar at the database the ``store`` fixture opened."""
    if backend == "sqlite":
        return {"SIDECAR_LEDGER_PATH": str(request.getfixturevalue("sqlite_path"))}
    return {"SIDECAR_LEDGER_URL": str(request.getfixturevalue("pg_url"))}


@contextmanager
def launch(
    upstream: FakeUpstream, tmp_path: Path, ledger_environ: dict[str, str], extra: str = ""
) -> Iterator[RunningSidecar]:
    environ = sidecar_environ(
        upstream.url,
        tmp_path,
        OTHER_TOKEN=OTHER_TOKEN,
        BOSS_TOKEN=BOSS_TOKEN,
        THRIFTY_TOKEN=THRIFTY_TOKEN,
        **ledger_environ,
    )
    with run_sidecar(environ, write_config(tmp_path, CONFIG + extra)) as running:
        yield running


@pytest.fixture
async def sidecar(
    store: LedgerStore, ledger_environ: dict[str, str], upstream: FakeUpstream, tmp_path: Path
) -> AsyncIterator[RunningSidecar]:
    await store.write(DATASET)
    with launch(upstream, tmp_path, ledger_environ) as running:
        yield running


def get(sidecar: RunningSidecar, path: str, headers: dict[str, str] = AS_ME, **params: Any) -> Any:
    response = httpx.get(f"{sidecar.url}{path}", params=params, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def refused(sidecar: RunningSidecar, path: str, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{sidecar.url}{path}", params=params, headers=headers, timeout=10)
    assert response.status_code >= 400, response.text
    error: dict[str, Any] = response.json()["error"]
    return {"status": response.status_code, **error}


# ----- usage ----------------------------------------------------------------------------------------------------


async def test_usage_by_day_and_model_has_the_hand_computed_sums(sidecar: RunningSidecar) -> None:
    body = get(sidecar, "/ui/api/usage", **RANGE, date_part="day", group_by="model")
    assert body["rows"] == [
        {"period": "2026-11-01", "key": SONNET, **sums(0.625, 2, (140, 60, 20, 10, 5))},
        {"period": "2026-11-01", "key": GPT, **sums(0.25, 1, (200, 20, 0, 0, 0))},
        {"period": "2026-11-02", "key": HAIKU, **sums(0.03125, 1, (8, 2, 0, 0, 0))},
        {"period": "2026-11-02", "key": GPT, **sums(1.0, 1, (1500, 100, 500, 0, 0))},
    ]
    assert body["totals"] == sums(1.90625, 5, (1848, 182, 520, 10, 5))
    assert "totals_note" not in body


@pytest.mark.parametrize("group_by", ["model", "tag", "user", "provider", "workload"])
@pytest.mark.parametrize("date_part", ["day", "hour"])
async def test_usage_totals_equal_the_v1_report(sidecar: RunningSidecar, group_by: str, date_part: str) -> None:
    body = get(sidecar, "/ui/api/usage", **RANGE, date_part=date_part, group_by=group_by)
    report = get(sidecar, "/v1/report", **RANGE)["results"]
    for name, total in body["totals"].items():
        assert total == sum(row[name] for row in report), name
    if group_by != "tag":  # a tagged generation counts once per tag in the rows
        for name, total in body["totals"].items():
            assert total == sum(row[name] for row in body["rows"]), name


async def test_usage_by_tag_counts_a_generation_once_per_tag_and_once_in_the_totals(sidecar: RunningSidecar) -> None:
    body = get(sidecar, "/ui/api/usage", **RANGE, group_by="tag")
    assert [(r["period"], r["key"], r["total_cost"], r["request_count"]) for r in body["rows"]] == [
        ("2026-11-01", None, 0.125, 1),  # untagged: a row with a null key, first in its period
        ("2026-11-01", "x", 0.75, 2),
        ("2026-11-01", "y", 0.5, 1),
        ("2026-11-02", None, 0.03125, 1),
        ("2026-11-02", "y", 1.0, 1),
    ]
    assert sum(r["total_cost"] for r in body["rows"]) == 2.40625  # the two-tag generation twice
    assert body["totals"]["total_cost"] == 1.90625 and body["totals"]["request_count"] == 5
    assert "once per tag" in body["totals_note"]


async def test_usage_by_hour_and_provider(sidecar: RunningSidecar) -> None:
    body = get(sidecar, "/ui/api/usage", **RANGE, date_part="hour", group_by="provider")
    assert [(r["period"], r["key"], r["total_cost"]) for r in body["rows"]] == [
        ("2026-11-01T10:00:00Z", "anthropic", 0.5),
        ("2026-11-01T10:00:00Z", "openai", 0.25),
        ("2026-11-01T11:00:00Z", "anthropic", 0.125),
        ("2026-11-02T09:00:00Z", "openai", 1.0),
        ("2026-11-02T12:00:00Z", "anthropic", 0.03125),
    ]


async def test_usage_by_user_keeps_the_rows_without_a_user(sidecar: RunningSidecar) -> None:
    body = get(sidecar, "/ui/api/usage", start_date="2026-11-01", end_date="2026-11-01", group_by="user")
    assert [(r["key"], r["total_cost"]) for r in body["rows"]] == [(None, 0.125), ("alice", 0.5), ("bob", 0.25)]


async def test_an_admin_sees_every_workload_or_the_one_it_names(sidecar: RunningSidecar) -> None:
    body = get(sidecar, "/ui/api/usage", AS_BOSS, **RANGE, group_by="workload")
    assert sorted((r["period"], r["key"], r["total_cost"], r["request_count"]) for r in body["rows"]) == sorted(
        [
            ("2026-11-01", ME, 0.875, 3),
            ("2026-11-01", OTHER, 8.0, 1),
            ("2026-11-01", THRIFTY, 2.0, 1),
            ("2026-11-02", ME, 1.03125, 2),
            ("2026-11-02", GHOST, 16.0, 1),
        ]
    )
    assert body["totals"]["total_cost"] == 27.90625 and body["totals"]["request_count"] == 8
    named = get(sidecar, "/ui/api/usage", AS_BOSS, **RANGE, group_by="workload", workload=OTHER)
    assert [(r["key"], r["total_cost"]) for r in named["rows"]] == [(OTHER, 8.0)]
    assert named["totals"]["total_cost"] == 8.0


async def test_a_workload_sees_only_its_own_rows(sidecar: RunningSidecar) -> None:
    body = get(sidecar, "/ui/api/usage", AS_OTHER, **RANGE, group_by="workload")
    assert [(r["key"], r["total_cost"]) for r in body["rows"]] == [(OTHER, 8.0)]
    mine = get(sidecar, "/ui/api/usage", **RANGE, group_by="workload")
    assert {r["key"] for r in mine["rows"]} == {ME}
    assert get(sidecar, "/ui/api/usage", **RANGE, group_by="workload", workload=ME)["rows"] == mine["rows"]


@pytest.mark.parametrize("path", ["/ui/api/usage", "/ui/api/generations", "/ui/api/errors"])
async def test_a_workload_naming_another_is_forbidden(sidecar: RunningSidecar, path: str) -> None:
    error = refused(sidecar, path, AS_ME, **RANGE, workload=OTHER)
    assert error["status"] == 403 and error["type"] == "forbidden"
    assert "only its own" in error["message"]


@pytest.mark.parametrize(
    ("path", "params", "fragment"),
    [
        ("/ui/api/usage", {**RANGE, "group_by": "day"}, "`group_by` must be one of model, workload"),
        ("/ui/api/usage", {"start_date": "2026-11-01"}, "Missing query parameter `end_date`"),
        ("/ui/api/usage", {**RANGE, "date_part": "week"}, "`date_part` must be one of"),
        ("/ui/api/errors", {"end_date": "2026-11-01"}, "Missing query parameter `start_date`"),
        ("/ui/api/generations", {"limit": "0"}, "`limit` must be a whole number from 1 to 200"),
        ("/ui/api/generations", {"limit": "201"}, "`limit` must be a whole number from 1 to 200"),
        ("/ui/api/generations", {"before": "chatcmpl-1"}, "`before` must be a generation id"),
        ("/ui/api/generations", {"status": "fine"}, "`status` must be ok or error"),
    ],
)
async def test_bad_parameters_say_what_to_fix(
    sidecar: RunningSidecar, path: str, params: dict[str, str], fragment: str
) -> None:
    error = refused(sidecar, path, AS_ME, **params)
    assert error["status"] == 400 and error["type"] == "invalid_request_error"
    assert fragment in error["message"]


@pytest.mark.parametrize("path", ["me", "usage", "generations", "errors", "budgets", "live"])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token-0123456789", f"Basic {TOKEN}"])
def test_every_endpoint_needs_a_workload_bearer(sidecar: RunningSidecar, path: str, authorization: str | None) -> None:
    headers = {"authorization": authorization} if authorization else {}
    response = httpx.get(f"{sidecar.url}/ui/api/{path}", params=RANGE, headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert "ghost" not in response.text and "2026-11" not in response.text and TOKEN not in response.text


# ----- generations ----------------------------------------------------------------------------------------------


def newest_first(records: list[GenerationRecord]) -> list[str]:
    return [r.id for r in sorted(records, key=lambda r: (r.created_at_ms, r.id), reverse=True)]


def all_pages(sidecar: RunningSidecar, headers: dict[str, str], **params: Any) -> list[str]:
    ids: list[str] = []
    before = None
    for _ in range(100):
        body = get(sidecar, "/ui/api/generations", headers, **params, **({"before": before} if before else {}))
        ids += [row["id"] for row in body["rows"]]
        before = body["next"]
        if before is None:
            return ids
        assert body["rows"][-1]["id"] == before
    raise AssertionError("the pages never ended")


async def test_generations_page_through_without_duplicates_or_gaps(sidecar: RunningSidecar, store: LedgerStore) -> None:
    # Three generations in the same millisecond: the id breaks the tie, so none is skipped or repeated.
    same_ms = [record("2026-11-01T11:05", GPT, 0.0, ME) for _ in range(3)]
    await store.write(same_ms)
    expected = newest_first(MINE + same_ms)
    for limit in (1, 2, 3, 200):
        assert all_pages(sidecar, AS_ME, limit=limit) == expected
    first = get(sidecar, "/ui/api/generations", limit=9)
    assert len(first["rows"]) == 9 and first["next"] is None  # exactly one page: no empty page after it


async def test_a_generation_row_and_its_lookup(sidecar: RunningSidecar) -> None:
    rows = get(sidecar, "/ui/api/generations", status="error")["rows"]
    assert [r["id"] for r in rows] == newest_first([MINE[4], MINE[3]])
    aborted, failed = rows
    assert aborted == {
        "id": MINE[4].id,
        "created_at": "2026-11-02T12:00:00.000Z",
        "workload": ME,
        "model": HAIKU,
        "provider": "anthropic",
        "finish_reason": "interrupted",
        "status": 499,
        "ttft_ms": None,
        "generation_ms": 0.0,
        "input_tokens": 8,
        "output_tokens": 2,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "total_cost": 0.03125,
        "error_type": "request_aborted",
    }
    assert (failed["status"], failed["finish_reason"], failed["cache_read_tokens"]) == (429, "error", 500)
    looked_up = get(sidecar, "/v1/generation", id=failed["id"])["data"]
    assert looked_up["id"] == failed["id"] and looked_up["total_cost"] == failed["total_cost"]


async def test_generation_filters(sidecar: RunningSidecar) -> None:
    def ids(**params: str) -> list[str]:
        return [row["id"] for row in get(sidecar, "/ui/api/generations", **params)["rows"]]

    assert ids(model="gpt-4o") == newest_first([MINE[1], MINE[3]])  # a bare id, under any provider
    assert ids(model="openai/gpt-4o-mini") == [MINE[5].id]
    assert ids(provider="anthropic") == newest_first([MINE[0], MINE[2], MINE[4]])
    assert ids(status="ok") == newest_first([MINE[0], MINE[1], MINE[2], MINE[5]])
    assert ids(provider="openai", status="error") == [MINE[3].id]


async def test_generations_are_scoped_to_the_bearer_unless_it_is_an_admin(sidecar: RunningSidecar) -> None:
    assert all_pages(sidecar, AS_ME, limit=2) == newest_first(MINE)
    theirs = [r for r in DATASET if r.identity == OTHER]
    assert all_pages(sidecar, AS_OTHER) == newest_first(theirs)
    assert all_pages(sidecar, AS_BOSS, limit=4) == newest_first(DATASET)
    assert all_pages(sidecar, AS_BOSS, workload=GHOST) == newest_first([DATASET[7]])
    # Another identity's id as the anchor reveals nothing: it is not among the caller's rows.
    assert get(sidecar, "/ui/api/generations", before=DATASET[6].id) == {"rows": [], "next": None}


async def test_an_admin_opens_any_workloads_generation_and_a_workload_only_its_own(sidecar: RunningSidecar) -> None:
    theirs = next(r for r in DATASET if r.identity == OTHER)
    mine = MINE[0]
    # /v1/generation answers only the generation's own bearer; /ui/api/generation gives an admin the same view.
    own_view = get(sidecar, "/v1/generation", headers=AS_OTHER, id=theirs.id)
    assert get(sidecar, "/ui/api/generation", headers=AS_BOSS, id=theirs.id, workload=OTHER) == own_view
    assert get(sidecar, "/ui/api/generation", id=mine.id)["data"]["id"] == mine.id
    assert refused(sidecar, "/ui/api/generation", AS_ME, id=theirs.id, workload=OTHER)["status"] == 403
    assert refused(sidecar, "/ui/api/generation", AS_ME, id=theirs.id)["status"] == 404  # not among its own


def test_a_generation_just_streamed_is_listed_at_once(sidecar: RunningSidecar) -> None:
    response = httpx.post(f"{sidecar.url}/v1/pi/stream", json=pi_body("echo/echo"), headers=AS_ME, timeout=10)
    assert response.status_code == 200
    newest = get(sidecar, "/ui/api/generations", limit=1)["rows"][0]
    assert newest["id"] == response.headers["x-generation-id"] and newest["status"] == 200


# ----- errors, budgets, me, live -------------------------------------------------------------------------------


async def test_errors_count_failed_generations_by_period_provider_and_status(sidecar: RunningSidecar) -> None:
    body = get(sidecar, "/ui/api/errors", **RANGE)
    assert body["rows"] == [
        {"period": "2026-11-02", "provider": "anthropic", "status": 499, "count": 1},
        {"period": "2026-11-02", "provider": "openai", "status": 429, "count": 1},
    ]
    hourly = get(sidecar, "/ui/api/errors", **RANGE, date_part="hour")["rows"]
    assert [(r["period"], r["status"]) for r in hourly] == [
        ("2026-11-02T09:00:00Z", 429),
        ("2026-11-02T12:00:00Z", 499),
    ]
    everyone = get(sidecar, "/ui/api/errors", AS_BOSS, **RANGE)["rows"]
    assert {"period": "2026-11-01", "provider": "openai", "status": 500, "count": 1} in everyone
    assert len(everyone) == 3


def test_requests_refused_before_the_upstream_are_counted(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    before = get(sidecar, "/ui/api/errors", **RANGE)
    assert before["refused_source"] == "metrics" and before["refused"] == {"429": 0, "503": 0, "total": 0}
    for _ in range(2):  # thrifty has spent 2.0 of its 1.0 budget
        response = httpx.post(f"{sidecar.url}/v1/pi/stream", json=pi_body(GPT), headers=AS_THRIFTY, timeout=10)
        assert response.status_code == 429
    assert upstream.received == []
    assert get(sidecar, "/ui/api/errors", **RANGE)["refused"] == {"429": 2, "503": 0, "total": 2}


async def test_budgets_show_limit_and_spend_per_workload(sidecar: RunningSidecar) -> None:
    mine = get(sidecar, "/ui/api/budgets")["rows"]
    assert mine == [{"workload": ME, "budget_usd": None, "used_usd": 1.96875, "period": "total", "resets_at": None}]
    every = {r["workload"]: (r["budget_usd"], r["used_usd"]) for r in get(sidecar, "/ui/api/budgets", AS_BOSS)["rows"]}
    assert every == {ME: (None, 1.96875), OTHER: (20.0, 8.0), BOSS: (5.0, 0.0), THRIFTY: (1.0, 2.0)}
    assert [r["workload"] for r in get(sidecar, "/ui/api/budgets", AS_OTHER)["rows"]] == [OTHER]


async def test_me_names_the_caller_and_what_it_may_see(sidecar: RunningSidecar) -> None:
    assert get(sidecar, "/ui/api/me") == {"identity": ME, "admin": False, "workloads": [ME], "period": "total"}
    boss = get(sidecar, "/ui/api/me", AS_BOSS)
    assert boss["identity"] == BOSS and boss["admin"] is True
    assert boss["workloads"] == sorted([ME, OTHER, BOSS, THRIFTY, GHOST])


def test_live_counts_requests_and_streams(sidecar: RunningSidecar) -> None:
    first = get(sidecar, "/ui/api/live")
    httpx.post(f"{sidecar.url}/v1/pi/stream", json=pi_body("echo/echo"), headers=AS_ME, timeout=10)
    second = get(sidecar, "/ui/api/live", AS_OTHER)
    assert first["in_flight"] == second["in_flight"] == 0 and first["max_streams"] > 0
    assert second["requests_total"] == first["requests_total"] + 2  # the stream and the first /live itself
    assert second["generations_total"] == first["generations_total"] + 1
    assert second["uptime_seconds"] > first["uptime_seconds"] > 0
    assert second["time"].endswith("Z") and second["time"] >= first["time"]


def test_without_metrics_the_admission_counts_the_refusals(
    store: LedgerStore, ledger_environ: dict[str, str], upstream: FakeUpstream, tmp_path: Path
) -> None:
    extra = "\n[metrics]\nenabled = false\n\n[server]\nmax_streams_per_workload = 1\n"
    upstream.push(Reply.sse(fixture_bytes("anthropic-messages/text-basic-padded.sse"), split=40, delay_before=1.0))
    with launch(upstream, tmp_path, ledger_environ, extra) as sidecar:
        assert get(sidecar, "/ui/api/errors", **RANGE)["refused"] == {"429": 0, "503": 0, "total": 0}
        with httpx.stream("POST", f"{sidecar.url}/v1/pi/stream", json=pi_body(SONNET), headers=AS_ME, timeout=10):
            # The first stream holds the workload's one slot: the second is refused before any upstream call.
            second = httpx.post(f"{sidecar.url}/v1/pi/stream", json=pi_body(SONNET), headers=AS_ME, timeout=10)
            assert second.status_code == 429
            errors = get(sidecar, "/ui/api/errors", **RANGE)
        assert errors["refused_source"] == "admission"
        assert errors["refused"] == {"429": 1, "503": 0, "total": 1}  # the workload's limit, not the process's
        assert get(sidecar, "/ui/api/live")["requests_total"] is None
