"""``sidecar serve --workers N``: several processes behind one listening socket, for a shared gateway on several cores.

The supervisor binds the socket(s) once (so a port in use is one clear error, and no other process can join the
port as it could with ``SO_REUSEPORT``), then starts N workers: the same ``sidecar serve`` command line plus the
inherited socket's descriptor (``--listen-fd``). Each worker is a whole sidecar; the kernel hands each new connection
to one of them. What they share goes through files or services, never through this process:

- the ledger: one SQLite file in WAL mode (every worker writes its own batches) or PostgreSQL;
- budgets: read from that ledger (each worker caches the total for 1 s and adds its own unwritten spend, so the
  workers together may overshoot by about a second of spend);
- realtime client secrets: Redis when configured, else one SQLite file in the sidecar's home
  (``Settings.token_store_file``), so a secret minted by one worker is redeemed by any, once;
- metrics: each worker counts into its own files in a directory made for this run (``PROMETHEUS_MULTIPROC_DIR``),
  and a scrape, whichever worker answers it, sums them (``sidecar.metrics``).

Per worker: admission (``max_streams`` …) and the in-process Responses item store (``previous_response_id`` of a
translated response resolves on the worker that produced it; OpenAI models relay it to OpenAI itself).

The supervisor forwards SIGTERM/SIGINT to the workers, which finish their streams (``GRACEFUL_SHUTDOWN_SECONDS``);
a worker that exits on its own stops the others and the supervisor (exit status 1), for the orchestrator to restart.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import FrameType

from .config import Settings
from .errors import ConfigError
from .http_server import GRACEFUL_SHUTDOWN_SECONDS

log = logging.getLogger("sidecar")

_BACKLOG = 2048
_POLL_SECONDS = 0.2
_STOP_SECONDS = GRACEFUL_SHUTDOWN_SECONDS + 5


def listen(host: str, port: int, setting: str = "--port or [server] port") -> socket.socket:
    """A listening TCP socket (which workers inherit); ``setting``: what chooses its port, named when it is in use."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"{host}:{port} is already in use: stop what listens there, or pick another port with {setting}"
            ) from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


@dataclass(frozen=True, slots=True)
class Listener:
    """One listening socket of ``sidecar serve``: the main one, the public realtime one, the metrics one."""

    name: str
    host: str
    port: int
    setting: str
    """What chooses its port (named when the port is in use)."""
    flag: str
    """The option a worker inherits it by (``--listen-fd``)."""


def listeners(settings: Settings) -> list[Listener]:
    """The sockets ``settings`` asks for, the main one first."""
    found = [Listener("private", settings.host, settings.port, "--port or [server] port", "--listen-fd")]
    rt = settings.realtime
    if rt.public_host is not None and rt.public_port is not None:
        found.append(Listener("public", rt.public_host, rt.public_port, "[realtime] public_port", "--public-fd"))
    metrics = settings.metrics
    if metrics.enabled and metrics.host is not None and metrics.port is not None:
        found.append(Listener("metrics", metrics.host, metrics.port, "[metrics] port", "--metrics-fd"))
    return found


def bind(wanted: Sequence[Listener]) -> dict[Listener, socket.socket]:
    """Every socket of ``wanted``, or none (a port in use closes those already bound)."""
    bound: dict[Listener, socket.socket] = {}
    try:
        for listener in wanted:
            bound[listener] = listen(listener.host, listener.port, listener.setting)
    except ConfigError:
        for sock in bound.values():
            sock.close()
        raise
    return bound


def supervise(settings: Settings, argv: Sequence[str]) -> int:
    """Bind, start ``settings.workers`` workers running ``sidecar <argv> --listen-fd …``, and wait for them."""
    bound = bind(listeners(settings))
    command = [sys.executable, "-m", "sidecar", *argv]
    for listener, sock in bound.items():
        command += [listener.flag, str(sock.fileno())]
    inherited = [s.fileno() for s in bound.values()]
    with _metrics_directory(settings) as environ:
        workers = [
            subprocess.Popen(command, pass_fds=inherited, preexec_fn=_in_worker, env=environ)
            for _ in range(settings.workers)
        ]
        for sock in bound.values():
            sock.close()  # the workers hold them now
        return _run(settings, workers)


@contextlib.contextmanager
def _metrics_directory(settings: Settings) -> Iterator[dict[str, str] | None]:
    """The workers' environment: this one plus, with metrics on, ``PROMETHEUS_MULTIPROC_DIR`` naming a fresh
    directory where each worker keeps its counts (prometheus-client's multiprocess mode), removed when all stop.
    A directory of a previous run is never reused: its counts would be added to this run's."""
    if not settings.metrics.enabled:
        yield None
        return
    directory = tempfile.mkdtemp(prefix="pi-sidecar-metrics-")
    try:
        yield {**settings.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _run(settings: Settings, workers: list[subprocess.Popen[bytes]]) -> int:
    log.info(
        "pi-sidecar supervisor: %d workers on http://%s:%d (pids %s)",
        len(workers),
        settings.host,
        settings.port,
        ", ".join(str(w.pid) for w in workers),
    )
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    while not stopping and all(w.poll() is None for w in workers):
        time.sleep(_POLL_SECONDS)
    failed = [w for w in workers if w.returncode is not None]
    if failed and not stopping:
        log.error("a worker (pid %d) exited with status %d; stopping the others", failed[0].pid, failed[0].returncode)
    return _stop(workers, failed=bool(failed) and not stopping)


def _in_worker() -> None:
    """In the new worker, before it runs: its own process group, so a terminal's Ctrl-C reaches the supervisor only,
    which stops each worker once (a second signal makes uvicorn cut the streams in flight); and, on Linux, SIGTERM
    when the supervisor dies, so no worker outlives it."""
    os.setpgid(0, 0)
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def _stop(workers: list[subprocess.Popen[bytes]], *, failed: bool) -> int:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _STOP_SECONDS
    for worker in workers:
        try:
            worker.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("worker %d did not stop within %d s; killing it", worker.pid, _STOP_SECONDS)
            worker.kill()
            worker.wait()
    if failed:
        return 1
    # uvicorn re-raises the signal it stopped on once it has shut down, so a worker that stopped cleanly ends by it.
    return 0 if all(w.returncode in (0, -signal.SIGTERM) for w in workers) else 1
