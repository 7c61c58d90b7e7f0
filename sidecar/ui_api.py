"""The JSON the ``/ui`` spend and traffic page is fed by (issue #15): ``GET /ui/api/{me,usage,generations,errors,
budgets,live}``.

Behind the workload bearer, answered as the AI Gateway routes answer (``authenticate_gateway``: 401
``authentication_error``). A bearer sees its own identity's data; an admin bearer (``[[workloads]] admin = true``)
sees every identity's, or the one named by ``workload``. A non-admin naming another identity is refused (403), never
silently given its own data.

Spend comes from the ledger's one report query (``store.report_sql``, also ``/v1/report``'s), grouped by time and a
second key; nothing here adds up rows the database has not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .admission import Admission
from .auth import BearerAuth, Caller
from .config import Settings
from .errors import BadRequest, Forbidden
from .gateway_routes import authenticate_gateway, generation_lookup
from .ledger.budget import Budgets, period_end
from .ledger.record import GenerationRecord
from .ledger.service import Ledger
from .ledger.store import REPORT_SUMS, GenerationsQuery, ReportQuery
from .ledger.views import FINISH_REASONS, parse_generation_id, parse_report_query
from .metrics import Metrics

USAGE_KEYS = ("model", "workload", "user", "tag", "provider")
MAX_PAGE = 200
DEFAULT_PAGE = 50
REFUSED_STATUSES = ("429", "503")
TAG_TOTALS_NOTE = (
    "A generation with several tags counts once per tag in the rows and once in the totals, so the rows add up to "
    "more than the totals."
)


def scope_of(caller: Caller, params: Mapping[str, str]) -> str | None:
    """The identity whose rows the caller asked for: its own, or for an admin the ``workload`` named (None: all)."""
    named = params.get("workload") or None
    if caller.admin:
        return named
    if named is not None and named != caller.identity:
        raise Forbidden(f"{caller.identity} may see only its own data; an admin bearer may name another workload")
    return caller.identity


def range_query(params: Mapping[str, str], **changes: Any) -> ReportQuery:
    """``start_date``, ``end_date``, ``date_part`` and the report's filters, checked as ``/v1/report`` checks them;
    ``group_by`` here names the second key, so the time key is set instead."""
    query = parse_report_query({name: value for name, value in params.items() if name != "group_by"})
    return replace(query, group_by="day", **changes)


def sums_of(row: Mapping[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in REPORT_SUMS}


def add_up(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = {name: 0.0 if name == "total_cost" else 0 for name in REPORT_SUMS}
    for row in rows:
        for name in REPORT_SUMS:
            totals[name] += row[name]
    return totals


def parse_generations_query(params: Mapping[str, str]) -> GenerationsQuery:
    raw_limit = params.get("limit") or str(DEFAULT_PAGE)
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise BadRequest(f"`limit` must be a whole number from 1 to {MAX_PAGE}, got {raw_limit!r}")
    status = params.get("status") or None
    if status not in (None, "ok", "error"):
        raise BadRequest(f"`status` must be ok or error, got {status!r}")
    return GenerationsQuery(
        limit=int(raw_limit),
        before=parse_generation_id(params, "before") if params.get("before") else None,
        model=params.get("model") or None,
        provider=params.get("provider") or None,
        failed=None if status is None else status == "error",
    )


def generation_row(record: GenerationRecord) -> dict[str, Any]:
    """A row of the generations table; ``id`` is what ``GET /v1/generation?id=`` shows in full."""
    return {
        "id": record.id,
        "created_at": record.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "workload": record.identity,
        "model": record.model,
        "provider": record.provider,
        "finish_reason": FINISH_REASONS.get(record.finish_reason, "other"),  # as /v1/generation names it
        "status": record.status,
        "ttft_ms": record.ttft_ms,
        "generation_ms": record.generation_ms,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "cache_read_tokens": record.cache_read_tokens,
        "cache_write_tokens": record.cache_write_tokens,
        "total_cost": record.cost_total,
        "error_type": record.error_type,
    }


def requests_by_status(metrics: Metrics) -> dict[str, float]:
    """The metrics' request counter of this process, summed per status over every route."""
    counts: dict[str, float] = {}
    for family in metrics.requests.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                status = sample.labels["status"]
                counts[status] = counts.get(status, 0.0) + sample.value
    return counts


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def ui_api_router(
    settings: Settings,
    auth: BearerAuth,
    ledger: Ledger,
    budgets: Budgets,
    admission: Admission,
    metrics: Metrics | None,
    respond: Callable[[object], Response],
) -> APIRouter:
    router = APIRouter()
    callers = auth.callers
    started = time.monotonic()

    def authenticate(request: Request) -> Caller:
        return authenticate_gateway(auth, request)

    @router.get("/ui/api/me")
    async def me(request: Request) -> Response:
        caller = authenticate(request)
        workloads = [caller.identity]
        if caller.admin:
            workloads = sorted({c.identity for c in callers} | set(await ledger.identities()))
        return respond(
            {"identity": caller.identity, "admin": caller.admin, "workloads": workloads, "period": budgets.period}
        )

    @router.get("/ui/api/usage")
    async def usage(request: Request) -> Response:
        caller = authenticate(request)
        params = request.query_params
        key = params.get("group_by") or "model"
        if key not in USAGE_KEYS:
            raise BadRequest(f"`group_by` must be one of {', '.join(USAGE_KEYS)}, got {key!r}")
        identity = scope_of(caller, params)
        query = range_query(params, split_by=(key,))
        rows = await ledger.report(identity, query)
        if key == "tag":
            # A generation with several tags is in several rows: the totals are /v1/report's day rows added up,
            # without the tag join, so it counts once, as /v1/report counts it.
            totals = add_up(await ledger.report(identity, replace(query, split_by=(), date_part="day")))
        else:  # every other key puts each generation in exactly one row: the rows are the totals, no second query
            totals = add_up(rows)
        body: dict[str, Any] = {
            "rows": [{"period": row[query.key], "key": row[key], **sums_of(row)} for row in rows],
            "totals": totals,
        }
        if key == "tag":
            body["totals_note"] = TAG_TOTALS_NOTE
        return respond(body)

    @router.get("/ui/api/generations")
    async def generations(request: Request) -> Response:
        caller = authenticate(request)
        identity = scope_of(caller, request.query_params)
        query = parse_generations_query(request.query_params)
        # One row more than the page: whether there is a next page, without a count over the table.
        records = await ledger.generations(identity, replace(query, limit=query.limit + 1))
        page = records[: query.limit]
        more = len(records) > query.limit
        return respond({"rows": [generation_row(r) for r in page], "next": page[-1].id if more else None})

    @router.get("/ui/api/generation")
    async def generation(request: Request) -> Response:
        """One generation's JSON (``/v1/generation``'s view), for an admin also another workload's (``workload``
        names its identity, as the generations table gives it)."""
        caller = authenticate(request)
        identity = scope_of(caller, request.query_params) or caller.identity
        return respond(await generation_lookup(ledger, identity, request.query_params))

    @router.get("/ui/api/errors")
    async def errors(request: Request) -> Response:
        caller = authenticate(request)
        params = request.query_params
        identity = scope_of(caller, params)
        query = range_query(params, split_by=("provider", "status"), errors_only=True)
        rows = await ledger.report(identity, query)
        if metrics is not None:
            by_status = requests_by_status(metrics)
            refused: dict[str, int | None] = {s: int(by_status.get(s, 0)) for s in REFUSED_STATUSES}
            source = "metrics"
        else:
            # Without metrics only the stream limits' refusals are counted (429 per workload, 503 for the process).
            refused = {str(status): count for status, count in admission.refused_by_status.items()}
            source = "admission"
        refused["total"] = sum(v or 0 for v in refused.values())
        return respond(
            {
                "rows": [
                    {
                        "period": r[query.key],
                        "provider": r["provider"],
                        "status": r["status"],
                        "count": r["request_count"],
                    }
                    for r in rows
                ],
                "refused": refused,
                "refused_source": source,
            }
        )

    @router.get("/ui/api/budgets")
    async def budgets_(request: Request) -> Response:
        caller = authenticate(request)
        now = datetime.now(UTC)
        end = period_end(budgets.period, now)
        rows = []
        for who in callers if caller.admin else [caller]:
            credits = await budgets.credits(who, now)
            rows.append(
                {
                    "workload": who.identity,
                    "budget_usd": credits.limit,
                    "used_usd": credits.used,
                    "period": budgets.period,
                    "resets_at": iso(end) if end is not None else None,
                }
            )
        return respond({"rows": rows})

    @router.get("/ui/api/live")
    async def live(request: Request) -> Response:
        authenticate(request)  # process-wide figures, as /healthz shows them: the same for every bearer
        requests_total = int(sum(requests_by_status(metrics).values())) if metrics is not None else None
        return respond(
            {
                "in_flight": admission.in_flight,
                "max_streams": admission.max_streams,
                "requests_total": requests_total,
                "generations_total": ledger.written + ledger.pending,
                "uptime_seconds": round(time.monotonic() - started, 3),
                "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            }
        )

    return router
