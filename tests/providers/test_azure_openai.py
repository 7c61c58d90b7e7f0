"""Azure OpenAI: the OpenAI Chat Completions and Responses wires at Azure's URLs, with the key in ``api-key``.

Everything goes through a running sidecar whose ``azure`` provider is configured as an operator would (the
``AZURE_OPENAI_API_KEY`` and ``AZURE_OPENAI_ENDPOINT`` variables, the classic URL shape by ``[providers.azure] compat``
in the config file) against the FakeUpstream, which records the path with its query and the headers. Both URL shapes
are checked for the pi route and the same-family relay: the v1 API (``/openai/v1/chat/completions``,
``/openai/v1/responses``) and the classic deployment URLs with ``api-version``.

Azure's error bodies are ASSEMBLED from Microsoft's documented examples (``tests/fixtures/azure-openai/errors``, see
PROVENANCE.md); the stream is a real Azure recording (``azure-reasoning-tokens-prompt-filter-preamble.sse``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from sidecar.errors import ConfigError
from sidecar.models import ModelSpec
from sidecar.providers.base import UpstreamCall, endpoint
from sidecar.upstream import wire_url
from tests.canaries import leaks
from tests.conftest import FAST_CONFIG, pi_body, read_events
from tests.fakeupstream import FIXTURES, FakeUpstream, Reply, fixture_bytes
from tests.sidecar_server import TOKEN, RunningSidecar, run_sidecar, sidecar_environ, write_config

AZURE_CANARY = "azure-canary-KEY-do-not-leak-7f3a9c2e5b1d4e8f"
CHAT_STREAM = "openai-chat-completions/azure-reasoning-tokens-prompt-filter-preamble.sse"
RESPONSES_STREAM = "openai-responses/text-basic.sse"
CONTENT_FILTER = "azure-openai/errors/400-content-filter.ASSEMBLED"
RATE_LIMIT = "azure-openai/errors/429-token-rate-limit.ASSEMBLED"
API_VERSION = "2025-04-01-preview"  # a classic version that serves both chat (per deployment) and /openai/responses
CLASSIC_CONFIG = f"""
[providers.azure]
compat = {{ base_path = "/openai", deployment_path = true, api_version = "{API_VERSION}" }}
"""
PATHS = {
    "v1": {"chat": "/openai/v1/chat/completions", "responses": "/openai/v1/responses"},
    "classic": {
        "chat": f"/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}",
        "responses": f"/openai/responses?api-version={API_VERSION}",
    },
}
PI_HEADERS = {"authorization": f"Bearer {TOKEN}"}


def azure_sidecar(upstream: FakeUpstream, tmp: Path, config: str = "", **env: str) -> Any:
    env = {"AZURE_OPENAI_API_KEY": AZURE_CANARY, "AZURE_OPENAI_ENDPOINT": upstream.url, **env}
    environ = sidecar_environ(upstream.url, tmp, **env)
    return run_sidecar(environ, write_config(tmp, FAST_CONFIG + config))


@pytest.fixture(params=["v1", "classic"])
def azure(
    request: pytest.FixtureRequest, upstream: FakeUpstream, tmp_path: Path
) -> Iterator[tuple[RunningSidecar, str]]:
    """A sidecar whose azure provider uses the v1 URLs (the catalog's default) or the classic ones (the config's)."""
    shape: str = request.param
    with azure_sidecar(upstream, tmp_path, CLASSIC_CONFIG if shape == "classic" else "") as running:
        yield running, shape


def data_events(raw: bytes) -> list[dict[str, Any]]:
    """The recorded stream's JSON payloads, read independently of the sidecar."""
    return [orjson.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: {")]


def chat_text(raw: bytes) -> str:
    return "".join(c["delta"].get("content") or "" for e in data_events(raw) for c in e["choices"])


def assert_azure_request(upstream: FakeUpstream, path: str) -> dict[str, Any]:
    """One request, at ``path`` (with its query), carrying the key in ``api-key`` only; the workload bearer nowhere."""
    (received,) = upstream.received
    assert received.path == path
    assert received.headers["api-key"] == AZURE_CANARY
    assert "authorization" not in received.headers  # Azure takes a bearer as an Entra ID token: never the key
    assert TOKEN not in repr(received.headers) and TOKEN.encode() not in received.body
    body: dict[str, Any] = received.json()
    return body


def pi_stream(running: RunningSidecar, model: str, **options: Any) -> list[dict[str, Any]]:
    response = httpx.post(f"{running.url}/v1/pi/stream", json=pi_body(model, **options), headers=PI_HEADERS, timeout=10)
    assert response.status_code == 200
    assert not leaks(response.text, AZURE_CANARY)
    return read_events(response)


def recorded_error(stem: str) -> Reply:
    """The error body ``{stem}.json`` with the status and headers of ``{stem}.headers``, else the status its name
    starts with."""
    body = fixture_bytes(f"{stem}.json")
    headers_file = FIXTURES / f"{stem}.headers"
    if not headers_file.exists():
        return Reply.json(int(Path(stem).name[:3]), body)
    status_line, *lines = headers_file.read_text().splitlines()
    headers = dict(line.split(": ", 1) for line in lines if line.strip())
    return Reply(status=int(status_line.split()[1]), chunks=[body], headers=headers)


# ----- the pi route -----------------------------------------------------------------------------------------------


def test_pi_route_streams_an_azure_chat_deployment(azure: tuple[RunningSidecar, str], upstream: FakeUpstream) -> None:
    running, shape = azure
    recorded = fixture_bytes(CHAT_STREAM)
    upstream.push(Reply.sse(recorded, split=7))
    events = pi_stream(running, "azure/gpt-4o")
    message = events[-1]["message"]
    assert events[-1]["type"] == "done" and message["stopReason"] == "stop"
    assert message["provider"] == "azure" and message["api"] == "openai-completions"
    assert message["content"] == [{"type": "text", "text": chat_text(recorded)}]
    usage = message["usage"]
    assert (usage["input"], usage["output"], usage["reasoningTokens"]) == (15, 78, 64)
    # gpt-4o at Azure's Global Standard rates (genai-prices: $2.50 / $10 per 1M): 15 x 2.5 + 78 x 10 = 817.5 µ$
    assert usage["cost"]["total"] == pytest.approx(817.5e-6)
    sent = assert_azure_request(upstream, PATHS[shape]["chat"])
    assert sent["model"] == "gpt-4o"  # the deployment name
    assert sent["stream_options"] == {"include_usage": True}


def test_pi_route_streams_an_azure_responses_deployment(
    azure: tuple[RunningSidecar, str], upstream: FakeUpstream
) -> None:
    running, shape = azure
    recorded = fixture_bytes(RESPONSES_STREAM)
    upstream.push(Reply.sse(recorded, split=7))
    events = pi_stream(running, "azure/gpt-5", reasoning="low")
    message = events[-1]["message"]
    assert events[-1]["type"] == "done" and message["api"] == "openai-responses"
    completed = data_events(recorded)[-1]["response"]
    assert message["content"][-1]["text"] == completed["output"][-1]["content"][0]["text"]
    assert message["responseId"] == completed["id"]
    sent = assert_azure_request(upstream, PATHS[shape]["responses"])
    assert sent["model"] == "gpt-5" and sent["store"] is False
    assert sent["include"] == ["reasoning.encrypted_content"]  # stateless: Azure returns the encrypted reasoning too
    assert sent["reasoning"] == {"effort": "low", "summary": "auto"}


@pytest.mark.parametrize("model", ["azure/gpt-4o", "azure/gpt-5"])
def test_pi_route_maps_azure_content_filter_refusal_to_400(
    azure: tuple[RunningSidecar, str], upstream: FakeUpstream, model: str
) -> None:
    running, _ = azure
    upstream.push(recorded_error(CONTENT_FILTER))
    events = pi_stream(running, model)
    assert [e["type"] for e in events] == ["start", "error"]
    error = events[-1]["error"]
    assert error["errorStatus"] == 400
    # The operator learns which policy refused it: Azure's code and inner code reach the message.
    assert "content_filter" in error["errorMessage"] and "ResponsibleAIPolicyViolation" in error["errorMessage"]


def test_pi_route_maps_azure_token_rate_limit_to_429(azure: tuple[RunningSidecar, str], upstream: FakeUpstream) -> None:
    running, _ = azure
    upstream.push(recorded_error(RATE_LIMIT))
    error = pi_stream(running, "azure/gpt-4o")[-1]["error"]
    assert error["errorStatus"] == 429 and "exceeded token rate limit" in error["errorMessage"]


def test_output_content_filter_mid_stream_is_a_400_after_the_partial_text(
    azure: tuple[RunningSidecar, str], upstream: FakeUpstream
) -> None:
    """Azure filters a completion mid-stream by ending it with ``finish_reason: "content_filter"``."""
    running, _ = azure
    recorded = fixture_bytes(CHAT_STREAM).replace(b'"finish_reason":"stop"', b'"finish_reason":"content_filter"')
    assert b'"content_filter"' in recorded
    upstream.push(Reply.sse(recorded, split=7))
    error = pi_stream(running, "azure/gpt-4o")[-1]["error"]
    assert error["errorStatus"] == 400 and "content filter" in error["errorMessage"]
    assert error["content"] == [{"type": "text", "text": chat_text(recorded)}]


# ----- the same-family relay --------------------------------------------------------------------------------------


def test_chat_request_is_relayed_to_the_azure_url(azure: tuple[RunningSidecar, str], upstream: FakeUpstream) -> None:
    running, shape = azure
    recorded = fixture_bytes(CHAT_STREAM)
    upstream.push(Reply.sse(recorded, split=7))
    body = {
        "model": "azure/gpt-4o",
        "stream": True,
        "messages": [{"role": "user", "content": "Capital of Denmark?"}],
        # Azure "On Your Data": a field only Azure knows, which only a relay passes on.
        "data_sources": [{"type": "azure_search", "parameters": {"endpoint": "https://search.example"}}],
    }
    response = httpx.post(
        f"{running.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert response.status_code == 200
    assert response.content == recorded  # Azure's bytes, prompt_filter_results preamble included
    sent = assert_azure_request(upstream, PATHS[shape]["chat"])
    assert sent["model"] == "gpt-4o" and sent["data_sources"] == body["data_sources"]
    assert sent["stream_options"] == {"include_usage": True}


def test_openai_sdk_responses_stream_is_relayed_to_the_azure_url(
    azure: tuple[RunningSidecar, str], upstream: FakeUpstream
) -> None:
    running, shape = azure
    recorded = fixture_bytes(RESPONSES_STREAM)
    upstream.push(Reply.sse(recorded, split=7))
    with (
        openai.OpenAI(base_url=f"{running.url}/v1", api_key=TOKEN, max_retries=0) as sdk,
        sdk.responses.stream(model="azure/gpt-5", input="hi", store=False) as stream,
    ):
        final = stream.get_final_response()
    completed = data_events(recorded)[-1]["response"]
    assert final.id == completed["id"] and final.output_text == completed["output"][-1]["content"][0]["text"]
    sent = assert_azure_request(upstream, PATHS[shape]["responses"])
    assert sent["model"] == "gpt-5" and sent["input"] == "hi"


def test_openai_sdk_gets_azure_content_filter_error_as_sent(
    azure: tuple[RunningSidecar, str], upstream: FakeUpstream
) -> None:
    running, shape = azure
    upstream.push(recorded_error(CONTENT_FILTER))
    with (
        openai.OpenAI(base_url=f"{running.url}/v1", api_key=TOKEN, max_retries=0) as sdk,
        pytest.raises(openai.BadRequestError) as caught,
    ):
        sdk.chat.completions.create(model="azure/gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert caught.value.status_code == 400 and caught.value.code == "content_filter"
    assert caught.value.body == orjson.loads(fixture_bytes(f"{CONTENT_FILTER}.json"))["error"]  # innererror included
    assert_azure_request(upstream, PATHS[shape]["chat"])


def test_openai_sdk_gets_azure_rate_limit_with_its_retry_after(
    azure: tuple[RunningSidecar, str], upstream: FakeUpstream
) -> None:
    running, _ = azure
    upstream.push(recorded_error(RATE_LIMIT))
    with (
        openai.OpenAI(base_url=f"{running.url}/v1", api_key=TOKEN, max_retries=0) as sdk,
        pytest.raises(openai.RateLimitError) as caught,
    ):
        sdk.responses.create(model="azure/gpt-5", input="hi", stream=True)
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "6"  # from Azure's retry-after-ms: 6000
    assert caught.value.body == orjson.loads(fixture_bytes(f"{RATE_LIMIT}.json"))["error"]


# ----- configuration ----------------------------------------------------------------------------------------------


def test_models_lists_azure_deployments_with_their_api(azure: tuple[RunningSidecar, str]) -> None:
    running, _ = azure
    body = httpx.get(f"{running.url}/v1/models", headers=PI_HEADERS).json()
    apis = {m["id"]: m["api"] for m in body["data"] if m["id"].startswith("azure/")}
    assert apis["azure/gpt-4o"] == "openai-completions" and apis["azure/gpt-4.1-mini"] == "openai-completions"
    assert apis["azure/gpt-5"] == "openai-responses" and apis["azure/gpt-5-codex"] == "openai-responses"


def test_an_endpoint_given_with_its_v1_path_is_not_doubled(upstream: FakeUpstream, tmp_path: Path) -> None:
    with azure_sidecar(upstream, tmp_path, AZURE_OPENAI_ENDPOINT=f"{upstream.url}/openai/v1/") as running:
        upstream.push(Reply.sse(fixture_bytes(CHAT_STREAM)))
        assert pi_stream(running, "azure/gpt-4o")[-1]["type"] == "done"
    assert_azure_request(upstream, "/openai/v1/chat/completions")


def test_without_an_endpoint_nothing_is_sent_and_the_error_says_what_to_set(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    environ = sidecar_environ(upstream.url, tmp_path, AZURE_OPENAI_API_KEY=AZURE_CANARY)
    with run_sidecar(environ, write_config(tmp_path, FAST_CONFIG)) as running:
        events = pi_stream(running, "azure/gpt-4o")
        relayed = httpx.post(
            f"{running.url}/v1/responses",
            json={"model": "azure/gpt-5", "input": "hi", "stream": True},
            headers=PI_HEADERS,
            timeout=10,
        )
    error = events[-1]["error"]
    assert error["errorStatus"] == 500
    assert (
        "no endpoint is configured" in error["errorMessage"] and "[providers.azure] base_url" in error["errorMessage"]
    )
    assert relayed.status_code == 500 and "no endpoint is configured" in relayed.text
    assert upstream.received == []


def _call(model_id: str, **compat: Any) -> UpstreamCall:
    spec = ModelSpec("azure", model_id, "openai-completions", "https://res.openai.azure.com/", compat=compat)
    return UpstreamCall(model=spec, context={"messages": []}, options={}, api_key="k", session_id="s")


@pytest.mark.parametrize(
    ("model_id", "path"),
    [
        ("my deployment", "/openai/deployments/my%20deployment/chat/completions"),
        ("../../keys", "/openai/deployments/..%2F..%2Fkeys/chat/completions"),
        ("..", "/openai/deployments/%2E%2E/chat/completions"),
        ("gpt-4.1", "/openai/deployments/gpt-4.1/chat/completions"),
    ],
)
def test_a_deployment_id_stays_one_path_segment(model_id: str, path: str) -> None:
    """Model ids come from requests: none may reach another path of the resource with the injected key."""
    url = endpoint(_call(model_id, base_path="/openai", deployment_path=True), "/chat/completions")
    assert url == f"https://res.openai.azure.com{path}"
    assert wire_url(url).raw_path == path  # as the upstream client sends it: dot segments unresolved


def test_endpoint_leaves_other_providers_urls_alone() -> None:
    assert endpoint(_call("gpt-4o"), "/chat/completions") == "https://res.openai.azure.com/chat/completions"
    placeholder = ModelSpec("azure", "gpt-4o", "openai-completions", "https://set-azure-openai-endpoint.invalid")
    with pytest.raises(ConfigError):
        endpoint(UpstreamCall(placeholder, {"messages": []}, {}, "k", "s"), "/chat/completions")
