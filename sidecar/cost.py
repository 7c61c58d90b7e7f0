"""Cost of a generation from catalog rates (USD per 1M tokens), as pi-catalog's ``calculateUsageCost`` does it."""

from __future__ import annotations

from client.types import Usage

from .models import Pricing


def apply_cost(usage: Usage, pricing: Pricing | None, multiplier: float = 1.0) -> None:
    """Fill ``usage['cost']`` and ``usage['totalTokens']`` in place; an unpriced model costs 0. ``multiplier`` is the
    service tier's (pi-catalog multiplies every rate by it)."""
    usage["totalTokens"] = usage["input"] + usage["output"] + usage["cacheRead"] + usage["cacheWrite"]
    cost = usage["cost"]
    if pricing is None:
        cost["input"] = cost["output"] = cost["cacheRead"] = cost["cacheWrite"] = cost["total"] = 0.0
        return
    cost["input"] = pricing.input / 1e6 * usage["input"] * multiplier
    cost["output"] = pricing.output / 1e6 * usage["output"] * multiplier
    cost["cacheRead"] = pricing.cache_read / 1e6 * usage["cacheRead"] * multiplier
    cost["cacheWrite"] = pricing.cache_write / 1e6 * usage["cacheWrite"] * multiplier
    cost["total"] = cost["input"] + cost["output"] + cost["cacheRead"] + cost["cacheWrite"]
