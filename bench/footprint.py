"""Footprint of the sidecar (issue #12): start-up time, idle RSS, and 1,000 concurrent slow streams.

Against the real sidecar subprocess, started as ``bench/run.py`` starts it (``start_sidecar``; pinned to core 1 when
two CPUs exist, the mock upstream and this load generator on core 0):

* **start-up**: wall time from spawning the sidecar to the first 200 from ``GET /healthz`` (polled every 10 ms),
  median of 5 starts (goal <= 1 s);
* **idle RSS**: ``VmRSS`` of the sidecar's process after start-up and 10 warm-up streams, 1 s later (goal <= 60 MiB);
* **concurrent slow streams**: the mock paces its events (``--delay-ms 50``, 400 text deltas: a 20 s stream);
  1,000 pi-native streams (``POST /v1/pi/stream``, run.py's ``sidecar`` request), one connection each, opened over
  ~2 s and held to their end. Every stream must end in ``done`` then ``data: [DONE]`` and carry every delta. Reported:
  errors, peak RSS (sampled every 0.5 s, and the kernel's high-water mark), RSS per open stream, RSS 5 s after the
  last stream ended against idle (leak check, within 10 %), and the sidecar's CPU while all streams are open.
  Goals: 0 errors, peak <= 250 MiB, back within 10 % of idle.

    .venv/bin/python bench/footprint.py --quick       # 100 streams of 5 s (~30 s)
    .venv/bin/python bench/footprint.py               # 1,000 streams of 20 s (~1.5 min on 2 vCPUs)
    .venv/bin/python bench/footprint.py --seconds 5 --rounds 4   # leak or retention? RSS after each round
    .venv/bin/python bench/footprint.py --streams 2000 --seconds 30 --json out.json

The mock and the sidecar are run.py's (``start_mock`` with ``deltas``/``port``, ``start_sidecar`` with a 10 ms
``poll``), so nothing of run.py's set-up is copied here.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from run import (
    VENV_PYTHON,
    Connection,
    Processes,
    ProtocolError,
    Target,
    choose_cpus,
    cpu_seconds,
    exchange,
    http_get_json,
    run_async,
    sidecar_target,
    start_mock,
    start_sidecar,
)

GOAL_STARTUP_S = 1.0
GOAL_IDLE_MIB = 60.0
GOAL_PEAK_MIB = 250.0
LEAK_TOLERANCE = 0.10
"""RSS after the streams must be back within 10 % of idle."""

SERVER_LIMITS = "[server]\nmax_streams = 100000\nmax_streams_per_workload = 100000\n"
"""Admission limits lifted: the default (64 streams) would refuse all but 64 of them."""
STARTS = 5
POLL_S = 0.01
WARMUP_STREAMS = 10
SETTLE_S = 1.0
SAMPLE_S = 0.5
AFTER_S = 5.0
"""Seconds after the last stream at which RSS is read (``--after-seconds``)."""
RAMP_S = 2.0
MOCK_DEFAULT_DELTAS = 5
"""Text deltas of the mock's stream as run.py's ``start_mock`` starts it."""
MOCK_EXTRA_EVENTS = 6
"""Events of the mock's stream besides the text deltas (message_start … message_stop): the stream lasts
``deltas + MOCK_EXTRA_EVENTS - 1`` delays, the first event going out at once."""
TEXT_DELTA = b'"type":"text_delta"'


# ----- processes ------------------------------------------------------------------------------------------------


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit: one socket per stream here, and the sidecar (which inherits the
    limit) holds two per stream (client and upstream)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def proc_status_kib(pid: int, key: str) -> int | None:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_mib(pid: int) -> float | None:
    kib = proc_status_kib(pid, "VmRSS")
    return None if kib is None else kib / 1024


def measure_startup(
    procs: Processes, args: argparse.Namespace, cpu: int | None, workdir: Path, mock_port: int
) -> list[float]:
    """Seconds from spawn to the first 200 from ``/healthz`` (asked every 10 ms), for ``STARTS`` fresh sidecars."""
    times = []
    for _ in range(STARTS):
        started = time.perf_counter()
        sidecar, _, _ = start_sidecar(
            procs, args.python, cpu, workdir, mock_port, None, None, None, [], SERVER_LIMITS, poll=POLL_S
        )
        times.append(time.perf_counter() - started)
        procs.stop(sidecar)
    return times


# ----- the streams ----------------------------------------------------------------------------------------------


@dataclass
class Hold:
    """What the concurrent run saw: per-stream outcomes, and samples of the sidecar every ``SAMPLE_S``."""

    errors: Counter[str] = field(default_factory=Counter)
    ttfb: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    open: int = 0
    max_open: int = 0
    samples: list[tuple[float, float | None, int, float | None]] = field(default_factory=list)
    """(seconds since the first stream, sidecar RSS MiB, streams open, sidecar CPU % since the previous sample)."""
    first_done: asyncio.Event = field(default_factory=asyncio.Event)


async def one_stream(target: Target, deltas: int, stream_timeout: float, hold: Hold) -> None:
    conn = Connection(target.port)
    hold.open += 1
    hold.max_open = max(hold.max_open, hold.open)
    try:
        async with asyncio.timeout(stream_timeout):
            reader, writer = await conn.ensure()
            reply = await exchange(reader, writer, target.request, target.marker)
    except TimeoutError:
        hold.errors["timeout"] += 1
        return
    except (OSError, ProtocolError, ValueError, asyncio.IncompleteReadError) as exc:
        hold.errors[type(exc).__name__] += 1
        return
    finally:
        conn.close()
        hold.open -= 1
        hold.first_done.set()
    if reply.status != 200:
        hold.errors[f"HTTP {reply.status}"] += 1
    elif not target.complete(reply.body):
        hold.errors["no terminal done + [DONE]"] += 1
    elif (seen := reply.body.count(TEXT_DELTA)) != deltas:
        hold.errors[f"{seen} of {deltas} deltas"] += 1
    else:
        hold.ttfb.append(reply.ttfb or 0.0)
        hold.ttft.append(reply.ttft or 0.0)
        hold.total.append(reply.total)


async def warm_up(target: Target, count: int, deltas: int) -> Counter[str]:
    hold = Hold()
    await asyncio.gather(*(one_stream(target, deltas, 30.0, hold) for _ in range(count)))
    return hold.errors


async def sample(pid: int, hold: Hold, started: float, stop: asyncio.Event) -> None:
    last_at, last_cpu = time.perf_counter(), cpu_seconds(pid)
    while not stop.is_set():
        now, cpu = time.perf_counter(), cpu_seconds(pid)
        busy = None if cpu is None or last_cpu is None or now <= last_at else 100 * (cpu - last_cpu) / (now - last_at)
        hold.samples.append((now - started, rss_mib(pid), hold.open, busy))
        last_at, last_cpu = now, cpu
        try:
            await asyncio.wait_for(stop.wait(), SAMPLE_S)
        except TimeoutError:
            pass


def minus(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def percent(before: float | None, after: float | None, seconds: float) -> float | None:
    """CPU seconds between two readings as % of one core over ``seconds``."""
    used = minus(after, before)
    return None if used is None else 100.0 * used / seconds


async def run_streams(
    target: Target, streams: int, deltas: int, stream_timeout: float, pids: dict[str, int]
) -> dict[str, Any]:
    """Open ``streams`` streams over ``RAMP_S``, hold them to their end, then watch the sidecar settle."""
    hold = Hold()
    sidecar = pids["sidecar"]
    stop = asyncio.Event()
    started = time.perf_counter()
    sampler = asyncio.create_task(sample(sidecar, hold, started, stop))
    sidecar_cpu_start = cpu_seconds(sidecar)
    tasks = []
    for i in range(streams):
        tasks.append(asyncio.create_task(one_stream(target, deltas, stream_timeout, hold)))
        await asyncio.sleep(max(0.0, started + RAMP_S * (i + 1) / streams - time.perf_counter()))
    ramp_done = time.perf_counter()
    # CPU while every stream is open: from the end of the ramp to the first stream's end.
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()} | {"loadgen": cpu_seconds(None)}
    await hold.first_done.wait()
    held = time.perf_counter() - ramp_done
    cpu_after = {name: cpu_seconds(pid) for name, pid in pids.items()} | {"loadgen": cpu_seconds(None)}
    await asyncio.gather(*tasks)
    ended = time.perf_counter()
    sidecar_cpu_end = cpu_seconds(sidecar)
    await asyncio.sleep(AFTER_S)
    stop.set()
    await sampler
    return {
        "hold": hold,
        "ramp_s": ramp_done - started,
        "held_s": held,
        "hold_cpu_percent": {
            name: percent(before, cpu_after[name], held) if held >= 1.0 else None  # /proc counts 10 ms ticks
            for name, before in cpu_before.items()
        },
        "all_ended_s": ended - started,
        "sidecar_cpu_s": minus(sidecar_cpu_end, sidecar_cpu_start),
        "rss_after_mib": rss_mib(sidecar),
        "hwm_mib": (proc_status_kib(sidecar, "VmHWM") or 0) / 1024,
    }


# ----- report ---------------------------------------------------------------------------------------------------


@dataclass
class Result:
    streams: int
    rounds: int
    seconds: float
    delay_ms: float
    deltas: int
    startup_s: list[float]
    startup_median_s: float
    idle_rss_mib: float
    errors: int
    error_kinds: dict[str, int]
    max_open: int
    peak_rss_mib: float
    hwm_rss_mib: float
    rss_per_stream_kib: float
    rss_after_mib: float
    back_within_10pct: bool
    ramp_s: float
    hold_s: float
    """From the end of the ramp to the first stream's end: every stream open."""
    all_ended_s: float
    hold_cpu_percent: dict[str, float | None]
    sidecar_cpu_us_per_delta: float | None
    """The sidecar's CPU time over the whole run (ramp to last stream) per text delta delivered."""
    stream_total_s: dict[str, float | None]
    ttfb_ms: dict[str, float | None]
    ttft_ms: dict[str, float | None]
    upstream_calls: int
    samples: list[tuple[float, float | None, int, float | None]]
    later_rounds: list[dict[str, Any]]
    """``--rounds`` > 1: errors, peak RSS and RSS after of each further round on the same sidecar. Python keeps freed
    memory in its arenas, so RSS after round 1 shows retention as well as leaks; a leak grows round after round."""
    goals: dict[str, bool] = field(default_factory=dict)


def quantiles(values: list[float], scale: float = 1.0) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)
    return {
        "p50": statistics.median(ordered) * scale,
        "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * scale,
        "max": ordered[-1] * scale,
    }


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(r: Result) -> str:
    cpu = r.hold_cpu_percent
    total, ttfb, ttft = r.stream_total_s, r.ttfb_ms, r.ttft_ms
    nominal = (r.deltas + MOCK_EXTRA_EVENTS - 1) * r.delay_ms / 1000.0
    rows = [
        (
            "start-up, median of 5 (spawn to /healthz 200)",
            f"{r.startup_median_s * 1000:,.0f} ms",
            "<= 1,000 ms",
            "startup",
        ),
        ("idle RSS (after 10 warm-up streams, +1 s)", f"{fmt(r.idle_rss_mib)} MiB", "<= 60 MiB", "idle"),
        (f"errors ({r.streams} streams, {r.deltas} deltas each)", f"{r.errors}", "0", "errors"),
        ("streams open at once (max)", f"{r.max_open}", "", ""),
        ("streams opened over / all ended after", f"{r.ramp_s:.1f} s / {r.all_ended_s:.1f} s", "", ""),
        (
            "peak RSS (0.5 s samples / kernel VmHWM)",
            f"{fmt(r.peak_rss_mib)} / {fmt(r.hwm_rss_mib)} MiB",
            "<= 250 MiB",
            "peak",
        ),
        ("RSS per open stream ((peak - idle) / streams)", f"{fmt(r.rss_per_stream_kib)} KiB", "", ""),
        (
            f"RSS {AFTER_S:g} s after the last stream",
            f"{fmt(r.rss_after_mib)} MiB ({fmt(100 * (r.rss_after_mib / r.idle_rss_mib - 1), 0)}% vs idle)",
            "within 10% of idle",
            "leak",
        ),
        (f"sidecar CPU while all open ({fmt(r.hold_s)} s)", f"{fmt(cpu.get('sidecar'), 0)}% of a core", "", ""),
        ("sidecar CPU per delta, whole run", f"{fmt(r.sidecar_cpu_us_per_delta, 0)} us", "", ""),
        ("mock / load generator CPU meanwhile", f"{fmt(cpu.get('mock'), 0)}% / {fmt(cpu.get('loadgen'), 0)}%", "", ""),
        (
            f"stream duration p50 / max (paced: {nominal:g} s)",
            f"{fmt(total['p50'], 2)} / {fmt(total['max'], 2)} s",
            "",
            "",
        ),
        ("TTFB p50 / p99 (the sidecar's start frame)", f"{fmt(ttfb['p50'])} / {fmt(ttfb['p99'])} ms", "", ""),
        ("TTFT p50 / p99 (first text delta)", f"{fmt(ttft['p50'])} / {fmt(ttft['p99'])} ms", "", ""),
        (f"upstream calls (mock /stats), {r.rounds} round(s)", f"{r.upstream_calls}", f"{r.rounds * r.streams}", ""),
    ]
    header = ("measure", "value", "goal", "")
    cells = [(a, b, c, ("PASS" if r.goals[g] else "FAIL") if g else "") for a, b, c, g in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    return "\n".join(lines)


# ----- main -----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="100 streams of 5 s")
    p.add_argument("--streams", type=int, help="concurrent streams (default 1000; quick 100)")
    p.add_argument("--seconds", type=float, help="length of each paced stream (default 20; quick 5)")
    p.add_argument("--delay-ms", type=float, default=50.0, help="the mock's delay between SSE events (default 50)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the concurrent streams N times on one sidecar (leak check; default 1)",
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument(
        "--after-seconds",
        type=float,
        default=AFTER_S,
        help=f"when to read RSS after the last stream (default {AFTER_S:g})",
    )
    p.add_argument(
        "--python",
        default=str(VENV_PYTHON if VENV_PYTHON.exists() else sys.executable),
        help="interpreter for the mock upstream and the sidecar (default .venv/bin/python)",
    )
    p.add_argument("--json", type=Path, help="write the results as JSON to this path")
    args = p.parse_args(argv)
    args.streams = args.streams or (100 if args.quick else 1000)
    args.seconds = args.seconds or (5.0 if args.quick else 20.0)
    if not 1 <= args.rounds <= 10:
        p.error("--rounds must be between 1 and 10")
    if not 1 <= args.streams <= 20000:
        p.error("--streams must be between 1 and 20000")
    if not 0 < args.seconds <= 600 or not 1 <= args.delay_ms <= 10000:
        p.error("--seconds must be in (0, 600] and --delay-ms in [1, 10000]")
    args.deltas = max(1, round(args.seconds * 1000.0 / args.delay_ms))
    return args


def peak_rss(hold: Hold, idle: float) -> float:
    return max((s[1] for s in hold.samples if s[1] is not None), default=idle)


def round_line(out: dict[str, Any], idle: float) -> str:
    hold: Hold = out["hold"]
    after = out["rss_after_mib"] or 0.0
    return (
        f"{sum(hold.errors.values())} errors, peak RSS {peak_rss(hold, idle):.1f} MiB, "
        f"{AFTER_S:g} s after {after:.1f} MiB ({100 * (after / idle - 1):+.0f}% vs idle)"
    )


def measure(
    args: argparse.Namespace, procs: Processes, workdir: Path, load_cpu: int | None, sidecar_cpu: int | None
) -> Result:
    mock, mock_port = start_mock(procs, args.python, load_cpu, 0)
    startup = measure_startup(procs, args, sidecar_cpu, workdir, mock_port)
    print(f"start-up: {', '.join(f'{s * 1000:.0f}' for s in startup)} ms", flush=True)

    sidecar, port, _ = start_sidecar(
        procs, args.python, sidecar_cpu, workdir, mock_port, None, None, None, [], SERVER_LIMITS
    )
    target = sidecar_target(port)
    warm_errors = run_async(warm_up(target, WARMUP_STREAMS, MOCK_DEFAULT_DELTAS))
    if warm_errors:
        raise RuntimeError(f"warm-up streams failed: {dict(warm_errors)}")
    time.sleep(SETTLE_S)
    idle = rss_mib(sidecar.pid) or 0.0
    print(f"idle RSS: {idle:.1f} MiB", flush=True)

    # The same port (the sidecar's upstream URL), now pacing the long streams' deltas.
    procs.stop(mock)
    mock, _ = start_mock(procs, args.python, load_cpu, args.delay_ms, deltas=args.deltas, port=mock_port)
    calls_before = http_get_json(mock_port, "/stats")["requests"]
    print(f"{args.streams} streams of {args.deltas} deltas every {args.delay_ms:g} ms ...", flush=True)
    stream_timeout = 3 * args.seconds + 60.0
    pids = {"sidecar": sidecar.pid, "mock": mock.pid}
    rounds = [run_async(run_streams(target, args.streams, args.deltas, stream_timeout, pids))]
    print(f"round 1: {round_line(rounds[0], idle)}", flush=True)
    for _ in range(args.rounds - 1):
        rounds.append(run_async(run_streams(target, args.streams, args.deltas, stream_timeout, pids)))
        print(f"round {len(rounds)}: {round_line(rounds[-1], idle)}", flush=True)
    out = rounds[0]
    hold: Hold = out["hold"]
    calls = http_get_json(mock_port, "/stats")["requests"] - calls_before
    peak = peak_rss(hold, idle)
    after = out["rss_after_mib"] or 0.0
    errors = sum(hold.errors.values())
    back = abs(after - idle) <= LEAK_TOLERANCE * idle
    startup_median = statistics.median(startup)
    return Result(
        streams=args.streams,
        rounds=args.rounds,
        seconds=args.seconds,
        delay_ms=args.delay_ms,
        deltas=args.deltas,
        startup_s=startup,
        startup_median_s=startup_median,
        idle_rss_mib=idle,
        errors=errors,
        error_kinds=dict(hold.errors),
        max_open=hold.max_open,
        peak_rss_mib=peak,
        hwm_rss_mib=out["hwm_mib"],
        rss_per_stream_kib=(peak - idle) * 1024 / args.streams,
        rss_after_mib=after,
        back_within_10pct=back,
        ramp_s=out["ramp_s"],
        hold_s=out["held_s"],
        all_ended_s=out["all_ended_s"],
        hold_cpu_percent=out["hold_cpu_percent"],
        sidecar_cpu_us_per_delta=(
            out["sidecar_cpu_s"] * 1e6 / (len(hold.total) * args.deltas)
            if out["sidecar_cpu_s"] and hold.total
            else None
        ),
        stream_total_s=quantiles(hold.total),
        ttfb_ms=quantiles(hold.ttfb, 1000.0),
        ttft_ms=quantiles(hold.ttft, 1000.0),
        upstream_calls=calls,
        samples=hold.samples,
        later_rounds=[
            {
                "errors": sum(r["hold"].errors.values()),
                "peak_rss_mib": peak_rss(r["hold"], idle),
                "rss_after_mib": r["rss_after_mib"],
            }
            for r in rounds[1:]
        ],
        goals={
            "startup": startup_median <= GOAL_STARTUP_S,
            "idle": idle <= GOAL_IDLE_MIB,
            "errors": errors == 0,
            "peak": peak <= GOAL_PEAK_MIB and errors == 0,
            "leak": back,
        },
    )


def main(argv: list[str] | None = None) -> int:
    global AFTER_S
    args = parse_args(argv)
    AFTER_S = args.after_seconds  # read by the round and the report
    nofile = raise_nofile()
    if nofile < 2 * args.streams + 200:
        print(f"footprint: RLIMIT_NOFILE is {nofile}, too low for {args.streams} streams", file=sys.stderr)
        return 1
    load_cpu, sidecar_cpu, pin_text = choose_cpus(args.no_pin)
    if load_cpu is not None:
        os.sched_setaffinity(0, {load_cpu})

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    procs = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="sidecar-footprint-"))
    started_at = dt.datetime.now(dt.UTC)
    print(f"pi-sidecar footprint  {started_at:%Y-%m-%d %H:%M UTC}  python {platform.python_version()}")
    print(f"pinning: {pin_text}; RLIMIT_NOFILE {nofile}")
    print(f"machine load average before: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs", flush=True)
    try:
        result = measure(args, procs, workdir, load_cpu, sidecar_cpu)
        log = workdir / "sidecar.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        bad = [line for line in lines if " WARNING " in line or " ERROR " in line or "Traceback" in line]
    except KeyboardInterrupt:
        print("\ninterrupted; stopping subprocesses", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"footprint: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(table(result))
    if result.error_kinds:
        print(f"errors: {result.error_kinds}")
    print(f"sidecar log: {len(lines)} lines, {len(bad)} warnings/errors" + (f"; first: {bad[0][:200]}" if bad else ""))
    print(f"machine load average after: {os.getloadavg()[0]:.2f} (1 min)")
    if args.json:
        payload = {
            "date": started_at.isoformat(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "pinning": pin_text,
            "quick": args.quick,
            "result": dataclasses.asdict(result),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"JSON results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
