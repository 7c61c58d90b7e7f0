"""The ledger through the real HTTP surface: a generation streamed through /v1/pi/stream, then looked up, budgeted
and reported by the AI Gateway endpoints, on the embedded SQLite ledger and on PostgreSQL."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import pi_body, read_events
from tests.fakeupstream import FakeUpstream, Reply, fixture_bytes
from tests.sidecar_server import (
    ANTHROPIC_CANARY,
    OPENAI_CANARY,
    TOKEN,
    RunningSidecar,
    run_sidecar,
    sidecar_environ,
    write_config,
)

TEXT_FIXTURE = "anthropic-messages/text-basic-padded.sse"
# From the fixture's message_start / message_delta usage.
FIXTURE_INPUT, FIXTURE_OUTPUT = 135, 10
SONNET_IN, SONNET_OUT = 3.0, 15.0  # catalog USD per 1M tokens for anthropic/claude-sonnet-4-5
FIXTURE_COST = (FIXTURE_INPUT * SONNET_IN + FIXTURE_OUTPUT * SONNET_OUT) / 1e6

OTHER_TOKEN = "second-workload-bearer-abcdef0123"
THRIFTY_TOKEN = "thrifty-workload-bearer-0123456789"
CONFIG = """
[upstream]
max_retries = 0

[server]
path_prefix = "/sidecar"

[budget]
usd = 10.0
period = "month"

[[workloads]]
name = "other"
token = "env:OTHER_TOKEN"

[[workloads]]
name = "thrifty"
token = "env:THRIFTY_TOKEN"
budget_usd = 0.000001
"""
HEADERS = {"authorization": f"Bearer {TOKEN}"}
OTHER = {"authorization": f"Bearer {OTHER_TOKEN}"}
THRIFTY = {"authorization": f"Bearer {THRIFTY_TOKEN}"}
SONNET = "anthropic/claude-sonnet-4-5"


def _environ(upstream: FakeUpstream, home: Path, **extra: str) -> dict[str, str]:
    return sidecar_environ(upstream.url, home, OTHER_TOKEN=OTHER_TOKEN, THRIFTY_TOKEN=THRIFTY_TOKEN, **extra)


@pytest.fixture
def ledger_sidecar(upstream: FakeUpstream, tmp_path: Path) -> Iterator[RunningSidecar]:
    with run_sidecar(_environ(upstream, tmp_path), write_config(tmp_path, CONFIG)) as running:
        yield running


def stream(sidecar: RunningSidecar, body: dict[str, Any], headers: dict[str, str] = HEADERS, prefix: str = "") -> str:
    response = httpx.post(f"{sidecar.url}{prefix}/v1/pi/stream", json=body, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    events = read_events(response)
    assert events[-1]["type"] == "done", events[-1]
    return response.headers["x-generation-id"]


def lookup(sidecar: RunningSidecar, generation_id: str, headers: dict[str, str] = HEADERS) -> httpx.Response:
    return httpx.get(f"{sidecar.url}/v1/generation", params={"id": generation_id}, headers=headers, timeout=10)


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def test_a_streamed_generation_is_looked_up_with_its_cost_and_tokens(
    ledger_sidecar: RunningSidecar, upstream: FakeUpstream
) -> None:
    upstream.push(Reply.sse(fixture_bytes(TEXT_FIXTURE)))
    body = pi_body(SONNET, metadata={"user": "alice", "tags": ["ledger", "test"], "quotaEntityId": "team-9"})
    before = datetime.now(UTC)
    generation_id = stream(ledger_sidecar, body, prefix="/sidecar")  # the rest of the API answers at the root
    response = lookup(ledger_sidecar, generation_id)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    data = response.json()["data"]
    assert data["id"] == generation_id
    assert data["total_cost"] == pytest.approx(FIXTURE_COST, abs=1e-12)
    assert data["upstream_inference_cost"] == data["usage"] == data["total_cost"]
    assert (data["native_tokens_prompt"], data["native_tokens_completion"]) == (FIXTURE_INPUT, FIXTURE_OUTPUT)
    assert (data["native_tokens_cached"], data["native_tokens_cache_creation"], data["native_tokens_reasoning"]) == (
        0,
        0,
        0,
    )
    assert data["model"] == SONNET and data["provider_name"] == "anthropic" and data["is_byok"] is False
    assert data["streamed"] is True and data["finish_reason"] == "stop"
    assert 0 < data["latency"] <= data["generation_time"]
    created = datetime.fromisoformat(data["created_at"].replace("Z", "+00:00"))
    assert before.replace(microsecond=0) <= created <= datetime.now(UTC)
    assert data["billable_web_search_calls"] == 0
    assert (data["user"], data["tags"], data["quota_entity_id"]) == ("alice", ["ledger", "test"], "team-9")
    assert data["upstream_response_id"] == "msg_013nnniYDrJDocdy5nrMU7cH"
    assert data["api"] == "anthropic-messages" and data["credential_type"] == "system"


def test_json_mode_is_recorded_as_not_streamed(ledger_sidecar: RunningSidecar) -> None:
    response = httpx.post(
        f"{ledger_sidecar.url}/v1/pi/stream", json={**pi_body("echo/echo"), "stream": False}, headers=HEADERS
    )
    assert response.status_code == 200, response.text
    data = lookup(ledger_sidecar, response.headers["x-generation-id"]).json()["data"]
    assert data["streamed"] is False and data["model"] == "echo/echo" and data["total_cost"] == 0


def test_a_generation_the_client_abandoned_is_recorded(ledger_sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    upstream.push(Reply.sse(fixture_bytes(TEXT_FIXTURE), split=40, delay_between=0.1))
    with httpx.stream(
        "POST", f"{ledger_sidecar.url}/v1/pi/stream", json=pi_body(SONNET), headers=HEADERS, timeout=10
    ) as response:
        generation_id = response.headers["x-generation-id"]
        for line in response.iter_lines():
            if '"text_delta"' in line:
                break  # leave mid-stream
    ledger_sidecar.wait_for_outcomes(1)
    data = lookup(ledger_sidecar, generation_id).json()["data"]
    assert data["finish_reason"] == "interrupted"
    assert (data["error_type"], data["error_status"]) == ("request_aborted", 499)
    assert data["native_tokens_prompt"] == FIXTURE_INPUT  # what was used before the disconnect is billed
    assert data["total_cost"] >= FIXTURE_INPUT * SONNET_IN / 1e6


def test_an_upstream_error_is_recorded_with_its_status(ledger_sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    upstream.push(Reply.json(429, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}))
    response = httpx.post(f"{ledger_sidecar.url}/v1/pi/stream", json=pi_body(SONNET), headers=HEADERS, timeout=10)
    data = lookup(ledger_sidecar, response.headers["x-generation-id"]).json()["data"]
    assert data["finish_reason"] == "error" and data["error_status"] == 429 and data["total_cost"] == 0


def test_lookups_are_scoped_to_the_bearer(ledger_sidecar: RunningSidecar) -> None:
    generation_id = stream(ledger_sidecar, pi_body("echo/echo"))
    assert lookup(ledger_sidecar, generation_id).status_code == 200
    other = lookup(ledger_sidecar, generation_id, OTHER)
    assert other.status_code == 404
    assert other.json() == {"error": {"type": "not_found", "message": f"Generation {generation_id} not found"}}


@pytest.mark.parametrize(
    ("params", "status", "type_", "fragment"),
    [
        ({}, 400, "invalid_request_error", "Missing query parameter `id`"),
        ({"id": "chatcmpl-123"}, 400, "invalid_request_error", "gen_ followed by a 26-character ULID"),
        ({"id": "gen_01JZZZZZZZZZZZZZZZZZZZZZZZ"}, 404, "not_found", "not found"),
    ],
)
def test_generation_lookup_errors(
    ledger_sidecar: RunningSidecar, params: dict[str, str], status: int, type_: str, fragment: str
) -> None:
    response = httpx.get(f"{ledger_sidecar.url}/v1/generation", params=params, headers=HEADERS)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == type_ and fragment in error["message"]


@pytest.mark.parametrize("path", ["/v1/generation?id=gen_01JZZZZZZZZZZZZZZZZZZZZZZZ", "/v1/credits", "/v1/report"])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}"])
def test_account_endpoints_need_a_workload_bearer(
    ledger_sidecar: RunningSidecar, path: str, authorization: str | None
) -> None:
    headers = {"authorization": authorization} if authorization else {}
    response = httpx.get(f"{ledger_sidecar.url}{path}", headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]  # the AI Gateway envelope, which @ai-sdk/gateway maps to its auth error
    assert error["type"] == "authentication_error" and "Authorization: Bearer" in error["message"]
    assert TOKEN not in response.text


def test_credits_follow_spend_and_budget(ledger_sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    fresh = httpx.get(f"{ledger_sidecar.url}/v1/credits", headers=HEADERS).json()
    assert fresh == {"balance": "10.00", "total_used": "0.00"}
    for _ in range(2):
        upstream.push(Reply.sse(fixture_bytes(TEXT_FIXTURE)))
        stream(ledger_sidecar, pi_body(SONNET))
    credits = httpx.get(f"{ledger_sidecar.url}/v1/credits", headers=HEADERS).json()
    assert isinstance(credits["balance"], str) and isinstance(credits["total_used"], str)
    assert float(credits["total_used"]) == pytest.approx(2 * FIXTURE_COST, abs=1e-8)
    assert float(credits["balance"]) == pytest.approx(10.0 - 2 * FIXTURE_COST, abs=1e-8)
    # Another bearer's spend is its own.
    assert httpx.get(f"{ledger_sidecar.url}/v1/credits", headers=OTHER).json()["total_used"] == "0.00"


def test_a_bearer_over_budget_is_refused_before_any_upstream_call(
    ledger_sidecar: RunningSidecar, upstream: FakeUpstream
) -> None:
    upstream.push(Reply.sse(fixture_bytes(TEXT_FIXTURE)), Reply.sse(fixture_bytes(TEXT_FIXTURE)))
    stream(ledger_sidecar, pi_body(SONNET), THRIFTY)  # within budget when it started; costs more than the budget
    assert len(upstream.received) == 1
    refused = httpx.post(f"{ledger_sidecar.url}/v1/pi/stream", json=pi_body(SONNET), headers=THRIFTY, timeout=10)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_exceeded"
    assert "workload:thrifty" in error["message"] and "budget" in error["message"]
    assert len(upstream.received) == 1, "the upstream was called although the budget was spent"
    assert httpx.get(f"{ledger_sidecar.url}/v1/credits", headers=THRIFTY).json()["balance"] == "0.00"
    # The other bearers are not affected.
    assert stream(ledger_sidecar, pi_body("echo/echo"), HEADERS).startswith("gen_")


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"metadata": {"tags": "a,b" * 100}}, "tag longer than 128"),
        ({"metadata": {"tags": [1, 2]}}, "`options.metadata.tags` must be an array of non-empty strings"),
        ({"requestMetadata": {"user": 7}}, "`options.requestMetadata.user` must be a non-empty string"),
        ({"metadata": {"quotaEntityId": ""}}, "`options.metadata.quotaEntityId` must be a non-empty string"),
    ],
)
def test_bad_attribution_is_a_400_before_the_upstream(
    ledger_sidecar: RunningSidecar, upstream: FakeUpstream, options: dict[str, Any], fragment: str
) -> None:
    response = httpx.post(f"{ledger_sidecar.url}/v1/pi/stream", json=pi_body(SONNET, **options), headers=HEADERS)
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]
    assert upstream.received == []


def test_request_metadata_wins_and_user_id_counts_as_user(ledger_sidecar: RunningSidecar) -> None:
    first = stream(ledger_sidecar, pi_body("echo/echo", metadata={"user_id": "anthropic-user"}))
    second = stream(
        ledger_sidecar, pi_body("echo/echo", metadata={"user": "a", "tags": ["m"]}, requestMetadata={"user": "b"})
    )
    assert lookup(ledger_sidecar, first).json()["data"]["user"] == "anthropic-user"
    data = lookup(ledger_sidecar, second).json()["data"]
    assert (data["user"], data["tags"]) == ("b", ["m"])


def test_report_groups_what_was_streamed(ledger_sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    upstream.push(Reply.sse(fixture_bytes(TEXT_FIXTURE)))
    stream(ledger_sidecar, pi_body(SONNET, metadata={"user": "alice", "tags": ["t1"]}))
    stream(ledger_sidecar, pi_body("echo/echo", metadata={"user": "bob", "tags": ["t1", "t2"]}))
    stream(ledger_sidecar, pi_body("echo/echo", metadata={"user": "x"}), OTHER)  # someone else's
    day = today()

    def report(**params: str) -> list[dict[str, Any]]:
        response = httpx.get(
            f"{ledger_sidecar.url}/v1/report", params={"start_date": day, "end_date": day, **params}, headers=HEADERS
        )
        assert response.status_code == 200, response.text
        return sorted(response.json()["results"], key=lambda r: str(r))

    (by_day,) = report()
    assert by_day["day"] == day and by_day["request_count"] == 2
    assert by_day["total_cost"] == pytest.approx(FIXTURE_COST, abs=1e-12)
    assert by_day["input_tokens"] >= FIXTURE_INPUT
    assert {r["model"]: r["request_count"] for r in report(group_by="model")} == {SONNET: 1, "echo/echo": 1}
    assert {r["tag"]: r["request_count"] for r in report(group_by="tag")} == {"t1": 2, "t2": 1}
    assert {r["user"]: r["request_count"] for r in report(group_by="user", tags="t2")} == {"bob": 1}
    assert {r["provider"] for r in report(group_by="provider", model="claude-sonnet-4-5")} == {"anthropic"}
    (hourly,) = report(date_part="hour")
    assert hourly["hour"].startswith(day + "T") and hourly["day"] == day


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"end_date": "2026-11-02"}, "Missing query parameter `start_date`"),
        ({"start_date": "2026-11-02"}, "Missing query parameter `end_date`"),
        ({"start_date": "2026-11-32", "end_date": "2026-11-02"}, "`start_date` must be a date as YYYY-MM-DD"),
        ({"start_date": "2026-11-05", "end_date": "2026-11-02"}, "end_date (2026-11-02) is before start_date"),
        ({"start_date": "2026-11-01", "end_date": "2026-11-02", "group_by": "team"}, "`group_by` must be one of"),
        ({"start_date": "2026-11-01", "end_date": "2026-11-02", "date_part": "week"}, "`date_part` must be one of"),
        ({"start_date": "2026-11-01", "end_date": "2026-11-02", "credential_type": "x"}, "credential_type must be"),
        ({"start_date": "2020-01-01", "end_date": "2026-11-02"}, "at most 366 days"),
    ],
)
def test_report_parameter_errors_say_what_to_fix(
    ledger_sidecar: RunningSidecar, params: dict[str, str], fragment: str
) -> None:
    response = httpx.get(f"{ledger_sidecar.url}/v1/report", params=params, headers=HEADERS)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert fragment in response.json()["error"]["message"]


def test_the_ledger_survives_a_restart_and_holds_no_secret_or_prompt(upstream: FakeUpstream, tmp_path: Path) -> None:
    environ, config = _environ(upstream, tmp_path), write_config(tmp_path, CONFIG)
    marker = "PROMPT-MARKER-that-must-not-be-stored"
    with run_sidecar(environ, config) as first:
        upstream.push(Reply.sse(fixture_bytes(TEXT_FIXTURE)))
        generation_id = stream(first, pi_body(SONNET, marker, metadata={"tags": ["keep"]}))
    with run_sidecar(environ, config) as second:
        data = lookup(second, generation_id).json()["data"]
        assert data["total_cost"] == pytest.approx(FIXTURE_COST, abs=1e-12) and data["tags"] == ["keep"]
    database = tmp_path / "sidecar" / "ledger.db"
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT * FROM generations").fetchall()
    dump = orjson.dumps([list(map(str, r)) for r in rows]).decode()
    assert generation_id in dump
    for secret in (TOKEN, OTHER_TOKEN, ANTHROPIC_CANARY, OPENAI_CANARY, marker, "12345,67890"):
        assert secret not in dump
    raw = b"".join(p.read_bytes() for p in database.parent.glob("ledger.db*"))
    for secret in (TOKEN, ANTHROPIC_CANARY, marker):
        assert secret.encode() not in raw


def test_two_sidecars_share_one_postgresql_ledger(upstream: FakeUpstream, tmp_path: Path, pg_url: str) -> None:
    """A generation streamed through one replica is looked up, reported and budgeted through another."""
    config = write_config(tmp_path, CONFIG + '\n[ledger]\nurl = "env:LEDGER_URL"\nflush_interval_ms = 20\n')
    environ = _environ(upstream, tmp_path, LEDGER_URL=pg_url)
    with run_sidecar(environ, config) as a, run_sidecar(environ, config) as b:
        upstream.push(Reply.sse(fixture_bytes(TEXT_FIXTURE)), Reply.sse(fixture_bytes(TEXT_FIXTURE)))
        generation_id = stream(a, pi_body(SONNET, metadata={"user": "alice"}))
        thrifty_id = stream(a, pi_body(SONNET), THRIFTY)
        deadline = time.monotonic() + 5
        while lookup(b, thrifty_id, THRIFTY).status_code == 404 and time.monotonic() < deadline:
            time.sleep(0.02)  # until replica a's batch window has passed and both rows are in PostgreSQL
        found = lookup(b, generation_id)
        assert found.status_code == 200, found.text
        assert found.json()["data"]["total_cost"] == pytest.approx(FIXTURE_COST, abs=1e-12)
        refused = httpx.post(f"{b.url}/v1/pi/stream", json=pi_body(SONNET), headers=THRIFTY, timeout=10)
        assert refused.status_code == 429  # the budget spent on replica a counts on replica b
        report = httpx.get(
            f"{b.url}/v1/report",
            params={"start_date": today(), "end_date": today(), "group_by": "user"},
            headers=HEADERS,
        ).json()["results"]
        assert report == [
            {
                "user": "alice",
                "total_cost": pytest.approx(FIXTURE_COST, abs=1e-12),
                "market_cost": pytest.approx(FIXTURE_COST, abs=1e-12),
                "input_tokens": FIXTURE_INPUT,
                "output_tokens": FIXTURE_OUTPUT,
                "cached_input_tokens": 0,
                "cache_creation_input_tokens": 0,
                "reasoning_tokens": 0,
                "request_count": 1,
            }
        ]
    assert len(upstream.received) == 2
