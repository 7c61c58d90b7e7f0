"""Plumbing shared by the interop modules: the npm install of the real clients, Node, the sidecar subprocess.

Plain functions, not fixtures: each module wraps them in its own fixtures. ``npm_install`` is idempotent (it only
looks at the disk once node_modules is complete), so both modules calling it costs one install per checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakeupstream import FakeUpstream

INTEROP_DIR = Path(__file__).resolve().parent
ROOT = INTEROP_DIR.parents[1]
NODE_MODULES = INTEROP_DIR / "node_modules"
BUN = NODE_MODULES / ".bin" / "bun"
# What the interop modules run. Any of these missing means node_modules is absent or predates package.json.
REQUIRED_INSTALL = (
    NODE_MODULES / "@oh-my-pi" / "pi-ai" / "package.json",
    NODE_MODULES / "@ai-sdk" / "gateway" / "package.json",
    NODE_MODULES / "ai" / "package.json",
    NODE_MODULES / "@ai-sdk" / "openai" / "package.json",
    NODE_MODULES / "@ai-sdk" / "anthropic" / "package.json",
    NODE_MODULES / "openai" / "package.json",
    NODE_MODULES / "@openai" / "agents-realtime" / "package.json",
    NODE_MODULES / "ws" / "package.json",
    BUN,
)
MIN_NODE_MAJOR = 20


def installed_version(package: str) -> str:
    """The version of ``package`` in tests/interop/node_modules."""
    version: str = json.loads((NODE_MODULES / package / "package.json").read_text())["version"]
    return version


def _npm(npm: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [npm, *args, "--no-audit", "--no-fund"]
    return subprocess.run(cmd, cwd=INTEROP_DIR, capture_output=True, text=True, timeout=600, check=False)


def npm_install() -> None:
    """Install tests/interop/node_modules with ``npm ci`` from the lock file, unless everything is already there."""
    if all(path.exists() for path in REQUIRED_INSTALL):
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(
            "npm is not on PATH: the interop suite needs Node.js/npm to install @oh-my-pi/pi-ai, Bun and "
            f"@ai-sdk/gateway (cd {INTEROP_DIR} && npm ci)",
            pytrace=False,
        )
    lock = (INTEROP_DIR / "package-lock.json").read_bytes()
    proc = _npm(npm, "ci")
    if proc.returncode != 0 and "Missing: @oh-my-pi/pi-natives-" in proc.stderr:
        # npm/cli#9846 (npm >= 11.16): pi-natives lists optional platform packages that were never published;
        # `npm install` skips them and omits them from the lock, then `npm ci` rejects that lock. Install from the
        # same lock without rewriting it instead.
        proc = _npm(npm, "install", "--no-save")
        if (INTEROP_DIR / "package-lock.json").read_bytes() != lock:
            pytest.fail("npm install rewrote tests/interop/package-lock.json; restore it from git")
    if proc.returncode != 0:
        pytest.fail(f"npm in {INTEROP_DIR} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    missing = [str(path) for path in REQUIRED_INSTALL if not path.exists()]
    if missing:
        pytest.fail(f"still missing after npm installed {INTEROP_DIR}/node_modules: {', '.join(missing)}")


def require_node() -> str:
    """The ``node`` binary on PATH; fails (never skips) when it is missing or older than Node 20."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            f"node is not on PATH: the @ai-sdk/gateway interop tests need Node.js >= {MIN_NODE_MAJOR}", pytrace=False
        )
    proc = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=60, check=False)
    match = re.fullmatch(r"v(\d+)\.\d+\.\d+.*", proc.stdout.strip())
    if proc.returncode != 0 or match is None:
        pytest.fail(f"`{node} --version` gave {proc.returncode} {proc.stdout!r} {proc.stderr!r}", pytrace=False)
    if int(match[1]) < MIN_NODE_MAJOR:
        pytest.fail(f"{node} is {proc.stdout.strip()}; the interop tests need Node.js >= {MIN_NODE_MAJOR}")
    return node


def reset_upstream(upstream: FakeUpstream) -> None:
    """No recorded requests and no leftover scripted replies: FakeUpstream's queue is shared by a module."""
    with upstream._lock:  # FakeUpstream has no public reset
        upstream._replies.clear()
        upstream.received.clear()


@dataclass
class Sidecar:
    url: str
    token: str
    proc: subprocess.Popen[bytes]
    stderr_path: Path
    stdout_path: Path
    _mark: int = 0

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace") + self.stdout_path.read_text(errors="replace")

    def mark(self) -> None:
        self._mark = self.stderr_path.stat().st_size

    def log_since_mark(self) -> str:
        with self.stderr_path.open("rb") as fh:
            fh.seek(self._mark)
            return fh.read().decode(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthz(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
            if resp.status == 200:
                body: dict[str, Any] = json.loads(resp.read())
                return body
    except OSError:
        pass
    return None


@contextmanager
def run_sidecar(work: Path, config: str, token: str, env: Mapping[str, str]) -> Iterator[Sidecar]:
    """``python -m sidecar serve`` on a free port with ``config`` and ``env`` (plus PATH, LANG and a HOME under
    ``work``), healthy on entry and stopped on exit. ``token`` is the main bearer (``SIDECAR_TOKEN``)."""
    home = work / "home"
    home.mkdir()
    config_path = work / "sidecar.toml"
    config_path.write_text(config)
    port = free_port()
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "HOME": str(home),
        "SIDECAR_TOKEN": token,
        **env,
    }
    stderr_path, stdout_path = work / "sidecar.stderr.log", work / "sidecar.stdout.log"
    cmd = [sys.executable, "-m", "sidecar", "serve", "--config", str(config_path), "--host", "127.0.0.1"]
    with stderr_path.open("wb") as err, stdout_path.open("wb") as out:
        proc = subprocess.Popen([*cmd, "--port", str(port)], cwd=ROOT, env=full_env, stdout=out, stderr=err)
    sc = Sidecar(f"http://127.0.0.1:{port}", token, proc, stderr_path, stdout_path)
    try:
        deadline = time.monotonic() + 30
        while (health := healthz(sc.url)) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"sidecar did not become healthy (exit code {proc.poll()}); command: {' '.join(cmd)}\n"
                    f"--- stderr ---\n{stderr_path.read_text(errors='replace')}\n"
                    f"--- stdout ---\n{stdout_path.read_text(errors='replace')}"
                )
            time.sleep(0.1)
        assert health.get("ok") is True, health
        yield sc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# ---------------------------------------------------------------------------------------------------------------------
# Client drivers: a real npm client in a Node/Bun process, a JSON scenario on stdin, one JSON line per result


NODE_ENV = {"LANG": "C.UTF-8", "NODE_NO_WARNINGS": "1"}
"""With PATH, the whole environment of a Node driver: no AI_GATEWAY_API_KEY / VERCEL_OIDC_TOKEN from outside, so the
client sees only the apiKey it is given."""


def node_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **NODE_ENV}


def run_driver(
    name: str, cmd: list[str], scenario: Mapping[str, Any], env: Mapping[str, str], timeout_s: float
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """Run the driver; fail the test if it times out or prints something that is not JSON lines."""
    try:
        proc = subprocess.run(
            cmd,
            input=json.dumps(scenario),
            capture_output=True,
            text=True,
            cwd=INTEROP_DIR,
            env=dict(env),
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{name} driver timed out after {timeout_s:g}s; stdout so far:\n{exc.stdout!r}")
    try:
        lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    except json.JSONDecodeError:
        pytest.fail(f"{name} driver printed non-JSON:\n{proc.stdout}\n{proc.stderr}")
    return proc, lines


def driver_broke(name: str, proc: subprocess.CompletedProcess[str]) -> str:
    """The failure message for a driver that exited badly or did not report every step."""
    return f"{name} driver broke (exit {proc.returncode}):\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


def ok(line: dict[str, Any]) -> Any:
    """The value of a driver line that must have succeeded."""
    assert line["ok"] is True, line
    return line["value"]
