"""Timing behaviour on real sockets: no buffering, heartbeats, upstream timeouts, disconnect cancels upstream."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson

from tests.conftest import pi_body
from tests.fakeupstream import FakeUpstream, Reply, fixture_bytes
from tests.sidecar_server import TOKEN, RunningSidecar, run_sidecar, sidecar_environ, write_config

HEADERS = {"authorization": f"Bearer {TOKEN}"}
TEXT_FIXTURE = "anthropic-messages/text-basic-padded.sse"


def events_of(lines: list[str]) -> list[dict[str, object]]:
    return [orjson.loads(line[6:]) for line in lines if line.startswith("data: {")]


def test_events_are_delivered_as_they_arrive(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    """A slow upstream's first delta reaches the client long before the upstream finishes (no buffering)."""
    data = fixture_bytes(TEXT_FIXTURE)
    upstream.push(Reply.sse(data, split=len(data) // 8 + 1, delay_between=0.25))  # ~2 s in all
    started = time.monotonic()
    first_delta_at = None
    with httpx.stream(
        "POST", f"{sidecar.url}/v1/pi/stream", json=pi_body("anthropic/claude-sonnet-4-5"), headers=HEADERS, timeout=10
    ) as response:
        for line in response.iter_lines():
            if '"type":"text_delta"' in line and first_delta_at is None:
                first_delta_at = time.monotonic() - started
    total = time.monotonic() - started
    assert first_delta_at is not None
    assert total > 1.5
    # The first delta leaves the upstream ~0.75 s before its end (chunks 0.25 s apart); buffering puts it at the end.
    assert first_delta_at < total - 0.5, (first_delta_at, total)


def test_heartbeats_while_waiting_for_a_slow_first_byte(upstream: FakeUpstream, tmp_path: Path) -> None:
    config = write_config(tmp_path, "[server]\nheartbeat_seconds = 0.2\n[upstream]\nmax_retries = 0\n")
    with run_sidecar(sidecar_environ(upstream.url, tmp_path), config) as running:
        upstream.push(Reply.sse(fixture_bytes(TEXT_FIXTURE), delay_before=1.2))
        lines: list[str] = []
        with httpx.stream(
            "POST",
            f"{running.url}/v1/pi/stream",
            json=pi_body("anthropic/claude-sonnet-4-5"),
            headers=HEADERS,
            timeout=10,
        ) as response:
            lines = list(response.iter_lines())
        first_delta = next(i for i, line in enumerate(lines) if '"text_delta"' in line)
        pings_before = [line for line in lines[:first_delta] if line.startswith(":")]
        assert len(pings_before) >= 3, lines[:first_delta]
        assert events_of(lines)[-1]["type"] == "done"


def test_first_event_timeout_from_client_options(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    upstream.push(Reply.sse(fixture_bytes(TEXT_FIXTURE), delay_before=3))
    started = time.monotonic()
    response = httpx.post(
        f"{sidecar.url}/v1/pi/stream",
        headers=HEADERS,
        timeout=10,
        json=pi_body("anthropic/claude-sonnet-4-5", streamFirstEventTimeoutMs=300),
    )
    elapsed = time.monotonic() - started
    events = events_of(response.text.splitlines())
    assert elapsed < 2.0
    assert [e["type"] for e in events] == ["start", "error"]
    error = events[-1]["error"]
    assert isinstance(error, dict)
    assert error["errorStatus"] == 504 and "first event" in error["errorMessage"]


def test_idle_timeout_keeps_partial_content(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    data = fixture_bytes(TEXT_FIXTURE)
    # Stall right after the first text delta's event, for longer than the idle timeout.
    cut = data.index(b"\n\n", data.index(b"text_delta")) + 2
    upstream.push(Reply(chunks=[data[:cut], data[cut:]], stall_after=1, stall_seconds=3))
    started = time.monotonic()
    response = httpx.post(
        f"{sidecar.url}/v1/pi/stream",
        headers=HEADERS,
        timeout=10,
        json=pi_body("anthropic/claude-sonnet-4-5", streamIdleTimeoutMs=400, streamFirstEventTimeoutMs=5000),
    )
    events = events_of(response.text.splitlines())
    assert time.monotonic() - started < 2.5
    terminal = events[-1]
    assert terminal["type"] == "error"
    error = terminal["error"]
    assert isinstance(error, dict)
    assert "next event" in error["errorMessage"] and error["errorStatus"] == 504
    streamed = "".join(str(e["delta"]) for e in events if e["type"] == "text_delta")
    assert streamed and error["content"][0]["text"] == streamed


def test_client_disconnect_cancels_the_upstream_and_is_recorded(
    sidecar: RunningSidecar, upstream: FakeUpstream
) -> None:
    data = fixture_bytes(TEXT_FIXTURE)
    upstream.push(Reply.sse(data, split=40, delay_between=0.1))  # many seconds if read to the end
    with httpx.stream(
        "POST", f"{sidecar.url}/v1/pi/stream", json=pi_body("anthropic/claude-sonnet-4-5"), headers=HEADERS, timeout=10
    ) as response:
        for line in response.iter_lines():
            if '"text_delta"' in line:
                break  # leaving the block closes the connection mid-stream
    deadline = time.monotonic() + 3
    while upstream.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert upstream.disconnects == 1, "the upstream request was not cancelled after the client left"
    outcomes = sidecar.wait_for_outcomes(1)
    ((generation_id, outcome),) = outcomes
    assert generation_id.startswith("gen_")
    assert outcome.reason == "aborted" and outcome.error_status == 499
    assert outcome.message["usage"]["input"] > 0  # what was generated before the disconnect is still recorded


def test_outcome_reported_exactly_once_per_generation(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    upstream.push(Reply.sse(fixture_bytes(TEXT_FIXTURE)), Reply.json(429, {"error": {"message": "slow down"}}))
    for model in ("anthropic/claude-sonnet-4-5", "anthropic/claude-sonnet-4-5", "echo/echo"):
        httpx.post(f"{sidecar.url}/v1/pi/stream", json=pi_body(model), headers=HEADERS, timeout=10)
    outcomes = sidecar.wait_for_outcomes(3)
    time.sleep(0.1)
    assert [o.reason for _, o in sidecar.outcomes] == ["stop", "error", "stop"]
    assert sidecar.outcomes[1][1].error_status == 429
    assert len({gid for gid, _ in outcomes}) == 3


def test_upstream_connections_are_reused(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    """Adapters stop reading at the terminal event; the rest of the body is drained so the socket is pooled (a new
    connection per stream would put a TCP+TLS handshake in front of every first token)."""
    upstream.push(
        Reply.sse(fixture_bytes(TEXT_FIXTURE)),
        Reply.sse(fixture_bytes("openai-chat-completions/text-basic-include-usage.sse")),
        Reply.sse(fixture_bytes(TEXT_FIXTURE)),
    )
    for model in ("anthropic/claude-sonnet-4-5", "openai/gpt-4o", "anthropic/claude-sonnet-4-5"):
        response = httpx.post(f"{sidecar.url}/v1/pi/stream", json=pi_body(model), headers=HEADERS, timeout=10)
        assert events_of(response.text.splitlines())[-1]["type"] == "done"
    assert len(upstream.received) == 3
    assert upstream.connections == 1
