"""The reference gateway for ``bench/run.py --targets omp``: install and start ``omp auth-gateway`` 18.2.3 under Bun.

Installs ``bench/omp/package.json`` + ``package-lock.json`` (``@oh-my-pi/pi-coding-agent@18.2.3`` and ``bun@1.4.5``,
exact pins) from the npm registry with ``npm install --no-save`` into a scratch directory (``bench/.omp``, or
``$BENCH_OMP_DIR``), once: a stamp holding the lock file's hash skips the install while the lock is unchanged.

The gateway holds no credentials itself (docs: pi-native-protocol.md §12, §16): it asks ``omp auth-broker`` for them.
So :func:`start_omp` starts a broker, stores the bench's Anthropic key in it, pre-writes the gateway's bearer token file
and starts ``omp auth-gateway serve`` with ``ANTHROPIC_BASE_URL`` pointing at the mock upstream. Both run with
``HOME`` in the bench's temporary directory, so nothing of the user's ``~/.omp`` is read or written.

Any failure (no npm, offline registry, a process that does not come up) raises ``RuntimeError`` with what to fix:
``--targets omp`` never silently measures nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol

BENCH = Path(__file__).resolve().parent
PACKAGE_DIR = BENCH / "omp"
"""The committed, exact-pinned package.json + package-lock.json."""
INSTALL_DIR = Path(os.environ.get("BENCH_OMP_DIR") or BENCH / ".omp")
"""The scratch install (~750 MB, gitignored)."""
OMP_VERSION = "18.2.3"
CLI = Path("node_modules/@oh-my-pi/pi-coding-agent/dist/cli.js")
BUN = Path("node_modules/.bin/bun")
INSTALL_TIMEOUT_S = 900
START_TIMEOUT_S = 60


class ProcessStarter(Protocol):
    """``run.Processes``: starts a child that dies with the bench and is stopped on exit."""

    def start(self, name: str, cmd: list[str], **kw: Any) -> subprocess.Popen[bytes]: ...

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None: ...


def _lock_hash() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((PACKAGE_DIR / name).read_bytes())
    return digest.hexdigest()


def ensure_installed(log: Any = print) -> tuple[Path, Path]:
    """(bun binary, omp cli.js), installing them first if the scratch install is missing or stale."""
    stamp = INSTALL_DIR / ".installed"
    wanted = _lock_hash()
    bun, cli = INSTALL_DIR / BUN, INSTALL_DIR / CLI
    if not (stamp.exists() and stamp.read_text().strip() == wanted and bun.exists() and cli.exists()):
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError(
                "--targets omp needs npm (Node.js) to install @oh-my-pi/pi-coding-agent@18.2.3 and bun from the npm "
                "registry into bench/.omp; install Node.js, or drop omp from --targets"
            )
        INSTALL_DIR.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(PACKAGE_DIR / name, INSTALL_DIR / name)
        stamp.unlink(missing_ok=True)
        log(
            f"installing omp auth-gateway {OMP_VERSION} + bun into {INSTALL_DIR} (npm install, ~750 MB, ~30 s, once)..."
        )
        try:
            done = subprocess.run(
                # Not `npm ci`: npm 11 rejects this lock as "out of sync" because pi-natives' optional platform
                # packages for other OSes are absent from it; `install --no-save` installs the locked tree anyway
                # and never rewrites the lock.
                [npm, "install", "--no-save", "--no-audit", "--no-fund"],
                cwd=INSTALL_DIR,
                capture_output=True,
                timeout=INSTALL_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"npm install in {INSTALL_DIR} took more than {INSTALL_TIMEOUT_S} s; offline?") from None
        if done.returncode != 0 or not bun.exists() or not cli.exists():
            tail = (done.stderr or done.stdout).decode(errors="replace")[-1500:]
            raise RuntimeError(
                f"could not install omp auth-gateway {OMP_VERSION} from the npm registry (npm install exited "
                f"{done.returncode} in {INSTALL_DIR}; offline, or a proxy/registry problem?). npm said:\n{tail}"
            )
        installed = json.loads((cli.parent.parent / "package.json").read_text())["version"]
        if installed != OMP_VERSION:
            raise RuntimeError(
                f"npm installed @oh-my-pi/pi-coding-agent {installed}, not {OMP_VERSION}, in {INSTALL_DIR}"
            )
        stamp.write_text(wanted + "\n")
    try:
        version = subprocess.run([str(bun), "--version"], capture_output=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"the installed bun ({bun}) does not run: {exc}; delete {INSTALL_DIR} and retry") from None
    log(f"omp auth-gateway {OMP_VERSION} under bun {version.decode().strip()} ({INSTALL_DIR})")
    return bun, cli


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as s:
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        data = b""
        while part := s.recv(65536):
            data += part
    if not data.startswith(b"HTTP/1."):
        raise OSError("not an HTTP response")
    return int(data[9:12]), data.split(b"\r\n\r\n", 1)[-1]


def _wait(proc: subprocess.Popen[bytes], ready: Any, what: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.1)
    tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    raise RuntimeError(f"{what} did not become ready within {START_TIMEOUT_S} s; its log ends with:\n{tail}")


def start_omp(
    procs: ProcessStarter,
    cpu: int | None,
    workdir: Path,
    mock_port: int,
    api_key: str,
    token: str,
) -> tuple[subprocess.Popen[bytes], int, subprocess.Popen[bytes], str]:
    """Start broker + gateway (both pinned to ``cpu``, the sidecar's core). Returns the gateway, its port, the broker
    and the bearer the gateway accepts."""
    bun, cli = ensure_installed()
    home = workdir / "omp-home"
    omp_dir = home / ".omp"
    omp_dir.mkdir(parents=True, exist_ok=True)
    omp_dir.chmod(0o700)
    env = {
        "PATH": f"{bun.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "LANG": "C.UTF-8",
    }
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []

    broker_port = _free_port()
    broker_log = workdir / "omp-broker.log"
    with broker_log.open("ab") as out:
        broker = procs.start(
            "omp-broker",
            [*pin, str(bun), str(cli), "auth-broker", "serve", f"--bind=127.0.0.1:{broker_port}"],
            stdout=out,
            stderr=out,
            env=env,
            cwd=home,
        )
    broker_token_file = omp_dir / "auth-broker.token"
    _wait(
        broker,
        lambda: broker_token_file.exists() and _request(broker_port, "GET", "/healthz", {})[0] < 500,
        "omp auth-broker",
        broker_log,
    )
    broker_token = broker_token_file.read_text().strip()
    credential = {"provider": "anthropic", "credential": {"type": "api_key", "key": api_key}}
    status, reply = _request(
        broker_port,
        "POST",
        "/v1/credential",
        {"Authorization": f"Bearer {broker_token}", "content-type": "application/json"},
        json.dumps(credential).encode(),
    )
    if status != 200:
        raise RuntimeError(f"omp auth-broker refused the bench credential: HTTP {status} {reply[:300]!r}")

    # The gateway keeps an existing token file (mode 0600) and accepts exactly that bearer.
    token_file = omp_dir / "auth-gateway.token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    gateway_env = {
        **env,
        "OMP_AUTH_BROKER_URL": f"http://127.0.0.1:{broker_port}",
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{mock_port}",
    }
    gateway_log = workdir / "omp-gateway.log"
    port = _free_port()
    with gateway_log.open("ab") as out:
        gateway = procs.start(
            "omp",
            [*pin, str(bun), str(cli), "auth-gateway", "serve", f"--bind=127.0.0.1:{port}"],
            stdout=out,
            stderr=out,
            env=gateway_env,
            cwd=home,
        )
    _wait(gateway, lambda: _request(port, "GET", "/healthz", {})[0] == 200, "omp auth-gateway", gateway_log)
    bearer = token_file.read_text().strip()
    return gateway, port, broker, bearer
