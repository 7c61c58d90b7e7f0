"""Per-caller policy: which models a caller may use and how many requests and tokens per minute.

Resolved once at startup from ``[limits]`` (the plain bearer's policy, and every workload's for each key it does not
set itself) and ``[[workloads]]``. Checked before any upstream call, right beside the budget: 403
``model_not_allowed`` for a model no pattern matches, 429 ``rate_limit_exceeded`` with ``retry-after`` over a rate.
A caller with nothing configured costs one dict lookup; with a rate limit, one counter call (``sidecar.rate_limits``).
Tokens are known only when a generation ends, so one generation may overshoot ``tokens_per_minute``; the caller's
next request is then refused.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .auth import Caller
from .config import Settings
from .errors import ModelNotAllowed, RateLimited
from .ledger.record import GenerationRecord
from .models import ModelSpec
from .rate_limits import Quota, RateCounters, Refusal, counters_for


@dataclass(frozen=True, slots=True)
class CallerPolicy:
    """One caller's resolved policy; each ``*_setting`` names where its value comes from, for the refusals."""

    models: tuple[str, ...] | None
    models_setting: str
    quota: Quota | None
    requests_setting: str
    tokens_setting: str
    allowed: re.Pattern[str] | None
    """``models`` as one regular expression: one match per check, whatever the number of patterns."""

    def allows(self, full_id: str) -> bool:
        return self.allowed is None or self.allowed.match(full_id) is not None


class Policy:
    def __init__(self, rules: Mapping[str, CallerPolicy | None], default: CallerPolicy | None, counters: RateCounters):
        """``rules``: workload identity → its policy (``None``: unrestricted); every other identity (the plain
        bearer) gets ``default``."""
        self._rules = dict(rules)
        self._default = default
        self.counters = counters

    @classmethod
    def from_settings(cls, settings: Settings, counters: RateCounters | None = None) -> Policy:
        limits = settings.policy
        default = _caller_policy(
            limits.models,
            "[limits] models",
            limits.requests_per_minute,
            "[limits] requests_per_minute",
            limits.tokens_per_minute,
            "[limits] tokens_per_minute",
        )
        rules: dict[str, CallerPolicy | None] = {}
        for workload in settings.workloads:
            own = f'[[workloads]] "{workload.name}"'
            models = workload.models if workload.models is not None else limits.models
            rpm = workload.requests_per_minute or limits.requests_per_minute
            tpm = workload.tokens_per_minute or limits.tokens_per_minute
            rules[f"workload:{workload.name}"] = _caller_policy(
                models,
                f"{own} models" if workload.models is not None else "[limits] models",
                rpm,
                f"{own} requests_per_minute" if workload.requests_per_minute else "[limits] requests_per_minute",
                tpm,
                f"{own} tokens_per_minute" if workload.tokens_per_minute else "[limits] tokens_per_minute",
            )
        return cls(rules, default, counters or counters_for(limits.redis_url))

    def of(self, caller: Caller) -> CallerPolicy | None:
        return self._rules.get(caller.identity, self._default)

    def allows_model(self, caller: Caller, full_id: str) -> bool:
        rule = self.of(caller)
        return rule is None or rule.allows(full_id)

    def check_model(self, caller: Caller, model: ModelSpec) -> None:
        rule = self.of(caller)
        if rule is not None and not rule.allows(model.full_id):
            raise _not_allowed(caller, model, rule)

    async def check(self, caller: Caller, model: ModelSpec) -> None:
        """Raise ``ModelNotAllowed`` (403) or ``RateLimited`` (429 + retry-after); else count one request."""
        rule = self._rules.get(caller.identity, self._default)
        if rule is None:
            return
        if not rule.allows(model.full_id):
            raise _not_allowed(caller, model, rule)
        if rule.quota is not None:
            refusal = await self.counters.admit(caller.identity, rule.quota)
            if refusal is not None:
                raise _rate_limited(caller, rule, refusal)

    def count(self, caller: Caller, record: GenerationRecord) -> None:
        """Count a finished generation's tokens (input + cache read + cache write + output); never blocks."""
        rule = self._rules.get(caller.identity, self._default)
        if rule is None or rule.quota is None or rule.quota.tokens_per_minute is None:
            return
        tokens = record.input_tokens + record.cache_read_tokens + record.cache_write_tokens + record.output_tokens
        if tokens > 0:
            self.counters.add_tokens(caller.identity, tokens)

    async def close(self) -> None:
        await self.counters.close()


def unrestricted() -> Policy:
    """No models restricted, no rates limited: for a service built without settings' ``[limits]`` (tests)."""
    return Policy({}, None, counters_for(None))


def _caller_policy(
    models: tuple[str, ...] | None,
    models_setting: str,
    requests_per_minute: int | None,
    requests_setting: str,
    tokens_per_minute: int | None,
    tokens_setting: str,
) -> CallerPolicy | None:
    if models is None and requests_per_minute is None and tokens_per_minute is None:
        return None
    quota = None
    if requests_per_minute is not None or tokens_per_minute is not None:
        quota = Quota(requests_per_minute, tokens_per_minute)
    allowed = None if models is None else re.compile("|".join(map(fnmatch.translate, models)))
    return CallerPolicy(models, models_setting, quota, requests_setting, tokens_setting, allowed)


def _not_allowed(caller: Caller, model: ModelSpec, rule: CallerPolicy) -> ModelNotAllowed:
    assert rule.models is not None
    return ModelNotAllowed(
        f"Model {model.full_id} is not allowed for {caller.identity}: {rule.models_setting} = "
        f"[{', '.join(rule.models)}] does not match it. Use a model it matches (GET /v1/models lists them), or add "
        f"a pattern matching {model.full_id} to {rule.models_setting} in the sidecar config."
    )


def _rate_limited(caller: Caller, rule: CallerPolicy, refusal: Refusal) -> RateLimited:
    if refusal.kind == "requests":
        setting, what = rule.requests_setting, f"made {refusal.used} requests"
    else:
        setting, what = rule.tokens_setting, f"used {refusal.used} tokens (input, cache and output)"
    return RateLimited(
        f"Rate limit: {caller.identity} has {what} in the last minute, its limit ({setting} = {refusal.limit}); "
        f"retry after {refusal.retry_after} s, or raise {setting} in the sidecar config.",
        retry_after=refusal.retry_after,
    )
