"""A/B the sidecar under bench-only what-if patches: interleaved rounds of ``bench/run.py --targets sidecar``.

    .venv/bin/python bench/compare.py                                   # plain and sniffio; 3 rounds
    .venv/bin/python bench/compare.py --rounds 3 plain sniffio log-warning

A configuration is ``plain`` or what-ifs joined with ``+`` (see bench/profile_sidecar.py: ``sniffio``),
plus ``log-warning`` (``SIDECAR_LOG_LEVEL=warning``, a real setting, no patch). Every round runs every
configuration once, in order, so slow drifts of the machine hit all of them alike; the table shows medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from profile_sidecar import WHAT_IFS  # the one list of what-ifs (bench/ is on sys.path when run as a script)

BENCH = Path(__file__).resolve().parent


def config_args(config: str) -> list[str]:
    args: list[str] = []
    if config == "plain":
        return args
    for part in config.split("+"):
        if part == "log-warning":
            args += ["--sidecar-log-level", "warning"]
        elif part in WHAT_IFS:
            args += ["--what-if", part]
        else:
            raise SystemExit(f"unknown configuration part {part!r} (plain, log-warning, {', '.join(WHAT_IFS)})")
    return args


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", default=["plain", "sniffio"])
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3, at most 10)")
    parser.add_argument("--duration", type=float, default=6.0, help="time cap of each c=50 run (default 6 s)")
    parser.add_argument("--requests", type=int, default=500, help="requests per c=1 run (default 500)")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 10:
        parser.error("--rounds must be between 1 and 10")
    for config in args.configs:
        config_args(config)  # validate before starting anything

    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="sidecar-compare-") as tmp:
        for round_no in range(1, args.rounds + 1):
            for config in args.configs:
                out = Path(tmp) / f"{config}-{round_no}.json"
                cmd = [
                    sys.executable,
                    str(BENCH / "run.py"),
                    "--targets",
                    "sidecar",
                    "--concurrency",
                    "1,50",  # the levels this table reports (run.py's default also has 4, for the omp comparison)
                    "--duration",
                    str(args.duration),
                    "--requests",
                    str(args.requests),
                    "--json",
                    str(out),
                    *config_args(config),
                ]
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
                if done.returncode != 0 or not out.exists():
                    print(f"round {round_no} {config}: failed\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
                    return 1
                for r in json.loads(out.read_text())["results"]:
                    runs.setdefault((config, r["concurrency"]), []).append(r)
                line = ", ".join(
                    f"c={r['concurrency']} {r['rps']:.0f}/s (other processes "
                    f"{fmt(r['cpu_percent'].get('other processes'))}% CPU, probe {fmt(r.get('probe_ms'), 1)} ms)"
                    for r in json.loads(out.read_text())["results"]
                )
                print(f"round {round_no} {config:<24} {line}", flush=True)

    print()
    print(
        "| configuration | c=1 req/s | c=1 TTFT p50 ms | c=50 req/s | c=50 TTFT p50/p99 ms | sidecar CPU us/stream "
        "| upstream conns/stream | other CPU% max | probe ms max |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    base: float | None = None
    for config in args.configs:
        one, fifty = runs.get((config, 1), []), runs.get((config, 50), [])
        rps1 = median([r["rps"] for r in one])
        rps50 = median([r["rps"] for r in fifty])
        ttft1 = median([r["ttft_ms"]["p50"] for r in one if r["ttft_ms"]["p50"] is not None])
        t50 = median([r["ttft_ms"]["p50"] for r in fifty if r["ttft_ms"]["p50"] is not None])
        t99 = median([r["ttft_ms"]["p99"] for r in fifty if r["ttft_ms"]["p99"] is not None])
        sent = sum(r["sent"] for r in one + fifty)
        conns = sum(r["upstream_connections"] for r in one + fifty)
        others = [r["cpu_percent"].get("other processes") for r in one + fifty]
        other = max((o for o in others if o is not None), default=None)
        cpu_us = median([r["sidecar_cpu_us_per_stream"] for r in fifty if r.get("sidecar_cpu_us_per_stream")])
        probe = max((r["probe_ms"] for r in one + fifty if r.get("probe_ms")), default=None)
        if config == "plain":
            base = rps50
        gain = f" ({100 * (rps50 / base - 1):+.0f}%)" if base and rps50 and config != "plain" else ""
        print(
            f"| {config} | {fmt(rps1)} | {fmt(ttft1, 2)} | {fmt(rps50)}{gain} | {fmt(t50, 1)} / {fmt(t99, 1)} "
            f"| {fmt(cpu_us)} | {conns / sent if sent else 0:.2f} | {fmt(other)} | {fmt(probe, 1)} |"
        )
    print(f"\n(medians of {args.rounds} interleaved rounds; c=1: {args.requests} requests; c=50: {args.duration:g} s)")
    print("(sidecar CPU us/stream: the sidecar's CPU time per successful stream at c=50, median)")
    print("(other CPU%: CPU used by processes outside the benchmark during a run, in % of one core; high = noisy)")
    print("(probe ms: a fixed pure-Python loop timed on the sidecar's core before each run; high = slow host)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
