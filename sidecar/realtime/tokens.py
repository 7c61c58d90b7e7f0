"""Single-use, short-lived realtime client secrets (``vcst_…``) and the stores that redeem them exactly once.

The token is 32 random bytes (base64url) after the ``vcst_`` prefix; only its SHA-256 is stored. A grant binds it to
the model, the route kind and the minting bearer's identity, until ``expires_at``. ``consume`` is atomic: of any
number of concurrent redemptions, across any number of sidecar replicas sharing Redis, exactly one gets the grant.

    TokenStore          put / consume
    ├── MemoryTokenStore  one process (the default)
    └── RedisTokenStore   ``SET key grant PX ttl NX`` to mint, ``GETDEL`` to redeem (Redis >= 6.2)
"""

from __future__ import annotations

import abc
import base64
import hashlib
import secrets
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sidecar.errors import TokenStoreUnavailable

TOKEN_PREFIX = "vcst_"
_KEY_PREFIX = "pi-sidecar:vcst:"
_MAX_CONNECTIONS = 50
"""Redis connections per replica (a SET or GETDEL holds one for well under a millisecond)."""


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


def mint_token() -> tuple[str, str]:
    """A new token and the hash under which it is stored."""
    token = TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
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


class RedisTokenStore(TokenStore):
    def __init__(self, url: str) -> None:
        self._url = url
        self.description = describe_redis_url(url)
        self._redis: aioredis.Redis | None = None

    async def open(self) -> None:
        # A blocking pool: a burst of redemptions beyond the pool waits (up to 5 s) for a free connection. The
        # default pool raises "Too many connections" once 100 are in use (redis-py 8): 503s under a burst.
        try:
            pool = aioredis.BlockingConnectionPool.from_url(
                self._url, max_connections=_MAX_CONNECTIONS, timeout=5, socket_timeout=5, socket_connect_timeout=5
            )
        except ValueError:  # its text may quote the URL, password included
            raise TokenStoreUnavailable(f"the realtime token store URL is malformed ({self.description})") from None
        client = aioredis.Redis.from_pool(pool)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise TokenStoreUnavailable(f"cannot reach the realtime token store ({self.description}): {exc}") from None
        self._redis = client

    async def close(self) -> None:
        if self._redis is not None:
            client, self._redis = self._redis, None
            await client.aclose()

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            raise TokenStoreUnavailable("the realtime token store is closed")
        return self._redis

    async def put(self, key: str, grant: Grant) -> None:
        ttl_ms = max(int((grant.expires_at - time.time()) * 1000), 1)
        try:
            await self._client().set(_KEY_PREFIX + key, orjson.dumps(asdict(grant)), px=ttl_ms, nx=True)
        except (RedisError, OSError) as exc:
            raise TokenStoreUnavailable(f"realtime token store failed ({self.description}): {exc}") from None

    async def consume(self, key: str) -> Grant | None:
        try:
            raw = await self._client().getdel(_KEY_PREFIX + key)  # atomic in Redis: one caller gets the value
        except (RedisError, OSError) as exc:
            raise TokenStoreUnavailable(f"realtime token store failed ({self.description}): {exc}") from None
        if raw is None:
            return None
        data = orjson.loads(raw)
        # Only the fields this version knows: a newer replica may have added some during a rolling upgrade.
        grant = Grant(**{name: data[name] for name in Grant.__dataclass_fields__ if name in data})
        return grant if grant.expires_at > time.time() else None


def describe_redis_url(url: str) -> str:
    """``redis host:port/db`` (or the socket path) for logs and errors: never the password."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return f"redis unix socket {parts.path}"
        return f"redis {parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"
    except ValueError:
        return "redis (malformed URL)"


def store_for(url: str | None) -> TokenStore:
    return RedisTokenStore(url) if url else MemoryTokenStore()
