"""Model resolution: ``provider/id`` or bare ``id`` → a servable ``ModelSpec`` and the credential to use."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from .config import Settings
from .credentials import Credential, CredentialStore
from .errors import MissingCredential, UnknownModel
from .models import ModelSpec, ProviderSpec, model_spec

log = logging.getLogger("sidecar.registry")


@dataclass(frozen=True, slots=True)
class Resolved:
    model: ModelSpec
    provider: ProviderSpec
    credential: Credential | None


class ModelRegistry:
    def __init__(self, settings: Settings, credentials: CredentialStore) -> None:
        self._settings = settings
        self._catalog = settings.catalog
        self._credentials = credentials
        self._warned: set[str] = set()
        # Bare ids resolve to the first provider (catalog order) that serves them, as the reference gateway does.
        self._by_bare_id: dict[str, list[str]] = {}
        for full_id, row in self._catalog.models.items():
            self._by_bare_id.setdefault(row.id, []).append(full_id)

    def base_url(self, provider: ProviderSpec) -> str:
        return self._settings.base_urls.get(provider.id, provider.base_url)

    def resolve(self, model_id: str) -> Resolved:
        """Raise ``UnknownModel`` (404) or ``MissingCredential`` (401) when it cannot be served now."""
        provider_id, sep, rest = model_id.partition("/")
        if sep and provider_id in self._catalog.providers:
            provider = self._catalog.providers[provider_id]
            credential = self._credentials.require(provider)
            row = self._catalog.models.get(model_id)
            if row is None and model_id not in self._warned:
                self._warned.add(model_id)
                log.warning(
                    "model %s is not in the catalog: served with cost 0 (add a [models] row to price it)", model_id
                )
            return Resolved(model_spec(provider, rest, row, self.base_url(provider)), provider, credential)

        candidates = self._by_bare_id.get(model_id, [])
        missing: MissingCredential | None = None
        for full_id in candidates:
            row = self._catalog.models[full_id]
            provider = self._catalog.providers[row.provider]
            try:
                credential = self._credentials.require(provider)
            except MissingCredential as exc:
                missing = missing or exc
                continue
            return Resolved(model_spec(provider, row.id, row, self.base_url(provider)), provider, credential)
        if missing is not None:
            raise missing
        raise UnknownModel(model_id)

    def servable(self) -> Iterator[ModelSpec]:
        """Catalog models whose provider can be called right now (has a key, or needs none)."""
        ready: dict[str, bool] = {}
        for row in self._catalog.models.values():
            provider = self._catalog.providers[row.provider]
            if provider.id not in ready:
                ready[provider.id] = not provider.needs_credential or self._credentials.resolve(provider) is not None
            if ready[provider.id]:
                yield model_spec(provider, row.id, row, self.base_url(provider))
