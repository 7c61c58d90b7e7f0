"""Cost of a generation from catalog rates (USD per 1M tokens), as pi-catalog's ``calculateUsageCost`` does it."""

from __future__ import annotations

from client.types import Usage

from .models import Pricing


def apply_cost(usage: Usage, pricing: Pricing | None) -> None:
    """Fill ``usage['cost']`` and ``usage['totalTokens']`` in place; an unpriced model costs 0."""
    usage["totalTokens"] = usage["input"] + usage["output"] + usage["cacheRead"] + usage["cacheWrite"]
    cost = usage["cost"]
    if pricing is None:
        cost["input"] = cost["output"] = cost["cacheRead"] = cost["cacheWrite"] = cost["total"] = 0.0
        return
    cost["input"] = pricing.input / 1e6 * usage["input"]
    cost["output"] = pricing.output / 1e6 * usage["output"]
    cost["cacheRead"] = pricing.cache_read / 1e6 * usage["cacheRead"]
    cost["cacheWrite"] = pricing.cache_write / 1e6 * usage["cacheWrite"]
    cost["total"] = cost["input"] + cost["output"] + cost["cacheRead"] + cost["cacheWrite"]
