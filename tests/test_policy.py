"""Per-caller policy (``[limits]``, ``[[workloads]]``): allowed models and requests / tokens per minute.

Real sidecars on 127.0.0.1 in front of the fake upstream; the cross-replica tests share the real Redis at
127.0.0.1:6379 (unreachable fails them, with the command that starts it) under key prefixes of their own, which they
delete afterwards. Where a minute boundary would make a count flaky, the sidecar gets memory or Redis counters on a
fixed clock (``create_app(rate_counters=…)``): the window itself is tested on a clock the test moves.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from sidecar.config import load_settings
from sidecar.errors import ConfigError
from sidecar.rate_limits import WINDOW_SECONDS, MemoryCounters, Quota, RedisCounters
from tests.conftest import pi_body
from tests.fakeupstream import FakeUpstream, Reply, fixture_bytes
from tests.realtime.conftest import require_redis
from tests.sidecar_server import TOKEN, free_port, run_sidecar, sidecar_environ, write_config

CI_TOKEN = "ci-agent-token-0123456789abcdef"
BATCH_TOKEN = "batch-token-0123456789abcdef"
WORKLOAD_ENV = {"CI_TOKEN": CI_TOKEN, "BATCH_TOKEN": BATCH_TOKEN}
TEXT_REPLY = "anthropic-messages/text-basic-padded.sse"
CACHED_REPLY = "anthropic-messages/prompt-cache-usage-server-tools.sse"
"""Its final usage: input 6, cache write 3337, cache read 6289, output 198 = 9830 tokens."""
CACHED_REPLY_TOKENS = 6 + 3337 + 6289 + 198
MINUTE = 29_000_000
FIXED_NOW = MINUTE * WINDOW_SECONDS + 30.0
"""Thirty seconds into a minute: no window slides while the clock stands still."""


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def config(text: str) -> str:
    return "[upstream]\nmax_retries = 0\n\n" + text


def pi(url: str, model: str, token: str = TOKEN, text: str = "hello") -> httpx.Response:
    return httpx.post(f"{url}/v1/pi/stream", json=pi_body(model, text), headers=bearer(token), timeout=10)


def chat(url: str, model: str, token: str = TOKEN) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=bearer(token), timeout=10)


def messages(url: str, model: str, token: str = TOKEN) -> httpx.Response:
    body = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{url}/v1/messages", json=body, headers={"x-api-key": token}, timeout=10)


def assert_no_secret(text: str) -> None:
    for secret in (TOKEN, CI_TOKEN, BATCH_TOKEN, "s3cret-pw"):
        assert secret not in text


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        up.default = Reply.sse(fixture_bytes(TEXT_REPLY))
        yield up


# ----- allowed models ------------------------------------------------------------------------------------------------

MODELS_CONFIG = """
[limits]
models = ["anthropic/*", "echo/*"]

[[workloads]]
name = "ci"
token = "env:CI_TOKEN"
models = ["openai/gpt-4o*"]
"""


def test_a_model_no_pattern_matches_is_refused_403_in_each_routes_shape(upstream: FakeUpstream, tmp_path: Path) -> None:
    environ = sidecar_environ(upstream.url, tmp_path, **WORKLOAD_ENV)
    with run_sidecar(environ, write_config(tmp_path, config(MODELS_CONFIG))) as sidecar:
        native = pi(sidecar.url, "openai/gpt-4o")
        openai_shape = chat(sidecar.url, "openai/gpt-4o")
        anthropic_shape = messages(sidecar.url, "openai/gpt-4o")
        workload = pi(sidecar.url, "anthropic/claude-sonnet-4-5", CI_TOKEN)
        assert not upstream.received  # every refusal came before any upstream call
        allowed = pi(sidecar.url, "anthropic/claude-sonnet-4-5")
        mine = chat(sidecar.url, "openai/gpt-4o-mini", CI_TOKEN)

    assert native.status_code == openai_shape.status_code == anthropic_shape.status_code == 403
    error = native.json()["error"]
    assert error["type"] == "model_not_allowed"
    assert "Model openai/gpt-4o is not allowed" in error["message"]
    assert "[limits] models = [anthropic/*, echo/*]" in error["message"]
    assert openai_shape.json()["error"]["code"] == "model_not_allowed"
    assert openai_shape.json()["error"]["type"] == "permission_error"
    assert anthropic_shape.json()["type"] == "error"
    assert anthropic_shape.json()["error"]["type"] == "permission_error"
    assert "openai/gpt-4o" in anthropic_shape.json()["error"]["message"]
    # A workload's refusal names its own setting and never the defaults' or another workload's patterns.
    message = workload.json()["error"]["message"]
    assert '[[workloads]] "ci" models = [openai/gpt-4o*]' in message and "anthropic/*" not in message
    for response in (native, openai_shape, anthropic_shape, workload):
        assert_no_secret(response.text)
    assert allowed.status_code == 200 and mine.status_code == 200
    assert len(upstream.received) == 2


def test_v1_models_lists_only_the_models_the_caller_may_use(upstream: FakeUpstream, tmp_path: Path) -> None:
    environ = sidecar_environ(upstream.url, tmp_path, **WORKLOAD_ENV)
    with run_sidecar(environ, write_config(tmp_path, config(MODELS_CONFIG))) as sidecar:
        default = httpx.get(f"{sidecar.url}/v1/models", headers=bearer()).json()["data"]
        ci = httpx.get(f"{sidecar.url}/v1/models", headers=bearer(CI_TOKEN)).json()["data"]
    default_ids = {row["id"] for row in default}
    ci_ids = {row["id"] for row in ci}
    assert "anthropic/claude-sonnet-4-5" in default_ids and "echo/echo" in default_ids
    assert all(i.startswith(("anthropic/", "echo/")) for i in default_ids)
    assert "openai/gpt-4o" in ci_ids and "openai/gpt-4o-mini" in ci_ids
    assert all(i.startswith("openai/gpt-4o") for i in ci_ids)


def test_the_realtime_mint_refuses_a_model_not_allowed(upstream: FakeUpstream, tmp_path: Path) -> None:
    environ = sidecar_environ(upstream.url, tmp_path, **WORKLOAD_ENV)
    text = config('[[workloads]]\nname = "ci"\ntoken = "env:CI_TOKEN"\nmodels = ["anthropic/*"]\n')
    with run_sidecar(environ, write_config(tmp_path, text)) as sidecar:
        url = f"{sidecar.url}/v1/realtime/client-secrets"
        refused = httpx.post(url, json={"model": "openai/gpt-realtime"}, headers=bearer(CI_TOKEN))
        minted = httpx.post(url, json={"model": "openai/gpt-realtime"}, headers=bearer())  # no [limits] models
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "model_not_allowed"
    assert "openai/gpt-realtime" in refused.json()["error"]["message"]
    assert "token" not in refused.json()
    assert minted.status_code == 200 and minted.json()["token"].startswith("vcst_")


# ----- requests and tokens per minute ------------------------------------------------------------------------------


def test_over_requests_per_minute_is_429_with_retry_after_before_any_upstream_call(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    environ = sidecar_environ(upstream.url, tmp_path)
    counters = MemoryCounters(clock=lambda: FIXED_NOW)
    with run_sidecar(
        environ, write_config(tmp_path, config("[limits]\nrequests_per_minute = 3\n")), rate_counters=counters
    ) as sidecar:
        passed = [pi(sidecar.url, "anthropic/claude-sonnet-4-5").status_code for _ in range(3)]
        native = pi(sidecar.url, "anthropic/claude-sonnet-4-5")
        openai_shape = chat(sidecar.url, "anthropic/claude-sonnet-4-5")
        anthropic_shape = messages(sidecar.url, "anthropic/claude-sonnet-4-5")

    assert passed == [200, 200, 200]
    assert len(upstream.received) == 3
    for response in (native, openai_shape, anthropic_shape):
        assert response.status_code == 429
        # Three requests in this minute, 30 s into it: the window frees up when this minute has left it.
        assert response.headers["retry-after"] == "31"
        assert_no_secret(response.text)
    assert native.json()["error"]["type"] == "rate_limit_exceeded"
    assert "made 3 requests in the last minute" in native.json()["error"]["message"]
    assert "[limits] requests_per_minute = 3" in native.json()["error"]["message"]
    assert openai_shape.json()["error"]["code"] == "rate_limit_exceeded"
    assert anthropic_shape.json()["error"]["type"] == "rate_limit_error"


def test_a_generations_tokens_push_the_caller_over_tokens_per_minute(upstream: FakeUpstream, tmp_path: Path) -> None:
    """9830 tokens against a limit of 9000: only input, cache read, cache write and output together reach it."""
    upstream.push(Reply.sse(fixture_bytes(CACHED_REPLY)))
    environ = sidecar_environ(upstream.url, tmp_path)
    counters = MemoryCounters(clock=lambda: FIXED_NOW)
    with run_sidecar(
        environ, write_config(tmp_path, config("[limits]\ntokens_per_minute = 9000\n")), rate_counters=counters
    ) as sidecar:
        first = pi(sidecar.url, "anthropic/claude-sonnet-4-5")
        usage = sidecar.wait_for_outcomes(1)[0][1].message["usage"]
        second = chat(sidecar.url, "anthropic/claude-sonnet-4-5")

    assert first.status_code == 200
    assert usage["input"] + usage["cacheRead"] + usage["cacheWrite"] + usage["output"] == CACHED_REPLY_TOKENS
    assert second.status_code == 429
    assert int(second.headers["retry-after"]) >= 1
    assert "used 9830 tokens" in second.json()["error"]["message"]
    assert "[limits] tokens_per_minute = 9000" in second.json()["error"]["message"]
    assert len(upstream.received) == 1


def test_a_workloads_own_limits_beat_the_defaults_and_each_caller_counts_alone(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    text = config(
        """
[limits]
requests_per_minute = 1

[[workloads]]
name = "ci"
token = "env:CI_TOKEN"
requests_per_minute = 3
tokens_per_minute = 5

[[workloads]]
name = "batch"
token = "env:BATCH_TOKEN"
"""
    )
    environ = sidecar_environ(upstream.url, tmp_path, **WORKLOAD_ENV)
    counters = MemoryCounters(clock=lambda: FIXED_NOW)
    with run_sidecar(environ, write_config(tmp_path, text), rate_counters=counters) as sidecar:
        bearer_codes = [pi(sidecar.url, "echo/echo").status_code for _ in range(2)]
        batch_codes = [pi(sidecar.url, "echo/echo", BATCH_TOKEN).status_code for _ in range(2)]
        # echo's usage for "hello world": (11 + 3) // 4 = 3 input tokens and 2 output words: 5, ci's whole limit.
        ci_first = pi(sidecar.url, "echo/echo", CI_TOKEN, "hello world")
        ci_second = pi(sidecar.url, "echo/echo", CI_TOKEN, "hello world")
        outcomes = sidecar.wait_for_outcomes(3)

    assert bearer_codes == [200, 429] and batch_codes == [200, 429]  # one each: batch inherits [limits]
    usage = outcomes[-1][1].message["usage"]
    assert (usage["input"], usage["output"]) == (3, 2)
    assert ci_first.status_code == 200
    assert ci_second.status_code == 429
    assert '[[workloads]] "ci" tokens_per_minute = 5' in ci_second.json()["error"]["message"]
    assert not upstream.received


def test_the_window_slides_and_retry_after_is_the_first_whole_second_it_frees_up() -> None:
    now = [MINUTE * WINDOW_SECONDS + 30.0]
    counters = MemoryCounters(clock=lambda: now[0])
    quota = Quota(requests_per_minute=10)
    assert all(counters.admit_now("bearer:x", quota) is None for _ in range(10))
    refusal = counters.admit_now("bearer:x", quota)
    assert refusal is not None and (refusal.kind, refusal.used, refusal.retry_after) == ("requests", 10, 31)
    now[0] += 30  # the next minute starts: the previous one still counts in full
    assert counters.admit_now("bearer:x", quota) is not None
    now[0] += 30  # halfway: 10 × 0.5 = 5 of the previous minute still in the window, so 5 more fit
    assert [counters.admit_now("bearer:x", quota) is None for _ in range(6)] == [True] * 5 + [False]

    # retry-after is tight for any state: refused one second before it, admitted at it.
    for used_now, used_before, elapsed in [(0, 12, 5.5), (4, 9, 5.0), (10, 0, 12.25), (15, 3, 59.5), (7, 7, 0.0)]:
        now[0] = (MINUTE + 10) * WINDOW_SECONDS + elapsed
        states = MemoryCounters(clock=lambda: now[0])
        states._windows["bearer:y", "requests"] = [MINUTE + 10, used_now, used_before]
        refused = states.admit_now("bearer:y", quota)
        assert refused is not None
        start = now[0]
        now[0] = start + refused.retry_after - 1
        assert states.admit_now("bearer:y", quota) is not None, (used_now, used_before, elapsed)
        now[0] = start + refused.retry_after
        assert states.admit_now("bearer:y", quota) is None, (used_now, used_before, elapsed)


# ----- Redis: one limit for every replica ---------------------------------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    return require_redis()


def delete_keys(url: str, pattern: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match=pattern, count=1000):
            client.delete(key)
    finally:
        client.close()


def clear_of_a_minute_boundary(seconds: float = 15) -> None:
    """Counters on the real clock: make sure the test's requests fall in one minute."""
    left = WINDOW_SECONDS - time.time() % WINDOW_SECONDS
    if left < seconds:
        time.sleep(left + 0.2)


def test_two_replicas_sharing_redis_hold_one_requests_per_minute_limit(
    upstream: FakeUpstream, tmp_path: Path, redis_url: str
) -> None:
    """The config's own path: ``[limits] redis_url`` and the default key prefix, for a workload no one else has."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    text = config(
        f'[limits]\nredis_url = "{redis_url}"\n\n[[workloads]]\nname = "{name}"\ntoken = "env:CI_TOKEN"\n'
        "requests_per_minute = 3\n"
    )
    try:
        clear_of_a_minute_boundary()
        with (
            run_sidecar(
                sidecar_environ(upstream.url, tmp_path / "a", **WORKLOAD_ENV), write_config(tmp_path, text)
            ) as a,
            run_sidecar(
                sidecar_environ(upstream.url, tmp_path / "b", **WORKLOAD_ENV), write_config(tmp_path, text)
            ) as b,
        ):
            model = "anthropic/claude-sonnet-4-5"
            codes = [pi(replica.url, model, CI_TOKEN).status_code for replica in (a, b, a)]
            over_a, over_b = pi(a.url, model, CI_TOKEN), chat(b.url, model, CI_TOKEN)
    finally:
        delete_keys(redis_url, f"pi-sidecar:limits:{{workload:{name}}}:*")
    assert codes == [200, 200, 200]
    assert over_a.status_code == over_b.status_code == 429
    assert int(over_b.headers["retry-after"]) >= 1
    assert len(upstream.received) == 3


def test_two_replicas_sharing_redis_hold_one_tokens_per_minute_limit(
    upstream: FakeUpstream, tmp_path: Path, redis_url: str
) -> None:
    prefix = f"pi-sidecar:limits:test-{uuid.uuid4().hex[:12]}:"
    upstream.push(Reply.sse(fixture_bytes(CACHED_REPLY)))
    text = config(f'[limits]\nredis_url = "{redis_url}"\ntokens_per_minute = 9000\n')
    try:
        with (
            run_sidecar(
                sidecar_environ(upstream.url, tmp_path / "a"),
                write_config(tmp_path, text),
                rate_counters=RedisCounters(redis_url, prefix=prefix, clock=lambda: FIXED_NOW),
            ) as a,
            run_sidecar(
                sidecar_environ(upstream.url, tmp_path / "b"),
                write_config(tmp_path, text),
                rate_counters=RedisCounters(redis_url, prefix=prefix, clock=lambda: FIXED_NOW),
            ) as b,
        ):
            first = pi(a.url, "anthropic/claude-sonnet-4-5")
            # A counts the tokens in a background task after the stream's end: wait until Redis holds them.
            client = redis.Redis.from_url(redis_url)
            deadline = time.monotonic() + 5
            while sum(int(client.get(k) or 0) for k in client.scan_iter(match=prefix + "*:t:*")) < CACHED_REPLY_TOKENS:
                assert time.monotonic() < deadline, "the tokens never reached Redis"
                time.sleep(0.02)
            client.close()
            second = pi(b.url, "anthropic/claude-sonnet-4-5")
    finally:
        delete_keys(redis_url, prefix + "*")
    assert first.status_code == 200
    assert second.status_code == 429 and "used 9830 tokens" in second.json()["error"]["message"]
    assert len(upstream.received) == 1


def test_with_redis_down_the_limits_fail_open_to_each_process_and_say_so_once(
    upstream: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    down = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"  # nothing listens there
    text = config(f'[limits]\nredis_url = "{down}"\nrequests_per_minute = 2\n')
    caplog.set_level(logging.INFO)
    clear_of_a_minute_boundary()
    with run_sidecar(sidecar_environ(upstream.url, tmp_path), write_config(tmp_path, text)) as sidecar:
        codes = [pi(sidecar.url, "echo/echo").status_code for _ in range(4)]
        refused = pi(sidecar.url, "echo/echo")
    assert codes == [200, 200, 429, 429]  # served, and still limited in this process's memory
    assert refused.headers["retry-after"]
    warnings = [r for r in caplog.records if "rate limits:" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert (
        "unreachable" in warnings[0].getMessage() and f"127.0.0.1:{down.rsplit(':', 1)[1]}" in warnings[0].getMessage()
    )
    assert_no_secret(caplog.text + refused.text)


# ----- config ------------------------------------------------------------------------------------------------------


def load(tmp_path: Path, text: str, **env: str) -> Any:
    return load_settings(write_config(tmp_path, text), {"HOME": str(tmp_path), **WORKLOAD_ENV, **env})


def test_limits_and_workload_keys_are_read(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        '[limits]\nmodels = ["anthropic/*"]\nrequests_per_minute = 60\ntokens_per_minute = 100000\n'
        'redis_url = "env:LIMITS_REDIS"\n\n[[workloads]]\nname = "ci"\ntoken = "env:CI_TOKEN"\n'
        'models = ["openai/gpt-4o*", "*/echo"]\nrequests_per_minute = 5\ntokens_per_minute = 50\n',
        LIMITS_REDIS="redis://:s3cret-pw@cache:6379/2",
    )
    assert settings.policy.models == ("anthropic/*",)
    assert (settings.policy.requests_per_minute, settings.policy.tokens_per_minute) == (60, 100000)
    assert settings.policy.redis_url == "redis://:s3cret-pw@cache:6379/2"
    assert "s3cret-pw" not in repr(settings.policy)
    ci = settings.workloads[0]
    assert (ci.models, ci.requests_per_minute, ci.tokens_per_minute) == (("openai/gpt-4o*", "*/echo"), 5, 50)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[limits]\nrequests_per_minute = 0\n", "[limits] requests_per_minute must be a whole number from 1"),
        ("[limits]\ntokens_per_minute = -5\n", "[limits] tokens_per_minute must be a whole number from 1"),
        ("[limits]\nrequests_per_minute = 1.5\n", "[limits] requests_per_minute must be a int"),
        ("[limits]\nmodels = []\n", "[limits] models must be a non-empty list of glob patterns"),
        ('[limits]\nmodels = ["anthropic/*", ""]\n', "[limits] models must be a non-empty list of glob patterns"),
        ('[limits]\nmodels = "anthropic/*"\n', "[limits] models must be a list"),
        ('[limits]\nmodels = ["claude*"]\n', "'claude*' never matches, because patterns match the resolved"),
        ("[limits]\nrequest_per_minute = 5\n", "`[limits] request_per_minute` is not a setting; did you mean"),
        (
            '[[workloads]]\nname = "ci"\ntoken = "env:CI_TOKEN"\ntokens_per_minute = 0\n',
            "[workloads #1] tokens_per_minute must be a whole number from 1",
        ),
        (
            '[[workloads]]\nname = "ci"\ntoken = "env:CI_TOKEN"\nmodel = ["x/y"]\n',
            "`[workloads #1] model` is not a setting; did you mean `models`?",
        ),
        ('[limits]\nredis_url = "memcached://:s3cret-pw@cache"\n', "[limits] redis_url must be a redis:// URL"),
        ('[limits]\nredis_url = "env:NOT_SET_ANYWHERE"\n', "[limits] redis_url names the environment variable"),
    ],
)
def test_a_wrong_limit_stops_startup_saying_what_to_fix(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert message in info.value.message
    assert "s3cret-pw" not in info.value.message
