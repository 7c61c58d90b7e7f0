"""Two sidecar processes sharing one Redis redeem a realtime client secret exactly once, whoever races for it.

One pair of real ``python -m sidecar serve`` processes per module, both with ``[realtime] token_store`` on the Redis
at 127.0.0.1:6379 (tests/realtime/conftest.py: unreachable Redis fails the module) and OPENAI_BASE_URL on one
FakeRealtime. The "browsers" are websockets clients offering @ai-sdk/gateway's subprotocols.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from sidecar.realtime.tokens import token_hash
from tests.fakerealtime import FakeRealtime
from tests.interop.harness import ROOT, free_port, healthz
from tests.sidecar_server import OPENAI_CANARY, TOKEN

MODEL = "openai/gpt-realtime"
KEY_PREFIX = "pi-sidecar:vcst:"
ATTEMPTS = 100


@dataclass
class Replica:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    command: list[str]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def socket_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v4/ai/realtime-model?ai-model-id={MODEL.replace('/', '%2F')}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Pair:
    a: Replica
    b: Replica
    upstream: FakeRealtime
    redis_url: str

    def report_sections(self) -> list[tuple[str, str]]:
        """Both sidecars' output, for a failing test's report (tests/realtime/conftest.py attaches it)."""
        return [(f"sidecar {replica.name} output", replica.log()) for replica in (self.a, self.b)]


def spawn(name: str, work: Path, redis_url: str, upstream: FakeRealtime) -> Replica:
    work.mkdir()
    config = work / "sidecar.toml"
    config.write_text(f'[upstream]\nmax_retries = 0\n\n[realtime]\ntoken_store = "{redis_url}"\n', encoding="utf-8")
    env = {  # nothing inherited: no stray SIDECAR_REALTIME_REDIS_URL or provider key from the caller's shell
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "HOME": str(work),
        "SIDECAR_HOME": str(work / "sidecar"),
        "SIDECAR_TOKEN": TOKEN,
        "OPENAI_API_KEY": OPENAI_CANARY,
        "OPENAI_BASE_URL": upstream.url.replace("ws://", "http://"),
    }
    port = free_port()
    log_path = work / "sidecar.log"
    cmd = [sys.executable, "-m", "sidecar", "serve", "--config", str(config)]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return Replica(name, port, proc, cmd, log_path)


def stop(replica: Replica) -> None:
    replica.proc.terminate()
    try:
        replica.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        replica.proc.kill()
        replica.proc.wait(timeout=10)


def wait_healthy(replicas: list[Replica]) -> None:
    deadline = time.monotonic() + 30
    waiting = list(replicas)
    while waiting:
        replica = waiting[0]
        if healthz(replica.url) is not None:
            waiting.pop(0)
            continue
        if replica.proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(
                f"sidecar {replica.name} did not become healthy (exit code {replica.proc.poll()}); command: "
                f"{' '.join(replica.command)}\n--- output ---\n{replica.log()}",
                pytrace=False,
            )
        time.sleep(0.05)


@pytest.fixture(scope="module")
def pair(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    work = tmp_path_factory.mktemp("redis-race")
    with ExitStack() as stack:
        upstream = stack.enter_context(FakeRealtime())
        replicas = []
        for name in ("a", "b"):  # both start at once: the module pays one process start-up, not two
            replica = spawn(name, work / name, redis_url, upstream)
            stack.callback(stop, replica)
            replicas.append(replica)
        wait_healthy(replicas)
        yield Pair(replicas[0], replicas[1], upstream, redis_url)


async def mint(replica: Replica) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{replica.url}/v1/realtime/client-secrets",
            json={"model": MODEL},
            headers={"authorization": f"Bearer {TOKEN}"},
        )
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


async def stored_pttl(redis_url: str, token: str) -> int:
    """The remaining TTL of the token's key in the shared Redis: -2 when there is no such key."""
    raw = aioredis.from_url(redis_url)
    try:
        pttl: int = await raw.pttl(KEY_PREFIX + token_hash(token))
        return pttl
    finally:
        await raw.aclose()


@dataclass
class Attempt:
    replica: str
    status: int
    """101 for an opened socket, else the HTTP status of the refused upgrade."""
    body: Any
    """The first event (``session-created``) when opened, else the parsed JSON error body."""


async def attempt(replica: Replica, token: str) -> Attempt:
    protocols = [Subprotocol("ai-gateway-realtime.v1"), Subprotocol(f"ai-gateway-auth.{token}")]
    try:
        async with connect(replica.socket_url, subprotocols=protocols, open_timeout=10) as ws:
            async with asyncio.timeout(10):
                event = json.loads(await ws.recv())
            return Attempt(replica.name, 101, event)
    except InvalidStatus as exc:
        return Attempt(replica.name, exc.response.status_code, json.loads(exc.response.body))


def assert_refused_as_used(refused: Attempt) -> None:
    assert refused.status == 401, refused
    assert refused.body["error"]["type"] == "authentication_error", refused
    assert "unknown, expired or already used" in refused.body["error"]["message"], refused


async def test_100_concurrent_upgrades_across_two_replicas_redeem_one_token_once(pair: Pair) -> None:
    token = await mint(pair.a)
    assert 0 < await stored_pttl(pair.redis_url, token) <= 60_000  # minted into the shared Redis, hash only
    upstream_before = len(pair.upstream.connections)

    replicas = [pair.a if i % 2 == 0 else pair.b for i in range(ATTEMPTS)]  # 50 each, interleaved
    attempts = await asyncio.gather(*(attempt(replica, token) for replica in replicas))

    opened = [a for a in attempts if a.status == 101]
    refused = [a for a in attempts if a.status != 101]
    assert len(opened) == 1, [(a.replica, a.status) for a in opened]
    assert opened[0].body["type"] == "session-created", opened[0]
    assert len(refused) == ATTEMPTS - 1
    for each in refused:
        assert_refused_as_used(each)
    assert {a.replica for a in refused} == {"a", "b"}  # both replicas really took part in the race
    assert OPENAI_CANARY not in json.dumps([a.body for a in attempts])

    upstream = pair.upstream.connections[upstream_before:]
    assert len(upstream) == 1, upstream  # the 99 refusals never reached the provider
    assert upstream[0].path == "/v1/realtime?model=gpt-realtime"
    assert upstream[0].headers["authorization"] == f"Bearer {OPENAI_CANARY}"
    assert await stored_pttl(pair.redis_url, token) == -2  # GETDEL took it
    for replica in (pair.a, pair.b):  # 100 upgrades logged nowhere with the secret or the provider key
        assert token not in replica.log() and token_hash(token) not in replica.log()
        assert OPENAI_CANARY not in replica.log()


@pytest.mark.parametrize(("minter", "redeemer"), [("a", "b"), ("b", "a")])
async def test_a_token_minted_on_one_replica_is_redeemable_once_on_the_other(
    pair: Pair, minter: str, redeemer: str
) -> None:
    by_name = {"a": pair.a, "b": pair.b}
    token = await mint(by_name[minter])
    upstream_before = len(pair.upstream.connections)

    first = await attempt(by_name[redeemer], token)
    assert first.status == 101 and first.body["type"] == "session-created", first
    assert_refused_as_used(await attempt(by_name[redeemer], token))
    assert_refused_as_used(await attempt(by_name[minter], token))
    assert len(pair.upstream.connections) - upstream_before == 1


async def mint_openai(replica: Replica, seconds: int = 60) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{replica.url}/v1/realtime/client_secrets",
            json={"expires_after": {"anchor": "created_at", "seconds": seconds}, "session": {"type": "realtime"}},
            headers={"authorization": f"Bearer {TOKEN}"},
        )
    assert response.status_code == 200, response.text
    secret: str = response.json()["value"]
    return secret


async def attempt_openai(replica: Replica, secret: str) -> Attempt:
    """An OpenAI browser client's upgrade: ``realtime`` and ``openai-insecure-api-key.<ek>``."""
    url = f"ws://127.0.0.1:{replica.port}/v1/realtime?model=gpt-realtime"
    protocols = [Subprotocol("realtime"), Subprotocol(f"openai-insecure-api-key.{secret}")]
    try:
        async with connect(url, subprotocols=protocols, open_timeout=10) as ws:
            async with asyncio.timeout(10):
                event = json.loads(await ws.recv())
            return Attempt(replica.name, 101, event)
    except InvalidStatus as exc:
        return Attempt(replica.name, exc.response.status_code, json.loads(exc.response.body))


async def test_an_openai_secret_opens_once_across_replicas_and_expires_on_both(pair: Pair) -> None:
    """The ``ek_`` secrets (OpenAI's shape) live in the same shared store: minted on A, opened once on B, refused on
    both afterwards; one that expired is refused by either."""
    secret = await mint_openai(pair.a)
    assert secret.startswith("ek_") and 0 < await stored_pttl(pair.redis_url, secret) <= 60_000
    attempts = await asyncio.gather(*(attempt_openai(r, secret) for r in [pair.b, pair.a] * 10))
    opened = [a for a in attempts if a.status == 101]
    assert len(opened) == 1 and opened[0].body["type"] == "session.created", opened
    for refused in (a for a in attempts if a.status != 101):
        assert refused.status == 401 and "already used" in refused.body["error"]["message"], refused
        assert set(refused.body["error"]) == {"message", "type", "param", "code"}  # OpenAI's envelope
    short = await mint_openai(pair.b, seconds=1)
    await asyncio.sleep(1.2)
    for replica in (pair.a, pair.b):
        expired = await attempt_openai(replica, short)
        assert expired.status == 401, expired
    for replica in (pair.a, pair.b):
        assert secret not in replica.log() and OPENAI_CANARY not in replica.log()
