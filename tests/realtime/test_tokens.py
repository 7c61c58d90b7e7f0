"""The single-use realtime client secrets (``vcst_…``) and the stores that redeem them: in memory, in the SQLite file
the workers of one sidecar share, and in real Redis.

Every store test runs against ``MemoryTokenStore``, ``SqliteTokenStore`` (a file in the test's directory) and
``RedisTokenStore`` on the Redis at 127.0.0.1:6379 (tests/realtime/conftest.py; unreachable Redis fails the tests).
A test deletes the Redis keys it created; it never flushes, since the server may be shared.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import sqlite3
import time
import traceback
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from sidecar.errors import TokenStoreUnavailable
from sidecar.realtime.redis_tokens import RedisTokenStore
from sidecar.realtime.sqlite_tokens import SqliteTokenStore
from sidecar.realtime.tokens import (
    TOKEN_PREFIX,
    Grant,
    MemoryTokenStore,
    TokenStore,
    mint_token,
    store_for,
    token_hash,
)

KEY_PREFIX = "pi-sidecar:vcst:"
TOKEN_SHAPE = re.compile(r"vcst_[A-Za-z0-9_-]{43}")
PASSWORD = "hunter2"


@dataclass
class Stores:
    """The store under test and, for Redis, a raw client to look at what it wrote."""

    kind: str
    store: TokenStore
    raw: aioredis.Redis | None = None
    created: list[str] = field(default_factory=list)

    def mint(self) -> tuple[str, str]:
        """A fresh token and its key, remembered so the fixture deletes the key afterwards."""
        token, key = mint_token()
        self.created.append(key)
        return token, key

    async def stored(self) -> dict[str, bytes]:
        """Everything the store holds, as raw key → raw value (Redis: every key under the prefix in the database)."""
        if isinstance(self.store, SqliteTokenStore):
            with sqlite3.connect(self.store.path) as db:
                return dict(db.execute("SELECT key, grant_json FROM realtime_tokens").fetchall())
        if self.raw is None:
            assert isinstance(self.store, MemoryTokenStore)
            return {key: orjson.dumps(asdict(grant)) for key, grant in self.store._grants.items()}
        keys = [key.decode() async for key in self.raw.scan_iter(match=KEY_PREFIX + "*", count=1000)]
        values = await self.raw.mget(keys) if keys else []
        return {key: value for key, value in zip(keys, values, strict=True) if isinstance(value, bytes)}


def grant(ttl: float = 30.0, model: str = "openai/gpt-realtime") -> Grant:
    return Grant(model, "realtime", "workload:test", time.time() + ttl, 2.5)


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    if request.param == "memory":
        yield Stores("memory", MemoryTokenStore())
        return
    if request.param == "sqlite":
        shared = SqliteTokenStore(tmp_path / "realtime-tokens.db")
        await shared.open()
        try:
            yield Stores("sqlite", shared)
        finally:
            await shared.close()
        return
    url: str = request.getfixturevalue("redis_url")
    store = RedisTokenStore(url)
    await store.open()
    raw = aioredis.from_url(url)
    stores = Stores("redis", store, raw)
    try:
        yield stores
    finally:
        if stores.created:
            await raw.delete(*(KEY_PREFIX + key for key in stores.created))
        await raw.aclose()
        await store.close()


# ----- the token ----------------------------------------------------------------------------------------------------


def test_a_minted_token_is_vcst_and_43_base64url_characters_of_32_random_bytes() -> None:
    tokens = set()
    for _ in range(500):
        token, key = mint_token()
        assert TOKEN_SHAPE.fullmatch(token), token
        assert token.startswith(TOKEN_PREFIX)
        body = token[len(TOKEN_PREFIX) :]
        assert len(base64.urlsafe_b64decode(body + "=")) == 32
        assert key == token_hash(token) == hashlib.sha256(token.encode()).hexdigest()
        assert re.fullmatch(r"[0-9a-f]{64}", key) and body not in key
        tokens.add(token)
    assert len(tokens) == 500


def test_store_for_picks_redis_for_a_url_then_the_shared_file(tmp_path: Path) -> None:
    assert isinstance(store_for(None), MemoryTokenStore)
    assert isinstance(store_for(""), MemoryTokenStore)
    assert isinstance(store_for("redis://127.0.0.1:6379/7"), RedisTokenStore)
    assert isinstance(store_for("redis://127.0.0.1:6379/7", tmp_path / "t.db"), RedisTokenStore)
    assert isinstance(store_for(None, tmp_path / "t.db"), SqliteTokenStore)


async def test_two_processes_sharing_the_file_redeem_a_secret_exactly_once(tmp_path: Path) -> None:
    """Two workers: two connections to one file. A secret minted through one is redeemed through either, once, also
    when both race for it (SQLite lets one writer in at a time)."""
    path = tmp_path / "realtime-tokens.db"
    first, second = SqliteTokenStore(path), SqliteTokenStore(path)
    await first.open()
    await second.open()
    try:
        keys = [mint_token()[1] for _ in range(20)]
        for key in keys:
            await first.put(key, grant())
        assert await second.consume(keys[0]) is not None and await first.consume(keys[0]) is None
        for key in keys[1:]:
            results = await asyncio.gather(*(store.consume(key) for store in (first, second) for _ in range(5)))
            assert len([r for r in results if r is not None]) == 1, key
    finally:
        await first.close()
        await second.close()


# ----- both stores --------------------------------------------------------------------------------------------------


async def test_only_the_sha256_of_the_token_is_stored_with_the_grant(stores: Stores) -> None:
    token, key = stores.mint()
    minted = grant()
    await stores.store.put(key, minted)

    stored = await stores.stored()
    prefix = KEY_PREFIX if stores.kind == "redis" else ""
    assert prefix + key in stored
    secret = token[len(TOKEN_PREFIX) :]
    for raw_key, raw_value in stored.items():  # neither the token nor its random part, anywhere the store wrote
        assert secret not in raw_key and secret.encode() not in raw_value
    assert orjson.loads(stored[prefix + key]) == {
        "model": "openai/gpt-realtime",
        "route_kind": "realtime",
        "identity": "workload:test",
        "expires_at": minted.expires_at,
        "budget_usd": 2.5,
        "session": None,  # an ek_ grant's session config (sidecar.realtime.openai); none for a vcst_ one
    }


async def test_a_grant_is_consumed_once(stores: Stores) -> None:
    _, key = stores.mint()
    minted = grant()
    await stores.store.put(key, minted)
    assert await stores.store.consume(key) == minted
    assert await stores.store.consume(key) is None
    assert await stores.store.consume(key) is None
    prefix = KEY_PREFIX if stores.kind == "redis" else ""
    assert prefix + key not in await stores.stored()  # redeemed means removed


async def test_an_unknown_key_consumes_to_none(stores: Stores) -> None:
    _, key = stores.mint()
    assert await stores.store.consume(key) is None


async def test_an_expired_grant_is_not_returned(stores: Stores) -> None:
    _, key = stores.mint()
    await stores.store.put(key, grant(ttl=0.3))
    await asyncio.sleep(0.45)
    assert await stores.store.consume(key) is None


async def test_a_grant_past_expires_at_is_refused_even_while_its_key_lives(stores: Stores) -> None:
    """A replica whose clock runs behind may have set a longer TTL: ``expires_at`` in the grant still wins."""
    _, key = stores.mint()
    await stores.store.put(key, grant(ttl=0.3))
    if stores.raw is not None:
        assert await stores.raw.pexpire(KEY_PREFIX + key, 10_000)
    await asyncio.sleep(0.45)
    assert await stores.store.consume(key) is None
    if stores.raw is not None:
        assert await stores.raw.exists(KEY_PREFIX + key) == 0  # and it is gone all the same


async def test_200_concurrent_consumes_of_one_key_give_exactly_one_grant(stores: Stores) -> None:
    _, key = stores.mint()
    minted = grant()
    await stores.store.put(key, minted)
    results = await asyncio.gather(*(stores.store.consume(key) for _ in range(200)), return_exceptions=True)
    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    assert failures == [], f"{len(failures)} of 200 consumes raised, e.g. {failures[:3]}"
    assert [r for r in results if r is not None] == [minted]
    assert results.count(None) == 199


async def test_200_concurrent_consumes_of_200_keys_all_succeed(stores: Stores) -> None:
    """A burst of redemptions (200 browsers opening at once) is served, not refused for want of connections."""
    keys = [stores.mint()[1] for _ in range(200)]
    for key in keys:
        await stores.store.put(key, grant())
    results = await asyncio.gather(*(stores.store.consume(key) for key in keys), return_exceptions=True)
    assert all(isinstance(r, Grant) for r in results), [repr(r) for r in results if not isinstance(r, Grant)][:3]


# ----- Redis only ---------------------------------------------------------------------------------------------------


async def test_redis_sets_a_ttl_no_longer_than_the_grant_lives(redis_url: str) -> None:
    store = RedisTokenStore(redis_url)
    await store.open()
    raw = aioredis.from_url(redis_url)
    _, key = mint_token()
    try:
        await store.put(key, grant(ttl=30))
        pttl = await raw.pttl(KEY_PREFIX + key)
        assert 29_000 <= pttl <= 30_000, pttl
        await store.put(key, grant(ttl=300))  # SET NX: a second put never extends (or replaces) a live grant
        assert await raw.pttl(KEY_PREFIX + key) <= 30_000
    finally:
        await raw.delete(KEY_PREFIX + key)
        await raw.aclose()
        await store.close()


async def test_redis_description_names_host_port_and_database(redis_url: str) -> None:
    assert RedisTokenStore(redis_url).description == "redis 127.0.0.1:6379/7"


def assert_no_password(exc: TokenStoreUnavailable, store: RedisTokenStore) -> None:
    shown = [str(exc), repr(exc), "".join(traceback.format_exception(exc)), store.description]
    assert all(PASSWORD not in text for text in shown), shown


async def test_unreachable_redis_raises_token_store_unavailable_without_the_password() -> None:
    store = RedisTokenStore(f"redis://:{PASSWORD}@127.0.0.1:1/0")
    assert store.description == "redis 127.0.0.1:1/0"
    with pytest.raises(TokenStoreUnavailable) as raised:
        await store.open()
    assert raised.value.status == 503
    assert "cannot reach the realtime token store (redis 127.0.0.1:1/0)" in str(raised.value)
    assert_no_password(raised.value, store)
    with pytest.raises(TokenStoreUnavailable, match="closed"):  # a store that never opened refuses, it does not hang
        await store.consume(mint_token()[1])
    await store.close()


async def test_a_rejected_redis_password_is_not_shown_either(redis_url: str) -> None:
    store = RedisTokenStore(redis_url.replace("redis://", f"redis://nobody:{PASSWORD}@"))
    with pytest.raises(TokenStoreUnavailable) as raised:
        await store.open()
    assert_no_password(raised.value, store)
