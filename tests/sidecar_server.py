"""Run the real sidecar app under uvicorn on 127.0.0.1 in a background thread (as httpx's own tests do)."""

from __future__ import annotations

import logging
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from sidecar.app import create_app, log_outcome
from sidecar.auth import Caller
from sidecar.config import load_settings
from sidecar.http_server import server_config
from sidecar.stream import Outcome

TOKEN = "test-workload-bearer-0123456789"
ANTHROPIC_CANARY = "sk-ant-canary-KEY-do-not-leak-000111222"
OPENAI_CANARY = "sk-canary-KEY-do-not-leak-333444555666"


class RunningSidecar:
    def __init__(self, server: uvicorn.Server, port: int, outcomes: list[tuple[str, Outcome]]) -> None:
        self.server = server
        self.port = port
        self.outcomes = outcomes

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_for_outcomes(self, count: int, timeout: float = 5.0) -> list[tuple[str, Outcome]]:
        deadline = time.monotonic() + timeout
        while len(self.outcomes) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.outcomes


def write_config(tmp: Path, text: str) -> Path:
    path = tmp / "sidecar.toml"
    path.write_text(text, encoding="utf-8")
    return path


def sidecar_environ(upstream_url: str, home: Path, **extra: str) -> dict[str, str]:
    return {
        "HOME": str(home),
        "SIDECAR_HOME": str(home / "sidecar"),
        "SIDECAR_TOKEN": TOKEN,
        "ANTHROPIC_API_KEY": ANTHROPIC_CANARY,
        "ANTHROPIC_BASE_URL": upstream_url,
        "OPENAI_API_KEY": OPENAI_CANARY,
        "OPENAI_BASE_URL": upstream_url + "/v1",
        # On a Google Cloud VM the metadata server would make vertex/* servable and change the model listings.
        "NO_GCE_CHECK": "true",
        **extra,
    }


@contextmanager
def run_sidecar(
    environ: Mapping[str, str],
    config_path: Path | None = None,
    on_finish: Callable[[str, Caller, Outcome], None] | None = None,
    **create_kw: Any,
) -> Iterator[RunningSidecar]:
    settings = load_settings(config_path, environ)
    outcomes: list[tuple[str, Outcome]] = []

    def record(generation_id: str, caller: Caller, outcome: Outcome) -> None:
        outcomes.append((generation_id, outcome))
        log_outcome(generation_id, caller, outcome)
        if on_finish is not None:
            on_finish(generation_id, caller, outcome)

    app = create_app(settings, on_finish=record, **create_kw)
    # The production server setup (protocol with limits, keep-alive, WebSocket frame size), on a free port.
    server = uvicorn.Server(server_config(app, settings, host="127.0.0.1", port=0, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("sidecar did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningSidecar(server, port, outcomes)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        logging.getLogger("sidecar").debug("test sidecar stopped")


def free_port() -> int:
    """A port free on 127.0.0.1 now (for a ``sidecar serve`` subprocess, which takes ``--port``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_healthy(url: str, process: subprocess.Popen[Any], describe: Callable[[], str] = str) -> None:
    """Block until a ``sidecar serve`` subprocess answers ``GET /healthz`` (15 s at most); fail, with ``describe()``
    (its log, say), if it exits or does not come up."""
    deadline = time.monotonic() + 15
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, f"sidecar did not start\n{describe()}"
        time.sleep(0.05)


def ledger_settled(url: str, timeout: float = 5.0) -> None:
    """Wait until the sidecar at ``url`` has committed every finished generation (``/healthz``: no row pending).
    ``/v1/generation`` answers from the writer's memory too, so a row it shows may not be committed yet."""
    deadline = time.monotonic() + timeout
    while httpx.get(f"{url}/healthz").json()["ledger"]["pending"]:
        assert time.monotonic() < deadline, f"the ledger still had rows to write after {timeout} s"
        time.sleep(0.02)


def generation_row(url: str, generation_id: Any, token: str = TOKEN, timeout: float = 5.0) -> dict[str, Any]:
    """``GET /v1/generation?id=`` of a sidecar at ``url``: the ledger row's wire view. The row is written in a batch
    just after the generation ends, which may be after the client read its last byte, so a 404 is retried."""
    assert isinstance(generation_id, str) and generation_id.startswith("gen_"), generation_id
    deadline = time.monotonic() + timeout
    while True:
        found = httpx.get(
            f"{url}/v1/generation", params={"id": generation_id}, headers={"authorization": f"Bearer {token}"}
        )
        if found.status_code != 404 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert found.status_code == 200, found.text
    row: dict[str, Any] = found.json()["data"]
    return row
