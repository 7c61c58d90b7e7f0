"""``GET /metrics``: a scrape after known traffic shows exactly that traffic, parsed by prometheus-client's own parser.

A real sidecar on 127.0.0.1, a fake upstream replaying recorded Anthropic bytes, and every figure checked against
what was sent or against the ledger row the generation wrote.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.auth import identity_of
from tests.conftest import pi_body, read_events
from tests.fakeupstream import FakeUpstream, Reply, fixture_bytes
from tests.sidecar_server import (
    ANTHROPIC_CANARY,
    OPENAI_CANARY,
    TOKEN,
    RunningSidecar,
    free_port,
    generation_row,
    ledger_settled,
    run_sidecar,
    sidecar_environ,
    wait_until_healthy,
    write_config,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, token: str = TOKEN, client: httpx.Client | None = None) -> tuple[str, Samples]:
    """``GET /metrics`` parsed by prometheus-client's own parser: ``{(sample name, labels): value}``."""
    response = (client or httpx).get(f"{url}/metrics", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return response.text, parse(response.text)


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 when it was never counted (a counter that does not exist yet reads as zero)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_a_scrape_shows_the_traffic_exactly(
    sidecar: RunningSidecar, upstream: FakeUpstream, auth_headers: dict[str, str]
) -> None:
    url = sidecar.url
    for _ in range(3):
        read_events(httpx.post(f"{url}/v1/pi/stream", json=pi_body("echo/echo", "one two three"), headers=auth_headers))
    upstream.push(Reply.sse(fixture_bytes("anthropic-messages/text-basic-padded.sse")))
    answered = httpx.post(f"{url}/v1/pi/stream", json=pi_body("anthropic/claude-sonnet-4-5"), headers=auth_headers)
    read_events(answered)
    chat = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "echo/echo", "messages": [{"role": "user", "content": "hi there"}]},
        headers=auth_headers,
    )
    assert chat.status_code == 200
    upstream.push(Reply.json(401, {"type": "error", "error": {"type": "authentication_error", "message": "bad"}}))
    refused = httpx.post(f"{url}/v1/pi/stream", json=pi_body("anthropic/claude-sonnet-4-5"), headers=auth_headers)
    read_events(refused)  # a 401 upstream after the 200: the in-band error event
    assert (
        httpx.post(f"{url}/v1/pi/stream", json=pi_body("echo/echo"), headers={"authorization": "Bearer no"}).status_code
        == 401
    )
    assert httpx.get(f"{url}/no/such/path", headers=auth_headers).status_code == 404
    assert httpx.get(f"{url}/v1/models", headers=auth_headers).status_code == 200
    row = generation_row(url, answered.headers["x-generation-id"])
    generation_row(url, refused.headers["x-generation-id"])
    ledger_settled(url)  # every row committed: the ledger's counters are final (the lookups may answer from memory)

    text, samples = scrape(url)

    echo = {"route": "pi", "provider": "echo", "model": "echo/echo"}
    claude = {"route": "pi", "provider": "anthropic", "model": "anthropic/claude-sonnet-4-5"}
    assert value(samples, "sidecar_generations_total", **echo, outcome="stop", status="200") == 3
    assert value(samples, "sidecar_generations_total", **claude, outcome="stop", status="200") == 1
    assert value(samples, "sidecar_generations_total", **claude, outcome="error", status="401") == 1
    assert (
        value(
            samples,
            "sidecar_generations_total",
            route="openai-chat",
            provider="echo",
            model="echo/echo",
            outcome="stop",
            status="200",
        )
        == 1
    )
    # TTFT: one observation per generation that produced a token; duration: one per generation.
    assert value(samples, "sidecar_time_to_first_token_seconds_count", **echo) == 3
    assert value(samples, "sidecar_time_to_first_token_seconds_count", **claude) == 1
    assert value(samples, "sidecar_generation_duration_seconds_count", **claude) == 2
    assert value(samples, "sidecar_generation_duration_seconds_bucket", **claude, le="+Inf") == 2

    # Tokens and cost: exactly the ledger row's, under the caller's identity (never the bearer itself).
    mine = {"provider": "anthropic", "model": "anthropic/claude-sonnet-4-5", "workload": identity_of(TOKEN)}
    cached, written = row["native_tokens_cached"], row["native_tokens_cache_creation"]
    assert row["native_tokens_completion"] > 0
    assert (
        value(samples, "sidecar_tokens_total", **mine, kind="input") == row["native_tokens_prompt"] - cached - written
    )
    assert value(samples, "sidecar_tokens_total", **mine, kind="output") == row["native_tokens_completion"]
    assert value(samples, "sidecar_tokens_total", **mine, kind="cache_read") == cached
    assert value(samples, "sidecar_tokens_total", **mine, kind="cache_write") == written
    assert row["total_cost"] > 0
    assert value(samples, "sidecar_cost_usd_total", **mine) == row["total_cost"]

    # Requests: by path template, so the unknown path is not a label of its own.
    assert value(samples, "sidecar_requests_total", route="/v1/pi/stream", method="POST", status="200") == 5
    assert value(samples, "sidecar_requests_total", route="/v1/pi/stream", method="POST", status="401") == 1
    assert value(samples, "sidecar_requests_total", route="/v1/chat/completions", method="POST", status="200") == 1
    assert value(samples, "sidecar_requests_total", route="/{path:path}", method="GET", status="404") == 1
    assert value(samples, "sidecar_requests_total", route="/v1/models", method="GET", status="200") == 1
    assert "/no/such/path" not in text

    # State, read at the scrape.
    assert value(samples, "sidecar_streams_in_flight") == 0
    assert value(samples, "sidecar_ledger_pending_rows") == 0
    assert value(samples, "sidecar_ledger_rows_written_total") == 6
    assert value(samples, "sidecar_ledger_write_errors_total") == 0
    assert value(samples, "sidecar_realtime_sessions") == 0

    # Nothing secret in any line: the bearer, the provider keys, the prompt.
    for secret in (TOKEN, ANTHROPIC_CANARY, OPENAI_CANARY, "one two three", "hi there"):
        assert secret not in text

    # A second scrape counts the first one and nothing else.
    _, again = scrape(url)
    assert value(again, "sidecar_requests_total", route="/metrics", method="GET", status="200") == 1
    assert value(again, "sidecar_generations_total", **echo, outcome="stop", status="200") == 3


def test_retries_before_the_first_byte_are_counted(
    sidecar: RunningSidecar, upstream: FakeUpstream, tmp_path: Path, auth_headers: dict[str, str]
) -> None:
    del sidecar  # this one has max_retries = 0; the retry needs the default
    home = tmp_path / "retrying"
    with run_sidecar(sidecar_environ(upstream.url, home)) as retrying:
        overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
        upstream.push(
            Reply.json(529, overloaded, {"retry-after": "0"}),
            Reply.json(429, overloaded, {"retry-after": "0"}),
            Reply.sse(fixture_bytes("anthropic-messages/text-basic-padded.sse")),
        )
        response = httpx.post(
            f"{retrying.url}/v1/pi/stream", json=pi_body("anthropic/claude-sonnet-4-5"), headers=auth_headers
        )
        assert read_events(response)[-1]["type"] == "done"
        _, samples = scrape(retrying.url)
    assert value(samples, "sidecar_upstream_retries_total", provider="anthropic", reason="529") == 1
    assert value(samples, "sidecar_upstream_retries_total", provider="anthropic", reason="429") == 1
    assert len(upstream.received) == 3


def test_metrics_need_the_bearer(sidecar: RunningSidecar) -> None:
    assert httpx.get(f"{sidecar.url}/metrics").status_code == 401
    refused = httpx.get(f"{sidecar.url}/metrics", headers={"authorization": "Bearer wrong"})
    assert refused.status_code == 401
    assert "sidecar_" not in refused.text


def test_metrics_can_be_turned_off(upstream: FakeUpstream, tmp_path: Path, auth_headers: dict[str, str]) -> None:
    config = write_config(tmp_path, "[metrics]\nenabled = false\n")
    with run_sidecar(sidecar_environ(upstream.url, tmp_path), config) as running:
        read_events(httpx.post(f"{running.url}/v1/pi/stream", json=pi_body("echo/echo"), headers=auth_headers))
        assert httpx.get(f"{running.url}/metrics", headers=auth_headers).status_code == 404


@pytest.mark.parametrize("workers", [1, 2])
def test_a_metrics_port_serves_them_without_the_bearer_and_only_there(tmp_path: Path, workers: int) -> None:
    """``[metrics] port``: a listener of its own for the scraper (no bearer), serving nothing else; the main listener
    then has no ``/metrics``. With workers, the supervisor binds it and any worker's answer sums them all."""
    main_port, metrics_port = free_port(), free_port()
    config = write_config(tmp_path, f'[metrics]\nport = {metrics_port}\nhost = "127.0.0.1"\n')
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **sidecar_environ("http://127.0.0.1:9", tmp_path)}
    command = [sys.executable, "-m", "sidecar", "serve", "--config", str(config), "--port", str(main_port)]
    log_path = tmp_path / "sidecar.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([*command, "--workers", str(workers)], env=env, stdout=log, stderr=subprocess.STDOUT)
    main, scraper = f"http://127.0.0.1:{main_port}", f"http://127.0.0.1:{metrics_port}"
    headers = {"authorization": f"Bearer {TOKEN}"}
    try:
        wait_until_healthy(main, proc, log_path.read_text)
        for _ in range(6):
            with httpx.Client() as fresh:
                read_events(fresh.post(f"{main}/v1/pi/stream", json=pi_body("echo/echo"), headers=headers))
        assert httpx.get(f"{main}/metrics", headers=headers).status_code == 404
        for _ in range(4):
            with httpx.Client() as fresh:
                response = fresh.get(f"{scraper}/metrics")
            assert response.status_code == 200
            samples = parse(response.text)
            echo = {"route": "pi", "provider": "echo", "model": "echo/echo", "outcome": "stop", "status": "200"}
            assert value(samples, "sidecar_generations_total", **echo) == 6
        assert httpx.get(f"{scraper}/healthz").json() == {"ok": True}
        assert httpx.get(f"{scraper}/v1/models", headers=headers).status_code == 404
        assert httpx.post(f"{scraper}/metrics").status_code == 405
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert f"metrics listener on http://127.0.0.1:{metrics_port}" in log_path.read_text()
