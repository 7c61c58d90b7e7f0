"""The log of a real ``sidecar serve`` process: one line per record whatever a caller sends, and no prompt or
completion text at any level unless ``[server] log_content`` is on.

Each test starts ``python -m sidecar serve --access-log`` at ``log_level = "debug"`` and reads its stderr.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from sidecar.config import load_settings
from sidecar.logs import OneLineFormatter, RedactingFilter, configure_logging
from tests.conftest import pi_body, read_events
from tests.fakerealtime import FakeRealtime
from tests.sidecar_server import free_port, wait_until_healthy

TOKEN = "log-hygiene-bearer-0123456789"
HEADERS = {"authorization": f"Bearer {TOKEN}"}
RECORD_START = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
FORGED = "1999-12-31 23:59:59,999 ERROR sidecar: forged"
"""What an attacker wants to appear as a record of its own; a date no real record of this run has."""
PROMPT_CANARY = "prompt-canary-7f3a9c"


@dataclass
class Served:
    url: str
    port: int
    stderr: Path

    def log(self) -> str:
        return self.stderr.read_text(encoding="utf-8", errors="surrogateescape")


@contextmanager
def serve(tmp_path: Path, log_content: bool, realtime_url: str = "http://127.0.0.1:9") -> Iterator[Served]:
    config = tmp_path / "sidecar.toml"
    config.write_text(f'[server]\nlog_level = "debug"\nlog_content = {str(log_content).lower()}\n', encoding="utf-8")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "SIDECAR_TOKEN": TOKEN,
        "OPENAI_API_KEY": "sk-log-hygiene-canary-000111222333",
        "OPENAI_BASE_URL": realtime_url,
    }
    port = free_port()
    served = Served(f"http://127.0.0.1:{port}", port, tmp_path / "stderr.log")
    with served.stderr.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "serve", "--config", str(config), "--port", str(port), "--access-log"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        wait_until_healthy(served.url, proc, served.log)
        yield served
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_no_logged_value_can_forge_a_record(tmp_path: Path) -> None:
    """A request path, a model id and a realtime team name carrying CR/LF, NUL, NEL and U+2028 each stay inside
    their own record: every stderr line is a record start, and no line is the forged one."""
    breaks = "\n\r\x00\x85\u2028"
    with FakeRealtime() as up, serve(tmp_path, False, up.url.replace("ws://", "http://")) as served:
        # uvicorn's access log: the path decodes to CR, LF, NUL, NEL and U+2028 before it is logged.
        response = httpx.get(f"{served.url}/x%0A{FORGED.replace(' ', '%20')}%0D%00%C2%85%E2%80%A8", headers=HEADERS)
        assert response.status_code == 404
        # A model id (logged when a provider serves an id that is not in the catalog, if the request parser lets
        # it through).
        body = pi_body(f"echo/x\n{FORGED} model{breaks}")
        httpx.post(f"{served.url}/v1/pi/stream", json=body, headers=HEADERS, timeout=10)
        # The realtime team name: base64 in the subprotocol, logged decoded when the session opens.
        team = base64.urlsafe_b64encode(f"acme\n{FORGED} team{breaks}".encode()).decode().rstrip("=")
        url = f"ws://127.0.0.1:{served.port}/realtime-model?ai-model-id=openai%2Fgpt-realtime"
        protocols = ["ai-gateway-realtime.v1", f"ai-gateway-team.{team}"]
        with connect(url, subprotocols=protocols, additional_headers=HEADERS, open_timeout=5) as ws:  # type: ignore[arg-type]
            assert json.loads(ws.recv(timeout=5))["type"] == "session-created"
        up.wait_closed()
    log = served.log()
    lines = log.splitlines()  # splits at every line break a log reader might honour (\r, \x85, \u2028 …)
    assert lines, "the sidecar logged nothing"
    for line in lines:
        assert RECORD_START.match(line), f"a line that is not a record of its own: {line!r}\n\n{log}"
        assert not line.startswith(FORGED[:23]), f"a forged record: {line!r}"
    assert not any(c in log for c in "\r\x00\x85\u2028"), "a raw control character reached the log"
    # The values were logged, escaped (so the test saw them go through the log).
    assert f'team="acme\\n{FORGED} team\\n\\r\\x00\\x85\\u2028"' in log  # escaped and quoted (shown())


def test_a_traceback_stays_readable_but_cannot_forge_a_record() -> None:
    """A real internal error keeps its multi-line traceback; every continuation line is marked, and the exception's
    message (which may quote input) is escaped line by line."""
    formatter = OneLineFormatter()
    try:
        raise ValueError(f"bad input\n{FORGED} in exception\x00")
    except ValueError:
        record = logging.LogRecord(
            "sidecar", logging.ERROR, __file__, 1, "internal error %s", ("x\ny",), sys.exc_info()
        )
    RedactingFilter([]).filter(record)
    lines = formatter.format(record).split("\n")
    assert RECORD_START.match(lines[0]) and lines[0].endswith("internal error x\\ny")
    assert lines[1] == "    | Traceback (most recent call last):"
    assert all(line.startswith("    | ") for line in lines[1:]), lines
    assert lines[-2:] == ["    | ValueError: bad input", f"    | {FORGED} in exception\\x00"]


def prompt_turns(served: Served) -> None:
    """An echo/echo generation streamed (SSE) and in JSON mode: the echo model answers with the prompt."""
    body = pi_body("echo/echo", f"please repeat {PROMPT_CANARY}")
    streamed = httpx.post(f"{served.url}/v1/pi/stream", json=body, headers=HEADERS, timeout=10)
    assert PROMPT_CANARY in read_events(streamed)[-1]["message"]["content"][0]["text"]  # type: ignore[index]
    whole = httpx.post(f"{served.url}/v1/pi/stream", json={**body, "stream": False}, headers=HEADERS, timeout=10)
    assert PROMPT_CANARY in whole.text


def test_debug_logs_no_prompt_or_completion_text(tmp_path: Path) -> None:
    with serve(tmp_path, log_content=False) as served:
        prompt_turns(served)
    log = served.log()
    assert " DEBUG " in log  # the level really was debug
    assert PROMPT_CANARY not in log


@pytest.mark.parametrize("log_content", [False, True])
def test_log_content_lets_library_debug_output_show_content(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], log_content: bool
) -> None:
    """The switch is real: a library's DEBUG record carrying content (websockets logs every realtime frame) reaches
    the log only with ``[server] log_content = true``. (No library on the HTTP path logs content any more: the SSE
    response is the sidecar's own.)"""
    settings = replace(load_settings(None, {"HOME": str(tmp_path)}), log_level="debug", log_content=log_content)
    root, websockets_logger = logging.getLogger(), logging.getLogger("websockets")
    saved = (root.handlers[:], root.level, websockets_logger.level)
    try:
        websockets_logger.setLevel(logging.NOTSET)  # as in a fresh process (other tests in this one may have set it)
        configure_logging(settings, [])
        websockets_logger.debug("< TEXT '%s' [42 bytes]", PROMPT_CANARY)
        logging.getLogger("sidecar").debug("a DEBUG record of the sidecar's own")
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        websockets_logger.setLevel(saved[2])
    err = capsys.readouterr().err
    assert "a DEBUG record of the sidecar's own" in err  # the level really was debug
    assert (PROMPT_CANARY in err) is log_content
