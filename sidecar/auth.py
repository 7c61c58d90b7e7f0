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
from dataclasses import dataclass
from pathlib import Path

from .config import Settings
from .errors import ConfigError, Unauthorized

_BEARER = re.compile(r"^Bearer\s+(.+)$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Caller:
    identity: str
    """``bearer:<first 16 hex of sha256(token)>``: stable, not reversible."""


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
    def __init__(self, tokens: list[str]) -> None:
        if not tokens:
            raise ConfigError("no workload token configured")
        self._tokens = [(t.encode(), identity_of(t)) for t in tokens]

    @classmethod
    def from_settings(cls, settings: Settings) -> BearerAuth:
        token = settings.token or read_or_create_token(settings.token_path)
        return cls([token])

    def authenticate(self, authorization: str | None) -> Caller:
        match = _BEARER.match(authorization or "")
        if match is None:
            raise Unauthorized("unauthorized")
        presented = match.group(1).strip().encode()
        found: str | None = None
        # Compare against every token so the time taken does not reveal which one (if any) matched.
        for token, identity in self._tokens:
            if hmac.compare_digest(presented, token):
                found = identity
        if found is None:
            raise Unauthorized("unauthorized")
        return Caller(found)
