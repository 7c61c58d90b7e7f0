"""Model prices: config row > catalog row > genai-prices > provider default_cost > unpriced, and what a budget does
with an unpriced model. Through the real app on 127.0.0.1 with the fake upstream where a provider call is needed.

Expected costs are computed here from the published rates (and cross-checked with genai-prices' own ``calc_price``),
never read back from the sidecar.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from genai_prices import Usage, calc_price

from sidecar.config import load_settings
from sidecar.credentials import CredentialStore
from sidecar.errors import ConfigError
from sidecar.models import Pricing
from sidecar.registry import ModelRegistry
from tests.conftest import pi_body, read_events
from tests.fakeupstream import FakeUpstream, Reply, fixture_bytes
from tests.sidecar_server import TOKEN, run_sidecar, sidecar_environ, write_config

# A real OpenAI model id with no row in catalog.toml; genai-prices matches it to gpt-4o.
DATED_GPT_4O = "openai/gpt-4o-2024-08-06"
GPT_4O_IN, GPT_4O_OUT, GPT_4O_CACHED = 2.5, 10.0, 1.25  # USD per 1M tokens, openai.com/api/pricing
# prompt_tokens 223 of which cached_tokens 192, completion_tokens 43.
CACHED_FIXTURE = "openai-chat-completions/deepseek-parallel-tool-calls-cached.sse"
FIXTURE_INPUT, FIXTURE_CACHED, FIXTURE_OUTPUT = 223 - 192, 192, 43
NOBODY_PRICES = "openai/no-such-model-anywhere-7"

CAPPED_TOKEN = "capped-workload-bearer-0123456789"
CAPPED = {"authorization": f"Bearer {CAPPED_TOKEN}"}
UNCAPPED = {"authorization": f"Bearer {TOKEN}"}
BUDGET_CONFIG = """
[upstream]
max_retries = 0

[[workloads]]
name = "capped"
token = "env:CAPPED_TOKEN"
budget_usd = 5.0
"""


def registry(tmp_path: Path, config: str = "") -> ModelRegistry:
    path = write_config(tmp_path, config) if config else None
    settings = load_settings(path, {"HOME": str(tmp_path), "OPENAI_API_KEY": "sk-o", "OPENROUTER_API_KEY": "sk-r"})
    return ModelRegistry(settings, CredentialStore(settings))


def post(url: str, model: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{url}/v1/pi/stream", json=pi_body(model), headers=headers, timeout=10)


def test_a_real_model_without_a_catalog_row_is_priced_from_genai_prices(upstream: FakeUpstream, tmp_path: Path) -> None:
    expected = (FIXTURE_INPUT * GPT_4O_IN + FIXTURE_CACHED * GPT_4O_CACHED + FIXTURE_OUTPUT * GPT_4O_OUT) / 1e6
    oracle = calc_price(
        Usage(input_tokens=223, cache_read_tokens=192, output_tokens=43), "gpt-4o-2024-08-06", provider_id="openai"
    )
    assert oracle.total_price == Decimal(str(expected))  # the rates above are the ones genai-prices has
    environ = sidecar_environ(upstream.url, tmp_path, CAPPED_TOKEN=CAPPED_TOKEN)
    with run_sidecar(environ, write_config(tmp_path, BUDGET_CONFIG)) as sidecar:
        assert DATED_GPT_4O not in load_settings(None, environ).catalog.models
        upstream.push(Reply.sse(fixture_bytes(CACHED_FIXTURE)))
        response = post(sidecar.url, DATED_GPT_4O, CAPPED)  # a budgeted caller: the model is priced, so served
        assert response.status_code == 200, response.text
        assert upstream.received[0].json()["model"] == "gpt-4o-2024-08-06"
        done = read_events(response)[-1]
        assert done["type"] == "done"
        usage = done["message"]["usage"]  # type: ignore[index]
        assert (usage["input"], usage["cacheRead"], usage["output"]) == (FIXTURE_INPUT, FIXTURE_CACHED, FIXTURE_OUTPUT)
        assert usage["cost"]["total"] == pytest.approx(expected, rel=1e-12)
        assert usage["cost"]["cacheRead"] == pytest.approx(FIXTURE_CACHED * GPT_4O_CACHED / 1e6, rel=1e-12)

        record = httpx.get(
            f"{sidecar.url}/v1/generation", params={"id": response.headers["x-generation-id"]}, headers=CAPPED
        )
        assert record.status_code == 200, record.text
        assert record.json()["data"]["total_cost"] == pytest.approx(expected, rel=1e-12)
        credits = httpx.get(f"{sidecar.url}/v1/credits", headers=CAPPED).json()  # the budget counts it
        assert float(credits["total_used"]) == pytest.approx(expected, abs=1e-8)


def test_a_config_row_beats_genai_prices_which_beats_nothing(tmp_path: Path) -> None:
    assert registry(tmp_path).resolve(DATED_GPT_4O).model.pricing == Pricing(
        GPT_4O_IN,
        GPT_4O_OUT,
        GPT_4O_CACHED,
        GPT_4O_IN,  # no cache-write rate: cache writes cost input tokens
    )
    assert registry(tmp_path).resolve(NOBODY_PRICES).model.pricing is None

    overridden = registry(tmp_path, f'[models."{DATED_GPT_4O}"]\ncost = [1, 2, 0.5, 0]\n')
    assert overridden.resolve(DATED_GPT_4O).model.pricing == Pricing(1, 2, 0.5, 0)
    assert overridden.resolve("openai/gpt-4o-mini").model.pricing == Pricing(0.15, 0.6, 0.075, 0)  # catalog row
    # A row that says something else about the model but not its cost still gets genai-prices' price.
    described = registry(tmp_path, f'[models."{DATED_GPT_4O}"]\ncontext_window = 128000\n')
    assert described.resolve(DATED_GPT_4O).model.pricing == Pricing(GPT_4O_IN, GPT_4O_OUT, GPT_4O_CACHED, GPT_4O_IN)
    assert described.resolve(DATED_GPT_4O).model.context_window == 128000


def test_provider_default_cost_and_the_genai_prices_mapping(tmp_path: Path) -> None:
    config = """
[providers.vllm]
api = "openai-completions"
base_url = "http://127.0.0.1:8000/v1"
needs_credential = false
default_cost = [0.1, 0.2]

[providers.openrouter]
genai_prices = ""
"""
    models = registry(tmp_path, config)
    assert models.resolve("vllm/qwen3-32b").model.pricing == Pricing(0.1, 0.2)
    # Local Ollama is free by the catalog's word (default_cost), so budgets allow it.
    assert models.resolve("ollama/llama3.2:3b").model.pricing == Pricing(0, 0, 0, 0)
    # genai_prices = "" turns the database off for a provider.
    assert models.resolve("openrouter/anthropic/claude-sonnet-4.5").model.pricing is None
    assert registry(tmp_path).resolve("openrouter/anthropic/claude-sonnet-4.5").model.pricing == Pricing(
        3, 15, 0.3, 3.75
    )
    # xai is x-ai in genai-prices.
    xai = load_settings(None, {"HOME": str(tmp_path), "XAI_API_KEY": "k"})
    assert ModelRegistry(xai, CredentialStore(xai)).resolve("xai/grok-4-0709").model.pricing is not None

    with pytest.raises(ConfigError, match="genai_prices = 'x-ia' is not a provider of the genai-prices database"):
        registry(tmp_path, '[providers.xai]\ngenai_prices = "x-ia"\n')


def test_flattened_prices_agree_with_genai_prices_at_the_time_of_the_request(tmp_path: Path) -> None:
    prices = registry(tmp_path).prices
    usage = {"input_tokens": 100_000, "cache_read_tokens": 40_000, "output_tokens": 20_000}

    def ours(pricing: Pricing | None) -> float:
        assert pricing is not None
        non_cached = usage["input_tokens"] - usage["cache_read_tokens"]
        return (
            non_cached * pricing.input
            + usage["cache_read_tokens"] * pricing.cache_read
            + usage["output_tokens"] * pricing.output
        ) / 1e6

    # DeepSeek's price depends on the hour (UTC): the rate in force at the request is used, not a cached one.
    peak, off_peak = datetime(2026, 6, 1, 8, tzinfo=UTC), datetime(2026, 6, 1, 20, tzinfo=UTC)
    at_peak, at_off_peak = (prices.pricing("deepseek", "deepseek-chat", at) for at in (peak, off_peak))
    assert at_peak != at_off_peak
    for model, at in [("deepseek-chat", peak), ("deepseek-chat", off_peak)]:
        theirs = calc_price(Usage(**usage), model, provider_id="deepseek", genai_request_timestamp=at)
        assert ours(prices.pricing("deepseek", model, at)) == pytest.approx(float(theirs.total_price), rel=1e-9)
    # Prompt-size tiers: below the first tier our flat base rate is exact.
    now = datetime.now(UTC)
    theirs = calc_price(Usage(**usage), "anthropic/claude-sonnet-4.5", provider_id="openrouter")
    assert ours(prices.pricing("openrouter", "anthropic/claude-sonnet-4.5", now)) == pytest.approx(
        float(theirs.total_price), rel=1e-9
    )
    # Listed without any price (a ":free" variant) or only in units we do not meter: unpriced, not free.
    assert prices.pricing("openrouter", "qwen/qwq-32b:free", now) is None
    assert prices.pricing("openai", "whisper-1", now) is None


def test_a_budgeted_workload_naming_an_unpriced_model_is_refused_before_any_upstream_call(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    environ = sidecar_environ(upstream.url, tmp_path, CAPPED_TOKEN=CAPPED_TOKEN)
    with run_sidecar(environ, write_config(tmp_path, BUDGET_CONFIG)) as sidecar:
        response = post(sidecar.url, NOBODY_PRICES, CAPPED)
        assert response.status_code == 403, response.text
        error = response.json()["error"]
        assert set(response.json()) == {"error"} and set(error) == {"type", "message"}
        assert error["type"] == "forbidden"
        assert f'[models."{NOBODY_PRICES}"] cost = [input, output]' in error["message"]
        assert "[budget] allow_unpriced = true" in error["message"]
        assert upstream.received == []

        # A caller without a budget is served (at cost 0: nothing knows the price).
        upstream.push(Reply.sse(fixture_bytes("openai-chat-completions/text-basic-include-usage.sse")))
        served = post(sidecar.url, NOBODY_PRICES, UNCAPPED)
        assert served.status_code == 200, served.text
        assert read_events(served)[-1]["message"]["usage"]["cost"]["total"] == 0  # type: ignore[index]
        assert len(upstream.received) == 1

        # Free by the catalog's word is not unpriced: a budgeted caller may use the built-in echo provider's models.
        assert post(sidecar.url, "echo/any-echo", CAPPED).status_code == 200


def test_allow_unpriced_serves_budgeted_callers_at_cost_zero(upstream: FakeUpstream, tmp_path: Path) -> None:
    environ = sidecar_environ(upstream.url, tmp_path, CAPPED_TOKEN=CAPPED_TOKEN)
    config = write_config(tmp_path, BUDGET_CONFIG + "\n[budget]\nallow_unpriced = true\n")
    with run_sidecar(environ, config) as sidecar:
        upstream.push(Reply.sse(fixture_bytes("openai-chat-completions/text-basic-include-usage.sse")))
        response = post(sidecar.url, NOBODY_PRICES, CAPPED)
        assert response.status_code == 200, response.text
        usage = read_events(response)[-1]["message"]["usage"]  # type: ignore[index]
        assert usage["output"] == 30 and usage["cost"]["total"] == 0
        assert upstream.received[0].json()["model"] == "no-such-model-anywhere-7"


def test_per_id_caches_stay_bounded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(None, {"HOME": str(tmp_path), "OPENAI_API_KEY": "sk-o"})
    models = ModelRegistry(settings, CredentialStore(settings), cache_size=50)
    with caplog.at_level(logging.WARNING, logger="sidecar.registry"):
        for n in range(2000):
            models.resolve(f"openai/made-up-{n}")
            models.resolve(DATED_GPT_4O)  # priced: never warned
        assert models.prices.cached <= 50 and models.warned <= 50
        assert len(caplog.records) == 2000  # one warning per unpriced id
        caplog.clear()
        models.resolve("openai/made-up-1999")  # still among the cached ids: not logged again
        assert caplog.records == []


def test_an_unpriced_id_is_logged_once_truncated_and_escaped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    models = registry(tmp_path)
    hostile = "openai/" + "x" * 5000 + "\n2026-01-01 INFO forged line\x1b[2J"
    with caplog.at_level(logging.WARNING, logger="sidecar.registry"):
        models.resolve(hostile)
        models.resolve(hostile)
    [record] = caplog.records
    message = record.getMessage()
    assert "\n" not in message and "\x1b" not in message and "forged" not in message
    assert len(message) < 400 and "openai/xxxx" in message
