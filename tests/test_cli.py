"""The ``sidecar`` command: token file, models listing, and ``serve`` as a real subprocess."""

from __future__ import annotations

import logging
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sidecar import cli
from tests.conftest import pi_body, read_events
from tests.sidecar_server import free_port, wait_until_healthy


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.endswith("_API_KEY") or name.startswith(("SIDECAR_", "OPENAI_", "ANTHROPIC_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return tmp_path


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``serve`` installs its redacting handler on the root logger, bound to this test's (captured) stderr."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_token_is_created_once_with_private_permissions(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["token"]) == 0
    token = capsys.readouterr().out.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)  # 32 random bytes, base64url without padding
    path = clean_env / ".config" / "pi-sidecar" / "token"
    assert path.read_text().strip() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert cli.main(["token"]) == 0
    assert capsys.readouterr().out.strip() == token
    assert cli.main(["token", "--regenerate"]) == 0
    regenerated = capsys.readouterr().out.strip()
    assert regenerated != token and path.read_text().strip() == regenerated


def test_models_lists_what_is_servable(
    clean_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli.main(["models"]) == 0
    assert capsys.readouterr().out.split()[0] == "echo/echo"
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-x")
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "anthropic/claude-sonnet-4-5" in out and "$3/$15 per 1M in/out" in out and "openai/" not in out


def test_bad_config_is_a_clear_error_not_a_traceback(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = clean_env / "bad.toml"
    config.write_text("[server]\nport = 'x'\n")
    assert cli.main(["models", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sidecar: [server] port must be a int") and "Traceback" not in err


def test_serve_subprocess_streams_echo(clean_env: Path) -> None:
    """What the README's first command does: start the sidecar with no provider key and stream echo/echo."""
    port = free_port()
    env = {**os.environ, "SIDECAR_TOKEN": "smoke-token-123"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", proc)
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/pi/stream",
            json=pi_body("echo/echo", "ping pong"),
            headers={"authorization": "Bearer smoke-token-123"},
            timeout=10,
        )
        events = read_events(response)
        assert events[-1]["type"] == "done" and events[-1]["message"]["content"][0]["text"] == "ping pong"
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=10)
    assert proc.returncode in (0, -15), output  # uvicorn re-raises SIGTERM after a graceful shutdown
    assert "Application shutdown complete" in output
    assert f"on http://127.0.0.1:{port}" in output and "bearer from SIDECAR_TOKEN" in output
    assert "smoke-token-123" not in output


def test_serve_with_an_unreachable_ledger_is_one_clear_line(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SIDECAR_TOKEN", "a-workload-token-0123456789")
    monkeypatch.setenv("SIDECAR_LEDGER_URL", "postgresql://ledger:hunter2-secret@127.0.0.1:1/ledger")
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sidecar: cannot connect to the ledger (postgresql 127.0.0.1:1/ledger)")
    assert "Traceback" not in err and "hunter2" not in err


def test_serve_with_an_unreachable_redis_is_one_clear_line(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SIDECAR_TOKEN", "a-workload-token-0123456789")
    monkeypatch.setenv("SIDECAR_REALTIME_REDIS_URL", "redis://:hunter2-secret@127.0.0.1:1/0")
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sidecar: cannot reach the realtime token store (redis 127.0.0.1:1/0)")
    assert "Traceback" not in err and "hunter2" not in err


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ('[ledger]\nurl = "mysql://x"\n', "[ledger] url must be a postgresql:// URL"),
        ('[ledger]\nurl = "env:NOPE_NOT_SET"\n', "names the environment variable NOPE_NOT_SET, which is not set"),
        ('[budget]\nperiod = "week"\n', "[budget] period must be one of day, month, total"),
        ("[budget]\nusd = -1\n", "[budget] usd must not be negative"),
        ('[[workloads]]\nname = "a b"\ntoken = "env:X"\n', "name must be 1-64 letters"),
        ('[[workloads]]\nname = "ci"\ntoken = "literal-token-value"\n', "token must be env:NAME or file:PATH"),
        ('[[workloads]]\nname = "ci"\ntoken = "env:CI_TOKEN_UNSET"\n', "CI_TOKEN_UNSET is not set"),
        ('[server]\npath_prefix = "sidecar"\n', "path_prefix must be a path like /sidecar"),
        ('[realtime]\ntoken_store = "memcached://x"\n', "[realtime] token_store must be a redis:// URL"),
        ("[realtime]\nmax_ttl_seconds = 0\n", "[realtime] max_ttl_seconds must be between 1 and 3600"),
        ("[realtime]\ndefault_ttl_seconds = 900\n", "default_ttl_seconds must not exceed max_ttl_seconds"),
        ("[realtime]\npublic_port = 4443\n", "public_host and public_port go together"),
    ],
)
def test_ledger_and_workload_config_errors_name_the_setting(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], config: str, fragment: str
) -> None:
    monkeypatch.setenv("SIDECAR_TOKEN", "a-workload-token-0123456789")
    path = clean_env / "sidecar.toml"
    path.write_text(config)
    assert cli.main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_a_malformed_redis_url_is_a_clear_error(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SIDECAR_TOKEN", "a-workload-token-0123456789")
    monkeypatch.setenv("SIDECAR_REALTIME_REDIS_URL", "redis://:hunter2-secret@127.0.0.1:abc/0")
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "realtime token store" in err and "Traceback" not in err and "hunter2" not in err
