"""Per-bearer USD budgets, enforced before any upstream call and reported by ``GET /v1/credits``.

A budget covers a period (UTC): ``day``, ``month`` or ``total``. Spend is what the ledger holds for the caller in
the period, written or not yet written. Generations still streaming are not counted until they finish, so a bearer
can exceed its budget by what its in-flight generations cost; the next request is then refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sidecar.auth import Caller
from sidecar.errors import BudgetExceeded, UnpricedModel
from sidecar.models import ModelSpec

from .service import Ledger

_BEGINNING = "0000-00-00"  # sorts before every YYYY-MM-DD


@dataclass(frozen=True, slots=True)
class Credits:
    limit: float | None
    used: float

    @property
    def balance(self) -> float | None:
        return None if self.limit is None else max(self.limit - self.used, 0.0)


def period_start(period: str, now: datetime) -> str:
    if period == "day":
        return now.strftime("%Y-%m-%d")
    if period == "month":
        return now.strftime("%Y-%m-01")
    return _BEGINNING


def period_end(period: str, now: datetime) -> datetime | None:
    if period == "day":
        return datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    if period == "month":
        return datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
    return None


class Budgets:
    def __init__(self, ledger: Ledger, period: str, *, allow_unpriced: bool = False) -> None:
        self._ledger = ledger
        self.period = period
        self.allow_unpriced = allow_unpriced

    async def credits(self, caller: Caller, now: datetime | None = None) -> Credits:
        now = now or datetime.now(UTC)
        used = await self._ledger.spent(caller.identity, period_start(self.period, now))
        return Credits(caller.budget_usd, used)

    async def check(self, caller: Caller, model: ModelSpec | None = None) -> None:
        """Raise ``BudgetExceeded`` (429) when the caller has spent its budget, and ``UnpricedModel`` (403) when
        ``model`` has no known price (it would be served at cost 0, so a budget could not bound it) unless
        ``[budget] allow_unpriced`` is set. Free for a caller without a budget."""
        if caller.budget_usd is None:
            return
        if model is not None and model.pricing is None and not self.allow_unpriced:
            raise UnpricedModel(
                f"Model {model.full_id} has no known price, and {caller.identity} has a budget, which an unpriced "
                f'model would bypass. Price it with a [models."{model.full_id}"] cost = [input, output] row (USD per '
                "1M tokens) in the sidecar config, or set [budget] allow_unpriced = true to serve it at cost 0."
            )
        now = datetime.now(UTC)
        credits = await self.credits(caller, now)
        if credits.used < caller.budget_usd:
            return
        end = period_end(self.period, now)
        resets = f"; it resets at {end:%Y-%m-%dT%H:%M:%SZ}" if end else ""
        scope = {"day": "today", "month": "this month", "total": "in total"}[self.period]
        raise BudgetExceeded(
            f"Budget exhausted: {caller.identity} has spent ${credits.used:.4f} of its ${caller.budget_usd:.2f} "
            f"budget {scope}{resets}. Raise budget_usd in the sidecar config to continue."
        )
