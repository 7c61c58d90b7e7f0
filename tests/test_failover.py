"""Key pools and model fallbacks (``sidecar.key_pool``, ``sidecar.failover``): a refused, rate-limited or overloaded
key or provider loses no request another key or model could serve.

A real sidecar on 127.0.0.1 and a fake upstream that answers by the key it is given (or replays scripted replies),
with recorded Anthropic and OpenAI bytes. What reached the upstream, with which key, is read back from the wire.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import pi_body, read_events
from tests.fakeupstream import FakeUpstream, Received, Reply, fixture_bytes
from tests.sidecar_server import (
    ANTHROPIC_CANARY,
    TOKEN,
    RunningSidecar,
    generation_row,
    run_sidecar,
    sidecar_environ,
    write_config,
)
from tests.test_metrics import scrape, value

HEADERS = {"authorization": f"Bearer {TOKEN}"}
KEY_A = "sk-ant-pool-key-A-canary-0001112223"
KEY_B = "sk-ant-pool-key-B-canary-4445556667"
CLAUDE = "anthropic/claude-sonnet-4-5"
TEXT = fixture_bytes("anthropic-messages/text-basic-padded.sse")
CHAT_TEXT = fixture_bytes("openai-chat-completions/text-basic-include-usage.sse")
REFUSED = fixture_bytes("anthropic-messages/errors/401-authentication-error.ASSEMBLED.json")
RATE_LIMITED = fixture_bytes("anthropic-messages/errors/429-rate-limit-error.json")
OVERLOADED = fixture_bytes("anthropic-messages/errors/529-overloaded-error.json")
BAD_REQUEST = fixture_bytes("anthropic-messages/errors/400-invalid-request-error.json")


class KeyedUpstream(FakeUpstream):
    """Answers each call by the key it carries: ``answers[key]`` (a function of nothing, so each call gets a fresh
    reply), the recorded text stream for any other key."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: dict[str, Any] = {}

    def _next_reply(self) -> Reply:
        key = self.received[-1].headers.get("x-api-key", "") if self.received else ""
        answer = self.answers.get(key)
        return answer() if answer is not None else Reply.sse(TEXT)


def keys_of(received: list[Received]) -> list[str]:
    return [r.headers.get("x-api-key", "") for r in received]


@pytest.fixture
def keyed() -> Iterator[KeyedUpstream]:
    with KeyedUpstream() as up:
        yield up


def pool_sidecar(upstream: FakeUpstream, tmp_path: Path, extra: str = "", **env: str) -> Any:
    key_b = tmp_path / "key-b"
    key_b.write_text(KEY_B)
    config = write_config(
        tmp_path,
        f'[upstream]\nmax_retries = 0\n[providers.anthropic]\ncredential = ["env:KEY_A", "file:{key_b}"]\n{extra}',
    )
    return run_sidecar(sidecar_environ(upstream.url, tmp_path, KEY_A=KEY_A, **env), config)


def stream(sidecar: RunningSidecar, model: str = CLAUDE, **options: Any) -> httpx.Response:
    response = httpx.post(f"{sidecar.url}/v1/pi/stream", json=pi_body(model, **options), headers=HEADERS, timeout=30)
    return response


def done(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    events = read_events(response)
    assert events[-1]["type"] == "done", events[-1]
    message: dict[str, Any] = events[-1]["message"]
    return message


def test_calls_take_the_keys_in_turn(keyed: KeyedUpstream, tmp_path: Path) -> None:
    with pool_sidecar(keyed, tmp_path) as sidecar:
        served = [stream(sidecar) for _ in range(4)]
        for response in served:
            done(response)
        assert keys_of(keyed.received) == [KEY_A, KEY_B, KEY_A, KEY_B]
        sources = [generation_row(sidecar.url, r.headers["x-generation-id"])["credential_source"] for r in served]
        assert sources == ["config:env:KEY_A", f"config:file:{tmp_path / 'key-b'}"] * 2


def test_a_refused_key_hands_over_and_stays_out_until_its_file_changes(keyed: KeyedUpstream, tmp_path: Path) -> None:
    keyed.answers[KEY_B] = lambda: Reply.json(401, REFUSED)
    with pool_sidecar(keyed, tmp_path) as sidecar:
        first = stream(sidecar)  # key A
        second = stream(sidecar)  # key B: refused, then A takes it over before any byte reached the client
        assert done(second)["provider"] == "anthropic"
        assert keys_of(keyed.received) == [KEY_A, KEY_B, KEY_A]
        for _ in range(3):
            done(stream(sidecar))
        assert keys_of(keyed.received)[3:] == [KEY_A] * 3  # B is out of the rotation
        rows = [generation_row(sidecar.url, r.headers["x-generation-id"]) for r in (first, second)]
        assert {row["credential_source"] for row in rows} == {"config:env:KEY_A"}

        # The key file is rotated: the new value is back in the rotation (and works).
        del keyed.answers[KEY_B]
        new_b = "sk-ant-pool-key-B-rotated-8889990001"
        (tmp_path / "key-b").write_text(new_b)
        for _ in range(2):
            done(stream(sidecar))
        assert set(keys_of(keyed.received)[6:]) == {KEY_A, new_b}

        _, samples = scrape(sidecar.url)
        assert value(samples, "sidecar_upstream_failovers_total", provider="anthropic", kind="key", reason="401") == 1
        text = httpx.get(f"{sidecar.url}/metrics", headers=HEADERS).text
    assert KEY_A not in text and KEY_B not in text


def test_a_rate_limited_key_cools_down_for_its_retry_after(keyed: KeyedUpstream, tmp_path: Path) -> None:
    keyed.answers[KEY_A] = lambda: Reply.json(429, RATE_LIMITED, {"retry-after": "1"})
    with pool_sidecar(keyed, tmp_path) as sidecar:
        done(stream(sidecar))  # A: 429 at once (not retried on the same key), then B
        assert keys_of(keyed.received) == [KEY_A, KEY_B]
        del keyed.answers[KEY_A]
        for _ in range(3):
            done(stream(sidecar))
        assert keys_of(keyed.received)[2:] == [KEY_B] * 3  # A cools down for the second it was told
        time.sleep(1.1)
        done(stream(sidecar))
        done(stream(sidecar))
        assert KEY_A in keys_of(keyed.received)[5:]


def test_every_key_cooling_down_is_a_429_before_any_upstream_call(keyed: KeyedUpstream, tmp_path: Path) -> None:
    keyed.answers[KEY_A] = keyed.answers[KEY_B] = lambda: Reply.json(529, OVERLOADED, {"retry-after": "30"})
    with pool_sidecar(keyed, tmp_path) as sidecar:
        last = stream(sidecar)  # A then B, both overloaded: the last refusal is the client's, in-band
        assert read_events(last)[-1]["error"]["errorStatus"] == 529
        assert len(keyed.received) == 2
        refused = stream(sidecar)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] in ("29", "30")
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert "all 2 keys of provider anthropic are rate-limited" in refused.json()["error"]["message"]
        assert len(keyed.received) == 2  # no upstream call
        assert KEY_A not in refused.text and KEY_B not in refused.text


def test_a_key_revoked_mid_run_loses_no_request(keyed: KeyedUpstream, tmp_path: Path) -> None:
    with pool_sidecar(keyed, tmp_path) as sidecar:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: done(stream(sidecar)), range(8)))
            keyed.answers[KEY_A] = lambda: Reply.json(401, REFUSED)  # revoked while traffic flows
            results = list(pool.map(lambda _: stream(sidecar), range(24)))
        for response in results:
            done(response)
        assert keys_of(keyed.received).count(KEY_A) >= 5  # A served its share before
        assert all(k == KEY_B for k in keys_of(keyed.received)[-12:])  # and is out now


def test_one_key_is_left_alone(upstream: FakeUpstream, tmp_path: Path) -> None:
    """No pool, no hand-over: the provider's refusal reaches the client, and the key is tried again next time."""
    config = write_config(tmp_path, "[upstream]\nmax_retries = 0\n")
    with run_sidecar(sidecar_environ(upstream.url, tmp_path), config) as sidecar:
        upstream.push(Reply.json(401, REFUSED), Reply.sse(TEXT))
        assert read_events(stream(sidecar))[-1]["error"]["errorStatus"] == 401
        done(stream(sidecar))
        assert keys_of(upstream.received) == [ANTHROPIC_CANARY, ANTHROPIC_CANARY]


# ----- model fallbacks -------------------------------------------------------------------------------------------


def test_a_fallback_model_serves_when_the_first_is_overloaded(sidecar: RunningSidecar, upstream: FakeUpstream) -> None:
    upstream.push(Reply.json(529, OVERLOADED), Reply.sse(CHAT_TEXT))
    response = stream(sidecar, models=["openai/gpt-4o-mini"])
    message = done(response)
    assert (message["provider"], message["model"], message["api"]) == ("openai", "gpt-4o-mini", "openai-completions")
    assert [r.path for r in upstream.received] == ["/v1/messages", "/v1/chat/completions"]
    assert upstream.received[1].json()["model"] == "gpt-4o-mini"
    row = generation_row(sidecar.url, response.headers["x-generation-id"])
    assert (row["model"], row["provider_name"], row["finish_reason"]) == ("openai/gpt-4o-mini", "openai", "stop")
    assert row["credential_source"] == "env:OPENAI_API_KEY"
    assert message["usage"]["cost"]["total"] == row["total_cost"] > 0  # priced as the model that served
    _, samples = scrape(sidecar.url)
    assert value(samples, "sidecar_upstream_failovers_total", provider="anthropic", kind="model", reason="529") == 1


def test_the_configs_fallbacks_serve_a_request_that_names_none(upstream: FakeUpstream, tmp_path: Path) -> None:
    config = write_config(
        tmp_path, f'[upstream]\nmax_retries = 0\n[models."{CLAUDE}"]\nfallbacks = ["openai/gpt-4o-mini"]\n'
    )
    with run_sidecar(sidecar_environ(upstream.url, tmp_path), config) as sidecar:
        upstream.push(Reply.json(429, RATE_LIMITED), Reply.sse(CHAT_TEXT))
        assert done(stream(sidecar))["model"] == "gpt-4o-mini"
        upstream.push(Reply.json(400, BAD_REQUEST))  # the request itself is wrong: no fallback would help
        refused = read_events(stream(sidecar))[-1]
        assert refused["error"]["errorStatus"] == 400
        assert [r.path for r in upstream.received][2:] == ["/v1/messages"]


def test_a_fallback_serves_a_model_whose_provider_has_no_key(upstream: FakeUpstream, tmp_path: Path) -> None:
    environ = sidecar_environ(upstream.url, tmp_path)
    del environ["ANTHROPIC_API_KEY"]
    with run_sidecar(environ, write_config(tmp_path, "[upstream]\nmax_retries = 0\n")) as sidecar:
        upstream.push(Reply.sse(CHAT_TEXT))
        assert done(stream(sidecar, models=["openai/gpt-4o-mini"]))["provider"] == "openai"
        assert [r.path for r in upstream.received] == ["/v1/chat/completions"]
        refused = stream(sidecar)  # no fallback named: the missing key is the answer, as before
        assert refused.status_code == 401 and "ANTHROPIC_API_KEY" in refused.text


def test_fallbacks_the_caller_may_not_use_are_skipped(upstream: FakeUpstream, tmp_path: Path) -> None:
    config = write_config(
        tmp_path, '[upstream]\nmax_retries = 0\n[limits]\nmodels = ["anthropic/*", "openai/gpt-4o"]\n'
    )
    with run_sidecar(sidecar_environ(upstream.url, tmp_path), config) as sidecar:
        upstream.push(Reply.json(529, OVERLOADED), Reply.sse(CHAT_TEXT))
        message = done(stream(sidecar, models=["openai/gpt-4o-mini", "openai/gpt-4o"]))
        assert message["model"] == "gpt-4o"  # gpt-4o-mini is not allowed: skipped
        assert [r.json()["model"] for r in upstream.received] == ["claude-sonnet-4-5", "gpt-4o"]


def test_fallback_lists_are_checked(sidecar: RunningSidecar) -> None:
    for models, says in [
        ("openai/gpt-4o", "`options.models` must be an array of model ids"),
        ([f"openai/gpt-{i}" for i in range(9)], "`options.models` names 9 models; at most 8 are allowed"),
        (["openai/gpt\n4o"], "options.models[0]"),
    ]:
        refused = stream(sidecar, models=models)
        assert refused.status_code == 400 and says in refused.json()["error"]["message"], refused.text


def test_the_ai_gateway_route_takes_its_models_and_order(upstream: FakeUpstream, sidecar: RunningSidecar) -> None:
    """``providerOptions.gateway.models``: the fallbacks after the model the header names; ``order``: providers to
    try that model on first (skipped where the provider does not catalog it)."""
    body = {
        "prompt": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "providerOptions": {"gateway": {"order": ["mistral"], "models": ["openai/gpt-4o-mini"]}},
    }
    headers = {**HEADERS, "ai-language-model-id": CLAUDE, "ai-language-model-streaming": "true"}
    upstream.push(Reply.json(529, OVERLOADED), Reply.sse(CHAT_TEXT))
    response = httpx.post(f"{sidecar.url}/v4/ai/language-model", json=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert '"type":"finish"' in response.text
    assert [r.path for r in upstream.received] == ["/v1/messages", "/v1/chat/completions"]
    row = generation_row(sidecar.url, response.headers["x-generation-id"])
    assert row["model"] == "openai/gpt-4o-mini"


def test_a_relayed_request_falls_back_only_within_its_wire_api(upstream: FakeUpstream, tmp_path: Path) -> None:
    """The Anthropic route relays its bytes untranslated: an OpenAI fallback could not take them and is skipped; an
    Anthropic one takes them as they came, with only the model rewritten."""
    fallbacks = '["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"]'
    config = write_config(tmp_path, f'[upstream]\nmax_retries = 0\n[models."{CLAUDE}"]\nfallbacks = {fallbacks}\n')
    with run_sidecar(sidecar_environ(upstream.url, tmp_path), config) as sidecar:
        upstream.push(Reply.json(529, OVERLOADED), Reply.sse(TEXT))
        body = {"model": CLAUDE, "max_tokens": 64, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        response = httpx.post(
            f"{sidecar.url}/v1/messages",
            json=body,
            headers={"x-api-key": TOKEN, "anthropic-version": "2023-06-01"},
            timeout=30,
        )
        assert response.status_code == 200
        assert response.text.encode() == TEXT  # the recorded bytes, relayed untranslated
        assert [(r.path, r.json()["model"]) for r in upstream.received] == [
            ("/v1/messages", "claude-sonnet-4-5"),
            ("/v1/messages", "claude-haiku-4-5"),
        ]
        row = generation_row(sidecar.url, response.headers["x-generation-id"])
        assert row["model"] == "anthropic/claude-haiku-4-5"


def test_a_secrets_directory_pool_takes_every_file_of_the_provider(keyed: KeyedUpstream, tmp_path: Path) -> None:
    """A Kubernetes Secret with keys ``anthropic`` and ``anthropic.b``; a key added later joins the rotation."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "anthropic").write_text(KEY_A)
    (secrets / "anthropic.b").write_text(KEY_B + "\n")
    (secrets / "..data").mkdir()  # the kubelet's own entries are not keys
    (secrets / "anthropic-notes").write_text("not a key of this pool")
    config = write_config(tmp_path, f'[upstream]\nmax_retries = 0\n[credentials]\nsecrets_dir = "{secrets}"\n')
    with run_sidecar(sidecar_environ(keyed.url, tmp_path), config) as sidecar:
        served = [stream(sidecar) for _ in range(2)]
        for response in served:
            done(response)
        assert keys_of(keyed.received) == [KEY_A, KEY_B]
        rows = [generation_row(sidecar.url, r.headers["x-generation-id"]) for r in served]
        assert [row["credential_source"] for row in rows] == ["secrets-dir", "secrets-dir:anthropic.b"]
        key_c = "sk-ant-pool-key-C-canary-2223334445"
        (secrets / "anthropic.c").write_text(key_c)
        for _ in range(3):
            done(stream(sidecar))
        assert sorted(keys_of(keyed.received)[2:]) == sorted([KEY_A, KEY_B, key_c])


def test_the_credential_check_reports_each_key_of_a_pool(keyed: KeyedUpstream, tmp_path: Path) -> None:
    keyed.answers[KEY_B] = lambda: Reply.json(401, REFUSED)
    with pool_sidecar(keyed, tmp_path) as sidecar:
        checked = httpx.get(f"{sidecar.url}/v1/credentials/check", headers=HEADERS, timeout=30)
    assert checked.status_code == 200
    rows = {row["id"]: row for row in checked.json()["credentials"] if row["provider"] == "anthropic"}
    key_b = f"config:file:{tmp_path / 'key-b'}"
    assert {i: (r["status"], r["location"]) for i, r in rows.items()} == {
        "anthropic:config:env:KEY_A": ("ok", "config:env:KEY_A"),
        f"anthropic:{key_b}": ("invalid", key_b),
    }
    assert KEY_A not in checked.text and KEY_B not in checked.text


def test_a_provider_going_down_mid_run_loses_no_request_a_fallback_could_serve(tmp_path: Path) -> None:
    class Providers(FakeUpstream):
        """Anthropic answers the recorded text until it is down (503); OpenAI always answers."""

        anthropic_down = False

        def _next_reply(self) -> Reply:
            if self.received[-1].path.startswith("/v1/chat/completions"):
                return Reply.sse(CHAT_TEXT)
            if self.anthropic_down:
                return Reply.json(503, {"type": "error", "error": {"type": "api_error", "message": "down"}})
            return Reply.sse(TEXT)

    config = write_config(tmp_path, "[upstream]\nmax_retries = 0\n")
    with Providers() as up, run_sidecar(sidecar_environ(up.url, tmp_path), config) as gateway:
        with ThreadPoolExecutor(8) as pool:
            first = list(pool.map(lambda _: stream(gateway, models=["openai/gpt-4o-mini"]), range(8)))
            up.anthropic_down = True
            rest = list(pool.map(lambda _: stream(gateway, models=["openai/gpt-4o-mini"]), range(24)))
        served = [done(response)["provider"] for response in first + rest]
    assert served[:8] == ["anthropic"] * 8 and served[8:] == ["openai"] * 24
    assert sum(r.path == "/v1/chat/completions" for r in up.received) == 24
