"""Interop: the unmodified real client ``@ai-sdk/gateway@4.0.146`` (under Node) against the sidecar's ledger endpoints.

One sidecar process (``python -m sidecar serve``) serves the whole module, configured with ``[server] path_prefix =
"/sidecar"``, a default ``[budget]`` and one extra ``[[workloads]]`` bearer whose tiny budget one generation spends.
Its Anthropic and OpenAI base URLs point at a FakeUpstream replaying recorded provider bytes. Generations are
streamed from Python (httpx, ``POST /sidecar/v1/pi/stream``); the client driver ``gateway_client.mjs`` then calls
``getGenerationInfo``, ``getCredits`` and ``getSpendReport`` with baseURL ``<sidecar>/sidecar/v4/ai``, so the client
must resolve ``/v1/*`` against the origin (protocol §1). Expected costs and tokens are computed here from the
fixtures' recorded usage and the catalog rates, never copied from the sidecar.

Run with ``.venv/bin/python -m pytest tests/interop -q``. node_modules is shared with test_pi_ai_interop.py
(tests/interop/harness.py). The suite fails, and never skips, when Node >= 20 or npm is unavailable.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.fakeupstream import FakeUpstream, Reply, fixture_bytes
from tests.interop.harness import (
    INTEROP_DIR,
    Sidecar,
    driver_broke,
    node_env,
    ok,
    reset_upstream,
    run_driver,
    run_sidecar,
)

pytestmark = pytest.mark.interop

DRIVER = INTEROP_DIR / "gateway_client.mjs"
DRIVER_TIMEOUT_S = 30
PREFIX = "/sidecar"
BUDGET_USD = 1.0
WORKLOAD = "b"
WORKLOAD_BUDGET_USD = 0.000001  # less than any generation costs: the first one exhausts it

SONNET = "anthropic/claude-sonnet-4-5"
GPT4O = "openai/gpt-4o"
# Catalog rates, USD per 1M tokens (sidecar/catalog.toml; the same numbers pi-ai's Model.cost carries).
RATES: dict[str, dict[str, float]] = {
    SONNET: {"input": 3, "output": 15, "cacheRead": 0.3, "cacheWrite": 3.75},
    GPT4O: {"input": 2.5, "output": 10, "cacheRead": 1.25, "cacheWrite": 0},
}
TEXT_FIXTURE = "anthropic-messages/text-basic-padded.sse"
CACHE_FIXTURE = "anthropic-messages/prompt-cache-usage-server-tools.sse"
OPENAI_FIXTURE = "openai-chat-completions/text-basic-include-usage.sse"

GENERATION_ID = re.compile(r"^gen_[0-9A-HJKMNP-TV-Z]{26}$")
UNKNOWN_ID = "gen_01ARZ3NDEKTSV4RRFFQ69G5FAV"  # well-formed (the ULID spec's example), never issued
# Every key of GatewayGenerationInfo; the nullish costs are present because the sidecar sends numbers.
GENERATION_INFO_KEYS = {
    "id",
    "totalCost",
    "marketCost",
    "surchargeCost",
    "gatewayCost",
    "upstreamInferenceCost",
    "usage",
    "createdAt",
    "model",
    "isByok",
    "providerName",
    "streamed",
    "finishReason",
    "latency",
    "generationTime",
    "promptTokens",
    "completionTokens",
    "reasoningTokens",
    "cachedTokens",
    "cacheCreationTokens",
    "billableWebSearchCalls",
}
ROW_COSTS = ("totalCost", "marketCost")


# ---------------------------------------------------------------------------------------------------------------------
# Expected values, from the recorded fixtures


@dataclass(frozen=True)
class Usage:
    """Token counts as pi reports them: ``input`` excludes the cached input tokens."""

    input: int
    output: int
    cache_read: int
    cache_write: int
    reasoning: int = 0

    @property
    def prompt(self) -> int:
        """Every input token, cached ones included (the AI SDK's convention for promptTokens / input_tokens)."""
        return self.input + self.cache_read + self.cache_write

    def cost(self, model: str) -> float:
        rates = RATES[model]
        return (
            rates["input"] * self.input
            + rates["output"] * self.output
            + rates["cacheRead"] * self.cache_read
            + rates["cacheWrite"] * self.cache_write
        ) / 1e6


def _sse_data(relative: str) -> Iterator[dict[str, Any]]:
    for line in fixture_bytes(relative).decode().splitlines():
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            yield json.loads(line[5:])


def anthropic_fixture_usage(relative: str) -> Usage:
    """``message_start``'s usage, overridden by the fields the final ``message_delta`` carries (cumulative)."""
    usage: dict[str, Any] = {}
    for event in _sse_data(relative):
        if event.get("type") == "message_start":
            usage.update(event["message"]["usage"])
        elif event.get("type") == "message_delta":
            usage.update(event.get("usage") or {})
    return Usage(
        input=usage["input_tokens"],
        output=usage["output_tokens"],
        cache_read=usage.get("cache_read_input_tokens") or 0,
        cache_write=usage.get("cache_creation_input_tokens") or 0,
        reasoning=(usage.get("output_tokens_details") or {}).get("thinking_tokens") or 0,
    )


def openai_fixture_usage(relative: str) -> Usage:
    """The ``include_usage`` chunk; ``prompt_tokens`` includes ``cached_tokens``."""
    (usage,) = [chunk["usage"] for chunk in _sse_data(relative) if chunk.get("usage")]
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return Usage(
        input=usage["prompt_tokens"] - cached,
        output=usage["completion_tokens"],
        cache_read=cached,
        cache_write=0,
        reasoning=(usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0,
    )


@dataclass(frozen=True)
class Generation:
    """One generation streamed through the sidecar, and what the ledger should say about it."""

    id: str
    model: str
    usage: Usage
    user: str | None
    tags: tuple[str, ...]

    @property
    def provider(self) -> str:
        return self.model.split("/")[0]

    @property
    def cost(self) -> float:
        return self.usage.cost(self.model)


def expected_report(generations: list[Generation], group_by: str) -> dict[str | None, dict[str, Any]]:
    """The report rows, keyed by group value, as getSpendReport returns them (camelCase)."""
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    key_name = {"credential_type": "credentialType"}.get(group_by, group_by)
    rows: dict[str | None, dict[str, Any]] = {}
    for gen in generations:
        groups: list[str | None] = {
            "model": [gen.model],
            "user": [gen.user],
            "tag": list(gen.tags),
            "provider": [gen.provider],
            "credential_type": ["system"],
            "day": [today],
        }[group_by]
        for group in groups:
            row = rows.setdefault(
                group,
                {
                    **({key_name: group} if group is not None else {}),
                    "totalCost": 0.0,
                    "marketCost": 0.0,
                    "inputTokens": 0,
                    "outputTokens": 0,
                    "cachedInputTokens": 0,
                    "cacheCreationInputTokens": 0,
                    "reasoningTokens": 0,
                    "requestCount": 0,
                },
            )
            row["totalCost"] += gen.cost
            row["marketCost"] += gen.cost
            row["inputTokens"] += gen.usage.prompt
            row["outputTokens"] += gen.usage.output
            row["cachedInputTokens"] += gen.usage.cache_read
            row["cacheCreationInputTokens"] += gen.usage.cache_write
            row["reasoningTokens"] += gen.usage.reasoning
            row["requestCount"] += 1
    return rows


def assert_report(results: list[dict[str, Any]], expected: dict[str | None, dict[str, Any]], key: str) -> None:
    key_name = {"credential_type": "credentialType"}.get(key, key)
    got = {row.get(key_name): row for row in results}
    assert len(got) == len(results), f"duplicate {key_name} rows: {results}"
    assert set(got) == set(expected), (key, results)
    for group, want in expected.items():
        row = got[group]
        assert set(row) == set(want), (group, row)
        for name, value in want.items():
            if name in ROW_COSTS:
                assert row[name] == pytest.approx(value, rel=1e-9, abs=1e-12), (group, name, row)
            else:
                assert row[name] == value, (group, name, row)


# ---------------------------------------------------------------------------------------------------------------------
# Infrastructure


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def workload_token() -> str:
    return f"wl-{secrets.token_urlsafe(24)}"


@pytest.fixture(scope="module")
def sidecar(upstream: FakeUpstream, workload_token: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    work = tmp_path_factory.mktemp("sidecar-gateway")
    config = f"""
[server]
path_prefix = "{PREFIX}"

[upstream]
max_retries = 0

[ledger]
path = "{work / "ledger.db"}"

[budget]
usd = {BUDGET_USD}
period = "month"

[[workloads]]
name = "{WORKLOAD}"
token = "env:B_TOKEN"
budget_usd = {WORKLOAD_BUDGET_USD}
"""
    env = {
        "B_TOKEN": workload_token,
        "ANTHROPIC_API_KEY": f"sk-ant-api03-test{secrets.token_hex(16)}",
        "ANTHROPIC_BASE_URL": upstream.url,
        "OPENAI_API_KEY": f"sk-proj-test{secrets.token_hex(16)}",
        "OPENAI_BASE_URL": f"{upstream.url}/v1",
    }
    with run_sidecar(work, config, f"gw-{secrets.token_urlsafe(24)}", env) as sc:
        yield sc


@pytest.fixture(autouse=True)
def _fresh_upstream(upstream: FakeUpstream, sidecar: Sidecar) -> None:
    reset_upstream(upstream)
    sidecar.mark()


def stream(sidecar: Sidecar, token: str, model: str, options: dict[str, Any]) -> httpx.Response:
    """``POST <sidecar>/sidecar/v1/pi/stream``, the whole response read."""
    body = {
        "modelId": model,
        "context": {"messages": [{"role": "user", "content": "hi", "timestamp": 1}]},
        "options": options,
    }
    return httpx.post(
        f"{sidecar.url}{PREFIX}/v1/pi/stream",
        json=body,
        headers={"authorization": f"Bearer {token}"},
        timeout=DRIVER_TIMEOUT_S,
    )


def stream_generation(
    sidecar: Sidecar,
    upstream: FakeUpstream,
    token: str,
    model: str,
    fixture: str,
    usage: Usage,
    metadata_key: str,
    user: str | None = None,
    tags: tuple[str, ...] = (),
) -> Generation:
    """Stream one generation replaying ``fixture``; check it completed and return what the ledger should hold."""
    upstream.push(Reply.sse(fixture_bytes(fixture)))
    metadata: dict[str, Any] = {"tags": list(tags)}
    if user is not None:
        metadata["user"] = user
    response = stream(sidecar, token, model, {metadata_key: metadata})
    assert response.status_code == 200, response.text
    generation_id = response.headers.get("x-generation-id", "")
    assert GENERATION_ID.match(generation_id), response.headers
    events = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data: {")]
    assert events[-1]["type"] == "done", events[-1]
    got = events[-1]["message"]["usage"]
    # The fixture was read the way the sidecar reads it: otherwise every expectation below is off.
    assert (got["input"], got["output"], got["cacheRead"], got["cacheWrite"]) == (
        usage.input,
        usage.output,
        usage.cache_read,
        usage.cache_write,
    ), got
    return Generation(generation_id, model, usage, user, tags)


def run_gateway(node: str, sidecar: Sidecar, api_key: str, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run ``calls`` through the real client in one Node process; one result line per call."""
    scenario = {"baseURL": f"{sidecar.url}{PREFIX}/v4/ai", "apiKey": api_key, "calls": calls}
    proc, lines = run_driver("gateway", [node, str(DRIVER)], scenario, node_env(), DRIVER_TIMEOUT_S)
    if proc.returncode != 0 or len(lines) != len(calls):
        pytest.fail(driver_broke("gateway", proc))
    for line in lines:  # every call went to the origin's /v1/*, not under the baseURL's /sidecar/v4/ai
        paths = [r["url"].split("?")[0].removeprefix(sidecar.url) for r in line["requests"]]
        assert paths in (["/v1/generation"], ["/v1/credits"], ["/v1/report"]), line
    return lines


def failed(line: dict[str, Any]) -> dict[str, Any]:
    assert line["ok"] is False, line
    error: dict[str, Any] = line["error"]
    return error


@pytest.fixture(scope="module")
def generations(sidecar: Sidecar, upstream: FakeUpstream) -> list[Generation]:
    """The main bearer's generations, attributed through both metadata keys the sidecar reads."""
    reset_upstream(upstream)
    gens = [
        stream_generation(
            sidecar,
            upstream,
            sidecar.token,
            SONNET,
            TEXT_FIXTURE,
            anthropic_fixture_usage(TEXT_FIXTURE),
            "metadata",
            user="alice",
            tags=("interop", "ledger"),
        ),
        stream_generation(
            sidecar,
            upstream,
            sidecar.token,
            SONNET,
            CACHE_FIXTURE,
            anthropic_fixture_usage(CACHE_FIXTURE),
            "requestMetadata",
            user="bob",
            tags=("interop", "cache"),
        ),
        stream_generation(
            sidecar,
            upstream,
            sidecar.token,
            GPT4O,
            OPENAI_FIXTURE,
            openai_fixture_usage(OPENAI_FIXTURE),
            "metadata",
            user="alice",
            tags=("ledger",),
        ),
    ]
    assert len(upstream.received) == len(gens)
    assert gens[1].usage.cache_read > 0 and gens[1].usage.cache_write > 0, "the cache fixture lost its cache usage"
    return gens


# ---------------------------------------------------------------------------------------------------------------------
# Scenarios


def test_generation_info(node: str, sidecar: Sidecar, generations: list[Generation]) -> None:
    calls = [{"op": "getGenerationInfo", "id": gen.id} for gen in generations]
    lines = run_gateway(node, sidecar, sidecar.token, calls)

    now = datetime.now(UTC)
    for gen, line in zip(generations, lines, strict=True):
        info = ok(line)
        assert set(info) == GENERATION_INFO_KEYS, info
        assert info["id"] == gen.id
        assert info["model"] == gen.model
        assert info["providerName"] == gen.provider
        assert info["isByok"] is False
        assert info["streamed"] is True
        assert info["finishReason"] == "stop"
        for name in ("totalCost", "marketCost", "upstreamInferenceCost", "usage"):
            assert info[name] == pytest.approx(gen.cost, rel=1e-9, abs=1e-15), (name, info)
        assert (info["surchargeCost"], info["gatewayCost"]) == (0, 0)
        assert info["promptTokens"] == gen.usage.prompt
        assert info["completionTokens"] == gen.usage.output
        assert info["cachedTokens"] == gen.usage.cache_read
        assert info["cacheCreationTokens"] == gen.usage.cache_write
        assert info["reasoningTokens"] == gen.usage.reasoning
        assert info["billableWebSearchCalls"] == 0
        for name in ("latency", "generationTime"):
            assert isinstance(info[name], int | float) and info[name] > 0, (name, info)
        assert info["latency"] <= info["generationTime"], info
        created = datetime.fromisoformat(info["createdAt"])
        assert created.tzinfo is not None, info["createdAt"]
        assert now - timedelta(minutes=1) <= created <= now, (info["createdAt"], now)

    # The first one is the brief's reference generation: text-basic-padded at Sonnet 4.5 rates, computed here.
    first = ok(lines[0])
    usage = anthropic_fixture_usage(TEXT_FIXTURE)
    assert (usage.input, usage.output, usage.cache_read, usage.cache_write) == (135, 10, 0, 0)
    assert first["totalCost"] == pytest.approx((135 * 3 + 10 * 15) / 1e6, rel=1e-9)


def test_unknown_generation_and_bearer_isolation(
    node: str, sidecar: Sidecar, workload_token: str, generations: list[Generation]
) -> None:
    mine = generations[0].id
    own = run_gateway(
        node,
        sidecar,
        sidecar.token,
        [{"op": "getGenerationInfo", "id": UNKNOWN_ID}, {"op": "getGenerationInfo", "id": "not-a-generation-id"}],
    )
    other = run_gateway(node, sidecar, workload_token, [{"op": "getGenerationInfo", "id": mine}])

    unknown, malformed, foreign = failed(own[0]), failed(own[1]), failed(other[0])
    for error in (unknown, foreign):
        assert (error["name"], error["type"], error["statusCode"], error["isRetryable"]) == (
            "GatewayNotFoundError",
            "not_found",
            404,
            False,
        ), error
    # Another bearer's id is indistinguishable from one that was never issued.
    assert foreign["message"].replace(mine, "<id>") == unknown["message"].replace(UNKNOWN_ID, "<id>")
    assert (malformed["name"], malformed["type"], malformed["statusCode"]) == (
        "GatewayInvalidRequestError",
        "invalid_request_error",
        400,
    ), malformed


def test_credits(node: str, sidecar: Sidecar, generations: list[Generation]) -> None:
    (line,) = run_gateway(node, sidecar, sidecar.token, [{"op": "getCredits"}])
    credits = ok(line)

    assert set(credits) == {"balance", "totalUsed"}
    assert all(isinstance(v, str) and re.fullmatch(r"\d+\.\d{2,8}", v) for v in credits.values()), credits
    used = sum(gen.cost for gen in generations)
    assert float(credits["totalUsed"]) == pytest.approx(used, abs=1e-9)
    assert float(credits["balance"]) == pytest.approx(BUDGET_USD - used, abs=1e-9)

    # The same answer under the path prefix, where a proxy that does not strip it would send the request.
    prefixed = httpx.get(
        f"{sidecar.url}{PREFIX}/v1/credits", headers={"authorization": f"Bearer {sidecar.token}"}, timeout=10
    )
    assert prefixed.status_code == 200
    assert prefixed.json() == {"balance": credits["balance"], "total_used": credits["totalUsed"]}


def test_spend_report(node: str, sidecar: Sidecar, generations: list[Generation]) -> None:
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    day = {"startDate": today, "endDate": today}
    queries: list[tuple[str, dict[str, Any], list[Generation]]] = [
        ("day", {}, generations),
        ("model", {"groupBy": "model"}, generations),
        ("tag", {"groupBy": "tag"}, generations),
        ("user", {"groupBy": "user"}, generations),
        ("provider", {"groupBy": "provider"}, generations),
        ("credential_type", {"groupBy": "credential_type"}, generations),
        ("model", {"groupBy": "model", "tags": ["ledger"]}, [g for g in generations if "ledger" in g.tags]),
        ("user", {"groupBy": "user", "tags": ["cache"]}, [g for g in generations if "cache" in g.tags]),
        ("model", {"groupBy": "model", "userId": "alice"}, [g for g in generations if g.user == "alice"]),
        ("tag", {"groupBy": "tag", "model": GPT4O, "provider": "openai"}, [g for g in generations if g.model == GPT4O]),
    ]
    calls = [{"op": "getSpendReport", "params": {**day, **params}} for _, params, _ in queries]
    calls.append({"op": "getSpendReport", "params": {"startDate": today, "endDate": "2000-01-01"}})
    lines = run_gateway(node, sidecar, sidecar.token, calls)

    for (key, params, gens), line in zip(queries, lines[: len(queries)], strict=True):
        results = ok(line)["results"]
        try:
            assert_report(results, expected_report(gens, key), key)
        except AssertionError as exc:
            raise AssertionError(f"getSpendReport({params}): {exc}") from exc
    # The filters really narrowed something, so the comparisons above are not vacuous.
    assert {row["model"] for row in ok(lines[6])["results"]} == {SONNET, GPT4O}
    assert [row["user"] for row in ok(lines[7])["results"]] == ["bob"]
    assert sum(row["requestCount"] for row in ok(lines[1])["results"]) == len(generations)

    bad = failed(lines[-1])
    assert (bad["name"], bad["type"], bad["statusCode"]) == ("GatewayInvalidRequestError", "invalid_request_error", 400)


def test_wrong_api_key_is_authentication_error(node: str, sidecar: Sidecar, generations: list[Generation]) -> None:
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    calls = [
        {"op": "getGenerationInfo", "id": generations[0].id},
        {"op": "getCredits"},
        {"op": "getSpendReport", "params": {"startDate": today, "endDate": today}},
    ]
    lines = run_gateway(node, sidecar, f"not-the-token-{secrets.token_hex(8)}", calls)
    for line in lines:
        error = failed(line)
        assert (error["name"], error["type"], error["statusCode"], error["isRetryable"]) == (
            "GatewayAuthenticationError",
            "authentication_error",
            401,
            False,
        ), error
        assert [r["status"] for r in line["requests"]] == [401]


def test_budget_exhausted_by_one_generation(
    node: str, sidecar: Sidecar, upstream: FakeUpstream, workload_token: str, generations: list[Generation]
) -> None:
    spent = stream_generation(
        sidecar,
        upstream,
        workload_token,
        SONNET,
        TEXT_FIXTURE,
        anthropic_fixture_usage(TEXT_FIXTURE),
        "metadata",
        tags=("budget",),
    )
    assert spent.cost > WORKLOAD_BUDGET_USD
    assert len(upstream.received) == 1

    upstream.push(Reply.sse(fixture_bytes(TEXT_FIXTURE)))  # would succeed if the sidecar called the upstream
    refused = stream(sidecar, workload_token, SONNET, {"metadata": {"tags": ["budget"]}})
    assert refused.status_code == 429, refused.text
    assert refused.headers["content-type"].startswith("application/json")
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_exceeded", error
    assert f"workload:{WORKLOAD}" in error["message"], error
    assert "x-generation-id" not in refused.headers
    assert len(upstream.received) == 1, "the refused request reached the upstream"

    today = datetime.now(UTC).strftime("%Y-%m-%d")
    lines = run_gateway(
        node,
        sidecar,
        workload_token,
        [
            {"op": "getCredits"},
            {"op": "getGenerationInfo", "id": spent.id},
            {"op": "getSpendReport", "params": {"startDate": today, "endDate": today, "groupBy": "tag"}},
        ],
    )
    credits = ok(lines[0])
    assert credits["balance"] == "0.00", credits
    assert float(credits["totalUsed"]) == pytest.approx(spent.cost, abs=1e-9)
    assert ok(lines[1])["totalCost"] == pytest.approx(spent.cost, rel=1e-9)
    # Only the generation that ran is billed; the refused request left no row.
    assert_report(ok(lines[2])["results"], expected_report([spent], "tag"), "tag")

    # The workload's spend is its own: the main bearer cannot see it and its credits are unchanged.
    main_calls = [{"op": "getGenerationInfo", "id": spent.id}, {"op": "getCredits"}]
    main = run_gateway(node, sidecar, sidecar.token, main_calls)
    assert failed(main[0])["name"] == "GatewayNotFoundError"
    assert float(ok(main[1])["totalUsed"]) == pytest.approx(sum(g.cost for g in generations), abs=1e-9)
