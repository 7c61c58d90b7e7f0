"""Prometheus metrics: what the sidecar served, what it cost, what is failing (``GET /metrics``).

Two kinds of figures, two ways of keeping them:

* **Events** (requests, generations, tokens, cost, retries) are counted when they happen, once per request or per
  generation (a handful of dict lookups: never per streamed event). A generation is counted from its ledger record,
  so ``/metrics`` and the ledger agree by construction.
* **State** (streams in flight, ledger backlog and errors, open realtime sessions) is read from the objects that own
  it when a scrape comes in (``StateSources``), so the hot path pays nothing for it.

With ``serve --workers N`` every worker counts in prometheus-client's multiprocess mode (one mmap file per process in
the directory the supervisor creates; ``Settings.metrics_dir``) and a scrape, whichever worker answers it, sums them.
A worker refreshes its state gauges every second and at each scrape, so another worker's state is at most a second
old in the sum.

No label holds a bearer, a key or any request content: routes are the format names, models and providers are
catalogue ids, the workload is the caller's identity (``workload:<name>`` or ``bearer:<hash prefix>``, as in the
ledger), statuses are numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from .ledger.record import GenerationRecord

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "StateSources"]

# Without this every counter also exports a ``_created`` timestamp series: twice the series for nothing a dashboard
# uses (the process start time is ``process_start_time_seconds``' job). A process-wide switch of the library.
disable_created_metrics()  # type: ignore[no-untyped-call]

TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
"""Seconds to the first token: a cached short prompt answers in tens of milliseconds, a reasoning model in a minute."""
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0)
"""Seconds per generation, up to the long agentic turns (the default idle timeout is 300 s)."""
STATE_REFRESH_SECONDS = 1.0
"""How often a worker publishes its state gauges for the other workers' scrapes (``--workers`` only)."""

_TOKEN_KINDS = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cache_read", "cache_read_tokens"),
    ("cache_write", "cache_write_tokens"),
)


_GenerationSeries = tuple[Counter, Histogram, Histogram, tuple[tuple[Counter, str], ...], Counter]
"""A generation's labelled series: its count, TTFT, duration, tokens (with the record attribute of each), cost."""


@dataclass(frozen=True, slots=True)
class StateSources:
    """Readers of the process's state, called at each scrape (and each second with ``--workers``)."""

    streams_in_flight: Callable[[], int]
    streams_refused: Callable[[], int]
    ledger_pending: Callable[[], int]
    ledger_written: Callable[[], int]
    ledger_write_errors: Callable[[], int]
    ledger_dropped: Callable[[], int]
    realtime_sessions: Callable[[], int]


class Metrics:
    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        """``multiprocess_dir``: the workers' shared directory (prometheus-client's ``PROMETHEUS_MULTIPROC_DIR``,
        which the library also reads when it is imported, to keep its values in files there)."""
        self._multiprocess_dir = multiprocess_dir
        # Every instance has its own registry: tests build many apps in one process, and the multiprocess
        # exposition reads the files, not the registry.
        self.registry = registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "sidecar_requests",
            "HTTP requests answered, by route (the path template) and status",
            ("route", "method", "status"),
            registry=registry,
        )
        model_labels = ("route", "provider", "model")
        self.generations = Counter(
            "sidecar_generations",
            "Generations finished (one per ledger row), by route (wire format), model, outcome (pi stop reason) and "
            "status",
            (*model_labels, "outcome", "status"),
            registry=registry,
        )
        self.ttft = Histogram(
            "sidecar_time_to_first_token_seconds",
            "Time from the request to the first token, per generation that produced one",
            model_labels,
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.duration = Histogram(
            "sidecar_generation_duration_seconds",
            "Time from the request to the generation's end",
            model_labels,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "sidecar_tokens",
            "Tokens by model, workload and kind (input: non-cached input; cache_read, cache_write; output)",
            ("provider", "model", "workload", "kind"),
            registry=registry,
        )
        self.cost = Counter(
            "sidecar_cost_usd",
            "Cost in USD by model and workload, as the ledger records it",
            ("provider", "model", "workload"),
            registry=registry,
        )
        self.retries = Counter(
            "sidecar_upstream_retries",
            "Upstream calls repeated before the first byte, by provider and reason (a status or 'connect')",
            ("provider", "reason"),
            registry=registry,
        )
        self.failovers = Counter(
            "sidecar_upstream_failovers",
            "Generations handed over before their first byte: to another key of the provider (kind=key) or to a "
            "fallback model (kind=model), by the provider that failed and why (a status, 'connect' or 'timeout')",
            ("provider", "kind", "reason"),
            registry=registry,
        )
        live: Literal["livesum"] = "livesum"  # multiprocess: the sum over the workers alive now
        self.streams_in_flight = Gauge(
            "sidecar_streams_in_flight",
            "Generations in flight",
            registry=registry,
            multiprocess_mode=live,
        )
        self.ledger_pending = Gauge(
            "sidecar_ledger_pending_rows",
            "Ledger rows waiting to be written",
            registry=registry,
            multiprocess_mode=live,
        )
        self.realtime_sessions = Gauge(
            "sidecar_realtime_sessions",
            "Realtime WebSocket sessions open",
            registry=registry,
            multiprocess_mode=live,
        )
        self._state_counters = {
            name: Counter(name, text, registry=registry)
            for name, text in (
                ("sidecar_streams_refused", "Generations refused by admission (the stream limits), before any call"),
                ("sidecar_ledger_rows_written", "Ledger rows written to the database"),
                ("sidecar_ledger_write_errors", "Failed ledger writes (the rows are kept and retried)"),
                ("sidecar_ledger_rows_dropped", "Ledger rows dropped because the backlog was over its bound"),
            )
        }
        self._published: dict[str, float] = dict.fromkeys(self._state_counters, 0.0)
        self._series: dict[tuple[str, str, str, str, str, int], _GenerationSeries] = {}
        self._request_series: dict[tuple[str, str, int], Counter] = {}
        self._sources: StateSources | None = None

    # ----- events -----------------------------------------------------------------------------------------------

    def request(self, route: str, method: str, status: int) -> None:
        key = (route, method, status)
        series = self._request_series.get(key)
        if series is None:
            series = self._request_series[key] = self.requests.labels(route, method, str(status))
        series.inc()

    def generation(self, route: str, record: GenerationRecord) -> None:
        """One finished generation, from its ledger row."""
        status = record.error_status or (499 if record.finish_reason == "aborted" else 200)
        key = (route, record.provider, record.model, record.identity, record.finish_reason, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self._generation_series(*key)
        count, ttft, duration, tokens, cost = series
        count.inc()
        if record.ttft_ms is not None:
            ttft.observe(record.ttft_ms / 1000)
        duration.observe(record.generation_ms / 1000)
        for counter, attribute in tokens:
            amount = getattr(record, attribute)
            if amount:
                counter.inc(amount)
        if record.cost_total:
            cost.inc(record.cost_total)

    def _generation_series(
        self, route: str, provider: str, model: str, workload: str, outcome: str, status: int
    ) -> _GenerationSeries:
        """The labelled series one kind of generation counts into, looked up once: ``labels()`` takes a lock and
        builds a key per call, which for the nine series of a generation was most of its cost."""
        return (
            self.generations.labels(route, provider, model, outcome, str(status)),
            self.ttft.labels(route, provider, model),
            self.duration.labels(route, provider, model),
            tuple((self.tokens.labels(provider, model, workload, kind), attr) for kind, attr in _TOKEN_KINDS),
            self.cost.labels(provider, model, workload),
        )

    def retry(self, provider: str, reason: str) -> None:
        self.retries.labels(provider, reason).inc()

    def failover(self, provider: str, kind: str, reason: str) -> None:
        self.failovers.labels(provider, kind, reason).inc()

    # ----- state ------------------------------------------------------------------------------------------------

    def watch(self, sources: StateSources) -> None:
        self._sources = sources

    def publish_state(self) -> None:
        """Copy the process's state into its gauges and counters."""
        sources = self._sources
        if sources is None:
            return
        self.streams_in_flight.set(sources.streams_in_flight())
        self.ledger_pending.set(sources.ledger_pending())
        self.realtime_sessions.set(sources.realtime_sessions())
        for name, read in (
            ("sidecar_streams_refused", sources.streams_refused),
            ("sidecar_ledger_rows_written", sources.ledger_written),
            ("sidecar_ledger_write_errors", sources.ledger_write_errors),
            ("sidecar_ledger_rows_dropped", sources.ledger_dropped),
        ):
            total = float(read())
            grown = total - self._published[name]
            if grown > 0:
                self._state_counters[name].inc(grown)
                self._published[name] = total

    @contextlib.asynccontextmanager
    async def publishing(self) -> AsyncIterator[None]:
        """With ``--workers``: publish the state every ``STATE_REFRESH_SECONDS`` for the other workers' scrapes."""
        if self._multiprocess_dir is None:
            yield
            return

        async def refresh() -> None:
            while True:
                self.publish_state()
                await asyncio.sleep(STATE_REFRESH_SECONDS)

        task = asyncio.create_task(refresh())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ----- exposition -------------------------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The Prometheus text format of everything counted (by every worker, with ``--workers``)."""
        self.publish_state()
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        combined = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(combined, path=str(self._multiprocess_dir))  # type: ignore[no-untyped-call]
        return generate_latest(combined)
