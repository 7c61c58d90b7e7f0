"""Benchmark: what does the sidecar add over calling the upstream directly?

Starts ``bench/mock_upstream.py`` (a fast mock Anthropic Messages API) and the real sidecar
(``python -m sidecar serve``) as subprocesses, then drives both with the same lightweight load generator:

* ``direct``:  ``POST /v1/messages`` straight to the mock (what an agent holding the key would do);
* ``sidecar``: ``POST /v1/pi/stream`` through the sidecar, which calls the same mock (the pi route);
* ``relay``:   ``POST /v1/messages`` to the sidecar, direct's body with the pi route's model id: relayed untranslated
  (``sidecar/relay.py``), the mock's bytes come back unchanged;
* ``chat``:    ``POST /v1/chat/completions`` to the sidecar, same model: translated to ``chat.completion.chunk``;
* ``omp``:     the sidecar's exact pi request, sent to the reference gateway ``omp auth-gateway`` 18.2.3 under Bun
  (``bench/omp_gateway.py`` installs it from the npm registry into ``bench/.omp`` once), which calls the same mock.

``--targets`` picks them (default ``direct,sidecar,omp``). For each target it runs concurrency 1 (sequential), 4 and
50 (closed loop), every run bounded in both request count and time, and measures per request TTFB (first body byte),
TTFT (first token-bearing event) and total time. See bench/README.md for how to read the numbers.

    .venv/bin/python bench/run.py            # full run: 3 interleaved repeats, median reported (~3 min)
    .venv/bin/python bench/run.py --quick    # short run (~15 s)
    .venv/bin/python bench/run.py --targets direct,sidecar,relay,chat   # the ingress routes too (~2 min)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime as dt
import gc
import json
import os
import platform
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omp_gateway import start_omp
from profile_sidecar import WHAT_IFS  # the one list of what-ifs (bench/ is on sys.path when run as a script)

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
API_KEY = "sk-ant-bench"
TOKEN = "bench-workload-bearer-0123456789abcdef"
MODEL_ID = "anthropic/claude-sonnet-4-5"
"""The model id the sidecar targets send: the provider-qualified id, so it resolves to the mock on every route."""
UPSTREAM_MODEL = "claude-sonnet-4-5"
"""What the sidecar sends upstream for it (and what ``direct`` sends)."""
CONFIG_TOML = "[upstream]\nmax_retries = 0\n"
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
READ_SIZE = 256 * 1024

# Issue #12's goals: added TTFT p50 at c=1, the sidecar's CPU per stream at c=50, and streams/s against omp.
GOAL_ADDED_TTFT_MS = 0.5
GOAL_CPU_US_PER_STREAM = 800.0
GOAL_VS_OMP = 1.5
"""Issue #12: the sidecar's streams/s at c=4 and c=50 at least 1.5x the omp auth-gateway's, same machine, same run."""

# ----- targets --------------------------------------------------------------------------------------------------

TARGET_NAMES = ("direct", "sidecar", "relay", "chat", "omp")
SIDECAR_TARGETS = frozenset({"sidecar", "relay", "chat"})
"""The targets served by the sidecar (``omp`` by the reference gateway, ``direct`` by the mock)."""
GATEWAY_TARGETS = SIDECAR_TARGETS | {"omp"}
"""The targets with a gateway process between the load generator and the mock (pinned to the gateway core)."""
MARKER_OVERLAP = 64
"""Bytes of the body searched again for the TTFT marker after a read: longer than any marker's match."""


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    request: bytes
    marker: re.Pattern[bytes]
    """Matches the first token-bearing event (TTFT)."""
    kind: str
    """The response's wire format: ``anthropic`` (direct, relay), ``pi`` (sidecar) or ``chat``."""

    @property
    def via_sidecar(self) -> bool:
        return self.name in SIDECAR_TARGETS

    @property
    def gateway(self) -> str | None:
        """The ``pids`` key of the gateway process serving this target (``None``: the mock itself)."""
        return "sidecar" if self.via_sidecar else "omp" if self.name == "omp" else None

    def complete(self, body: bytes | bytearray) -> bool:
        """Did the stream end with its terminal event?"""
        if self.kind == "pi":
            return body.endswith(b"data: [DONE]\n\n") and body.rfind(b'data: {"type":"done"') >= 0
        if self.kind == "chat":
            return body.endswith(b"data: [DONE]\n\n") and body.rfind(b'"finish_reason":"') >= 0
        return body.rfind(b"event: message_stop") >= 0


def http_post(port: int, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def messages_body(model: str) -> bytes:
    # Roughly the Messages body the sidecar itself sends upstream for the pi request below.
    return compact(
        {
            "model": model,
            "stream": True,
            "max_tokens": 64000,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        }
    )


ANTHROPIC_TTFT = re.compile(rb"content_block_delta")


def direct_target(port: int) -> Target:
    headers = {
        "x-api-key": API_KEY,
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
        "accept": "text/event-stream",
    }
    request = http_post(port, "/v1/messages", headers, messages_body(UPSTREAM_MODEL))
    return Target("direct", port, request, ANTHROPIC_TTFT, "anthropic")


def pi_request(port: int, token: str) -> bytes:
    """The pi-native request (``POST /v1/pi/stream``) of the ``sidecar`` target, byte for byte; ``omp`` sends it too."""
    body = compact(
        {
            "modelId": MODEL_ID,
            "context": {"messages": [{"role": "user", "content": "hi", "timestamp": 1}]},
            "options": {},
        }
    )
    headers = {"Authorization": f"Bearer {token}", "content-type": "application/json", "accept": "text/event-stream"}
    return http_post(port, "/v1/pi/stream", headers, body)


PI_TTFT = re.compile(rb'"type":"text_delta"')


def sidecar_target(port: int) -> Target:
    return Target("sidecar", port, pi_request(port, TOKEN), PI_TTFT, "pi")


def omp_target(port: int, token: str = TOKEN) -> Target:
    """The reference gateway: the same request (but for its bearer) and the same TTFT and terminal detection."""
    return Target("omp", port, pi_request(port, token), PI_TTFT, "pi")


def relay_target(port: int) -> Target:
    """Anthropic Messages in, Anthropic model: relayed (``sidecar/relay.py``), only ``model`` rewritten upstream.

    The body is direct's with the sidecar's model id, so what reaches the mock is direct's request body again."""
    headers = {
        "x-api-key": TOKEN,  # the Anthropic SDK's header carries the sidecar's bearer
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
        "accept": "text/event-stream",
    }
    request = http_post(port, "/v1/messages", headers, messages_body(MODEL_ID))
    return Target("relay", port, request, ANTHROPIC_TTFT, "anthropic")


def chat_target(port: int) -> Target:
    """OpenAI Chat in, Anthropic model: translated (the Anthropic adapter, then ``chat.completion.chunk`` frames)."""
    body = compact(
        {"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 64000}
    )
    headers = {"Authorization": f"Bearer {TOKEN}", "content-type": "application/json", "accept": "text/event-stream"}
    request = http_post(port, "/v1/chat/completions", headers, body)
    # The first chunk is the role chunk with "content":"" — TTFT is the first non-empty text delta.
    return Target("chat", port, request, re.compile(rb'"content":"[^"]'), "chat")


TARGETS = {
    "direct": direct_target,
    "sidecar": sidecar_target,
    "relay": relay_target,
    "chat": chat_target,
    "omp": omp_target,
}


# ----- the load generator: raw asyncio streams, one keep-alive connection per worker -----------------------------


class ProtocolError(Exception):
    pass


@dataclass(slots=True)
class Reply:
    status: int
    ttfb: float | None
    ttft: float | None
    total: float
    body: bytearray
    keep_alive: bool


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, marker: re.Pattern[bytes]
) -> Reply:
    """Send one request and read its response to the end of the body (HTTP/1.1, chunked or content-length).

    Times are seconds since the request was written, taken right after the read that delivered the bytes.
    """
    perf = time.perf_counter
    read = reader.read
    t0 = perf()
    writer.write(request)
    buf = b""
    while True:
        data = await read(READ_SIZE)
        now = perf()
        if not data:
            raise ProtocolError("connection closed before the response headers")
        buf += data
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            break
        if len(buf) > MAX_HEADER_BYTES:
            raise ProtocolError("response headers too large")
    if not buf.startswith(b"HTTP/1."):
        raise ProtocolError("not an HTTP/1.x response")
    status = int(buf[9:12])
    head = buf[:end].lower()
    keep_alive = b"\r\nconnection: close" not in head and not buf.startswith(b"HTTP/1.0")
    chunked = b"\r\ntransfer-encoding: chunked" in head
    length = -1
    if not chunked:
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at + 17)
            length = int(head[at + 17 : stop if stop >= 0 else len(head)])
    pos = end + 4
    body = bytearray()
    ttfb: float | None = None
    ttft: float | None = None
    scanned = 0  # body offset up to which the marker has been searched
    search = marker.search
    remaining = -1  # bytes left in the current chunk; -1: expecting a chunk-size line
    finished = False
    while True:
        grew = False
        if chunked:
            size_of = len(buf)
            while True:
                if remaining < 0:
                    nl = buf.find(b"\r\n", pos)
                    if nl < 0:
                        break
                    try:
                        size = int(buf[pos:nl].split(b";", 1)[0], 16)
                    except ValueError:
                        raise ProtocolError("bad chunk size") from None
                    if size == 0:
                        if buf.startswith(b"\r\n", nl + 2):
                            pos, finished = nl + 4, True
                        elif (tend := buf.find(b"\r\n\r\n", nl)) >= 0:  # trailers
                            pos, finished = tend + 4, True
                        break
                    pos, remaining = nl + 2, size
                else:
                    take = min(remaining, size_of - pos)
                    if take > 0:
                        body += buf[pos : pos + take]
                        pos += take
                        remaining -= take
                        grew = True
                    if remaining > 0 or size_of - pos < 2:
                        break
                    pos += 2  # the CRLF after the chunk data
                    remaining = -1
        else:
            if pos < len(buf):
                body += buf[pos:]
                pos = len(buf)
                grew = True
            finished = 0 <= length <= len(body)
        if grew:
            if ttfb is None:
                ttfb = now
            if ttft is None:
                if search(body, max(0, scanned - MARKER_OVERLAP)) is not None:
                    ttft = now
                scanned = len(body)
            if len(body) > MAX_BODY_BYTES:
                raise ProtocolError("response body too large")
        if finished:
            break
        data = await read(READ_SIZE)
        now = perf()
        if not data:
            if not chunked and length < 0:  # close-delimited body
                keep_alive = False
                break
            raise ProtocolError("connection closed mid-body")
        buf = buf[pos:] + data
        pos = 0
    return Reply(
        status,
        None if ttfb is None else ttfb - t0,
        None if ttft is None else ttft - t0,
        now - t0,
        body,
        keep_alive,
    )


class Connection:
    __slots__ = ("port", "reader", "writer")

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def ensure(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None:
            async with asyncio.timeout(10):
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=READ_SIZE)
            sock = self.writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.reader, self.writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Samples:
    ttfb: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    ok: int = 0
    started: float = 0.0
    per_second: Counter[int] = field(default_factory=Counter)
    """Successful completions per whole second since the start of the run."""


async def one_request(conn: Connection, target: Target, request_timeout: float, samples: Samples | None) -> None:
    try:
        async with asyncio.timeout(request_timeout):
            reader, writer = await conn.ensure()
            reply = await exchange(reader, writer, target.request, target.marker)
    except TimeoutError:
        conn.close()
        if samples is not None:
            samples.errors["timeout"] += 1
        return
    except (OSError, ProtocolError, ValueError, asyncio.IncompleteReadError) as exc:
        conn.close()
        if samples is not None:
            samples.errors[type(exc).__name__] += 1
        return
    if not reply.keep_alive:
        conn.close()
    if samples is None:
        return
    if reply.status != 200:
        samples.errors[f"HTTP {reply.status}"] += 1
    elif not target.complete(reply.body):
        samples.errors["no terminal event"] += 1
    elif reply.ttft is None or reply.ttfb is None:
        samples.errors["no token event"] += 1
    else:
        samples.ok += 1
        samples.per_second[int(time.perf_counter() - samples.started)] += 1
        samples.ttfb.append(reply.ttfb)
        samples.ttft.append(reply.ttft)
        samples.total.append(reply.total)


# ----- CPU accounting (Linux /proc) ------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int | None) -> float | None:
    """User+system CPU seconds of a process (``None``: this process)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores have spent busy since boot (``/proc/stat``), to spot other load on the machine."""
    try:
        with open("/proc/stat", "rb") as fh:
            fields = fh.readline().split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    except (OSError, ValueError):
        return None
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def cpu_probe(cpu: int | None) -> float | None:
    """Milliseconds a fixed pure-Python loop takes on ``cpu`` (best of 3): a canary for a slow or shared host.

    In a VM, other guests on the same host can slow a core down without any trace in this guest's ``/proc``; a probe
    that gets slower between runs explains a slower run.
    """
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    previous = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {cpu})
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            x = 0
            for i in range(300_000):
                x += i * i
            best = min(best, time.perf_counter() - started)
        return best * 1000.0
    finally:
        os.sched_setaffinity(0, previous)


# ----- one measured run ------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    target: str
    concurrency: int
    requests: int
    errors: int
    error_kinds: dict[str, int]
    elapsed_s: float
    rps: float
    ttfb_ms: dict[str, float | None]
    ttft_ms: dict[str, float | None]
    total_ms: dict[str, float | None]
    cpu_percent: dict[str, float | None]
    per_second: list[int] = field(default_factory=list)
    """Successful completions in each whole second of the run (the last one is usually partial)."""
    repeat: int = 1
    probe_ms: float | None = None
    """The CPU speed probe on the sidecar's core right before the run (see ``cpu_probe``)."""
    sidecar_cpu_us_per_stream: float | None = None
    """The gateway's CPU time per successful stream during the run (the sidecar, or omp auth-gateway for ``omp``)."""
    broker_cpu_us_per_stream: float | None = None
    """``omp`` only: the omp auth-broker's CPU time per stream (it serves the key and records usage)."""
    sent: int = 0
    """Requests sent in this run, warm-up included."""
    upstream_calls: int = 0
    """Streams the mock upstream served during this run, warm-up included."""
    upstream_connections: int = 0
    """TCP connections the mock upstream accepted during this run (direct: one per worker)."""


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list, in milliseconds."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), int(-(-p * len(sorted_values) // 100))))
    return sorted_values[rank - 1] * 1000.0


def summarize(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    return {"p50": percentile(ordered, 50), "p90": percentile(ordered, 90), "p99": percentile(ordered, 99)}


async def run_load(
    target: Target,
    concurrency: int,
    max_requests: int,
    duration: float,
    warmup: int,
    request_timeout: float,
    pids: dict[str, int | None],
    profile_pid: int | None = None,
    probe_cpu: int | None = None,
) -> RunResult:
    conns = [Connection(target.port) for _ in range(concurrency)]
    try:
        await asyncio.gather(*(c.ensure() for c in conns))
        # Warm-up on the same connections (not measured): fills the sidecar's upstream pool, JITs nothing, but
        # gets every lazy import and cache out of the way.
        per_worker = -(-warmup // concurrency)

        async def warm(conn: Connection) -> None:
            for _ in range(per_worker):
                await one_request(conn, target, request_timeout, None)

        await asyncio.gather(*(warm(c) for c in conns))

        samples = Samples()
        issued = 0
        probe_ms = cpu_probe(probe_cpu)  # the sidecar's core is idle now (warm-up done)
        gc.collect()
        gc.disable()
        if profile_pid is not None:
            os.kill(profile_pid, signal.SIGUSR1)  # the profiler wrapper starts (or resumes) profiling
            await asyncio.sleep(0.05)
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        busy_before = machine_busy_seconds()
        started = samples.started = time.perf_counter()
        deadline = started + duration

        async def worker(conn: Connection) -> None:
            nonlocal issued
            # Closed loop, bounded in count (max_requests) and time (deadline; each request also has a timeout).
            while issued < max_requests and time.perf_counter() < deadline:
                issued += 1
                await one_request(conn, target, request_timeout, samples)

        await asyncio.gather(*(worker(c) for c in conns))
        elapsed = time.perf_counter() - started
        cpu_after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        busy_after = machine_busy_seconds()
        if profile_pid is not None:
            os.kill(profile_pid, signal.SIGUSR2)
        gc.enable()
    finally:
        gc.enable()
        for c in conns:
            c.close()
    cpu: dict[str, float | None] = {}
    if elapsed >= 0.5:  # /proc counts in clock ticks (10 ms): shorter runs give noise
        for name in pids:
            before, after = cpu_before.get(name), cpu_after.get(name)
            cpu[name] = None if before is None or after is None else 100.0 * (after - before) / elapsed
        if busy_before is not None and busy_after is not None and all(v is not None for v in cpu.values()):
            ours = sum(v for v in cpu.values() if v is not None)
            cpu["other processes"] = max(0.0, 100.0 * (busy_after - busy_before) / elapsed - ours)
    errors = sum(samples.errors.values())
    return RunResult(
        target=target.name,
        concurrency=concurrency,
        requests=samples.ok + errors,
        errors=errors,
        error_kinds=dict(samples.errors),
        elapsed_s=elapsed,
        rps=samples.ok / elapsed if elapsed > 0 else 0.0,
        ttfb_ms=summarize(samples.ttfb),
        ttft_ms=summarize(samples.ttft),
        total_ms=summarize(samples.total),
        cpu_percent=cpu,
        per_second=[samples.per_second.get(i, 0) for i in range(int(elapsed) + 1)],
        sent=per_worker * concurrency + issued,
        probe_ms=probe_ms,
        sidecar_cpu_us_per_stream=per_stream(cpu.get(target.gateway) if target.gateway else None, elapsed, samples.ok),
        broker_cpu_us_per_stream=per_stream(cpu.get("omp-broker"), elapsed, samples.ok)
        if target.name == "omp"
        else None,
    )


def per_stream(cpu_percent: float | None, elapsed: float, ok: int) -> float | None:
    """Microseconds of CPU per successful stream, from a process's % of one core over the run."""
    return None if cpu_percent is None or not ok else cpu_percent * elapsed / 100.0 / ok * 1e6


async def sample_stream(target: Target) -> tuple[int, list[str], bytes]:
    """One request, decoded: the status, the event types and the body, for the sanity check printed before the runs."""
    conn = Connection(target.port)
    try:
        async with asyncio.timeout(10):
            reader, writer = await conn.ensure()
            reply = await exchange(reader, writer, target.request, target.marker)
    finally:
        conn.close()
    kinds: list[str] = []
    for event in bytes(reply.body).split(b"\n\n"):
        for line in event.split(b"\n"):
            if line.startswith(b"data: "):
                payload = line[6:]
                if payload == b"[DONE]":
                    kinds.append("[DONE]")
                else:
                    try:
                        kinds.append(event_kind(json.loads(payload)))
                    except ValueError:
                        kinds.append("?")
    return reply.status, kinds, bytes(reply.body)


def event_kind(event: Any) -> str:
    """``type`` (Anthropic, pi), or what a ``chat.completion.chunk`` carries: role, content, finish reason, usage."""
    if not isinstance(event, dict):
        return "?"
    if "type" in event or "choices" not in event:
        return str(event.get("type"))
    choices = event["choices"]
    if not choices:
        return "chunk(usage)" if "usage" in event else "chunk()"
    choice = choices[0]
    parts = [k for k, v in choice.get("delta", {}).items() if v not in ("", None)]
    if choice.get("finish_reason"):
        parts.append(f"finish={choice['finish_reason']}")
    return f"chunk({','.join(parts)})"


def first_difference(a: bytes, b: bytes) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def compress(kinds: list[str]) -> str:
    out: list[str] = []
    for kind in kinds:
        if out and out[-1].split(" x")[0] == kind:
            head, _, n = out[-1].partition(" x")
            out[-1] = f"{head} x{int(n or 1) + 1}"
        else:
            out.append(kind)
    return ", ".join(out)


# ----- subprocesses ---------------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Linux: SIGTERM the child if the benchmark dies without cleaning up (survives taskset's exec)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Processes:
    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, cmd: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=_die_with_parent, **kw)
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def stop_all(self) -> None:
        for _, proc in reversed(self.procs[:]):
            with contextlib.suppress(Exception):
                self.stop(proc)


def pinned(cmd: list[str], cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu), *cmd] if cpu is not None else cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get_status(port: int, path: str, timeout: float = 1.0) -> int | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            data = s.recv(4096)
        return int(data[9:12]) if data.startswith(b"HTTP/1.") else None
    except (OSError, ValueError):
        return None


def http_get_json(port: int, path: str) -> Any:
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        for _ in range(100):
            part = s.recv(65536)
            if not part:
                break
            data += part
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def start_mock(
    procs: Processes, python: str, cpu: int | None, delay_ms: float, *, deltas: int = 0, port: int = 0
) -> tuple[subprocess.Popen[bytes], int]:
    """The mock upstream; ``deltas`` text deltas per stream (0: the mock's default, 5), on ``port`` (0: a free one)."""
    cmd = [python, str(BENCH / "mock_upstream.py"), "--api-key", API_KEY, "--watch-parent", "--port", str(port)]
    if delay_ms:
        cmd += ["--delay-ms", str(delay_ms)]
    if deltas:
        cmd += ["--deltas", str(deltas)]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
    proc = procs.start("mock", pinned(cmd, cpu), stdout=subprocess.PIPE, env=env, cwd=ROOT)
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout=15):
            raise RuntimeError("the mock upstream did not report READY within 15 s")
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("READY "):
        raise RuntimeError(f"the mock upstream failed to start: {line!r}")
    return proc, int(line.split()[1])


def start_sidecar(
    procs: Processes,
    python: str,
    cpu: int | None,
    workdir: Path,
    mock_port: int,
    log_level: str | None,
    profile: str | None,
    profile_out: Path | None,
    what_if: list[str],
    config_extra: str = "",
    poll: float = 0.05,
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """The sidecar, once ``GET /healthz`` answers 200 (asked every ``poll`` seconds)."""
    config = workdir / "sidecar.toml"
    config.write_text(CONFIG_TOML + config_extra.replace("\\n", "\n"), encoding="utf-8")
    log_path = workdir / "sidecar.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "SIDECAR_TOKEN": TOKEN,
        "ANTHROPIC_API_KEY": API_KEY,
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{mock_port}",
    }
    if log_level:
        env["SIDECAR_LOG_LEVEL"] = log_level
    last_error = ""
    for _attempt in range(3):  # a free port can be taken between the probe and the bind: retry
        port = free_port()
        args = ["serve", "--config", str(config), "--port", str(port)]
        if profile or what_if:
            cmd = [python, str(BENCH / "profile_sidecar.py"), "--mode", profile or "none"]
            if profile:
                cmd += ["--out", str(profile_out)]
            for name in what_if:
                cmd += ["--what-if", name]
            cmd += ["--", *args]
        else:
            cmd = [python, "-m", "sidecar", *args]
        with log_path.open("ab") as log:
            proc = procs.start("sidecar", pinned(cmd, cpu), stdout=log, stderr=log, env=env, cwd=ROOT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if http_get_status(port, "/healthz") == 200:
                return proc, port, log_path
            time.sleep(poll)
        last_error = log_path.read_text(errors="replace")[-2000:]
        procs.stop(proc)
    raise RuntimeError(f"the sidecar did not become ready; its log ends with:\n{last_error}")


# ----- report ---------------------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def pair(stats: dict[str, float | None]) -> str:
    return f"{fmt(stats['p50'])} / {fmt(stats['p99'])}"


def table(results: list[RunResult]) -> str:
    header = [
        "target",
        "conc",
        "requests",
        "errors",
        "req/s",
        "TTFB p50/p99 ms",
        "TTFT p50/p99 ms",
        "total p50/p99 ms",
        "gateway CPU us/stream",
    ]
    rows = [
        [
            r.target,
            str(r.concurrency),
            str(r.requests),
            str(r.errors),
            f"{r.rps:.0f}",
            pair(r.ttfb_ms),
            pair(r.ttft_ms),
            pair(r.total_ms),
            fmt(r.sidecar_cpu_us_per_stream, 0),
        ]
        for r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    right = {1, 2, 3, 4, 8}

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    sep = "|" + "|".join(("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def paired_ratios(pairs: list[tuple[RunResult, RunResult]]) -> tuple[list[float], list[float], list[float]]:
    """Per pair (a, b) of runs from the same repeat: a/b req/s, a/b gateway CPU per stream, a-b TTFT p50 (ms),
    each sorted."""
    rps = sorted(a.rps / b.rps for a, b in pairs)
    cpu = sorted(
        a.sidecar_cpu_us_per_stream / b.sidecar_cpu_us_per_stream
        for a, b in pairs
        if a.sidecar_cpu_us_per_stream and b.sidecar_cpu_us_per_stream
    )
    ttft = sorted(d for a, b in pairs if (d := minus(a.ttft_ms["p50"], b.ttft_ms["p50"])) is not None)
    return rps, cpu, ttft


def signed(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:+.2f} ms"


def find(results: list[RunResult], target: str, concurrency: int) -> RunResult | None:
    return next((r for r in results if r.target == target and r.concurrency == concurrency), None)


def paired(all_runs: list[RunResult]) -> tuple[list[str], dict[str, Any]]:
    """Each ingress route against the pi route *in the same repeat*, the median over repeats: runs of one repeat are
    seconds apart, so a slow spell of a shared host moves both sides of a ratio, not one."""
    lines: list[str] = []
    out: dict[str, Any] = {}
    by_repeat: dict[tuple[int, int], dict[str, RunResult]] = {}
    for r in all_runs:
        by_repeat.setdefault((r.repeat, r.concurrency), {})[r.target] = r
    for c in sorted({r.concurrency for r in all_runs}):
        groups = [g for (_, conc), g in sorted(by_repeat.items()) if conc == c and "sidecar" in g]
        for name in ("relay", "chat"):
            pairs = [(g[name], g["sidecar"]) for g in groups if name in g and g["sidecar"].rps]
            if len(pairs) < 2:
                continue
            rps, cpu, ttft = paired_ratios(pairs)
            entry = out[f"{name}_c{c}"] = {
                "repeats": len(pairs),
                "rps_vs_pi": {"median": middle(rps), "min": rps[0], "max": rps[-1]},
                "cpu_per_stream_vs_pi": middle(cpu) if cpu else None,
                "ttft_p50_minus_pi_ms": middle(ttft) if ttft else None,
            }
            lines.append(
                f"c={c}: {name}/pi route, paired by repeat ({len(pairs)}): req/s {fmt(entry['rps_vs_pi']['median'])}x "
                f"({fmt(rps[0])}-{fmt(rps[-1])}), sidecar CPU per stream "
                f"{fmt(entry['cpu_per_stream_vs_pi'])}x, TTFT p50 {signed(entry['ttft_p50_minus_pi_ms'])}"
            )
        pairs = [(g["sidecar"], g["omp"]) for g in groups if "omp" in g and g["omp"].rps]
        if len(pairs) >= 2:
            rps, cpu, ttft = paired_ratios(pairs)
            entry = out[f"sidecar_vs_omp_c{c}"] = {
                "repeats": len(pairs),
                "rps": {"median": middle(rps), "min": rps[0], "max": rps[-1]},
                "gateway_cpu_per_stream": middle(cpu) if cpu else None,
                "ttft_p50_minus_omp_ms": middle(ttft) if ttft else None,
            }
            lines.append(
                f"c={c}: sidecar/omp, paired by repeat ({len(pairs)}): req/s {fmt(entry['rps']['median'])}x "
                f"({fmt(rps[0])}-{fmt(rps[-1])}), gateway CPU per stream {fmt(entry['gateway_cpu_per_stream'])}x, "
                f"TTFT p50 {signed(entry['ttft_p50_minus_omp_ms'])}"
            )
    return lines, out


def middle(ordered: list[float]) -> float:
    """The median of an ascending list (the lower middle one for an even count, as ``median_runs`` picks)."""
    return ordered[(len(ordered) - 1) // 2]


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def omp_comparisons(results: list[RunResult], ratios: dict[str, Any]) -> list[str]:
    """The sidecar against the reference gateway (issue #12), and the reference gateway against direct."""
    lines: list[str] = []
    for c in sorted({r.concurrency for r in results}):
        omp = find(results, "omp", c)
        if omp is None:
            continue
        direct, side = find(results, "direct", c), find(results, "sidecar", c)
        entry = ratios[f"omp_c{c}"] = {
            "sidecar_vs_omp_rps": ratio(side.rps, omp.rps) if side else None,
            "omp_vs_direct_rps": ratio(omp.rps, direct.rps) if direct else None,
            "sidecar_minus_omp_ttft_p50_ms": minus(side.ttft_ms["p50"], omp.ttft_ms["p50"]) if side else None,
            "omp_added_ttft_p50_ms": minus(omp.ttft_ms["p50"], direct.ttft_ms["p50"]) if direct else None,
            "sidecar_vs_omp_cpu_per_stream": (
                ratio(side.sidecar_cpu_us_per_stream, omp.sidecar_cpu_us_per_stream) if side else None
            ),
            "omp_gateway_cpu_us_per_stream": omp.sidecar_cpu_us_per_stream,
            "omp_broker_cpu_us_per_stream": omp.broker_cpu_us_per_stream,
        }
        parts = []
        if side is not None:
            parts.append(
                f"sidecar/omp req/s = {fmt(entry['sidecar_vs_omp_rps'])}x ({side.rps:.0f} vs {omp.rps:.0f}); "
                f"TTFT p50 sidecar {fmt(side.ttft_ms['p50'])} vs omp {fmt(omp.ttft_ms['p50'])} ms "
                f"({signed(entry['sidecar_minus_omp_ttft_p50_ms'])})"
            )
            if side.sidecar_cpu_us_per_stream and omp.sidecar_cpu_us_per_stream:
                parts.append(
                    f"gateway CPU/stream sidecar {side.sidecar_cpu_us_per_stream:.0f} vs omp "
                    f"{omp.sidecar_cpu_us_per_stream:.0f} us ({fmt(entry['sidecar_vs_omp_cpu_per_stream'])}x; "
                    f"omp's broker +{fmt(omp.broker_cpu_us_per_stream, 0)} us)"
                )
        if direct is not None:
            parts.append(
                f"omp/direct req/s = {fmt(entry['omp_vs_direct_rps'], 3)}x, omp added TTFT p50 "
                f"{signed(entry['omp_added_ttft_p50_ms'])}"
            )
        lines.append(f"c={c}: " + "; ".join(parts))
    return lines


def comparisons(results: list[RunResult]) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    ratios: dict[str, Any] = {}
    lines = omp_comparisons(results, ratios)
    for c in sorted({r.concurrency for r in results}):
        direct, side = find(results, "direct", c), find(results, "sidecar", c)
        if direct is None or side is None:
            continue
        rps_ratio = side.rps / direct.rps if direct.rps else None
        d50, s50 = direct.ttft_ms["p50"], side.ttft_ms["p50"]
        d99, s99 = direct.ttft_ms["p99"], side.ttft_ms["p99"]
        added = s50 - d50 if s50 is not None and d50 is not None else None
        added99 = s99 - d99 if s99 is not None and d99 is not None else None
        ratios[f"c{c}"] = {"rps_ratio": rps_ratio, "added_ttft_p50_ms": added, "added_ttft_p99_ms": added99}
        lines.append(
            f"c={c}: sidecar/direct req/s = {fmt(rps_ratio, 3)}x ({side.rps:.0f} vs {direct.rps:.0f}); "
            f"added TTFT p50 = {fmt(added)} ms (sidecar {fmt(s50)} - direct {fmt(d50)}); "
            f"added TTFT p99 = {fmt(added99)} ms"
        )
    for c in sorted({r.concurrency for r in results}):
        direct, pi = find(results, "direct", c), find(results, "sidecar", c)
        for name in ("relay", "chat"):
            route = find(results, name, c)
            if route is None:
                continue
            entry = ratios[f"{name}_c{c}"] = {
                "rps_vs_direct": route.rps / direct.rps if direct and direct.rps else None,
                "rps_vs_pi": route.rps / pi.rps if pi and pi.rps else None,
                "ttft_p50_minus_direct_ms": minus(route.ttft_ms["p50"], direct.ttft_ms["p50"] if direct else None),
                "ttft_p50_minus_pi_ms": minus(route.ttft_ms["p50"], pi.ttft_ms["p50"] if pi else None),
                "total_p50_minus_pi_ms": minus(route.total_ms["p50"], pi.total_ms["p50"] if pi else None),
            }
            vs_rps, vs_ttft = [], []
            if direct is not None:
                vs_rps.append(f"{fmt(entry['rps_vs_direct'], 3)}x direct")
                vs_ttft.append(f"direct {signed(entry['ttft_p50_minus_direct_ms'])}")
            if pi is not None:
                vs_rps.append(f"{fmt(entry['rps_vs_pi'])}x pi route")
                vs_ttft.append(f"pi route {signed(entry['ttft_p50_minus_pi_ms'])}")
                vs_ttft.append(f"total p50 vs pi route {signed(entry['total_p50_minus_pi_ms'])}")
            lines.append(
                f"c={c}: {name} req/s {route.rps:.0f}"
                + (f" = {', '.join(vs_rps)}" if vs_rps else "")
                + f"; TTFT p50 {fmt(route.ttft_ms['p50'])} ms"
                + (f" ({'; '.join(vs_ttft)})" if vs_ttft else "")
            )
    goals: dict[str, Any] = {}
    c1 = ratios.get("c1", {}).get("added_ttft_p50_ms")
    side50 = find(results, "sidecar", 50)
    if c1 is not None:
        goals["added_ttft_p50_c1"] = {"value_ms": c1, "pass": c1 <= GOAL_ADDED_TTFT_MS}
    if side50 is not None and side50.sidecar_cpu_us_per_stream is not None:
        cpu = side50.sidecar_cpu_us_per_stream
        ok = cpu <= GOAL_CPU_US_PER_STREAM and side50.errors == 0
        goals["sidecar_cpu_per_stream_c50"] = {"value_us": cpu, "errors": side50.errors, "pass": ok}
    for c in (4, 50):
        side, omp = find(results, "sidecar", c), find(results, "omp", c)
        if side is not None and omp is not None and omp.rps:
            ok = side.rps >= GOAL_VS_OMP * omp.rps and side.errors == 0
            goals[f"sidecar_c{c}_ge_1.5x_omp"] = {"value": side.rps / omp.rps, "errors": side.errors, "pass": ok}
    return lines, ratios, goals


def goal_lines(goals: dict[str, Any]) -> list[str]:
    out = []
    if g := goals.get("added_ttft_p50_c1"):
        out.append(
            f"  added TTFT p50 at c=1 <= {GOAL_ADDED_TTFT_MS:g} ms: {g['value_ms']:.2f} ms  "
            + ("PASS" if g["pass"] else "FAIL")
        )
    else:
        out.append(f"  added TTFT p50 at c=1 <= {GOAL_ADDED_TTFT_MS:g} ms: not measured")
    if g := goals.get("sidecar_cpu_per_stream_c50"):
        extra = f", {g['errors']} errors" if g["errors"] else ""
        out.append(
            f"  sidecar CPU per stream at c=50 <= {GOAL_CPU_US_PER_STREAM:g} us: {g['value_us']:.0f} us{extra}  "
            + ("PASS" if g["pass"] else "FAIL")
        )
    else:
        out.append(f"  sidecar CPU per stream at c=50 <= {GOAL_CPU_US_PER_STREAM:g} us: not measured")
    for c in (4, 50):
        if g := goals.get(f"sidecar_c{c}_ge_1.5x_omp"):
            extra = f", {g['errors']} errors" if g["errors"] else ""
            out.append(
                f"  sidecar streams/s at c={c} >= {GOAL_VS_OMP:g}x omp auth-gateway: {g['value']:.2f}x{extra}  "
                + ("PASS" if g["pass"] else "FAIL")
            )
        else:
            out.append(f"  sidecar streams/s at c={c} >= {GOAL_VS_OMP:g}x omp auth-gateway: not measured")
    return out


# ----- main -----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Sidecar vs direct upstream benchmark (see bench/README.md)")
    p.add_argument("--quick", action="store_true", help="short run: 100 requests at c=1, 2 s or 1000 at c=50, 1 repeat")
    p.add_argument("--requests", type=int, help="requests per c=1 run (default 500; quick 100)")
    p.add_argument("--concurrent-requests", type=int, help="request cap per concurrent run (default 5000; quick 1000)")
    p.add_argument("--duration", type=float, help="time cap per run in seconds (default 10; quick 2)")
    p.add_argument("--warmup", type=int, help="unmeasured requests before each run (default 200; quick 50)")
    p.add_argument("--repeat", type=int, help="run everything N times, report the median run (default 3; quick 1)")
    p.add_argument("--concurrency", default="1,4,50", help="comma-separated concurrency levels (default 1,4,50)")
    p.add_argument(
        "--targets",
        default="direct,sidecar,omp",
        help="comma-separated, from direct,sidecar,relay,chat,omp (default direct,sidecar,omp; see bench/README.md)",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds (default 30)")
    p.add_argument("--delay-ms", type=float, default=0.0, help="mock upstream delay between SSE events (default 0)")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument(
        "--python",
        default=str(VENV_PYTHON if VENV_PYTHON.exists() else sys.executable),
        help="interpreter for the mock upstream and the sidecar (default .venv/bin/python)",
    )
    p.add_argument(
        "--config-extra",
        default="",
        help='TOML appended to the sidecar config, e.g. "[budget]\\nusd = 1e6" (a budget check on every request)',
    )
    p.add_argument("--sidecar-log-level", help="set SIDECAR_LOG_LEVEL for the sidecar (default: its own, info)")
    p.add_argument("--profile", choices=["cprofile", "sample"], help="run the sidecar under a profiler")
    p.add_argument("--profile-out", type=Path, help="where to write the profile (default: a temp dir, printed)")
    p.add_argument(
        "--what-if",
        action="append",
        default=[],
        choices=WHAT_IFS,
        help="run the sidecar with a bench-only patch (see bench/profile_sidecar.py); repeatable",
    )
    p.add_argument("--json", type=Path, help="write the results as JSON to this path")
    args = p.parse_args(argv)
    quick = args.quick
    args.requests = args.requests or (100 if quick else 500)
    args.concurrent_requests = args.concurrent_requests or (1000 if quick else 5000)
    args.duration = args.duration or (2.0 if quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (50 if quick else 200)
    args.repeat = args.repeat or (1 if quick else 3)
    args.concurrency_levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.target_names = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not args.target_names or not set(args.target_names) <= set(TARGET_NAMES):
        p.error(f"--targets takes one or more of {', '.join(TARGET_NAMES)}")
    args.target_names = list(dict.fromkeys(args.target_names))  # a target named twice runs once
    if not 1 <= args.repeat <= 20:
        p.error("--repeat must be between 1 and 20")
    if any(c < 1 or c > 1000 for c in args.concurrency_levels):
        p.error("--concurrency levels must be between 1 and 1000")
    return args


def choose_cpus(no_pin: bool) -> tuple[int | None, int | None, str]:
    """(CPU for the mock + load generator, CPU for the sidecar, description)."""
    if no_pin:
        return None, None, "not pinned (--no-pin)"
    if not shutil.which("taskset") or not hasattr(os, "sched_getaffinity"):
        return None, None, "not pinned (no taskset)"
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None, f"not pinned (only CPU {allowed} available)"
    return (
        allowed[0],
        allowed[1],
        (
            f"sidecar -> CPU {allowed[1]}; mock upstream + load generator -> CPU {allowed[0]} "
            f"(taskset; {len(allowed)} CPUs available)"
        ),
    )


async def benchmark(
    args: argparse.Namespace, targets: list[Target], pids: dict[str, int | None], mock_port: int
) -> list[RunResult]:
    """Every (repeat, concurrency, target) run, in that order: repeats interleave the targets to spread out noise."""
    results: list[RunResult] = []
    for target in targets:
        status, kinds, body = await sample_stream(target)
        print(f"  {target.name:<8} check: HTTP {status}: {compress(kinds) if kinds else '(no events)'}")
        if target.name == "relay":
            _, _, reference = await sample_stream(TARGETS["direct"](mock_port))
            same = "identical" if body == reference else f"DIFFERENT from byte {first_difference(body, reference)}"
            print(f"  {'':<8} relay body vs direct body: {same} ({len(body)} vs {len(reference)} bytes)")
    for repeat in range(args.repeat):
        for concurrency in args.concurrency_levels:
            for target in targets:
                count = args.requests if concurrency == 1 else args.concurrent_requests
                before = http_get_json(mock_port, "/stats")
                profile_pid = pids.get("sidecar") if args.profile and target.via_sidecar else None
                # The gateways (sidecar, omp) share one core: probe it before each of their runs.
                probe_cpu = args.sidecar_cpu if target.gateway else None
                result = await run_load(
                    target,
                    concurrency,
                    count,
                    args.duration,
                    args.warmup,
                    args.timeout,
                    pids,
                    profile_pid,
                    probe_cpu,
                )
                after = http_get_json(mock_port, "/stats")
                result.upstream_calls = after["requests"] - before["requests"]
                # Connections the mock accepted during the run, minus the /stats probe itself.
                result.upstream_connections = after["connections"] - before["connections"] - 1
                result.repeat = repeat + 1
                results.append(result)
                cpu = (
                    ", ".join(f"{k} {fmt(v, 0)}%" for k, v in result.cpu_percent.items() if v is not None)
                    or "run too short"
                )
                errs = f"; errors: {result.error_kinds}" if result.errors else ""
                if result.sidecar_cpu_us_per_stream:
                    errs += f"; {target.gateway} {result.sidecar_cpu_us_per_stream:.0f} us CPU/stream"
                if result.broker_cpu_us_per_stream is not None:
                    errs += f" (+ broker {result.broker_cpu_us_per_stream:.0f})"
                if result.probe_ms:
                    errs += f"; probe {result.probe_ms:.1f} ms"
                full = result.per_second[:-1]  # whole seconds only
                if len(full) >= 2:
                    errs += f"; per-second min/max {min(full)}/{max(full)}"
                rep = f"#{repeat + 1} " if args.repeat > 1 else ""
                print(
                    f"  {rep}{target.name:<8} c={concurrency:<3} {result.requests:>6} req in {result.elapsed_s:5.2f} s"
                    f" = {result.rps:7.0f} req/s  TTFT p50 {fmt(result.ttft_ms['p50'])} ms  [cpu: {cpu}]{errs}",
                    flush=True,
                )
    return results


def median_runs(results: list[RunResult]) -> list[RunResult]:
    """Per (target, concurrency), the run with the median req/s (the lower middle one for an even count)."""
    groups: dict[tuple[str, int], list[RunResult]] = {}
    for r in results:
        groups.setdefault((r.target, r.concurrency), []).append(r)
    chosen = []
    for runs in groups.values():
        ordered = sorted(runs, key=lambda r: r.rps)
        chosen.append(ordered[(len(ordered) - 1) // 2])
    order = {(r.target, r.concurrency): i for i, r in enumerate(results)}
    return sorted(chosen, key=lambda r: (r.concurrency, order[(r.target, r.concurrency)]))


def run_async(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_cpu, sidecar_cpu, pin_text = choose_cpus(args.no_pin)
    args.sidecar_cpu = sidecar_cpu
    if load_cpu is not None:
        os.sched_setaffinity(0, {load_cpu})

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    procs = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="sidecar-bench-"))
    profile_out = args.profile_out or (workdir / f"profile-{args.profile}.out" if args.profile else None)
    started_at = dt.datetime.now(dt.UTC)
    try:
        mock, mock_port = start_mock(procs, args.python, load_cpu, args.delay_ms)
        targets: list[Target] = []
        pids: dict[str, int | None] = {"loadgen": None, "mock": mock.pid}
        sidecar = None
        sidecar_log: Path | None = None
        sidecar_port = 0
        if SIDECAR_TARGETS & set(args.target_names):
            sidecar, sidecar_port, sidecar_log = start_sidecar(
                procs,
                args.python,
                sidecar_cpu,
                workdir,
                mock_port,
                args.sidecar_log_level,
                args.profile,
                profile_out,
                args.what_if,
                args.config_extra,
            )
            pids["sidecar"] = sidecar.pid
        for name in args.target_names:
            if name == "omp":
                # Same core as the sidecar: each gateway gets core 1 to itself while it is measured.
                gateway, omp_port, broker, bearer = start_omp(procs, sidecar_cpu, workdir, mock_port, API_KEY, TOKEN)
                pids["omp"], pids["omp-broker"] = gateway.pid, broker.pid
                targets.append(omp_target(omp_port, bearer))
            else:
                targets.append(TARGETS[name](sidecar_port if name in SIDECAR_TARGETS else mock_port))

        print(f"pi-sidecar benchmark  {started_at:%Y-%m-%d %H:%M UTC}  python {platform.python_version()}")
        print(f"pinning: {pin_text}")
        load = os.getloadavg() if hasattr(os, "getloadavg") else None
        if load is not None:
            print(f"machine load average before the runs: {load[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
        if args.profile or args.what_if:
            print(
                f"NOTE: the sidecar runs under bench/profile_sidecar.py (profile: {args.profile or 'off'}, what-if: "
                f"{', '.join(args.what_if) or 'none'}); its numbers are not those of the plain sidecar"
            )
        print(
            f"runs: c=1 x {args.requests} requests; c>1 closed loop, {args.concurrent_requests} requests or "
            f"{args.duration:g} s; {args.warmup} warm-up requests before each; mock event delay {args.delay_ms:g} ms"
        )
        all_runs = run_async(benchmark(args, targets, pids, mock_port))
        results = median_runs(all_runs)

        print()
        print(table(results))
        if args.repeat > 1:
            print(f"(each row is the median run of {args.repeat} by req/s; all runs' req/s:)")
            for r in results:
                every = [f"{x.rps:.0f}" for x in all_runs if x.target == r.target and x.concurrency == r.concurrency]
                print(f"  {r.target} c={r.concurrency}: {', '.join(every)}")
        probes = [r.probe_ms for r in all_runs if r.probe_ms]
        if len(probes) >= 2 and max(probes) > 1.15 * min(probes):
            print(
                f"warning: the CPU speed probe on the sidecar's core ranged {min(probes):.1f}-{max(probes):.1f} ms "
                "between runs: the host was slower at times (noisy neighbours?), expect noisy numbers"
            )
        others = [r.cpu_percent.get("other processes") for r in all_runs if r.target in GATEWAY_TARGETS]
        busy = [o for o in others if o is not None]
        if busy and max(busy) > 20:
            print(
                f"warning: other processes used up to {max(busy):.0f}% of a CPU during the gateway runs; "
                "the gateways share their core with them, so expect noisy numbers (re-run on a quiet machine)"
            )
        print()
        lines, ratios, goals = comparisons(results)
        paired_lines, ratios["paired"] = paired(all_runs)
        for line in lines + paired_lines:
            print(line)
        for r in results:
            if r.target in GATEWAY_TARGETS:
                print(
                    f"{r.target} c={r.concurrency}: {r.sent} streams sent to "
                    f"{'omp' if r.target == 'omp' else 'the sidecar'} (warm-up included) -> "
                    f"{r.upstream_calls} upstream calls on {r.upstream_connections} new upstream connections"
                )
                if r.upstream_calls and r.upstream_connections > r.upstream_calls // 2:
                    share = 100 * r.upstream_connections / r.upstream_calls
                    print(f"  note: {share:.0f}% of upstream calls opened a new connection (no keep-alive reuse)")
        if sidecar_log is not None and sidecar_log.exists():
            text = sidecar_log.read_text(errors="replace").splitlines()
            bad = [line for line in text if " WARNING " in line or " ERROR " in line or "Traceback" in line]
            print(
                f"sidecar log: {len(text)} lines, {len(bad)} warnings/errors"
                + (f"; first: {bad[0][:200]}" if bad else "")
            )
        print()
        print("goals (informational):")
        for line in goal_lines(goals):
            print(line)

        if args.profile and sidecar is not None:
            procs.stop(sidecar, grace=60.0)  # the wrapper writes the profile on a clean exit
            print()
            print(f"sidecar profile ({args.profile}) written to {profile_out}")
            report = Path(str(profile_out) + ".txt")
            if report.exists():
                print(report.read_text()[:12000])

        if args.json:
            payload = {
                "date": started_at.isoformat(),
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "pinning": pin_text,
                "settings": {
                    "requests_c1": args.requests,
                    "concurrent_requests": args.concurrent_requests,
                    "duration_s": args.duration,
                    "warmup": args.warmup,
                    "delay_ms": args.delay_ms,
                    "quick": args.quick,
                    "repeat": args.repeat,
                    "profile": args.profile,
                    "what_if": args.what_if,
                    "sidecar_log_level": args.sidecar_log_level,
                },
                "results": [r.__dict__ for r in results],
                "all_runs": [r.__dict__ for r in all_runs],
                "ratios": ratios,
                "goals": goals,
            }
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
            print(f"\nJSON results written to {args.json}")
    except KeyboardInterrupt:
        print("\ninterrupted; stopping subprocesses", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        if not args.profile or args.profile_out:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
