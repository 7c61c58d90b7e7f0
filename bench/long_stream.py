"""The cost of one text delta as the message grows (issue #12), per wire format.

The pi-native route re-serialises the whole growing ``partial`` message on every frame (``sidecar/stream.py``,
``MessageAssembler`` + ``PiEncoder``), so a delta late in a long answer costs more than an early one; the ingress
formats (``sidecar/ingress/*.py``) send only the delta. In-process, no server: one ``MessageAssembler`` per format with
that format's ``encoder(request, model, generation_id)`` (as ``sidecar/serving.py`` builds it, from a request decoded by
the format's own ``decode``), fed ``--deltas`` ``TextDelta``s of ``--chars`` characters (a few words, a newline now and
then). Reported per format: µs per delta, median of the first 100 and of the last 100, the size of the last
delta's frame and of all delta frames together (what the client downloads).

``--end-to-end`` also runs the real sidecar (pinned as ``bench/run.py`` pins it) against the mock upstream with
``--deltas`` text deltas, and compares the sidecar's CPU time per stream with that of a 5-delta stream (the mock's
deltas are the fixture's ``67890]``, 6 characters each).

    .venv/bin/python bench/long_stream.py                 # in-process, every format (~5 s)
    .venv/bin/python bench/long_stream.py --end-to-end    # and through the real sidecar (~10 s)
    .venv/bin/python bench/long_stream.py --end-to-end --delay-ms 2 --streams 3   # paced events (~30 s)
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from footprint import MOCK_DEFAULT_DELTAS, Hold, one_stream, warm_up
from run import (
    VENV_PYTHON,
    Processes,
    Target,
    choose_cpus,
    run_async,
    sidecar_target,
    start_mock,
    start_sidecar,
)

from sidecar.config import Limits
from sidecar.ingress import FORMATS
from sidecar.models import ModelSpec, Pricing
from sidecar.providers.base import Finish, TextDelta, UsageUpdate
from sidecar.stream import MessageAssembler

MODEL = ModelSpec(
    provider="anthropic",
    id="claude-sonnet-4-5",
    api="anthropic-messages",
    base_url="",
    pricing=Pricing(3, 15, 0.3, 3.75),
)
MODEL_ID = "anthropic/claude-sonnet-4-5"
WORDS = "the sidecar holds the key and streams every token of a long answer back to its agent".split()
EDGE = 100
"""Deltas in the 'first' and 'last' windows."""

REQUESTS: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "pi": ({"modelId": MODEL_ID, "context": {"messages": [{"role": "user", "content": "hi", "timestamp": 1}]}}, {}),
    "openai-chat": ({"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "stream": True}, {}),
    "openai-responses": ({"model": MODEL_ID, "input": "hi", "stream": True, "store": False}, {}),
    "anthropic-messages": (
        {"model": MODEL_ID, "max_tokens": 64000, "messages": [{"role": "user", "content": "hi"}], "stream": True},
        {"anthropic-version": "2023-06-01"},
    ),
    "ai-gateway": (
        {"prompt": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
        {"ai-language-model-id": MODEL_ID, "ai-language-model-streaming": "true"},
    ),
}
"""A minimal streamed request per format, decoded by the format itself so its encoder sees what serving gives it."""


def texts(count: int, chars: int) -> list[str]:
    """``count`` deltas of about ``chars`` characters: words, and a newline every tenth delta."""
    out = []
    word = 0
    for i in range(count):
        text = ""
        while len(text) < chars:
            text += WORDS[word % len(WORDS)] + " "
            word += 1
        out.append(text[:chars] + ("\n" if i % 10 == 9 else ""))
    return out


def measure(name: str, deltas: list[str]) -> dict[str, Any]:
    """µs per delta (first and last ``EDGE``) and the last delta's frame size, for one format's encoder."""
    body, headers = REQUESTS[name]
    fmt = FORMATS[name]
    request = fmt.decode(orjson.dumps(body), headers, Limits())
    asm = MessageAssembler(MODEL, encoder=fmt.encoder(request, MODEL, "gen_bench0123456789"))
    asm.start()
    asm.feed(UsageUpdate(input=12, output=1))
    feed = asm.feed
    perf = time.perf_counter_ns
    times: list[int] = []
    size = total = 0
    for text in deltas:
        delta = TextDelta(0, text)
        t0 = perf()
        frames = feed(delta)
        times.append(perf() - t0)
        size = sum(len(f) for f in frames)
        total += size
    asm.feed(Finish("stop"))
    asm.done()
    return {
        "first_us": statistics.median(times[:EDGE]) / 1000,
        "last_us": statistics.median(times[-EDGE:]) / 1000,
        "last_frame_bytes": size,
        "delta_frames_bytes": total,
        "message_chars": sum(len(t) for t in deltas),
    }


def in_process(deltas: list[str], rounds: int) -> dict[str, dict[str, Any]]:
    """Each format ``rounds`` times, interleaved; per format the round with the lowest last-window median (the
    least disturbed by other processes)."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in REQUESTS}
    gc.collect()
    gc.disable()  # a collection inside a timed feed would land in one delta's time at random
    try:
        for name in REQUESTS:
            measure(name, deltas[:EDGE])  # warm-up: imports, caches
        for _ in range(rounds):
            for name in REQUESTS:
                results[name].append(measure(name, deltas))
                gc.collect()
    finally:
        gc.enable()
    return {name: min(runs, key=lambda r: r["last_us"]) for name, runs in results.items()}


# ----- end to end -----------------------------------------------------------------------------------------------


async def sequential(target: Target, count: int, deltas: int, stream_timeout: float) -> None:
    hold = Hold()
    for _ in range(count):
        await one_stream(target, deltas, stream_timeout, hold)
    if hold.errors:
        raise RuntimeError(f"streams failed: {dict(hold.errors)}")


def run_time(pid: int) -> float | None:
    """CPU seconds of all of a process's threads, from the scheduler's nanosecond counters
    (``/proc/<pid>/task/*/schedstat``): run.py's ``cpu_seconds`` counts 10 ms ticks, too coarse for a few streams."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total = 0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as fh:
                total += int(fh.read().split()[0])
        except FileNotFoundError:
            continue  # the thread ended meanwhile
        except (OSError, ValueError, IndexError):
            return None
    return total / 1e9


def end_to_end(python: str, long_deltas: int, streams: int, delay_ms: float) -> dict[str, float]:
    """The sidecar's CPU µs per stream of ``long_deltas`` and of 5 deltas, ``streams`` sequential streams each.

    Unpaced (``delay_ms`` 0), the mock writes a whole stream at once and the sidecar reads many events per read;
    paced, every event is a read and a write of its own, as with a real model."""
    load_cpu, sidecar_cpu, _ = choose_cpus(False)
    if load_cpu is not None:
        os.sched_setaffinity(0, {load_cpu})
    procs = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="sidecar-long-stream-"))
    out: dict[str, float] = {}
    try:
        mock, mock_port = start_mock(procs, python, load_cpu, 0)
        sidecar, port, _ = start_sidecar(procs, python, sidecar_cpu, workdir, mock_port, None, None, None, [])
        target = sidecar_target(port)
        if run_async(warm_up(target, 10, MOCK_DEFAULT_DELTAS)):
            raise RuntimeError("the warm-up streams failed")
        for deltas in (MOCK_DEFAULT_DELTAS, long_deltas):
            procs.stop(mock)  # the same port (the sidecar's upstream URL), now with this many deltas
            mock, _ = start_mock(procs, python, load_cpu, delay_ms, deltas=deltas, port=mock_port)
            before = run_time(sidecar.pid)
            run_async(sequential(target, streams, deltas, 60.0 + 2 * deltas * delay_ms / 1000.0))
            after = run_time(sidecar.pid)
            if before is None or after is None:
                raise RuntimeError("could not read the sidecar's CPU time")
            out[f"cpu_us_per_stream_{deltas}"] = (after - before) * 1e6 / streams
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    short, long = out[f"cpu_us_per_stream_{MOCK_DEFAULT_DELTAS}"], out[f"cpu_us_per_stream_{long_deltas}"]
    out["cpu_us_per_extra_delta"] = (long - short) / (long_deltas - MOCK_DEFAULT_DELTAS)
    return out


# ----- main -----------------------------------------------------------------------------------------------------


def table(results: Mapping[str, dict[str, Any]]) -> str:
    lines = [
        "| format | µs/delta, first 100 | µs/delta, last 100 | last / first | last frame bytes | all delta frames |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['first_us']:.1f} | {r['last_us']:.1f} | {r['last_us'] / r['first_us']:.1f}x "
            f"| {r['last_frame_bytes']:,} | {r['delta_frames_bytes'] / 1e6:.2f} MB |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--deltas", type=int, default=2000, help="text deltas per message (default 2000)")
    p.add_argument("--chars", type=int, default=20, help="characters per delta (default 20)")
    p.add_argument("--rounds", type=int, default=3, help="in-process rounds, the least disturbed reported (default 3)")
    p.add_argument("--end-to-end", action="store_true", help="also measure through the real sidecar")
    p.add_argument("--streams", type=int, default=10, help="end to end: sequential streams per length (default 10)")
    p.add_argument(
        "--delay-ms", type=float, default=0.0, help="end to end: the mock's delay between events (default 0)"
    )
    p.add_argument(
        "--python",
        default=str(VENV_PYTHON if VENV_PYTHON.exists() else sys.executable),
        help="end to end: interpreter for the mock upstream and the sidecar (default .venv/bin/python)",
    )
    args = p.parse_args(argv)
    if not 2 * EDGE <= args.deltas <= 20000 or not 1 <= args.chars <= 1000 or not 1 <= args.rounds <= 20:
        p.error(f"--deltas must be in [{2 * EDGE}, 20000], --chars in [1, 1000], --rounds in [1, 20]")
    if not 1 <= args.streams <= 100 or not (args.delay_ms == 0 or 1 <= args.delay_ms <= 1000):
        # Below 1 ms the mock's uvloop timers fire at once: the stream would not be paced.
        p.error("--streams must be in [1, 100] and --delay-ms 0 or in [1, 1000]")
    print(f"machine load average before: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    print(f"in process: {args.deltas} text deltas of {args.chars} characters, best of {args.rounds} rounds")
    print(table(in_process(texts(args.deltas, args.chars), args.rounds)), flush=True)
    if args.end_to_end:
        try:
            e2e = end_to_end(args.python, args.deltas, args.streams, args.delay_ms)
        except RuntimeError as exc:
            print(f"long_stream: {exc}", file=sys.stderr)
            return 1
        print()
        print(
            f"end to end ({args.streams} sequential streams each, mock delay {args.delay_ms:g} ms, sidecar CPU from "
            "schedstat): "
            f"{e2e['cpu_us_per_stream_5']:,.0f} µs per 5-delta stream, "
            f"{e2e[f'cpu_us_per_stream_{args.deltas}']:,.0f} µs per {args.deltas}-delta stream: "
            f"{e2e['cpu_us_per_extra_delta']:.1f} µs per extra delta"
        )
    print(f"machine load average after: {os.getloadavg()[0]:.2f} (1 min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
