"""The Redis token store: realtime client secrets shared by every replica (see ``sidecar.realtime.tokens``)."""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sidecar.errors import TokenStoreUnavailable

from .tokens import Grant, TokenStore, decode_grant, describe_redis_url, encode_grant

_KEY_PREFIX = "pi-sidecar:vcst:"
_MAX_CONNECTIONS = 50
"""Redis connections per replica (a SET or GETDEL holds one for well under a millisecond)."""


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
            await self._client().set(_KEY_PREFIX + key, encode_grant(grant), px=ttl_ms, nx=True)
        except (RedisError, OSError) as exc:
            raise TokenStoreUnavailable(f"realtime token store failed ({self.description}): {exc}") from None

    async def consume(self, key: str) -> Grant | None:
        try:
            raw = await self._client().getdel(_KEY_PREFIX + key)  # atomic in Redis: one caller gets the value
        except (RedisError, OSError) as exc:
            raise TokenStoreUnavailable(f"realtime token store failed ({self.description}): {exc}") from None
        return None if raw is None else decode_grant(raw)
