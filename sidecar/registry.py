"""Model resolution: ``provider/id`` or bare ``id`` → a servable ``ModelSpec`` and the credential to use."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from urllib.parse import urlsplit

from .config import Settings
from .credentials import Credential, CredentialStore
from .errors import MissingCredential, UnknownModel
from .identifiers import shown
from .models import CatalogModel, ModelSpec, ProviderSpec, model_spec
from .pricing import PriceDatabase

log = logging.getLogger("sidecar.registry")

UNCATALOGUED_CACHE_SIZE = 4096
"""Model ids without a catalog row whose price lookup (and "not priced" warning) is remembered. Ids come from
requests, so every per-id structure is bounded; past the bound the least recently used id is looked up again."""
_LOGGED_ID_CHARS = 120


@dataclass(frozen=True, slots=True)
class Resolved:
    model: ModelSpec
    provider: ProviderSpec
    credentials: tuple[Credential, ...]
    """The provider's keys now: one, several (a key pool: ``sidecar.key_pool`` picks), or none (needs none)."""

    @property
    def credential(self) -> Credential | None:
        return self.credentials[0] if self.credentials else None


class ModelRegistry:
    def __init__(
        self, settings: Settings, credentials: CredentialStore, *, cache_size: int = UNCATALOGUED_CACHE_SIZE
    ) -> None:
        self._settings = settings
        self._catalog = settings.catalog
        self._credentials = credentials
        self.prices = PriceDatabase(
            {p.genai_prices for p in self._catalog.providers.values() if p.genai_prices}, cache_size
        )
        # An LRU cache of a function that logs: it logs once per id while the id stays among the cached ones.
        self._warn_unpriced = functools.lru_cache(maxsize=cache_size)(_warn_unpriced)
        # Bare ids resolve to the first provider (catalog order) that serves them, as the reference gateway does.
        self._by_bare_id: dict[str, list[str]] = {}
        for full_id, row in self._catalog.models.items():
            self._by_bare_id.setdefault(row.id, []).append(full_id)

    def base_url(self, provider: ProviderSpec) -> str:
        return self._settings.base_urls.get(provider.id, provider.base_url)

    def resolve(self, model_id: str, prefer: str | None = None) -> Resolved:
        """Raise ``UnknownModel`` (404) or ``MissingCredential`` (401) when it cannot be served now.

        ``provider/id`` names the provider. A bare id goes to ``prefer`` (the provider of the route's own format:
        ``anthropic`` for ``/v1/messages``) when that provider catalogs it, else to the first provider in catalog
        order that serves it; an id no provider catalogs still goes to ``prefer`` when it has a credential, so a
        model newer than the catalog works through the route of its own family."""
        provider_id, sep, rest = model_id.partition("/")
        if sep and provider_id in self._catalog.providers:
            provider = self._catalog.providers[provider_id]
            credentials = tuple(self._credentials.require(provider))
            return Resolved(self._spec(provider, rest, self._catalog.models.get(model_id)), provider, credentials)
        preferred = self._catalog.providers.get(prefer) if prefer else None
        if preferred is not None and f"{preferred.id}/{model_id}" in self._catalog.models:
            return self.resolve(f"{preferred.id}/{model_id}")
        try:
            return self._resolve_bare(model_id)
        except UnknownModel:
            if (
                sep
                or preferred is None
                or (preferred.needs_credential and self._credentials.resolve(preferred) is None)
            ):
                raise
            return self.resolve(f"{preferred.id}/{model_id}")

    def _resolve_bare(self, model_id: str) -> Resolved:
        candidates = self._by_bare_id.get(model_id, [])
        missing: MissingCredential | None = None
        for full_id in candidates:
            row = self._catalog.models[full_id]
            provider = self._catalog.providers[row.provider]
            try:
                credentials = tuple(self._credentials.require(provider))
            except MissingCredential as exc:
                missing = missing or exc
                continue
            return Resolved(self._spec(provider, row.id, row), provider, credentials)
        if missing is not None:
            raise missing
        raise UnknownModel(model_id)

    def servable(self) -> Iterator[ModelSpec]:
        """Catalog models whose provider can be called right now (has a key, or needs none)."""
        ready: dict[str, bool] = {}
        for row in self._catalog.models.values():
            provider = self._catalog.providers[row.provider]
            if provider.id not in ready:
                ready[provider.id] = (
                    not provider.needs_credential or self._credentials.resolve(provider) is not None
                ) and not _placeholder(self.base_url(provider))
            if ready[provider.id]:
                yield self._spec(provider, row.id, row)

    @property
    def warned(self) -> int:
        """Unpriced model ids remembered as already logged (at most the cache size)."""
        return self._warn_unpriced.cache_info().currsize

    def _spec(self, provider: ProviderSpec, model_id: str, row: CatalogModel | None) -> ModelSpec:
        spec = model_spec(provider, model_id, row, self.base_url(provider))
        if spec.pricing is not None:
            return spec
        # No cost in the config or the catalog: genai-prices, then the provider's default_cost.
        pricing = None
        if provider.genai_prices:
            pricing = self.prices.pricing(provider.genai_prices, model_id, datetime.now(UTC))
        if pricing is None:
            pricing = provider.default_pricing
        if pricing is None:
            self._warn_unpriced(spec.full_id)
            return spec
        return replace(spec, pricing=pricing)


def _warn_unpriced(full_id: str) -> None:
    log.warning(
        "model %s has no known price (no cost in the config or the catalog, not in genai-prices, no provider "
        "default_cost): served at cost 0 to callers without a budget, refused to callers with one unless [budget] "
        "allow_unpriced",
        shown(full_id, _LOGGED_ID_CHARS),
    )


def _placeholder(base_url: str) -> bool:
    """A catalog base URL on the reserved ``.invalid`` domain stands for "set your endpoint" (Azure's resource): its
    models are not listed as servable until the endpoint is configured (a call would be refused anyway)."""
    return (urlsplit(base_url).hostname or "").endswith(".invalid")
