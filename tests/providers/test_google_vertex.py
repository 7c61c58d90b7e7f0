"""The Vertex AI adapter (``google-vertex``): Vertex's URL from provider data, the Bearer token from Google's
credentials, recorded Gemini/Vertex streams through the shared Gemini parser, over real sockets (FakeUpstream for
Vertex, FakeGoogle for the token endpoint), and the pi route through it in the running sidecar."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sidecar.cloud import google
from sidecar.config import load_settings
from sidecar.errors import ConfigError, UpstreamError, UpstreamStatusError, UpstreamStreamError
from sidecar.models import ModelSpec
from sidecar.providers import ADAPTERS, google_vertex
from sidecar.providers.base import Delta, UpstreamCall
from sidecar.stream import MessageAssembler, SilentEncoder
from tests.canaries import leaks
from tests.conftest import pi_body, read_events
from tests.fakeupstream import FakeUpstream, Reply, fixture_bytes
from tests.providers.adapters import adapter_deltas
from tests.sidecar_server import TOKEN, run_sidecar, sidecar_environ, write_config
from tests.test_vertex_auth import FakeGoogle, pem_body, service_account_doc

DIR = "google-gemini"
HELLO: dict[str, Any] = {"messages": [{"role": "user", "content": "hi", "timestamp": 0}]}
STREAM_PATH = "/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
UNAUTHENTICATED = {
    "error": {
        "code": 401,
        "message": "Request had invalid authentication credentials. Expected OAuth 2 access token.",
        "status": "UNAUTHENTICATED",
    }
}


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def fake(key: rsa.RSAPrivateKey) -> Iterator[FakeGoogle]:
    with FakeGoogle(key.public_key()) as server:
        yield server


@pytest.fixture
def sa(key: rsa.RSAPrivateKey, fake: FakeGoogle) -> dict[str, str]:
    return service_account_doc(key, fake.token_uri)


def vertex_model(base_url: str, model_id: str = "gemini-2.5-flash", **compat: Any) -> ModelSpec:
    """The catalog's spec of ``vertex/<model_id>`` (provider compat included), at ``base_url``."""
    settings = load_settings(None, {})
    provider = settings.catalog.providers["vertex"]
    row = settings.catalog.models.get(f"vertex/{model_id}")
    merged = {**provider.compat, **(row.compat if row else {}), **compat}
    return ModelSpec(
        "vertex",
        model_id,
        "google-vertex",
        base_url,
        reasoning=bool(row and row.reasoning),
        input=("text", "image"),
        compat=merged,
    )


def make_call(
    base_url: str, credential: str, *, call_options: dict[str, Any] | None = None, **compat: Any
) -> UpstreamCall:
    return UpstreamCall(
        model=vertex_model(base_url, **compat),
        context=HELLO,  # type: ignore[arg-type]
        options=call_options or {},
        api_key=credential,
        session_id="session-1",
        max_retries=0,
    )


def envelope(doc: dict[str, str], **defaults: str) -> str:
    """The credential value the google resolver gives for a GOOGLE_APPLICATION_CREDENTIALS file."""
    return json.dumps({"adc": json.dumps(doc), **defaults})


async def collect(call: UpstreamCall) -> tuple[list[Delta], Exception | None]:
    return await adapter_deltas(google_vertex.stream, call)


def assemble(deltas: list[Delta]) -> dict[str, Any]:
    assembler = MessageAssembler(vertex_model("http://x"), encoder=SilentEncoder())
    assembler.start()
    for delta in deltas:
        assembler.feed(delta)
    assembler.done()
    return dict(assembler.message)


def recorded_chunks(name: str) -> list[dict[str, Any]]:
    """The recording's chunks, read independently of the adapter (one ``data:`` line each)."""
    data = fixture_bytes(f"{DIR}/{name}")
    return [orjson.loads(line[6:]) for line in data.splitlines() if line.startswith(b"data: ")]


def recorded_text(name: str) -> str:
    parts = (p for c in recorded_chunks(name) for p in c["candidates"][0]["content"]["parts"])
    return "".join(p["text"] for p in parts if "text" in p and not p.get("thought"))


# ----- the URL: provider data ----------------------------------------------------------------------------------------


def _source(value: str) -> google.TokenSource:
    return google.TokenSource(google.credential_from_value(value, "vertex"))


SA_PROJECT: dict[str, str] = {"type": "service_account", "project_id": "key-project"}
CATALOG_BASE = "https://{location}-aiplatform.googleapis.com/v1"


@pytest.mark.parametrize(
    ("base_url", "defaults", "compat", "expected"),
    [
        # the catalog default: location "global", on its own host; the key's project
        (CATALOG_BASE, {}, {}, "https://aiplatform.googleapis.com/v1/projects/key-project/locations/global"),
        # the environment's project and location win over the key's and the default
        (
            CATALOG_BASE,
            {"project": "env-project", "location": "us-central1"},
            {},
            "https://us-central1-aiplatform.googleapis.com/v1/projects/env-project/locations/us-central1",
        ),
        # the config's compat wins over the environment
        (
            CATALOG_BASE,
            {"project": "env-project", "location": "us-central1"},
            {"project": "cfg-project", "location": "europe-west4"},
            "https://europe-west4-aiplatform.googleapis.com/v1/projects/cfg-project/locations/europe-west4",
        ),
        # the multi-regions have hosts of their own
        (
            CATALOG_BASE,
            {"location": "eu"},
            {},
            "https://aiplatform.eu.rep.googleapis.com/v1/projects/key-project/locations/eu",
        ),
        # a base URL without {location} (a proxy, this test server) is used as it is
        (
            "http://127.0.0.1:9/v1",
            {"location": "asia-northeast1"},
            {},
            "http://127.0.0.1:9/v1/projects/key-project/locations/asia-northeast1",
        ),
    ],
)
def test_the_url_comes_from_provider_data(
    base_url: str, defaults: dict[str, str], compat: dict[str, Any], expected: str
) -> None:
    call = make_call(base_url, envelope(SA_PROJECT, **defaults), **compat)
    assert google_vertex.endpoint(call, _source(call.api_key or "")) == expected + STREAM_PATH


def test_a_model_id_is_one_path_segment() -> None:
    call = replace(make_call(CATALOG_BASE, envelope(SA_PROJECT)), model=vertex_model(CATALOG_BASE, "../x?y"))
    url = google_vertex.endpoint(call, _source(call.api_key or ""))
    assert url.endswith("/publishers/google/models/..%2Fx%3Fy:streamGenerateContent?alt=sse")


def test_without_a_project_the_error_says_what_to_set() -> None:
    doc = {"type": "authorized_user", "client_id": "c", "client_secret": "s", "refresh_token": "r"}
    call = make_call(CATALOG_BASE, envelope(doc))
    with pytest.raises(ConfigError) as caught:
        google_vertex.endpoint(call, _source(call.api_key or ""))
    assert caught.value.message == (
        "vertex: no Google Cloud project for Vertex AI: set GOOGLE_CLOUD_PROJECT, or [providers.vertex] compat = { "
        'project = "…" } in the config'
    )


def test_a_location_that_is_no_location_is_refused_before_it_reaches_a_host_name() -> None:
    call = make_call(CATALOG_BASE, envelope(SA_PROJECT, location="evil.example.com/x"))
    with pytest.raises(ConfigError, match="is not a Google Cloud location"):
        google_vertex.endpoint(call, _source(call.api_key or ""))


def test_the_catalog_serves_vertex_models_with_the_vertex_quirks() -> None:
    settings = load_settings(None, {})
    assert ADAPTERS["google-vertex"] is google_vertex.stream
    provider = settings.catalog.providers["vertex"]
    assert (provider.api, provider.credential, provider.genai_prices) == ("google-vertex", "google", "google")
    rows = {k: v for k, v in settings.catalog.models.items() if k.startswith("vertex/")}
    assert "vertex/gemini-2.5-flash" in rows and "vertex/gemini-3-pro-preview" in rows
    for row in rows.values():  # Vertex rejects function-part ids and the bypass signature
        assert not row.compat.get("function_part_id") and not row.compat.get("skip_thought_signature")
    assert rows["vertex/gemini-2.5-flash-lite"].max_tokens == 65535  # Vertex refuses 65536 for Flash-Lite 2.5


# ----- on the wire ---------------------------------------------------------------------------------------------------


async def test_text_streams_with_a_bearer_token_and_never_the_key(
    upstream: FakeUpstream, fake: FakeGoogle, sa: dict[str, str]
) -> None:
    upstream.push(Reply.sse(fixture_bytes(f"{DIR}/text-basic.sse")))
    call = make_call(upstream.url + "/v1", envelope(sa, project="env-project"))
    deltas, error = await collect(call)
    assert error is None
    message = assemble(deltas)
    assert message["content"] == [{"type": "text", "text": recorded_text("text-basic.sse")}]
    assert (message["usage"]["input"], message["usage"]["output"]) == (7, 10)
    assert message["stopReason"] == "stop"
    [received] = upstream.received
    assert received.path == "/v1/projects/env-project/locations/global" + STREAM_PATH
    assert received.headers["authorization"] == f"Bearer {fake.issued[0]}"
    assert "x-goog-api-key" not in received.headers
    body = received.json()
    assert body["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]
    assert body["safetySettings"] == [  # what pi-ai sends Vertex: every filter off
        {"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "OFF"},
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "threshold": "OFF"},
        {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "threshold": "OFF"},
        {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"},
    ]
    wire = json.dumps(received.headers) + received.body.decode()
    for secret in (pem_body(sa), sa["private_key_id"], fake.forms[0]["assertion"]):
        assert not leaks(wire, secret)


def without_ids(content: Any) -> list[dict[str, Any]]:
    return [{k: v for k, v in block.items() if k != "id"} for block in content]


async def test_every_byte_boundary_gives_the_same_message(
    upstream: FakeUpstream, fake: FakeGoogle, sa: dict[str, str]
) -> None:
    data = fixture_bytes(f"{DIR}/thought-summary-then-function-call-signature.sse")
    upstream.push(Reply.sse(data), Reply.sse(data, split=1))
    call = make_call(upstream.url + "/v1", envelope(sa))
    whole, error = await collect(call)
    assert error is None
    split, error = await collect(call)
    assert error is None
    # Tool-call ids are minted per stream (Gemini sends none), so the two runs agree on everything but the id.
    assert without_ids(assemble(split)["content"]) == without_ids(assemble(whole)["content"])
    message = assemble(whole)
    kinds = [b["type"] for b in message["content"]]
    assert kinds == ["thinking", "toolCall"] and message["stopReason"] == "toolUse"
    assert len(fake.forms) == 1  # the second stream reused the token


async def test_a_safety_stop_on_vertex_is_an_in_band_400_keeping_content_and_usage(
    upstream: FakeUpstream, fake: FakeGoogle, sa: dict[str, str]
) -> None:
    upstream.push(Reply.sse(fixture_bytes(f"{DIR}/finish-reason-safety-vertex.sse"), split=1))
    deltas, error = await collect(make_call(upstream.url + "/v1", envelope(sa)))
    assert isinstance(error, UpstreamStreamError) and error.status == 400
    assert "finishReason SAFETY" in error.message
    message = assemble(deltas)
    assert message["content"] == [{"type": "text", "text": "<redacted>"}]
    assert (message["usage"]["input"], message["usage"]["output"]) == (10, 66)


async def test_vertexs_bare_json_error_after_chunks_ends_the_stream_with_an_error(
    upstream: FakeUpstream, fake: FakeGoogle, sa: dict[str, str]
) -> None:
    # Firebase's model of a Vertex mid-stream failure: two chunks, then a pretty-printed {"error": …} without
    # SSE framing (tests/fixtures/PROVENANCE.md: MOCK, unverified against the live API).
    upstream.push(Reply.sse(fixture_bytes(f"{DIR}/error-mid-stream-vertex.MOCK.sse")))
    deltas, error = await collect(make_call(upstream.url + "/v1", envelope(sa)))
    assert isinstance(error, UpstreamError) and error.status == 499
    assert "The operation was cancelled." in error.message
    assert assemble(deltas)["content"] == [{"type": "text", "text": "First Second "}]


async def test_a_401_from_vertex_drops_the_token_and_retries_once_with_a_new_one(
    upstream: FakeUpstream, fake: FakeGoogle, sa: dict[str, str]
) -> None:
    upstream.push(Reply.json(401, UNAUTHENTICATED), Reply.sse(fixture_bytes(f"{DIR}/text-basic.sse")))
    deltas, error = await collect(make_call(upstream.url + "/v1", envelope(sa)))
    assert error is None and assemble(deltas)["stopReason"] == "stop"
    assert [r.headers["authorization"] for r in upstream.received] == [f"Bearer {t}" for t in fake.issued]
    assert len(fake.issued) == 2


async def test_a_second_401_is_the_error_without_the_token(
    upstream: FakeUpstream, fake: FakeGoogle, sa: dict[str, str]
) -> None:
    echo = {"error": {**UNAUTHENTICATED["error"], "message": "bad token"}}
    upstream.push(Reply.json(401, echo), Reply.json(401, echo))
    original = upstream._next_reply

    def echoing() -> Reply:  # a hostile upstream echoing the token it was sent
        reply = original()
        token = upstream.received[-1].headers["authorization"].removeprefix("Bearer ")
        reply.chunks = [reply.chunks[0].replace(b"bad token", f"bad token {token}".encode())]
        return reply

    upstream._next_reply = echoing  # type: ignore[method-assign]
    deltas, error = await collect(make_call(upstream.url + "/v1", envelope(sa)))
    assert isinstance(error, UpstreamStatusError) and error.status == 401 and deltas == []
    assert "UNAUTHENTICATED" in error.message and "bad token" in error.message
    for token in fake.issued:
        assert not leaks(error.message, token)
    assert len(upstream.received) == 2


async def test_a_token_endpoint_failure_is_the_streams_error(
    upstream: FakeUpstream, fake: FakeGoogle, sa: dict[str, str]
) -> None:
    fake.replies.append((400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}))
    deltas, error = await collect(make_call(upstream.url + "/v1", envelope(sa)))
    assert isinstance(error, google.GoogleAuthError) and error.status == 401 and deltas == []
    assert "invalid_grant: Invalid JWT Signature." in error.message
    assert upstream.received == []  # nothing reached Vertex


async def test_an_authorized_users_quota_project_and_a_priority_tier_are_headers(
    upstream: FakeUpstream, fake: FakeGoogle
) -> None:
    doc = {
        "type": "authorized_user",
        "client_id": "id",
        "client_secret": "secret-canary-value",
        "refresh_token": "refresh-canary-value",
        "quota_project_id": "billing-project",
        "token_uri": fake.token_uri,
    }
    upstream.push(Reply.sse(fixture_bytes(f"{DIR}/text-basic.sse")))
    call = make_call(upstream.url + "/v1", envelope(doc, project="p1"), call_options={"serviceTier": "priority"})
    _, error = await collect(call)
    assert error is None
    headers = upstream.received[0].headers
    assert headers["x-goog-user-project"] == "billing-project"
    assert headers["x-vertex-ai-llm-shared-request-type"] == "priority"
    assert "serviceTier" not in upstream.received[0].json()


async def test_the_metadata_server_credential(upstream: FakeUpstream, fake: FakeGoogle) -> None:
    upstream.push(Reply.sse(fixture_bytes(f"{DIR}/text-basic.sse")))
    _, error = await collect(make_call(upstream.url + "/v1", json.dumps({"metadata": fake.host})))
    assert error is None
    received = upstream.received[0]
    assert received.path == "/v1/projects/metadata-project/locations/global" + STREAM_PATH
    assert received.headers["authorization"] == f"Bearer {fake.issued[0]}"


# ----- through the running sidecar -----------------------------------------------------------------------------------

VERTEX_CONFIG = """
[upstream]
max_retries = 0

[providers.vertex]
base_url = "{url}/v1"
"""


def test_pi_stream_through_the_sidecar_with_exact_usage_and_cost(
    upstream: FakeUpstream, fake: FakeGoogle, sa: dict[str, str], tmp_path: Path
) -> None:
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps(sa), encoding="utf-8")
    env = sidecar_environ(
        upstream.url, tmp_path, GOOGLE_APPLICATION_CREDENTIALS=str(key_file), GOOGLE_CLOUD_PROJECT="canary-project"
    )
    config = write_config(tmp_path, VERTEX_CONFIG.format(url=upstream.url))
    upstream.push(Reply.sse(fixture_bytes(f"{DIR}/text-basic.sse"), split=7))
    headers = {"authorization": f"Bearer {TOKEN}"}
    with run_sidecar(env, config) as running:
        models = httpx.get(f"{running.url}/v1/models", headers=headers).json()
        response = httpx.post(
            f"{running.url}/v1/pi/stream", json=pi_body("vertex/gemini-2.5-flash"), headers=headers, timeout=30
        )
        outcomes = running.wait_for_outcomes(1)
    assert "vertex/gemini-2.5-flash" in {m["id"] for m in models["data"]}
    assert response.status_code == 200
    events = read_events(response)
    done: Any = events[-1]
    assert done["type"] == "done"
    message = done["message"]
    assert (message["api"], message["provider"], message["model"]) == ("google-vertex", "vertex", "gemini-2.5-flash")
    assert message["content"] == [{"type": "text", "text": recorded_text("text-basic.sse")}]
    usage = message["usage"]
    assert (usage["input"], usage["output"], usage["cacheRead"], usage["totalTokens"]) == (7, 10, 0, 17)
    # genai-prices' google rates for gemini-2.5-flash: $0.30 in, $2.50 out per 1M tokens
    assert usage["cost"]["input"] == pytest.approx(7 * 0.30 / 1e6, rel=1e-12)
    assert usage["cost"]["output"] == pytest.approx(10 * 2.50 / 1e6, rel=1e-12)
    assert usage["cost"]["total"] == pytest.approx(7 * 0.30 / 1e6 + 10 * 2.50 / 1e6, rel=1e-12)
    assert outcomes[0][1].reason == "stop"
    [received] = upstream.received
    assert received.path == "/v1/projects/canary-project/locations/global" + STREAM_PATH
    assert received.headers["authorization"] == f"Bearer {fake.issued[0]}"
    assert not leaks(response.text, fake.issued[0]) and not leaks(response.text, pem_body(sa))
