"""Key pools: a provider with several API keys (``credential = ["env:KEY_A", "file:/run/keys/b"]``, or several files
for it in the secrets directory) spreads its calls across them and keeps serving when one is refused or rate-limited.

- Each generation starts on the next usable key, round robin.
- The provider answers **401**: that key is out, for every model, until its value changes (a ``file:`` or secrets
  directory key is re-read when it is rotated; an ``env:`` key needs a restart).
- **403**: out for that model only, until its value changes (a key is often refused one model, not all).
- **429 / 529**: that key cools down for that model for the ``retry-after`` the provider sent, else
  ``DEFAULT_COOL_DOWN_SECONDS``.
- In each of these cases the next usable key takes the call over at once, before any byte reached the client, and
  the ledger row names the key that served it (its location, never its value).
- When no key is usable, the call is refused before any upstream call: 429 with ``retry-after`` while keys cool
  down, else the provider's own refusal.

A provider with one key is left alone (there is nothing to fail over to): its refusals reach the client as they did.
Cloud credential chains (Vertex, Bedrock) are one credential each and never pooled.

The state is per process (with ``--workers``, each worker learns a refused key on its own first call with it).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from .credentials import Credential
from .errors import UpstreamError, UpstreamStatusError

_T = TypeVar("_T")

HAND_OVER_STATUSES = frozenset({401, 403, 429, 529})
"""What another key can fix: a refused key, a rate-limited or overloaded one."""
DEFAULT_COOL_DOWN_SECONDS = 30.0
MAX_COOL_DOWN_SECONDS = 3600.0
MAX_ENTRIES = 4096
"""Refused and cooling (key, model) pairs remembered; model ids come from requests, so the table is bounded."""


class KeysCoolingDown(UpstreamError):
    """Every key of the provider is rate-limited for this model: 429, with the time until the first is back."""

    def __init__(self, provider: str, model: str, count: int, seconds: float) -> None:
        super().__init__(
            f"all {count} keys of provider {provider} are rate-limited for {model} (the provider answered 429/529); "
            f"retry after {seconds:.0f} s",
            429,
        )
        self.retry_after = seconds


class KeysRefused(UpstreamError):
    """Every key of the provider was refused (401/403) and none has changed since."""

    def __init__(self, provider: str, model: str, count: int, status: int) -> None:
        super().__init__(
            f"all {count} keys of provider {provider} were refused for {model} (HTTP {status}); replace them: a "
            "file or secrets-directory key is read again when it changes",
            status,
        )


def fingerprint(value: str) -> bytes:
    """What a refused key is remembered by: a digest, so the key itself is kept nowhere new."""
    return hashlib.blake2b(value.encode(), digest_size=16).digest()


class KeyPool:
    """Which key of a provider to use next, and which are out of the rotation (one per process)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._turn: dict[str, int] = {}
        self._refused: dict[tuple[str, str, str], tuple[bytes, int]] = {}
        """(provider, key source, model or "" for every model) → (the refused value's fingerprint, status)."""
        self._cooling: dict[tuple[str, str, str], float] = {}
        """(provider, key source, model) → until (clock)."""

    def rotation(self, provider: str, model: str, keys: Sequence[Credential]) -> KeyRotation:
        """This call's keys, in the order to try them; raises ``KeysCoolingDown`` / ``KeysRefused`` when none is
        usable. One key (or none) is returned as it is."""
        if len(keys) < 2:
            return KeyRotation(self, provider, model, list(keys))
        if self._refused or self._cooling:
            usable = [key for key in keys if self._usable(provider, model, key)]
            if not usable:
                raise self._none_usable(provider, model, keys)
        else:
            usable = list(keys)
        turn = self._turn.get(provider, 0)
        self._turn[provider] = turn + 1
        start = turn % len(usable)
        return KeyRotation(self, provider, model, usable[start:] + usable[:start])

    def refused(self, provider: str, model: str, key: Credential, status: int) -> None:
        scope = "" if status == 401 else model
        self._remember(self._refused, (provider, key.source, scope), (fingerprint(key.value), status))

    def rate_limited(self, provider: str, model: str, key: Credential, retry_after: float | None) -> None:
        seconds = (
            DEFAULT_COOL_DOWN_SECONDS if retry_after is None else min(max(retry_after, 1.0), MAX_COOL_DOWN_SECONDS)
        )
        self._remember(self._cooling, (provider, key.source, model), self._clock() + seconds)

    def _usable(self, provider: str, model: str, key: Credential) -> bool:
        for scope in ("", model):
            refused = self._refused.get((provider, key.source, scope))
            if refused is not None:
                if refused[0] == fingerprint(key.value):
                    return False
                del self._refused[(provider, key.source, scope)]  # rotated: back in the rotation
        until = self._cooling.get((provider, key.source, model))
        if until is not None:
            if until > self._clock():
                return False
            del self._cooling[(provider, key.source, model)]
        return True

    def _none_usable(self, provider: str, model: str, keys: Sequence[Credential]) -> UpstreamError:
        now = self._clock()
        waits = [until - now for (p, _, m), until in self._cooling.items() if p == provider and m == model]
        if waits:
            return KeysCoolingDown(provider, model, len(keys), max(1.0, min(waits)))
        statuses = [status for (p, _, m), (_, status) in self._refused.items() if p == provider and m in ("", model)]
        return KeysRefused(provider, model, len(keys), min(statuses, default=401))

    @staticmethod
    def _remember(table: dict[tuple[str, str, str], _T], key: tuple[str, str, str], value: _T) -> None:
        table.pop(key, None)
        table[key] = value  # newest last: past the bound the oldest entry goes
        if len(table) > MAX_ENTRIES:
            del table[next(iter(table))]


@dataclass
class KeyRotation:
    """One call's keys: ``current`` first, then the others to hand the call over to."""

    pool: KeyPool
    provider: str
    model: str
    keys: list[Credential]
    tried: int = field(default=1)

    @property
    def current(self) -> Credential | None:
        return self.keys[self.tried - 1] if self.keys else None

    @property
    def has_next(self) -> bool:
        return self.tried < len(self.keys)

    def hand_over(self, error: Exception) -> Credential | None:
        """After ``error`` from the current key: note what it says about the key, and the next key to try, or
        ``None`` when the error is not the key's or no key is left."""
        current = self.current
        if current is None or len(self.keys) < 2:
            return None
        if not isinstance(error, UpstreamStatusError) or error.status not in HAND_OVER_STATUSES:
            return None
        if error.status in (401, 403):
            self.pool.refused(self.provider, self.model, current, error.status)
        else:
            self.pool.rate_limited(self.provider, self.model, current, error.retry_after)
        if not self.has_next:
            return None
        self.tried += 1
        return self.current
