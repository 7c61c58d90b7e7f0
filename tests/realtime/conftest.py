"""The real Redis the realtime token-store tests run against (127.0.0.1:6379, no auth, nothing kept on disk).

Redis being unreachable FAILS the tests that need it, with the command that starts it; nothing is skipped. The tests
share the server with whatever else runs, so they never flush anything: token keys are random SHA-256 hashes under
``pi-sidecar:vcst:``, each test deletes the keys it created, and every key carries a TTL anyway.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest
import redis
from redis.exceptions import RedisError

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
REDIS_DB = 7
"""A logical database of its own, so the keys these tests create are easy to tell apart from anyone else's."""
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
REDIS_START = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no '
    "--dir /var/lib/redis --logfile /var/log/redis/ci.log"
)
MIN_REDIS = (6, 2)
"""GETDEL, which RedisTokenStore redeems with, is Redis >= 6.2."""


def require_redis() -> str:
    """``REDIS_URL`` once Redis answers PING there and is new enough; otherwise the calling test fails."""
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
        version = str(client.info("server")["redis_version"])
    except (RedisError, OSError) as exc:
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} ({type(exc).__name__}: {exc}). The realtime token-store tests "
            f"need a real Redis; start one with:\n    {REDIS_START}",
            pytrace=False,
        )
    finally:
        client.close()
    if tuple(int(part) for part in version.split(".")[:2]) < MIN_REDIS:
        pytest.fail(f"Redis {version} at {REDIS_URL} has no GETDEL; the token store needs Redis >= 6.2", pytrace=False)
    return REDIS_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    """``redis://127.0.0.1:6379/7``, checked reachable (the session fails here, loudly, when it is not)."""
    return require_redis()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    """A failing test that used sidecar subprocesses (a fixture with ``report_sections``) gets their output."""
    report = yield
    if isinstance(report, pytest.TestReport) and report.failed:
        for value in getattr(item, "funcargs", {}).values():
            sections = getattr(value, "report_sections", None)
            if callable(sections):
                report.sections.extend(sections())
    return report
