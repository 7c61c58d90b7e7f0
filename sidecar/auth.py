"""Workload authentication: the local bearer token that agents present to the sidecar.

The token comes from ``SIDECAR_TOKEN`` or a token file created on first use (32 random bytes, base64url, mode 0600
in a 0700 directory, as the reference gateway does). Comparison is timing-safe. A caller is identified in logs and in
the ledger by a short hash of its token, never by the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .config import Settings, Workload
from .errors import ConfigError, Unauthorized

_BEARER = re.compile(r"^Bearer\s+(.+)$", re.IGNORECASE)
_KEY_HEADERS = ("x-api-key", "x-goog-api-key")
MAX_AUTHORIZATION_CHARS = 4096
"""Far above any workload token (43 characters when generated): a longer value is refused before it is scanned."""


@dataclass(frozen=True, slots=True)
class Caller:
    identity: str
    """``workload:<name>`` for a ``[[workloads]]`` token, else ``bearer:<first 16 hex of sha256(token)>``: stable,
    not reversible. The ledger scopes lookups, reports and budgets by it."""
    budget_usd: float | None = None
    admin: bool = False
    """A ``[[workloads]]`` bearer with ``admin = true``: sees every workload on ``/ui``."""


def identity_of(token: str) -> str:
    return "bearer:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def new_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def read_or_create_token(path: Path, *, regenerate: bool = False) -> str:
    """The token stored at ``path``, created (or replaced) with a fresh one when needed."""
    if not regenerate:
        try:
            token = path.read_text(encoding="utf-8").strip()
            if token:
                return token
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ConfigError(f"cannot read token file {path}: {exc.strerror}") from None
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = new_token()
    # Write through a 0600 descriptor so the token is never world-readable, not even for an instant.
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    os.replace(tmp, path)
    return token


class BearerAuth:
    def __init__(self, tokens: list[tuple[str, Caller]]) -> None:
        if not tokens:
            raise ConfigError("no workload token configured")
        seen: set[str] = set()
        for token, caller in tokens:
            if len("Bearer ") + len(token) > MAX_AUTHORIZATION_CHARS:
                raise ConfigError(
                    f"the token of {caller.identity} is longer than {MAX_AUTHORIZATION_CHARS - 7} characters"
                )
            if token in seen:
                raise ConfigError(f"the token of {caller.identity} is also used by another workload")
            seen.add(token)
        self._tokens = [(t.encode(), caller) for t, caller in tokens]

    @classmethod
    def from_settings(cls, settings: Settings) -> BearerAuth:
        token = settings.token or read_or_create_token(settings.token_path)
        tokens = [(token, Caller(identity_of(token), settings.budget_usd))]
        for workload in settings.workloads:
            budget = workload.budget_usd if workload.budget_usd is not None else settings.budget_usd
            caller = Caller(f"workload:{workload.name}", budget, workload.admin)
            tokens.append((workload_token(settings, workload), caller))
        return cls(tokens)

    @property
    def callers(self) -> list[Caller]:
        """Every configured caller, the plain bearer first (for an admin's view on ``/ui``); never a token."""
        return [caller for _, caller in self._tokens]

    def authenticate_request(self, headers: Mapping[str, str]) -> Caller:
        """The workload bearer wherever an SDK puts its key: ``Authorization: Bearer`` (OpenAI, the AI SDK, Anthropic's
        ``ANTHROPIC_AUTH_TOKEN``), ``x-api-key`` (Anthropic's ``ANTHROPIC_API_KEY``, Claude Code) or ``x-goog-api-key``
        (Google's SDKs). None of them is ever forwarded upstream."""
        authorization = headers.get("authorization")
        if authorization is None:
            for name in _KEY_HEADERS:
                key = headers.get(name)
                if key is not None:
                    if len(key) > MAX_AUTHORIZATION_CHARS:
                        raise Unauthorized("unauthorized")
                    authorization = "Bearer " + key
                    break
        return self.authenticate(authorization)

    def authenticate(self, authorization: str | None) -> Caller:
        if authorization is None or len(authorization) > MAX_AUTHORIZATION_CHARS:
            raise Unauthorized("unauthorized")
        match = _BEARER.match(authorization)
        if match is None:
            raise Unauthorized("unauthorized")
        presented = match.group(1).strip().encode()
        found: Caller | None = None
        # Compare against every token so the time taken does not reveal which one (if any) matched.
        for token, caller in self._tokens:
            if hmac.compare_digest(presented, token):
                found = caller
        if found is None:
            raise Unauthorized("unauthorized")
        return found


def workload_token(settings: Settings, workload: Workload) -> str:
    location = workload.token_location
    if location.startswith("env:"):
        value = settings.environ.get(location[4:], "").strip()
        if not value:
            raise ConfigError(f"workload {workload.name}: environment variable {location[4:]} is not set")
    else:
        try:
            value = Path(location[5:]).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"workload {workload.name}: cannot read {location[5:]}: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"workload {workload.name}: {location[5:]} is empty")
    if len(value) < 16:
        raise ConfigError(f"workload {workload.name}: the token must be at least 16 characters")
    return value
