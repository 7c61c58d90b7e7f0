"""Prices of models that have no catalog row, from the database bundled in the ``genai-prices`` package.

Only the snapshot shipped inside the installed package is read (``genai_prices.data``): its network auto-update
(``UpdatePrices``) is never started, so the sidecar prices the same way offline, and a price changes only when the
package is upgraded. Models are matched by the package's own rules (``Provider.find_model``: aliases, dated ids such
as ``gpt-4o-2024-08-06``, one step of fallback to the provider whose models another resells).

Its prices are richer than our flat ``Pricing``, which keeps only the text token rates:

- prompt-size tiers (Gemini 2.5 Pro, Claude Sonnet 4.5 above 200k input tokens) are priced at the base tier, the
  price of ordinary requests, as the catalog rows are;
- request variants (OpenAI flex/priority tiers, batch, Anthropic fast mode) are priced at the standard rate;
- audio, image, video, reasoning and 1-hour cache-write token rates, and per-request or per-search fees, are dropped:
  those tokens are counted at the text rates of the usage field they are reported in;
- a cache read or cache write rate the database leaves out is the input rate, as genai-prices computes it;
- date-dependent prices (a price change on a known date, DeepSeek's off-peak hours) are evaluated at each request.

A model the database lists with no price at all (OpenRouter's ``:free`` variants, a few previews) or with prices only
in units we do not meter (audio hours, document pages) is unpriced: "free" must be said in the config, not inferred.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from genai_prices.data import providers as _BUNDLED
from genai_prices.types import ModelInfo, ModelPrice, Provider, TieredPrices

from .errors import ConfigError
from .models import Pricing


class PriceDatabase:
    """Looks models up in genai-prices' bundled data; the match (the costly part) is cached, bounded by
    ``cache_size`` because model ids come from requests."""

    def __init__(self, provider_ids: Iterable[str], cache_size: int) -> None:
        known = {p.id: p for p in _BUNDLED}
        self._providers: dict[str, Provider] = {}
        for pid in provider_ids:
            if pid not in known:
                raise ConfigError(
                    f"genai_prices = {pid!r} is not a provider of the genai-prices database; use one of "
                    f'{", ".join(sorted(known))}, or "" for none'
                )
            self._providers[pid] = known[pid]
        self._match = functools.lru_cache(maxsize=cache_size)(self._find)

    def pricing(self, provider_id: str, model_id: str, at: datetime) -> Pricing | None:
        """The flat price of ``model_id`` at ``provider_id`` (a genai-prices id given to the constructor) at time
        ``at``; ``None`` when the database does not price it in tokens."""
        model = self._match(provider_id, model_id)
        return None if model is None else flat_pricing(model.get_prices(at))

    @property
    def cached(self) -> int:
        """Model ids whose match is cached now (at most ``cache_size``)."""
        return self._match.cache_info().currsize

    def _find(self, provider_id: str, model_id: str) -> ModelInfo | None:
        return self._providers[provider_id].find_model(model_id, all_providers=_BUNDLED)


def flat_pricing(price: ModelPrice) -> Pricing | None:
    """The text token rates of ``price`` (USD per 1M tokens), or ``None`` when it has none."""
    input_rate, output_rate = _rate(price.input_mtok), _rate(price.output_mtok)
    if input_rate is None and output_rate is None:
        return None
    input_rate = input_rate or 0.0
    cache_read, cache_write = _rate(price.cache_read_mtok), _rate(price.cache_write_mtok)
    return Pricing(
        input=input_rate,
        output=output_rate or 0.0,
        cache_read=input_rate if cache_read is None else cache_read,
        cache_write=input_rate if cache_write is None else cache_write,
    )


def _rate(value: Decimal | TieredPrices | None) -> float | None:
    if value is None:
        return None
    return float(value.base if isinstance(value, TieredPrices) else value)
