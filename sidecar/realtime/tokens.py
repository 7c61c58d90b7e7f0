"""Single-use, short-lived realtime client secrets (``vcst_…`` for the AI Gateway contract, ``ek_…`` for OpenAI's)
and the stores that redeem them exactly once.

The token is 32 random bytes (base64url) after the ``vcst_`` prefix; only its SHA-256 is stored. A grant binds it to
the model, the route kind and the minting bearer's identity, until ``expires_at``. ``consume`` is atomic: of any
number of concurrent redemptions, across any number of sidecar replicas sharing Redis, exactly one gets the grant.

    TokenStore          put / consume
    ├── MemoryTokenStore  one process (the default)
    ├── RedisTokenStore   ``SET key grant PX ttl NX`` to mint, ``GETDEL`` to redeem (Redis >= 6.2);
    │                     ``sidecar.realtime.redis_tokens``, imported only when a Redis URL is configured (redis-py
    │                     adds ~20 MiB to a process that does not use it)
    └── SqliteTokenStore  one file shared by the workers of one sidecar (``[server] workers`` > 1, no Redis):
                          ``sidecar.realtime.sqlite_tokens``
"""

from __future__ import annotations

import abc
import base64
import hashlib
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

TOKEN_PREFIX = "vcst_"


@dataclass(frozen=True, slots=True)
class Grant:
    model: str
    """``provider/id`` of the model the token may open a session with."""
    route_kind: str
    identity: str
    """The minting bearer's identity: the session is attributed, budgeted and limited as that bearer."""
    expires_at: float
    """Epoch seconds."""
    budget_usd: float | None = None
    session: dict[str, Any] | None = None
    """OpenAI-shape secrets (``ek_``): the session config they were minted with, applied before the client's frames."""


def encode_grant(grant: Grant) -> bytes:
    """A grant as the shared stores keep it (JSON)."""
    return orjson.dumps(asdict(grant))


def decode_grant(raw: bytes | str) -> Grant | None:
    """A stored grant, ``None`` once it expired. Only the fields this version knows: a newer replica may have added
    some during a rolling upgrade."""
    data = orjson.loads(raw)
    grant = Grant(**{name: data[name] for name in Grant.__dataclass_fields__ if name in data})
    return grant if grant.expires_at > time.time() else None


def mint_token(prefix: str = TOKEN_PREFIX) -> tuple[str, str]:
    """A new token and the hash under which it is stored."""
    token = prefix + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore(abc.ABC):
    description: str

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    @abc.abstractmethod
    async def put(self, key: str, grant: Grant) -> None: ...

    @abc.abstractmethod
    async def consume(self, key: str) -> Grant | None:
        """The grant, removed so no one else gets it; ``None`` when unknown, already used or expired."""


class MemoryTokenStore(TokenStore):
    description = "memory"

    def __init__(self) -> None:
        self._grants: dict[str, Grant] = {}

    async def put(self, key: str, grant: Grant) -> None:
        now = time.time()
        # Expired grants are dropped here, so the dict never holds more than the live ones plus one TTL's worth.
        for stale in [k for k, g in self._grants.items() if g.expires_at <= now]:
            del self._grants[stale]
        self._grants[key] = grant

    async def consume(self, key: str) -> Grant | None:
        grant = self._grants.pop(key, None)  # no await between lookup and removal: atomic on the event loop
        if grant is None or grant.expires_at <= time.time():
            return None
        return grant


def describe_redis_url(url: str) -> str:
    """``redis host:port/db`` (or the socket path) for logs and errors: never the password."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return f"redis unix socket {parts.path}"
        return f"redis {parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"
    except ValueError:
        return "redis (malformed URL)"


def store_for(url: str | None, shared_file: Path | None = None) -> TokenStore:
    """Redis when ``url`` is set; else the SQLite file ``shared_file`` when several processes must share the secrets
    (``Settings.token_store_file``); else this process's memory."""
    if url:
        from .redis_tokens import RedisTokenStore

        return RedisTokenStore(url)
    if shared_file is not None:
        from .sqlite_tokens import SqliteTokenStore

        return SqliteTokenStore(shared_file)
    return MemoryTokenStore()
