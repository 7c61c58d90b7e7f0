"""Failover: which model and which key serve one generation, and what takes over when they fail before the first
byte reaches the client.

The candidates are the requested model, then its fallbacks: the request's own list (``options.models`` on the
pi-native route, ``providerOptions.gateway.order`` / ``models`` on the AI SDK Gateway route) or, when it names none,
the ``[models."x"] fallbacks`` row of the config. Each candidate is served by its provider's keys in the key pool's
order (``sidecar.key_pool``).

A failure before the first delta is handed over:

- a refused or rate-limited key (401/403/429/529) with another key of the provider left → that key, same model;
- else a failure another provider may not have (``FALLBACK_STATUSES``, a connection failure, a first-event timeout,
  every key of the provider unusable) → the next fallback that can be served now: known, with a key, allowed to the
  caller (``policy``), within its budget, and of the same wire API when the request is relayed untranslated (its
  bytes go to the upstream as they came);
- anything else (a 400: the request itself is wrong, and would be for any model) stands.

The ledger row, ``/v1/generation`` and the pi ``done`` message name the model and key that served. The stream's own
frames keep the name the client asked for where its format carries one (OpenAI's ``model`` field), as a router's
alias does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from .auth import Caller
from .credentials import Credential
from .errors import (
    SidecarError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from .key_pool import HAND_OVER_STATUSES, KeyPool, KeyRotation, KeysCoolingDown, KeysRefused
from .ledger.budget import Budgets
from .metrics import Metrics
from .models import ModelSpec
from .policy import Policy
from .providers import ADAPTERS
from .providers.base import StreamFn, UpstreamCall
from .registry import ModelRegistry, Resolved

log = logging.getLogger("sidecar")

FALLBACK_STATUSES = frozenset({401, 403, 408, 409, 429, 500, 502, 503, 504, 529})
"""Upstream statuses after which another model may serve the request: the provider refused our credential, is
rate-limited, overloaded or down. A 400, 404, 413 or 422 is about the request and stands."""
MAX_FALLBACKS = 8
"""Fallback models per request, beyond the first."""


@dataclass(frozen=True, slots=True)
class Candidate:
    resolved: Resolved
    stream_fn: StreamFn


class Failover:
    """One generation's candidates and where it stands among them (``current`` model and key)."""

    def __init__(
        self,
        *,
        caller: Caller,
        registry: ModelRegistry,
        keys: KeyPool,
        budgets: Budgets,
        policy: Policy,
        metrics: Metrics | None,
        first: Candidate,
        fallbacks: Sequence[str],
        relayed_api: str | None,
        translatable: bool,
    ) -> None:
        """``relayed_api``: the wire API a relayed request is bound to (a fallback must have it); ``translatable``:
        whether the request may be translated to another wire API at all (a relay-only request may not)."""
        self._caller = caller
        self._registry = registry
        self._keys = keys
        self._budgets = budgets
        self._policy = policy
        self._metrics = metrics
        self._relayed_api = relayed_api
        self._translatable = translatable
        self._fallbacks = list(dict.fromkeys(fallbacks))[:MAX_FALLBACKS]
        self.candidate = first
        self.rotation = KeyRotation(keys, first.resolved.model.provider, first.resolved.model.full_id, [])

    async def open(self) -> None:
        """Start on the first candidate whose keys are usable now. When the requested model's are not (all cooling
        down or refused), a fallback serves from the start; without one, that refusal stands (429 with
        ``retry-after``, or the provider's refusal, before the 200)."""
        try:
            self.rotation = self._rotation(self.candidate)
        except (KeysCoolingDown, KeysRefused) as unusable:
            if await self._next_candidate(unusable) is None:
                raise

    @property
    def model(self) -> ModelSpec:
        return self.candidate.resolved.model

    @property
    def credential(self) -> Credential | None:
        return self.rotation.current

    def _rotation(self, candidate: Candidate) -> KeyRotation:
        model = candidate.resolved.model
        return self._keys.rotation(model.provider, model.full_id, candidate.resolved.credentials)

    def call_for(self, base: UpstreamCall) -> UpstreamCall:
        """``base`` with the current model and key, and the statuses to hand over at once rather than retry."""
        credential = self.rotation.current
        return replace(
            base,
            model=self.model,
            api_key=credential.value if credential is not None else None,
            hand_over_on=HAND_OVER_STATUSES if self.rotation.has_next else frozenset(),
        )

    async def hand_over(self, error: Exception, call: UpstreamCall) -> tuple[UpstreamCall, StreamFn] | None:
        """What takes ``call`` over after ``error`` (before its first delta), or ``None``."""
        failed = self.rotation.current
        key = self.rotation.hand_over(error)
        if key is not None:
            self._count("key", call.model.provider, error)
            log.info(
                "provider %s: key %s answered %s; key %s takes the generation over",
                call.model.provider,
                failed.source if failed else "-",
                _reason(error),
                key.source,
            )
            return self.call_for(call), self.candidate.stream_fn
        if not _provider_failure(error):
            return None
        candidate = await self._next_candidate(error)
        if candidate is None:
            return None
        self._count("model", call.model.provider, error)
        log.info(
            "model %s failed (%s) before its first byte; fallback %s takes the generation over",
            call.model.full_id,
            _reason(error),
            candidate.resolved.model.full_id,
        )
        return self.call_for(call), candidate.stream_fn

    async def _next_candidate(self, error: Exception) -> Candidate | None:
        while self._fallbacks:
            model_id = self._fallbacks.pop(0)
            try:
                candidate = self._candidate(model_id)
                if candidate is None:
                    continue
                self._policy.check_model(self._caller, candidate.resolved.model)
                await self._budgets.check(self._caller, candidate.resolved.model)
                rotation = self._rotation(candidate)
            except SidecarError as skipped:  # unknown, no key, not allowed, over budget, every key unusable
                log.info("fallback %s skipped: %s", model_id, skipped.message)
                continue
            self.candidate, self.rotation = candidate, rotation
            return candidate
        return None

    def _candidate(self, model_id: str) -> Candidate | None:
        resolved = self._registry.resolve(model_id)
        model = resolved.model
        if self._relayed_api is not None:
            if model.api != self._relayed_api or model.provider == "echo":
                log.info("fallback %s skipped: the request is relayed untranslated to %s", model_id, self._relayed_api)
                return None
            return Candidate(resolved, self.candidate.stream_fn)  # the same relay, another model
        stream_fn = ADAPTERS.get(model.api)
        if stream_fn is None or not self._translatable:
            log.info("fallback %s skipped: the request cannot be sent to wire API %s", model_id, model.api)
            return None
        return Candidate(resolved, stream_fn)

    def _count(self, kind: str, provider: str, error: Exception) -> None:
        if self._metrics is not None:
            self._metrics.failover(provider, kind, _reason(error))


def _provider_failure(error: Exception) -> bool:
    if isinstance(error, UpstreamStatusError | KeysCoolingDown | KeysRefused):
        return error.status in FALLBACK_STATUSES
    return isinstance(error, UpstreamConnectError | UpstreamTimeout)


def _reason(error: Exception) -> str:
    """A label: the status, ``connect`` or ``timeout`` (never a message: it may quote a provider body)."""
    if isinstance(error, UpstreamConnectError):
        return "connect"
    if isinstance(error, UpstreamTimeout):
        return "timeout"
    if isinstance(error, UpstreamError):
        return str(error.status)
    return type(error).__name__
