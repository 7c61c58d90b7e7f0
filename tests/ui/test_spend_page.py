"""The ``/ui`` spend and traffic page in a real browser: Debian's Chromium (``/usr/bin/chromium``, installed by
``.ci/run``) driven by playwright-core (``tests/ui/package.json``, ``npm ci``) against a real sidecar process.

One sidecar (``python -m sidecar serve``) with a plain bearer and an admin ``[[workloads]]`` bearer, and the public
realtime listener on. Its ledger is seeded through the sidecar itself: generations streamed from Python, priced ones
replaying a recorded Anthropic stream from ``tests/fakeupstream.py``, echo/echo ones, and one upstream error. Then
``spend_page.mjs`` loads the page, is refused with a wrong bearer, logs in as the admin and as the plain bearer, and
reports what the page showed; the tests below compare that with ``/v1/report`` and with the ledger file itself.
Last, a fresh tab opens the page through a path-prefix reverse proxy (``prefix_proxy.py``): ``/team-a/<rest>`` to the
sidecar's ``/<rest>``, as nginx's ``location /team-a/ { proxy_pass http://sidecar/; }`` does; and ``/team-b/<rest>``
unchanged to the sidecar, which has ``[server] path_prefix = "/team-b"``.

Run with ``.venv/bin/python -m pytest tests/ui -q``. It fails, and never skips, when Chromium, Node >= 20 or npm is
missing. The screenshot is kept in ``build/test-artifacts/ui/``.
"""

from __future__ import annotations

import fnmatch
import json
import secrets
import shutil
import sqlite3
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar.ui_routes import CONTENT_TYPES
from tests.fakeupstream import FakeUpstream, Reply, fixture_bytes
from tests.interop.harness import ROOT, Sidecar, free_port, node_env, require_node, run_driver, run_sidecar
from tests.ui.prefix_proxy import PrefixProxy

UI_TEST_DIR = Path(__file__).resolve().parent
DRIVER = UI_TEST_DIR / "spend_page.mjs"
PLAYWRIGHT = UI_TEST_DIR / "node_modules" / "playwright-core" / "package.json"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "build" / "test-artifacts" / "ui"
DRIVER_TIMEOUT_S = 120

SONNET = "anthropic/claude-sonnet-4-5"
ECHO = "echo/echo"
ADMIN = "ops"
PLAIN_TOKEN = f"plain-{secrets.token_urlsafe(24)}"
ADMIN_TOKEN = f"admin-{secrets.token_urlsafe(24)}"
WRONG_TOKEN = f"wrong-{secrets.token_urlsafe(24)}"
REPORT_SUMS = ("total_cost", "input_tokens", "output_tokens", "cached_input_tokens", "request_count")
PROXIES = {"strip": "/team-a", "path_prefix": "/team-b"}
"""The two prefix deployments: the proxy strips its prefix; the proxy passes it on to the sidecar's path_prefix."""


def install_playwright() -> None:
    """``npm ci`` in tests/ui unless playwright-core is there; it brings no browser (the test uses Debian's)."""
    if PLAYWRIGHT.exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(
            f"npm is not on PATH: the browser test installs playwright-core with it (cd {UI_TEST_DIR} && npm ci)"
        )
    command = [npm, "ci", "--no-audit", "--no-fund"]
    proc = subprocess.run(command, cwd=UI_TEST_DIR, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0 or not PLAYWRIGHT.exists():
        pytest.fail(f"npm ci in {UI_TEST_DIR} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


@dataclass
class Seeded:
    sidecar: Sidecar
    public_url: str
    ledger_path: Path
    plain_identity: str
    plain_ids: list[str]
    admin_ids: list[str]
    error_id: str


def stream(sidecar: Sidecar, token: str, model: str, options: dict[str, Any] | None = None) -> str:
    """One generation through ``POST /v1/pi/stream``, read to the end; its generation id."""
    body = {
        "modelId": model,
        "context": {"messages": [{"role": "user", "content": "hello page", "timestamp": 1}]},
        "options": options or {},
    }
    response = httpx.post(
        f"{sidecar.url}/v1/pi/stream", json=body, headers={"authorization": f"Bearer {token}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.headers["x-generation-id"]


def ledger_rows(path: Path, count: int) -> list[tuple[str, str, str | None]]:
    """``(id, identity, error_type)`` of every row of the ledger file, once ``count`` are committed."""
    deadline = time.monotonic() + 10
    while True:
        with sqlite3.connect(path) as db:
            rows: list[tuple[str, str, str | None]] = db.execute(
                "SELECT id, identity, error_type FROM generations ORDER BY id"
            ).fetchall()
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    work = tmp_path_factory.mktemp("ui")
    ledger_path = work / "ledger.db"
    public_port = free_port()
    config = f"""
[upstream]
max_retries = 0

[ledger]
path = "{ledger_path}"

[budget]
usd = 1.0
period = "month"

[[workloads]]
name = "{ADMIN}"
token = "env:OPS_TOKEN"
budget_usd = 2.0
admin = true

[realtime]
public_host = "127.0.0.1"
public_port = {public_port}

[server]
path_prefix = "{PROXIES["path_prefix"]}"
"""
    with FakeUpstream() as upstream:
        env = {
            "OPS_TOKEN": ADMIN_TOKEN,
            "ANTHROPIC_API_KEY": f"sk-ant-api03-test{secrets.token_hex(16)}",
            "ANTHROPIC_BASE_URL": upstream.url,
            "NO_GCE_CHECK": "true",
        }
        with run_sidecar(work, config, PLAIN_TOKEN, env) as sidecar:
            text = fixture_bytes("anthropic-messages/text-basic-padded.sse")
            plain_ids = []
            for _ in range(2):
                upstream.push(Reply.sse(text))
                plain_ids.append(stream(sidecar, PLAIN_TOKEN, SONNET, {"metadata": {"user": "alice", "tags": ["ui"]}}))
            plain_ids.append(stream(sidecar, PLAIN_TOKEN, ECHO))
            upstream.push(Reply.json(529, fixture_bytes("anthropic-messages/errors/529-overloaded-error.json")))
            error_id = stream(sidecar, PLAIN_TOKEN, SONNET)
            plain_ids.append(error_id)
            upstream.push(Reply.sse(text))
            admin_ids = [stream(sidecar, ADMIN_TOKEN, SONNET, {"metadata": {"user": "bob"}})]
            admin_ids.append(stream(sidecar, ADMIN_TOKEN, ECHO))
            me = httpx.get(f"{sidecar.url}/ui/api/me", headers={"authorization": f"Bearer {PLAIN_TOKEN}"}, timeout=10)
            assert me.status_code == 200, me.text
            yield Seeded(
                sidecar,
                f"http://127.0.0.1:{public_port}",
                ledger_path,
                me.json()["identity"],
                plain_ids,
                admin_ids,
                error_id,
            )


@pytest.fixture(scope="module")
def page(seeded: Seeded) -> dict[str, Any]:
    """What the browser saw, from one run of the driver over the whole scenario."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install chromium`; .ci/run does)")
    node = require_node()
    install_playwright()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "spend-page.png"
    proxy_screenshot = ARTIFACTS / "spend-page-behind-prefix-proxy.png"
    for stale in (screenshot, proxy_screenshot):
        stale.unlink(missing_ok=True)
    today = datetime.now(UTC).date()
    scenario = {
        "url": seeded.sidecar.url,
        "chromium": str(CHROMIUM),
        "screenshot": str(screenshot),
        "wrong_token": WRONG_TOKEN,
        "admin_token": ADMIN_TOKEN,
        "plain_token": PLAIN_TOKEN,
        "start_date": (today - timedelta(days=6)).isoformat(),
        "end_date": today.isoformat(),
        "model": ECHO,
        "admin_open_id": seeded.admin_ids[0],
        "plain_open_id": seeded.plain_ids[0],
    }
    strip, prefixed = PROXIES["strip"], PROXIES["path_prefix"]
    with (
        PrefixProxy(seeded.sidecar.url, strip) as stripping,
        PrefixProxy(seeded.sidecar.url, prefixed, strip=False) as passing,
    ):
        scenario["proxies"] = [
            {"name": "strip", "url": stripping.url + strip, "screenshot": str(proxy_screenshot)},
            {"name": "path_prefix", "url": passing.url + prefixed},
        ]
        proc, lines = run_driver("spend page", [node, str(DRIVER)], scenario, node_env(), DRIVER_TIMEOUT_S)
    assert proc.returncode == 0 and len(lines) == 1, f"driver broke ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    (result,) = lines
    # What went wrong, for the failure message; without the requests, which carry bearers.
    events = {name: found for name, found in result["events"].items() if name != "requests"}
    for deployment, proxied in result.get("proxied", {}).items():
        events[f"behind the {deployment} proxy"] = {k: v for k, v in proxied["events"].items() if k != "requests"}
    assert result["ok"] is True, f"{result.get('error')}\nevents: {json.dumps(events, indent=1)}"
    for shot in (screenshot, proxy_screenshot):
        assert shot.stat().st_size > 10_000, shot
    print(f"\nspend page screenshots: {screenshot} {proxy_screenshot}")
    result["scenario"] = scenario
    result["proxied"]["strip"]["proxySaw"] = stripping.seen
    result["proxied"]["path_prefix"]["proxySaw"] = passing.seen
    return result


def report_results(seeded: Seeded, token: str, scenario: dict[str, Any]) -> list[dict[str, Any]]:
    """``/v1/report``'s rows (per model) for the page's range."""
    response = httpx.get(
        f"{seeded.sidecar.url}/v1/report",
        params={"start_date": scenario["start_date"], "end_date": scenario["end_date"], "group_by": "model"},
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def report_totals(seeded: Seeded, token: str, scenario: dict[str, Any]) -> dict[str, float]:
    """``/v1/report``'s rows for the page's range, added up: the reference the page's totals must equal."""
    results = report_results(seeded, token, scenario)
    return {name: sum(row[name] for row in results) for name in REPORT_SUMS}


def shown_totals(seen: dict[str, Any]) -> dict[str, float]:
    totals = seen["totals"]
    return {
        "total_cost": float(totals["totalCost"]),
        "input_tokens": int(totals["totalInputTokens"]),
        "output_tokens": int(totals["totalOutputTokens"]),
        "cached_input_tokens": int(totals["totalCachedTokens"]),
        "request_count": int(totals["totalRequests"]),
    }


def assert_same_totals(shown: dict[str, float], want: dict[str, float]) -> None:
    assert shown["total_cost"] == pytest.approx(want["total_cost"], rel=1e-9, abs=1e-12), (shown, want)
    assert {k: v for k, v in shown.items() if k != "total_cost"} == {
        k: v for k, v in want.items() if k != "total_cost"
    }, (shown, want)


def chart_sum(rects: list[dict[str, str]]) -> float:
    return sum(float(rect["value"]) for rect in rects)


def test_the_page_totals_and_charts_equal_v1_report(seeded: Seeded, page: dict[str, Any]) -> None:
    plain = report_totals(seeded, PLAIN_TOKEN, page["scenario"])
    admin = report_totals(seeded, ADMIN_TOKEN, page["scenario"])
    assert plain["total_cost"] > 0 and admin["total_cost"] > 0, (plain, admin)  # the priced rows are there
    # The plain bearer's page is its /v1/report; the admin's spans both workloads, each reporting only its own.
    assert_same_totals(shown_totals(page["plain"]), plain)
    assert_same_totals(shown_totals(page["admin"]), {name: plain[name] + admin[name] for name in REPORT_SUMS})
    for seen, want in ((page["plain"], plain), (page["admin"], {k: plain[k] + admin[k] for k in REPORT_SUMS})):
        assert chart_sum(seen["spendChart"]) == pytest.approx(want["total_cost"], rel=1e-9, abs=1e-12)
        assert chart_sum(seen["tokensChart"]) == want["input_tokens"] + want["output_tokens"]
        assert {rect["key"] for rect in seen["spendChart"]} == {SONNET, ECHO}
        assert seen["pageError"] is None
    # "Last 24 h" (hourly, cut from yesterday and today) holds every generation seeded a moment ago.
    assert_same_totals(shown_totals(page["plain"]["last24h"]), plain)
    assert chart_sum(page["plain"]["last24h"]["spendChart"]) == pytest.approx(plain["total_cost"], rel=1e-9)
    assert page["plain"]["by_user"] == ["alice", "(none)"]
    assert page["plain"]["by_tag"] == ["ui", "(none)"] and page["plain"]["by_provider"] == ["anthropic", "echo"]


def usd(value: float) -> str:
    """``format.js``'s ``usd``: what the page writes for an amount."""
    if value == 0:
        return "$0"
    digits = 2 if abs(value) >= 1 else 4 if abs(value) >= 0.01 else 6
    return f"${value:.{digits}f}"


def range_days(scenario: dict[str, Any]) -> list[str]:
    start, end = (datetime.fromisoformat(scenario[name]).date() for name in ("start_date", "end_date"))
    return [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


def assert_table_is_the_chart(chart: dict[str, Any], total: float, legend: list[str], days: list[str]) -> None:
    """A chart's table holds what its bars hold: a row per day of the range, a column per key as drawn plus the
    total, every bar's value in its cell (written as its tooltip writes it), and columns adding up to ``total``."""
    table = chart["table"]
    assert table["columns"] == ["Day", *legend, "Total"]
    assert table["periods"] == days
    cells = {(cell["period"], cell["key"]): cell for cell in table["cells"]}
    assert len(cells) == len(days) * len(legend)
    for rect in chart["rects"]:
        cell = cells[rect["period"], rect["key"]]
        assert float(cell["value"]) == float(rect["value"])
        assert rect["title"].endswith(f" · {rect['key']}: {cell['text']}"), (rect, cell)
    rows = sum(float(cell["value"]) for cell in table["rowTotals"])
    keys = sum(float(cell["value"]) for cell in table["keyTotals"])
    for added in (rows, keys, float(table["total"]["value"]), chart_sum(chart["rects"])):
        assert added == pytest.approx(total, rel=1e-9, abs=1e-12), (added, total)
    for cell in table["keyTotals"]:
        drawn = chart_sum([rect for rect in chart["rects"] if rect["key"] == cell["key"]])
        assert float(cell["value"]) == pytest.approx(drawn, rel=1e-9, abs=1e-12)


def test_each_chart_has_a_table_and_a_summary_equal_to_v1_report(seeded: Seeded, page: dict[str, Any]) -> None:
    days = range_days(page["scenario"])
    ledger = ledger_rows(seeded.ledger_path, len(seeded.plain_ids) + len(seeded.admin_ids))
    for seen, tokens in (
        (page["plain"], [PLAIN_TOKEN]),
        (page["admin"], [PLAIN_TOKEN, ADMIN_TOKEN]),
        (page["proxied"]["strip"], [PLAIN_TOKEN]),
        (page["proxied"]["path_prefix"], [PLAIN_TOKEN]),
    ):
        results = [row for token in tokens for row in report_results(seeded, token, page["scenario"])]
        want = {name: sum(row[name] for row in results) for name in REPORT_SUMS}
        sonnet = sum(row["total_cost"] for row in results if row["model"] == SONNET)
        charts = seen["charts"]
        assert_table_is_the_chart(charts["spend"], want["total_cost"], seen["spendLegend"], days)
        tokens_legend = sorted({rect["key"] for rect in charts["tokens"]["rects"]})
        assert sorted(charts["tokens"]["table"]["columns"][1:-1]) == tokens_legend
        assert_table_is_the_chart(
            charts["tokens"],
            want["input_tokens"] + want["output_tokens"],
            charts["tokens"]["table"]["columns"][1:-1],
            days,
        )
        workloads = {seeded.plain_identity} if len(tokens) == 1 else {row[1] for row in ledger}
        errors = [row for row in ledger if row[2] is not None and row[1] in workloads]
        assert_table_is_the_chart(charts["errors"], len(errors), ["anthropic"], days)
        assert charts["spend"]["table"]["caption"] == "Spend (USD) per day by model"
        assert charts["tokens"]["table"]["caption"] == "Tokens (input + output) per day by model"
        assert charts["errors"]["table"]["caption"] == "Errors per day by provider"

        # The summary sentence names the total /v1/report gives, and the largest key.
        spend = charts["spend"]["summary"]
        assert float(spend["total"]) == pytest.approx(want["total_cost"], rel=1e-9, abs=1e-12)
        assert spend["largest"] == SONNET
        assert (
            spend["text"] == f"Total {usd(want['total_cost'])} over {len(days)} days; largest: {SONNET}, {usd(sonnet)}."
        )
        tokens_total = int(want["input_tokens"] + want["output_tokens"])
        assert charts["tokens"]["summary"]["text"].startswith(f"Total {tokens_total:,} tokens over {len(days)} days")
        assert charts["errors"]["summary"]["text"] == (
            f"Total {len(errors)} error{'' if len(errors) == 1 else 's'} over {len(days)} days; largest: anthropic, "
            f"{len(errors)} error{'' if len(errors) == 1 else 's'}."
        )
        for name in ("spend", "tokens", "errors"):
            assert charts[name]["describedBy"] == f"{name}-summary"
    # The last 24 hours, hourly: the summary and table follow the redraw.
    hourly = page["plain"]["last24h"]["charts"]["spend"]
    assert hourly["table"]["columns"][0] == "Hour" and len(hourly["table"]["periods"]) == 24
    assert hourly["summary"]["text"].startswith(f"Total {usd(float(hourly['summary']['total']))} over 24 hours;")
    assert float(hourly["table"]["total"]["value"]) == pytest.approx(float(hourly["summary"]["total"]), rel=1e-9)


def test_every_chart_is_described_to_a_screen_reader(page: dict[str, Any]) -> None:
    """Chromium's accessibility tree (what a screen reader reads): each chart an image, named by its heading and
    described by its summary sentence; the spend table opens from the keyboard."""
    admin = page["admin"]
    accessible = admin["accessible"]
    titles = {"spend": "Spend (USD)", "tokens": "Tokens (input + output)", "errors": "Errors by provider"}
    for name, title in titles.items():
        node = accessible[f"{name}-chart"]
        assert node["role"] == "image" and node["ignored"] is False, node
        assert node["name"] == title
        assert node["description"] == admin["opened_table"][name]["summary"]["text"], node
        assert node["description"].startswith("Total "), node
    live = accessible["live-chart"]
    assert live["role"] == "image" and live["name"] == "Requests per second, last two minutes"
    assert live["description"].startswith("Requests per second over the last "), live
    assert admin["tabbedTo"] == "Show as table: Spend (USD) → #spend-table"  # each one says which chart it opens
    assert admin["opened_table"]["spend"]["table"]["open"] is True
    assert admin["charts"]["spend"]["table"]["open"] is False  # closed until asked for
    # Logging out empties the tables and sentences with the charts.
    assert page["afterLogout"]["summariesText"] == ""


@pytest.mark.parametrize("deployment", sorted(PROXIES))
def test_the_page_works_behind_a_path_prefix_proxy(seeded: Seeded, page: dict[str, Any], deployment: str) -> None:
    proxied = page["proxied"][deployment]
    prefix = PROXIES[deployment]
    (base,) = [proxy["url"] for proxy in page["scenario"]["proxies"] if proxy["name"] == deployment]
    assert base.endswith(prefix)  # http://127.0.0.1:<port>/team-a
    assert proxied["finalUrl"] == f"{base}/ui/"  # /team-a/ui redirected to /team-a/ui/, not /ui/
    assert_same_totals(shown_totals(proxied), report_totals(seeded, PLAIN_TOKEN, page["scenario"]))
    assert proxied["identity"] == seeded.plain_identity and proxied["pageError"] is None
    assert proxied["opened"]["source"] == "v1/generation"
    assert proxied["opened"]["json"] == generation_json(seeded, PLAIN_TOKEN, seeded.plain_ids[0])
    # Every request the browser made went through the prefix; none escaped to the proxy's root (it would 404).
    urls = [request["url"] for request in proxied["events"]["requests"]]
    assert len(urls) > 10
    assert [url for url in urls if not url.startswith(f"{base}/")] == []
    paths = {url.removeprefix(base).split("?")[0] for url in urls}
    assert {"/ui", "/ui/", "/ui/app.js", "/ui/app.css", "/ui/api/me", "/ui/api/usage", "/v1/generation"} <= paths
    assert [path for path in proxied["proxySaw"] if not path.startswith(f"{prefix}/")] == []
    events = proxied["events"]
    assert events["pageErrors"] == [] and events["console"] == [], events
    assert events["requestFailed"] == [] and events["badResponses"] == [], events


def test_the_table_lists_the_ledger_generations(seeded: Seeded, page: dict[str, Any]) -> None:
    ledger = ledger_rows(seeded.ledger_path, len(seeded.plain_ids) + len(seeded.admin_ids))
    assert sorted(row[0] for row in ledger) == sorted(seeded.plain_ids + seeded.admin_ids)
    admin_rows = page["admin"]["rows"]
    # Newest first, every generation of both workloads, each named by its ledger id and identity.
    assert [row["generationId"] for row in admin_rows] == sorted((row[0] for row in ledger), reverse=True)
    assert {row["generationId"]: row["workload"] for row in admin_rows} == {row[0]: row[1] for row in ledger}
    error_ids = {row[0] for row in ledger if row[2] is not None}
    assert error_ids == {seeded.error_id}
    assert {row["generationId"] for row in admin_rows if row["status"] == "error"} == error_ids


def test_filters_narrow_the_table(seeded: Seeded, page: dict[str, Any]) -> None:
    assert [row["generationId"] for row in page["admin"]["errorRows"]] == [seeded.error_id]
    echo_rows = page["admin"]["modelRows"]
    assert {row["model"] for row in echo_rows} == {ECHO}
    assert len(echo_rows) == 2  # one per workload
    assert len(page["admin"]["rows"]) == len(seeded.plain_ids) + len(seeded.admin_ids)


def generation_json(seeded: Seeded, token: str, generation_id: str) -> Any:
    response = httpx.get(
        f"{seeded.sidecar.url}/v1/generation",
        params={"id": generation_id},
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_a_row_opens_its_generation_json(seeded: Seeded, page: dict[str, Any]) -> None:
    for opened, token, generation_id in (
        (page["admin"]["opened"], ADMIN_TOKEN, seeded.admin_ids[0]),
        (page["plain"]["opened"], PLAIN_TOKEN, seeded.plain_ids[0]),
    ):
        assert opened["generationId"] == generation_id and opened["source"] == "v1/generation"
        assert opened["json"] == generation_json(seeded, token, generation_id)
        assert opened["json"]["data"]["model"] == SONNET
    # /v1/generation answers only the generation's own bearer: for another workload's row the admin's page asks
    # /ui/api/generation, which gives the same view.
    other = page["admin"]["openedOther"]
    assert other["generationId"] == seeded.plain_ids[0] and other["source"] == "ui/api/generation"
    assert other["json"] == generation_json(seeded, PLAIN_TOKEN, seeded.plain_ids[0])


def test_the_admin_sees_every_workload_and_the_plain_bearer_its_own(seeded: Seeded, page: dict[str, Any]) -> None:
    admin, plain = page["admin"], page["plain"]
    everyone = {seeded.plain_identity, f"workload:{ADMIN}"}
    assert admin["identity"] == f"workload:{ADMIN}" and admin["adminBadge"] is True
    assert set(admin["workloadOptions"]) == {"", *everyone}
    assert admin["groupByWorkloadVisible"] is True
    assert set(admin["budgets"]) == everyone
    assert {rect["key"] for rect in admin["byWorkload"]["spendChart"]} == everyone

    assert plain["identity"] == seeded.plain_identity and plain["adminBadge"] is False
    assert plain["workloadOptions"] == [""] and plain["groupByWorkloadVisible"] is False
    assert plain["budgets"] == [seeded.plain_identity]
    assert {row["workload"] for row in plain["rows"]} == {seeded.plain_identity}
    assert sorted(row["generationId"] for row in plain["rows"]) == sorted(seeded.plain_ids)
    assert float(admin["live"]["rps"]) >= 0 and int(admin["live"]["requestsTotal"]) > 0


def test_a_wrong_bearer_sees_only_the_login_error(page: dict[str, Any]) -> None:
    wrong = page["wrong"]
    assert wrong["state"] == "login" and wrong["dashboardHidden"] is True
    assert "not accepted" in wrong["loginError"]
    assert wrong["rowsInDom"] == 0 and wrong["identity"] == "" and wrong["totals"]["totalCost"] == ""
    assert wrong["storedBearer"] is None
    # After logging out, nothing of the admin's data stays in the page or the session.
    after = page["afterLogout"]
    assert after["rowsInDom"] == 0 and after["storedBearer"] is None and after["dashboardHidden"] is True


def test_no_javascript_error_or_failed_request(page: dict[str, Any]) -> None:
    events = page["events"]
    marker = page["wrongMarker"]
    refused = events["badResponses"][:marker]
    assert [(r["status"], r["url"].split("?")[0]) for r in refused] == [(401, page["scenario"]["url"] + "/ui/api/me")]
    # The console reports that one 401 as a failed resource load; nothing else may appear.
    assert [c for c in events["console"] if "401" not in c["text"]] == [], events["console"]
    assert len(events["console"]) <= 1, events["console"]
    assert events["pageErrors"] == []
    assert events["requestFailed"] == []
    assert events["badResponses"][marker:] == []


def test_the_bearer_never_travels_in_a_url_or_local_storage(page: dict[str, Any]) -> None:
    requests = page["events"]["requests"]
    assert len(requests) > 10
    for token in (PLAIN_TOKEN, ADMIN_TOKEN, WRONG_TOKEN):
        assert not [r["url"] for r in requests if token in r["url"]]
    sent = {r["authorization"] for r in requests if r["authorization"]}
    assert sent == {f"Bearer {t}" for t in (PLAIN_TOKEN, ADMIN_TOKEN, WRONG_TOKEN)}
    for seen in (page["wrong"], page["admin"], page["plain"], page["afterLogout"]):
        assert seen["localStorageKeys"] == []
    assert page["finalUrl"] == page["scenario"]["url"] + "/ui/"  # /ui redirects to the page's own folder


def test_the_page_is_served_with_a_strict_policy_and_not_on_the_public_listener(seeded: Seeded) -> None:
    url = seeded.sidecar.url
    page = httpx.get(f"{url}/ui/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["cache-control"] == "no-cache" and page.headers["x-content-type-options"] == "nosniff"
    assert "<script" in page.text and "<script>" not in page.text  # no inline script
    script = httpx.get(f"{url}/ui/app.js", timeout=10)
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert httpx.get(f"{url}/ui/app.css", timeout=10).headers["content-type"] == "text/css; charset=utf-8"
    again = httpx.get(f"{url}/ui/app.js", headers={"if-none-match": script.headers["etag"]}, timeout=10)
    assert again.status_code == 304
    for unknown in ("/ui/secret.txt", "/ui/..%2Fapp.py", "/ui/vendor"):
        assert httpx.get(f"{url}{unknown}", timeout=10).status_code == 404, unknown
    for path in ("/ui", f"{PROXIES['path_prefix']}/ui"):  # relative, so it stays under whatever prefix was asked
        redirect = httpx.get(f"{url}{path}", timeout=10)
        assert redirect.status_code == 308 and redirect.headers["location"] == "ui/"
    for path in ("/ui", "/ui/", "/ui/app.js", "/ui/api/me"):
        assert httpx.get(f"{seeded.public_url}{path}", timeout=10).status_code == 404, path


def test_every_page_file_is_served_and_ships_in_the_wheel() -> None:
    """What sidecar/ui/ holds, what ``ui_routes`` serves and what pyproject's package data puts in a wheel agree
    (checked once by hand: ``pip wheel .`` lists every file)."""
    folder = ROOT / "sidecar" / "ui"
    assert sorted(path.name for path in folder.iterdir()) == sorted(CONTENT_TYPES)
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["sidecar"]
    for name in CONTENT_TYPES:
        assert any(fnmatch.fnmatch(f"ui/{name}", pattern) for pattern in package_data), (name, package_data)
