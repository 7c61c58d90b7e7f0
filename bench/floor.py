"""Floor probe: the least CPU per stream a Python server stack needs for a minimal streaming proxy request.

Not the sidecar: a throwaway proxy app with none of its work (no auth, ledger, log, validation or translation), served
on several server stacks, to learn what the stack itself costs. For every ``POST`` (any path) the app reads the
request body, parses it with orjson, makes one upstream call on a module-level aiohttp ``ClientSession`` (keep-alive)
to the mock's ``POST /v1/messages`` and streams back an SSE response: one orjson-encoded ``text_delta`` frame per
upstream read, then ``data: {"type":"done"}`` and ``data: [DONE]`` (what run.py's ``sidecar`` target checks).

Stacks (``--stacks``, each a server subprocess pinned to the gateway core, run.py's mock and load generator on the
other core, the same request as run.py's ``sidecar`` target):

* ``uvicorn``      uvicorn, ``http="httptools"``, ``loop="uvloop"``, no access log, a raw ASGI app;
* ``granian-rsgi`` granian, RSGI interface (``proto.response_stream``): 1 worker, 1 runtime thread, 1 blocking thread,
  ``--runtime-mode st``, ``--loop uvloop``, ``--http 1``, ``--no-ws``, no access log;
* ``granian-asgi`` granian, ASGI interface, the same raw ASGI app as ``uvicorn``, same granian settings;
* ``raw``          a bare ``asyncio.Protocol`` on uvloop with httptools' request parser (HTTP/1.1 keep-alive, chunked
  responses): a lower bound for Python, not a candidate to ship;
* ``granian-rsgi-rust`` (only when named) ``granian-rsgi`` with ``--task-impl rust``.

The servers run under ``--python`` (it needs aiohttp, orjson, uvloop, httptools, uvicorn and granian); the mock and
the load generator under this interpreter. CPU per stream is the server's user+system time (all processes of its
tree, all their threads) over the run, divided by the successful streams; context switches per request are those of
all the server's threads, warm-up included. Rounds interleave the stacks; the table gives each figure's median over
the rounds (a run with any error makes the exit status 1)::

    python3 -m venv /tmp/floorvenv
    /tmp/floorvenv/bin/pip install granian aiohttp orjson uvicorn httptools uvloop
    .venv/bin/python bench/floor.py --python /tmp/floorvenv/bin/python
    .venv/bin/python bench/floor.py --python /tmp/floorvenv/bin/python --stacks uvicorn,raw --rounds 5 --duration 3

The server side is this file too: ``floor.py serve --stack uvicorn|raw`` (the granian stacks import ``floor:rsgi_app``
or ``floor:asgi_app`` through granian's CLI). ``FLOOR_UPSTREAM`` is the mock's base URL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

BENCH = Path(__file__).resolve().parent
UPSTREAM = os.environ.get("FLOOR_UPSTREAM", "http://127.0.0.1:0")
API_KEY = "sk-ant-bench"
UPSTREAM_BODY = orjson.dumps(
    {
        "model": "claude-sonnet-4-5",
        "stream": True,
        "max_tokens": 64000,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }
)
UPSTREAM_HEADERS = {
    "x-api-key": API_KEY,
    "anthropic-version": "2023-06-01",
    "content-type": "application/json",
    "accept": "text/event-stream",
}
DONE = b'data: {"type":"done","reason":"stop"}\n\ndata: [DONE]\n\n'
STACKS = ("uvicorn", "granian-rsgi", "granian-asgi", "raw")
EXTRA_STACKS = ("granian-rsgi-rust",)
"""Not run by default: ``granian-rsgi`` with ``--task-impl rust`` (granian's Rust future wrapper, Python < 3.12)."""

# ----- the proxy app (server side) ------------------------------------------------------------------------------

_session: Any = None


def session() -> Any:
    """The module-level upstream client, created on first use (it needs the running loop)."""
    global _session
    if _session is None:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
        _session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
    return _session


def delta_frame(chunk: bytes, index: int) -> bytes:
    return b"data: " + orjson.dumps({"type": "text_delta", "contentIndex": index, "bytes": len(chunk)}) + b"\n\n"


async def upstream_frames(body: bytes) -> Any:
    """Parse the client's body, call the upstream once, yield one frame per upstream read and the closing frames."""
    request = orjson.loads(body) if body else {}
    if not isinstance(request, dict):
        raise ValueError("body is not a JSON object")
    async with session().post(UPSTREAM + "/v1/messages", data=UPSTREAM_BODY, headers=UPSTREAM_HEADERS) as resp:
        index = 0
        async for chunk in resp.content.iter_any():
            yield delta_frame(chunk, index)
            index += 1
    yield DONE


ASGI_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Raw ASGI: the proxy for ``http``, a no-op lifespan."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["method"] != "POST":  # the readiness probe's GET: no upstream call
        await send({"type": "http.response.start", "status": 405, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": ASGI_HEADERS})
    frames = upstream_frames(body)
    async for frame in frames:
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


RSGI_HEADERS = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]


async def rsgi_app(scope: Any, proto: Any) -> None:
    """RSGI (granian): the same proxy."""
    if scope.proto != "http":
        return
    if scope.method != "POST":
        proto.response_empty(405, [])
        return
    body = await proto()
    transport = proto.response_stream(200, RSGI_HEADERS)
    async for frame in upstream_frames(body):
        await transport.send_bytes(frame)


class RawHTTP(asyncio.Protocol):
    """HTTP/1.1 keep-alive with httptools' parser and chunked responses; no pipelining, no limits: a bound only."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception:  # httptools' parser errors
            if self.transport is not None:
                self.transport.close()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        if self.parser.get_method() != b"POST":
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            return
        asyncio.get_running_loop().create_task(self.respond(body))

    async def respond(self, body: bytes) -> None:
        transport = self.transport
        assert transport is not None
        transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        async for frame in upstream_frames(body):
            if transport.is_closing():
                return
            transport.write(b"%x\r\n%b\r\n" % (len(frame), frame))
        transport.write(b"0\r\n\r\n")


def serve(stack: str, port: int) -> None:
    """``floor.py serve``: the uvicorn and raw stacks (the granian ones start through granian's own CLI)."""
    import uvloop

    if stack == "uvicorn":
        import uvicorn

        config = uvicorn.Config(
            asgi_app,
            host="127.0.0.1",
            port=port,
            http="httptools",
            loop="uvloop",
            lifespan="off",
            access_log=False,
            log_level="warning",
        )
        uvicorn.Server(config).run()
        return

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(RawHTTP, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


# ----- the probe (driver side) ----------------------------------------------------------------------------------


def server_command(python: str, stack: str, port: int) -> list[str]:
    if stack in ("uvicorn", "raw"):
        return [python, str(Path(__file__).resolve()), "serve", "--stack", stack, "--port", str(port)]
    interface, target = ("asgi", "floor:asgi_app") if stack == "granian-asgi" else ("rsgi", "floor:rsgi_app")
    extra = ["--task-impl", "rust"] if stack.endswith("-rust") else []
    return [
        python,
        "-m",
        "granian",
        *extra,
        "--interface",
        interface,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--runtime-threads",
        "1",
        "--blocking-threads",
        "1",
        "--runtime-mode",
        "st",
        "--loop",
        "uvloop",
        "--http",
        "1",
        "--no-ws",
        "--no-access-log",
        "--log-level",
        "warning",
        "--working-dir",
        str(BENCH),
        target,
    ]


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process under it (granian runs its worker in a child process)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo += [int(x) for x in task.read_text().split()]
            except OSError:
                pass
    return out


def context_switches(pids: list[int]) -> int:
    """Voluntary + involuntary context switches of every thread of ``pids`` so far."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                status = (task / "status").read_text()
            except OSError:
                continue
            total += sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches:" in line)
    return total


def threads_report(pids: list[int]) -> str:
    """Per process: its threads and the CPUs they may run on (taskset is inherited by threads and children)."""
    parts = []
    for pid in pids:
        allowed = set()
        tasks = list(Path(f"/proc/{pid}/task").glob("*"))
        for task in tasks:
            try:
                status = (task / "status").read_text()
            except OSError:
                continue
            allowed |= {
                line.split(":", 1)[1].strip() for line in status.splitlines() if line.startswith("Cpus_allowed_list")
            }
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            name = "?"
        parts.append(f"pid {pid} ({name}): {len(tasks)} threads on CPUs {','.join(sorted(allowed)) or '?'}")
    return "; ".join(parts)


SERVER_LOGS: dict[str, Path] = {}
"""Each server's stdout and stderr (reported if not empty, then deleted)."""


def start_server(run: Any, procs: Any, python: str, stack: str, cpu: int | None, mock_port: int) -> tuple[Any, int]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "FLOOR_UPSTREAM": f"http://127.0.0.1:{mock_port}",
    }
    log = tempfile.NamedTemporaryFile(prefix=f"floor-{stack}-", suffix=".log", delete=False)
    for _attempt in range(3):
        port = run.free_port()
        proc = procs.start(
            stack,
            run.pinned(server_command(python, stack, port), cpu),
            env=env,
            cwd=BENCH,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            if run.http_get_status(port, "/") is not None:
                SERVER_LOGS[stack] = Path(log.name)
                return proc, port
            time.sleep(0.05)
        procs.stop(proc)
    raise RuntimeError(f"{stack} did not start; its log ({log.name}) ends with:\n{Path(log.name).read_text()[-2000:]}")


async def probe(args: argparse.Namespace, run: Any, servers: dict[str, tuple[Any, int]], mock: Any) -> list[dict]:
    results = []
    for stack, (_, port) in servers.items():
        target = run.sidecar_target(port)
        status, kinds, body = await run.sample_stream(target)
        print(f"  {stack:<13} check: HTTP {status}: {run.compress(kinds)}; complete={target.complete(body)}")
    for rnd in range(1, args.rounds + 1):
        for c in args.concurrency_levels:
            for stack, (proc, port) in servers.items():
                tree = descendants(proc.pid)
                pids: dict[str, int | None] = {"loadgen": None, "mock": mock.pid}
                pids |= {f"server{i}": pid for i, pid in enumerate(tree)}
                pids["sidecar"] = pids.pop("server0")
                switches = context_switches(tree)
                result = await run.run_load(
                    run.sidecar_target(port),
                    c,
                    args.requests,
                    args.duration,
                    args.warmup,
                    args.timeout,
                    pids,
                    None,
                    args.server_cpu,
                )
                switches = context_switches(tree) - switches
                server_pct = [v for k, v in result.cpu_percent.items() if k == "sidecar" or k.startswith("server")]
                cpu_us = None
                if result.requests - result.errors and all(v is not None for v in server_pct):
                    ok = result.requests - result.errors
                    cpu_us = sum(server_pct) * result.elapsed_s / 100.0 / ok * 1e6
                row = {
                    "stack": stack,
                    "c": c,
                    "round": rnd,
                    "rps": result.rps,
                    "cpu_us": cpu_us,
                    "ttft_p50": result.ttft_ms["p50"],
                    "errors": result.errors,
                    "error_kinds": result.error_kinds,
                    "server_cpu_pct": sum(v for v in server_pct if v is not None),
                    "other_pct": result.cpu_percent.get("other processes"),
                    "probe_ms": result.probe_ms,
                    "processes": len(tree),
                    "switches": switches / result.sent if result.sent else None,
                }
                results.append(row)
                errs = f"  ERRORS {result.error_kinds}" if result.errors else ""
                print(
                    f"  #{rnd} {stack:<13} c={c:<3} {result.requests:>6} req {result.rps:7.0f} streams/s  "
                    f"CPU {run.fmt(cpu_us, 0):>5} us/stream  server {row['server_cpu_pct']:.0f}% "
                    f"({len(tree)} proc, {run.fmt(row['switches'], 1)} ctx switches/req)  "
                    f"other {run.fmt(row['other_pct'], 0)}%  TTFT p50 "
                    f"{run.fmt(result.ttft_ms['p50'])} ms  probe {run.fmt(result.probe_ms, 1)} ms{errs}",
                    flush=True,
                )
    return results


def summary(results: list[dict], stacks: list[str], levels: list[int]) -> str:
    """Per stack and concurrency, the median over the rounds of each figure (each taken on its own)."""

    def median(values: list[float | None], digits: int) -> str:
        present = [v for v in values if v is not None]
        return f"{statistics.median(present):,.{digits}f}" if present else "-"

    lines = [
        "| stack | c | streams/s | CPU µs/stream | TTFT p50 ms | ctx switches/req | streams/s per round | errors |",
        "|---|--:|--:|--:|--:|--:|---|--:|",
    ]
    for c in levels:
        for stack in stacks:
            rows = [r for r in results if r["stack"] == stack and r["c"] == c]
            if rows:
                every = ", ".join(f"{r['rps']:.0f}" for r in rows)
                lines.append(
                    f"| {stack} | {c} | {median([r['rps'] for r in rows], 0)} | "
                    f"{median([r['cpu_us'] for r in rows], 0)} | {median([r['ttft_p50'] for r in rows], 2)} | "
                    f"{median([r['switches'] for r in rows], 1)} | {every} | {sum(r['errors'] for r in rows)} |"
                )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Floor probe of Python server stacks (see the module docstring)")
    sub = p.add_subparsers(dest="command")
    s = sub.add_parser("serve", help="(internal) serve the proxy on the uvicorn or raw stack")
    s.add_argument("--stack", choices=["uvicorn", "raw"], required=True)
    s.add_argument("--port", type=int, required=True)
    p.add_argument("--python", default=sys.executable, help="interpreter for the servers (default: this one)")
    p.add_argument(
        "--stacks",
        default=",".join(STACKS),
        help=f"comma-separated, from {','.join(STACKS + EXTRA_STACKS)} (default {','.join(STACKS)})",
    )
    p.add_argument("--concurrency", default="4,50", help="comma-separated concurrency levels (default 4,50)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--duration", type=float, default=5.0, help="time cap per run in seconds (default 5)")
    p.add_argument("--requests", type=int, default=20000, help="request cap per run (default 20000)")
    p.add_argument("--warmup", type=int, default=200, help="unmeasured requests before each run (default 200)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds (default 30)")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    args = p.parse_args(argv)
    if args.command is None:
        args.stack_names = [x.strip() for x in args.stacks.split(",") if x.strip()]
        if not args.stack_names or not set(args.stack_names) <= set(STACKS + EXTRA_STACKS):
            p.error(f"--stacks takes one or more of {', '.join(STACKS + EXTRA_STACKS)}")
        args.concurrency_levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "serve":
        serve(args.stack, args.port)
        return 0
    sys.path.insert(0, str(BENCH))
    import run  # the harness: mock, load generator, CPU accounting (imported here: the servers do not need it)

    load_cpu, server_cpu, pin_text = run.choose_cpus(args.no_pin)
    args.server_cpu = server_cpu
    if load_cpu is not None:
        os.sched_setaffinity(0, {load_cpu})
    procs = run.Processes()
    try:
        mock_python = str(run.VENV_PYTHON if run.VENV_PYTHON.exists() else sys.executable)
        mock, mock_port = run.start_mock(procs, mock_python, load_cpu, 0.0)
        servers = {
            stack: start_server(run, procs, args.python, stack, server_cpu, mock_port) for stack in args.stack_names
        }
        version = subprocess.run(
            [
                args.python,
                "-c",
                "import granian, uvicorn, aiohttp; print(granian.__version__, uvicorn.__version__, "
                "aiohttp.__version__)",
            ],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        print(f"floor probe {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; pinning: {pin_text}")
        print(
            f"servers: {args.python} (granian {version[0] if version else '?'}, uvicorn "
            f"{version[1] if len(version) > 1 else '?'}, aiohttp {version[2] if len(version) > 2 else '?'})"
        )
        print(f"runs: closed loop, {args.requests} requests or {args.duration:g} s, {args.warmup} warm-up requests")
        results = run.run_async(probe(args, run, servers, mock))
        for stack, (proc, _) in servers.items():
            print(f"  {stack}: {threads_report(descendants(proc.pid))}")
            text = SERVER_LOGS[stack].read_text(errors="replace") if stack in SERVER_LOGS else ""
            if text.strip():
                print(f"  {stack} server log ({len(text.splitlines())} lines), ends with:\n{text[-1500:]}")
        print()
        print("medians over the rounds:")
        print(summary(results, args.stack_names, args.concurrency_levels))
        bad = sum(r["errors"] for r in results)
        if bad:
            print(f"\n{bad} errors: the figures of runs with errors are not floors")
            return 1
    except KeyboardInterrupt:
        return 130
    except RuntimeError as exc:
        print(f"floor: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        for path in SERVER_LOGS.values():
            path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
