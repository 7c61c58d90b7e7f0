"""``sidecar serve --workers N``: one supervisor, N real worker processes behind one port, sharing the ledger and the
realtime client secrets (no Redis: the SQLite file in the sidecar's home), stopping together.

Real ``python -m sidecar serve`` processes; the providers are a FakeUpstream (Anthropic) and a FakeRealtime (OpenAI).
The kernel hands each new connection to one worker, so the tests open fresh connections and check what both did.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import pi_body, read_events
from tests.fakerealtime import FakeRealtime
from tests.fakeupstream import FakeUpstream, Reply, fixture_bytes
from tests.realtime.test_redis_race import assert_refused_as_used, attempt, mint
from tests.sidecar_server import TOKEN, free_port, generation_row, sidecar_environ, wait_until_healthy
from tests.test_metrics import scrape, value

HEADERS = {"authorization": f"Bearer {TOKEN}"}
TEXT = "anthropic-messages/text-basic-padded.sse"
REALTIME_MODEL = "openai/gpt-realtime"


@dataclass
class Supervisor:
    """A running ``serve --workers`` and what it wrote; ``name``/``url``/``socket_url`` as the realtime helpers use."""

    proc: subprocess.Popen[bytes]
    port: int
    home: Path
    log_path: Path
    name: str = "workers"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def socket_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v4/ai/realtime-model?ai-model-id={REALTIME_MODEL.replace('/', '%2F')}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def workers(self) -> set[int]:
        """The pids of the supervisor's live children."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return {int(pid) for pid in children.read_text().split()} if children.exists() else set()


def start(work: Path, upstream: FakeUpstream, realtime: FakeRealtime | None = None, workers: int = 2) -> Supervisor:
    work.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        **sidecar_environ(upstream.url, work),
    }
    if realtime is not None:
        env["OPENAI_BASE_URL"] = realtime.url.replace("ws://", "http://")
    config = work / "sidecar.toml"
    config.write_text("[upstream]\nmax_retries = 0\n", encoding="utf-8")
    port = free_port()
    log_path = work / "sidecar.log"
    command = [sys.executable, "-m", "sidecar", "serve", "--config", str(config), "--port", str(port)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen([*command, "--workers", str(workers)], env=env, stdout=log, stderr=subprocess.STDOUT)
    supervisor = Supervisor(proc, port, work / "sidecar", log_path)
    wait_until_healthy(supervisor.url, proc, supervisor.log)
    return supervisor


def stop(supervisor: Supervisor) -> None:
    if supervisor.proc.poll() is None:
        supervisor.proc.terminate()
        try:
            supervisor.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            supervisor.proc.kill()
            supervisor.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Supervisor, FakeUpstream]]:
    with ExitStack() as stack:
        upstream = stack.enter_context(FakeUpstream())
        realtime = stack.enter_context(FakeRealtime())
        supervisor = start(tmp_path_factory.mktemp("workers"), upstream, realtime)
        stack.callback(stop, supervisor)
        yield supervisor, upstream


def answering_pids(supervisor: Supervisor, rounds: int = 20) -> set[int]:
    """The workers that answered ``/healthz``, each request on a fresh connection, 8 at a time."""
    seen: set[int] = set()
    with ThreadPoolExecutor(8) as pool:
        for _ in range(rounds):
            seen |= set(pool.map(lambda _: httpx.get(f"{supervisor.url}/healthz").json()["pid"], range(8)))
            if len(seen) == 2:
                break
    return seen


def test_both_workers_answer_on_the_one_port(serving: tuple[Supervisor, FakeUpstream]) -> None:
    supervisor, _ = serving
    workers = supervisor.workers()
    assert len(workers) == 2 and supervisor.proc.pid not in workers
    assert answering_pids(supervisor) == workers
    assert f"2 workers on http://127.0.0.1:{supervisor.port}" in supervisor.log()


def test_generations_of_every_worker_land_in_the_one_ledger(serving: tuple[Supervisor, FakeUpstream]) -> None:
    supervisor, upstream = serving
    upstream.default = Reply.sse(fixture_bytes(TEXT))

    def stream(_: int) -> str:
        response = httpx.post(
            f"{supervisor.url}/v1/pi/stream", json=pi_body("anthropic/claude-sonnet-4-5"), headers=HEADERS, timeout=10
        )
        assert read_events(response)[-1]["type"] == "done"
        return response.headers["x-generation-id"]

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(stream, range(24)))
    # Looked up through any worker, each row is there: written by whichever worker served it, into one file.
    for generation_id in ids:
        row = generation_row(supervisor.url, generation_id)
        assert row["id"] == generation_id and row["model"] == "anthropic/claude-sonnet-4-5"
    assert (supervisor.home / "ledger.db").exists()


async def test_a_realtime_secret_minted_by_one_worker_opens_once_on_any(
    serving: tuple[Supervisor, FakeUpstream],
) -> None:
    """Without Redis the workers share the secrets through one SQLite file: whichever worker minted a secret and
    whichever the browser reaches, it opens exactly once (with per-process memory, about half would be unknown)."""
    supervisor, _ = serving
    tokens = [await mint(supervisor) for _ in range(12)]
    opened = await asyncio.gather(*(attempt(supervisor, token) for token in tokens))
    assert [a.status for a in opened] == [101] * len(tokens), [(a.status, a.body) for a in opened]
    for token in tokens:
        assert_refused_as_used(await attempt(supervisor, token))
    assert (supervisor.home / "realtime-tokens.db").exists()


def test_sigterm_lets_streams_in_flight_finish_then_stops_every_worker(tmp_path: Path) -> None:
    with FakeUpstream() as upstream:
        supervisor = start(tmp_path, upstream)
        try:
            workers = supervisor.workers()
            upstream.default = Reply.sse(fixture_bytes(TEXT), split=200, delay_between=0.1)  # ~1 s per stream
            with ThreadPoolExecutor(4) as pool:
                streams = [
                    pool.submit(
                        httpx.post,
                        f"{supervisor.url}/v1/pi/stream",
                        json=pi_body("anthropic/claude-sonnet-4-5"),
                        headers=HEADERS,
                        timeout=20,
                    )
                    for _ in range(4)
                ]
                deadline = time.monotonic() + 10
                while len(upstream.received) < 4 and time.monotonic() < deadline:
                    time.sleep(0.02)
                supervisor.proc.send_signal(signal.SIGTERM)
                for future in streams:
                    assert read_events(future.result())[-1]["type"] == "done"
            assert supervisor.proc.wait(timeout=30) == 0
            assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
        finally:
            stop(supervisor)


def test_a_worker_that_dies_stops_the_others_and_the_supervisor(tmp_path: Path) -> None:
    with FakeUpstream() as upstream:
        supervisor = start(tmp_path, upstream)
        try:
            first, *others = sorted(supervisor.workers())
            os.kill(first, signal.SIGKILL)
            assert supervisor.proc.wait(timeout=30) == 1  # for the orchestrator to restart the whole sidecar
            assert not any(Path(f"/proc/{pid}").exists() for pid in others)
            assert f"a worker (pid {first}) exited" in supervisor.log()
        finally:
            stop(supervisor)


def test_a_port_in_use_and_a_bad_worker_count_are_one_clear_line(tmp_path: Path) -> None:
    env = {**os.environ, "SIDECAR_TOKEN": TOKEN, "HOME": str(tmp_path), "SIDECAR_HOME": str(tmp_path / "home")}
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "sidecar", "serve", "--port", str(port), "--workers", "2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"sidecar: 127.0.0.1:{port} is already in use: stop what listens there, or pick another port with --port or "
        "[server] port"
    )
    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "serve", "--workers", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "[server] workers must be between 1 and 64 (about one per core), got 0" in result.stderr


def test_a_scrape_through_any_worker_sums_every_worker(tmp_path: Path) -> None:
    """Each worker counts into its own files in one directory made for this run; whichever worker answers a scrape
    sums them all, so every scrape shows all the traffic, and the directory goes when the workers stop."""
    with FakeUpstream() as upstream:
        supervisor = start(tmp_path, upstream)
        try:
            upstream.default = Reply.sse(fixture_bytes(TEXT))
            workers = supervisor.workers()
            directories = {worker_environ(pid)["PROMETHEUS_MULTIPROC_DIR"] for pid in workers}
            assert len(directories) == 1
            directory = Path(directories.pop())

            def stream(_: int) -> None:
                with httpx.Client() as fresh:  # a new connection each time: the kernel picks a worker per connection
                    response = fresh.post(
                        f"{supervisor.url}/v1/pi/stream",
                        json=pi_body("anthropic/claude-sonnet-4-5"),
                        headers=HEADERS,
                        timeout=10,
                    )
                    assert read_events(response)[-1]["type"] == "done"

            with ThreadPoolExecutor(8) as pool:
                list(pool.map(stream, range(24)))
            counted_by = {int(path.stem.rsplit("_", 1)[1]) for path in directory.glob("counter_*.db")}
            assert counted_by == workers  # both workers served streams and counted them

            claude = {"route": "pi", "provider": "anthropic", "model": "anthropic/claude-sonnet-4-5"}
            for _ in range(6):
                with httpx.Client() as fresh:
                    text, samples = scrape(supervisor.url, client=fresh)
                assert value(samples, "sidecar_generations_total", **claude, outcome="stop", status="200") == 24
                assert (
                    value(samples, "sidecar_requests_total", route="/v1/pi/stream", method="POST", status="200") == 24
                )
                assert value(samples, "sidecar_time_to_first_token_seconds_count", **claude) == 24
                assert value(samples, "sidecar_streams_in_flight") == 0
                assert TOKEN not in text
        finally:
            stop(supervisor)
        assert not directory.exists()


def worker_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
