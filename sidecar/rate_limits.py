"""Rate counters: each caller's requests and tokens in the last minute, in this process's memory or in Redis.

The window is the sliding-window counter approximation most Redis rate limiters use: one counter per calendar
minute, and the count "in the last 60 s" at time t is ``current + previous × (60 − seconds into this minute) / 60``
(the previous minute weighted by how much of it the window still covers). Two integers per caller and kind, where an
exact sliding log would keep one entry per request; the estimate assumes the previous minute's traffic was spread
evenly. A caller is refused while its estimate has reached the limit.

``RedisCounters`` checks and counts a request in one Lua script (one round trip, atomic across replicas) and adds a
generation's tokens with one ``INCRBY``+``EXPIRE`` transaction in a background task. If Redis cannot be reached it
fails open to this process's own memory counters (the limits then hold per process, as without Redis), logs one
WARNING for the outage, and tries Redis again every ``RETRY_SECONDS``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .realtime.tokens import describe_redis_url

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.commands.core import AsyncScript

log = logging.getLogger("sidecar")

WINDOW_SECONDS = 60
KEY_PREFIX = "pi-sidecar:limits:"
RETRY_SECONDS = 5.0
"""After a Redis failure the memory counters stand in for this long before Redis is tried again, so an outage
costs each request nothing (not a connect timeout each)."""
_KEY_TTL_SECONDS = 2 * WINDOW_SECONDS + 10
"""A minute's counter is read until the end of the next minute."""
_REDIS_TIMEOUT_SECONDS = 1.0

Kind = Literal["requests", "tokens"]


@dataclass(frozen=True, slots=True)
class Quota:
    """What one caller may do per minute; ``None``: no limit of that kind."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    kind: Kind
    limit: int
    used: int
    """The caller's estimated count in the last minute (rounded down)."""
    retry_after: int
    """Whole seconds (≥ 1) until the estimate falls below the limit, if nothing more is counted."""


def refused(kind: Kind, limit: int, current: int, previous: int, elapsed: float) -> Refusal:
    """The refusal of a caller whose estimate (``current`` and ``previous`` minute, ``elapsed`` seconds into the
    current one) has reached ``limit``."""
    if current >= limit:
        # Only the next minute frees it: then ``current`` is the previous minute, fading as it leaves the window.
        wait = (WINDOW_SECONDS - elapsed) + WINDOW_SECONDS * (1 - limit / current)
    else:  # previous > 0: the previous minute's share must fade to below limit - current
        wait = WINDOW_SECONDS * (1 - (limit - current) / previous) - elapsed
    used = current + previous * (WINDOW_SECONDS - elapsed) / WINDOW_SECONDS
    return Refusal(kind, limit, int(used), max(1, math.floor(wait) + 1))


def over(limit: int, current: int, previous: int, elapsed: float) -> bool:
    return current + previous * (WINDOW_SECONDS - elapsed) / WINDOW_SECONDS >= limit


class RateCounters(ABC):
    """The window counters behind ``sidecar.policy``, keyed by caller identity."""

    @abstractmethod
    async def admit(self, identity: str, quota: Quota) -> Refusal | None:
        """``None`` and one request counted, or why the caller must wait (nothing counted)."""

    @abstractmethod
    def add_tokens(self, identity: str, tokens: int) -> None:
        """Count a finished generation's tokens; never blocks (Redis: a background task)."""

    async def close(self) -> None:
        return None


class MemoryCounters(RateCounters):
    """This process's counters: a dict update on the event loop, no lock, no await."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._windows: dict[tuple[str, Kind], list[int]] = {}
        """(identity, kind) → [minute, current count, previous minute's count]."""

    def _window(self, identity: str, kind: Kind, minute: int) -> list[int]:
        window = self._windows.get((identity, kind))
        if window is None:
            window = self._windows[identity, kind] = [minute, 0, 0]
        elif window[0] != minute:
            window[2] = window[1] if window[0] == minute - 1 else 0
            window[1] = 0
            window[0] = minute
        return window

    async def admit(self, identity: str, quota: Quota) -> Refusal | None:
        return self.admit_now(identity, quota)

    def admit_now(self, identity: str, quota: Quota) -> Refusal | None:
        minute, elapsed = divmod(self._clock(), WINDOW_SECONDS)
        if quota.tokens_per_minute is not None:
            _, current, previous = self._window(identity, "tokens", int(minute))
            if over(quota.tokens_per_minute, current, previous, elapsed):
                return refused("tokens", quota.tokens_per_minute, current, previous, elapsed)
        if quota.requests_per_minute is not None:
            window = self._window(identity, "requests", int(minute))
            if over(quota.requests_per_minute, window[1], window[2], elapsed):
                return refused("requests", quota.requests_per_minute, window[1], window[2], elapsed)
            window[1] += 1
        return None

    def add_tokens(self, identity: str, tokens: int) -> None:
        self._window(identity, "tokens", int(self._clock() // WINDOW_SECONDS))[1] += tokens


# KEYS: requests this minute, requests last minute, tokens this minute, tokens last minute.
# ARGV: weight of the previous minute, tokens_per_minute, requests_per_minute (0: no limit), key TTL.
# Returns {0} when admitted (the request counted), else {1 (requests) or 2 (tokens), current, previous}.
_ADMIT_SCRIPT = """
local weight = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local rpm = tonumber(ARGV[3])
if tpm > 0 then
  local counts = redis.call('MGET', KEYS[3], KEYS[4])
  local current, previous = tonumber(counts[1]) or 0, tonumber(counts[2]) or 0
  if current + previous * weight >= tpm then return {2, current, previous} end
end
if rpm > 0 then
  local counts = redis.call('MGET', KEYS[1], KEYS[2])
  local current, previous = tonumber(counts[1]) or 0, tonumber(counts[2]) or 0
  if current + previous * weight >= rpm then return {1, current, previous} end
  redis.call('INCR', KEYS[1])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
return {0}
"""


class RedisCounters(RateCounters):
    """Counters every replica and worker shares. Keys: ``<prefix>{<identity>}:<r|t>:<minute>``; the braces keep one
    caller's keys in one Redis Cluster slot, as a script's keys must be."""

    def __init__(self, url: str, *, prefix: str = KEY_PREFIX, clock: Callable[[], float] = time.time) -> None:
        self._url = url
        self._prefix = prefix
        self._clock = clock
        self.description = describe_redis_url(url)
        self._fallback = MemoryCounters(clock)
        self._redis: aioredis.Redis | None = None
        self._script: AsyncScript | None = None
        self._down_until = 0.0
        self._down = False
        self._tasks: set[asyncio.Task[None]] = set()

    def _key(self, identity: str, kind: str, minute: int) -> str:
        return f"{self._prefix}{{{identity}}}:{kind}:{minute}"

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            import redis.asyncio as aioredis  # only a sidecar with [limits] redis_url and a limit loads redis-py

            try:
                pool = aioredis.BlockingConnectionPool.from_url(
                    self._url,
                    max_connections=50,
                    timeout=_REDIS_TIMEOUT_SECONDS,
                    socket_timeout=_REDIS_TIMEOUT_SECONDS,
                    socket_connect_timeout=_REDIS_TIMEOUT_SECONDS,
                )
            except ValueError:  # its text may quote the URL, password included
                raise ConnectionError("malformed URL") from None
            self._redis = aioredis.Redis.from_pool(pool)
            self._script = self._redis.register_script(_ADMIT_SCRIPT)
        return self._redis

    def _usable(self) -> bool:
        return not self._down or time.monotonic() >= self._down_until

    def _failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + RETRY_SECONDS
        if not self._down:
            self._down = True
            # Once per outage, not per request. The exception's text names host and port at most, never the URL.
            log.warning(
                "rate limits: %s is unreachable (%s); counting in this process's memory meanwhile, so the limits "
                "hold per process until it is back",
                self.description,
                type(exc).__name__,
            )

    def _succeeded(self) -> None:
        if self._down:
            self._down = False
            log.warning("rate limits: %s is reachable again; counting there", self.description)

    async def admit(self, identity: str, quota: Quota) -> Refusal | None:
        if not self._usable():
            return self._fallback.admit_now(identity, quota)
        from redis.exceptions import RedisError

        now = self._clock()
        minute, elapsed = divmod(now, WINDOW_SECONDS)
        this, last = int(minute), int(minute) - 1
        keys = [
            self._key(identity, "r", this),
            self._key(identity, "r", last),
            self._key(identity, "t", this),
            self._key(identity, "t", last),
        ]
        weight = (WINDOW_SECONDS - elapsed) / WINDOW_SECONDS
        args: list[str | int] = [
            repr(weight),
            quota.tokens_per_minute or 0,
            quota.requests_per_minute or 0,
            _KEY_TTL_SECONDS,
        ]
        try:
            self._client()
            assert self._script is not None
            answer = await self._script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return self._fallback.admit_now(identity, quota)
        self._succeeded()
        if answer[0] == 0:
            return None
        current, previous = int(answer[1]), int(answer[2])
        if answer[0] == 1:
            assert quota.requests_per_minute is not None
            return refused("requests", quota.requests_per_minute, current, previous, elapsed)
        assert quota.tokens_per_minute is not None
        return refused("tokens", quota.tokens_per_minute, current, previous, elapsed)

    def add_tokens(self, identity: str, tokens: int) -> None:
        if not self._usable():
            self._fallback.add_tokens(identity, tokens)
            return
        try:
            task = asyncio.get_running_loop().create_task(self._add_tokens(identity, tokens))
        except RuntimeError:  # no event loop (not reached from a request): count here
            self._fallback.add_tokens(identity, tokens)
            return
        self._tasks.add(task)  # a strong reference until it is done
        task.add_done_callback(self._tasks.discard)

    async def _add_tokens(self, identity: str, tokens: int) -> None:
        from redis.exceptions import RedisError

        key = self._key(identity, "t", int(self._clock() // WINDOW_SECONDS))
        try:
            async with self._client().pipeline(transaction=True) as pipe:
                pipe.incrby(key, tokens)
                pipe.expire(key, _KEY_TTL_SECONDS)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed(exc)
            self._fallback.add_tokens(identity, tokens)
            return
        self._succeeded()

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        if self._redis is not None:
            client, self._redis = self._redis, None
            await client.aclose()


def counters_for(redis_url: str | None) -> RateCounters:
    return RedisCounters(redis_url) if redis_url else MemoryCounters()
