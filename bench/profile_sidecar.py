"""Run the sidecar CLI under a profiler, or with a what-if patch (benchmark only; the sidecar code is not touched).

    python bench/profile_sidecar.py --mode cprofile|sample|none [--what-if sniffio] --out PATH -- serve --config ...

Profiling is off until the process gets SIGUSR1 and pauses on SIGUSR2 (``bench/run.py --profile`` sends them around
each measured sidecar run, so start-up, warm-up and the direct runs stay out of the profile); ``--from-start``
profiles everything. The report is written when the sidecar exits cleanly.

``cprofile``: deterministic, every Python call. It roughly doubles the cost of Python code and not of C code, so
use it for *where* time goes, not *how much*. Writes ``PATH`` (pstats) and ``PATH.txt``: own time per package, then
the top functions by own and by cumulative time.

``sample``: a stdlib wall-clock stack sampler: a thread reads the main thread's stack every ``--interval-ms``.
Writes ``PATH`` (collapsed stacks for flamegraph.pl / speedscope) and ``PATH.txt``. Caveat: the sampler needs the
GIL, which the main thread drops at blocking system calls (``stat``, ``write``, ``getrandom`` …) and otherwise only
every switch interval, so samples pile up on system calls: it shows *which* syscalls happen per request, but
overstates their share. Samples whose innermost Python frame is the event loop's ``run`` are time in C (uvloop I/O,
idle waiting).

What-ifs (to measure a suggested fix without editing the sidecar). Three earlier ones landed and were removed:
``lean-sse`` (the sidecar's own SSE response, ``sidecar/sse_response.py``), ``httpx2`` (the upstream client) and
``drain`` (``providers.base._drain``); bench/README.md keeps their figures.

* ``sniffio``: put an in-memory copy of sniffio 1.3.1's API and detection logic in ``sys.modules`` before anything
  is imported (what ``pip install sniffio`` would do). httpcore 1.0.9 runs ``import sniffio`` every time it sets up
  a lock, an event or a cancellation shield; since anyio 4.12 no longer depends on sniffio, that import fails every
  time and searches ``sys.path`` on disk (~30-40 us per attempt, 7 per stream here). Upstream: encode/httpcore
  discussion #1102 and PR #1103; anyio PR #1021. With sniffio present, anyio also routes its own backend detection
  through it, so this measures the net effect.
"""

from __future__ import annotations

import argparse
import collections
import contextvars
import cProfile
import io
import pstats
import signal
import sys
import sysconfig
import threading
import time
import types
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_PREFIXES = ("/site-packages/", str(ROOT) + "/", sysconfig.get_paths()["stdlib"] + "/")


def _short(filename: str) -> str:
    for marker in _PREFIXES:
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _package(filename: str) -> str:
    """The top-level package (or stdlib module) a code object belongs to."""
    if filename == "~":
        return "(C builtins)"
    if filename.startswith("<frozen"):
        return "importlib (frozen)"
    if "/site-packages/" in filename:
        return filename.split("/site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if filename.startswith(str(ROOT) + "/"):
        return filename.removeprefix(str(ROOT) + "/").split("/", 1)[0].removesuffix(".py")
    stdlib = sysconfig.get_paths()["stdlib"] + "/"
    if filename.startswith(stdlib):
        return "stdlib " + filename.removeprefix(stdlib).split("/", 1)[0].removesuffix(".py")
    return filename


class Sampler(threading.Thread):
    def __init__(self, target_ident: int, interval: float) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.target_ident = target_ident
        self.interval = interval
        self.stacks: Counter[tuple[str, ...]] = Counter()
        self.active = threading.Event()
        self.stopped = threading.Event()
        self.samples = 0

    def run(self) -> None:
        frames = sys._current_frames
        limit = 50_000_000  # bounded: far beyond any benchmark run
        while not self.stopped.is_set() and self.samples < limit:
            if not self.active.wait(0.5):
                continue
            frame = frames().get(self.target_ident)
            if frame is not None:
                stack: list[str] = []
                depth = 0
                while frame is not None and depth < 200:
                    code = frame.f_code
                    stack.append(f"{code.co_name} ({_short(code.co_filename)}:{code.co_firstlineno})")
                    frame = frame.f_back
                    depth += 1
                self.stacks[tuple(reversed(stack))] += 1
                self.samples += 1
            time.sleep(self.interval)

    def write(self, out: Path) -> None:
        with out.open("w") as fh:
            for stack, count in self.stacks.most_common():
                fh.write(";".join(f.replace(";", ",") for f in stack) + f" {count}\n")
        total = sum(self.stacks.values()) or 1
        own: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        for stack, count in self.stacks.items():
            own[stack[-1]] += count
            for f in set(stack):
                inclusive[f] += count
        lines = [f"{total} samples of the main thread", "", "top frames by self samples (innermost Python frame):"]
        lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(30)]
        lines += ["", "top frames by inclusive samples (frame anywhere on the stack):"]
        lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(70)]
        Path(str(out) + ".txt").write_text("\n".join(lines) + "\n")


def write_cprofile(profiler: cProfile.Profile, out: Path) -> None:
    profiler.dump_stats(str(out))
    stats = pstats.Stats(str(out))
    own: collections.Counter[str] = collections.Counter()
    raw = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in raw.items():
        if filename == "~" and "run_until_complete" in name:
            continue  # the event loop's own C frame: mostly idle time in epoll
        own[_package(filename)] += tottime
    total = sum(own.values()) or 1.0
    buf = io.StringIO()
    buf.write(f"=== own time per package ({total:.2f} s profiled, event loop idle excluded) ===\n")
    for package, seconds in own.most_common(25):
        buf.write(f"  {seconds:7.3f} s  {100 * seconds / total:5.1f}%  {package}\n")
    stats = pstats.Stats(str(out), stream=buf)
    stats.strip_dirs()
    buf.write("\n=== top 40 functions by own time (tottime) ===\n")
    stats.sort_stats("tottime").print_stats(40)
    buf.write("=== top 60 functions by cumulative time ===\n")
    stats.sort_stats("cumulative").print_stats(60)
    Path(str(out) + ".txt").write_text(buf.getvalue())


def sniffio_module() -> types.ModuleType:
    """The public API of sniffio 1.3.1 with the same detection logic (curio left out), as an in-memory module."""
    module = types.ModuleType("sniffio")
    cvar: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_async_library_cvar", default=None)

    class _ThreadLocal(threading.local):
        name: str | None = None

    class AsyncLibraryNotFoundError(RuntimeError):
        pass

    thread_local = _ThreadLocal()

    def current_async_library() -> str:
        value = thread_local.name
        if value is not None:
            return value
        value = cvar.get()
        if value is not None:
            return value
        if "asyncio" in sys.modules:
            import asyncio

            try:
                if asyncio.current_task() is not None:
                    return "asyncio"
            except RuntimeError:
                pass
        raise AsyncLibraryNotFoundError("unknown async library, or not in async context")

    module.__dict__.update(
        current_async_library=current_async_library,
        AsyncLibraryNotFoundError=AsyncLibraryNotFoundError,
        current_async_library_cvar=cvar,
        thread_local=thread_local,
        __version__="1.3.1",
    )
    return module


WHAT_IFS = ("sniffio",)


def apply_what_if(name: str) -> None:
    if name == "sniffio":
        # Before anything imports anyio or httpcore, so both see it exactly as if sniffio were installed.
        sys.modules["sniffio"] = sniffio_module()
    else:
        raise SystemExit(f"unknown what-if {name!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["cprofile", "sample", "none"], default="none")
    parser.add_argument("--out", type=Path, help="profile output (required unless --mode none)")
    parser.add_argument("--interval-ms", type=float, default=1.0, help="sampler interval (default 1 ms)")
    parser.add_argument("--from-start", action="store_true", help="profile from start-up, not from SIGUSR1")
    parser.add_argument("--what-if", action="append", default=[], choices=WHAT_IFS, help="apply a what-if patch")
    parser.add_argument("sidecar_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.mode != "none" and args.out is None:
        parser.error("--out is required with a profiler")
    sidecar_args = args.sidecar_args[1:] if args.sidecar_args[:1] == ["--"] else args.sidecar_args
    sys.path.insert(0, str(ROOT))
    for what_if in sorted(args.what_if, key=WHAT_IFS.index):  # sniffio first: before anything imports anyio
        apply_what_if(what_if)
    from sidecar.cli import main as sidecar_main

    # uvicorn re-raises the SIGTERM it caught once it has shut down; with the default disposition that would kill the
    # process before the profile is written, so make the re-raised signal a no-op.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    if args.mode == "none":
        return sidecar_main(sidecar_args)

    if args.mode == "cprofile":
        profiler = cProfile.Profile()
        signal.signal(signal.SIGUSR1, lambda signum, frame: profiler.enable())
        signal.signal(signal.SIGUSR2, lambda signum, frame: profiler.disable())
        if args.from_start:
            profiler.enable()
        try:
            return sidecar_main(sidecar_args)
        finally:
            profiler.disable()
            write_cprofile(profiler, args.out)

    sampler = Sampler(threading.main_thread().ident or 0, args.interval_ms / 1000.0)
    signal.signal(signal.SIGUSR1, lambda signum, frame: sampler.active.set())
    signal.signal(signal.SIGUSR2, lambda signum, frame: sampler.active.clear())
    if args.from_start:
        sampler.active.set()
    sampler.start()
    try:
        return sidecar_main(sidecar_args)
    finally:
        sampler.stopped.set()
        sampler.active.set()
        sampler.join(5)
        sampler.write(args.out)


if __name__ == "__main__":
    raise SystemExit(main())
