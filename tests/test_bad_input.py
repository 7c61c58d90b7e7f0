"""Bad input gets the documented envelope and status, a message that says what to fix, never a trace or a secret."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import pi_body
from tests.fakeupstream import FakeUpstream
from tests.sidecar_server import TOKEN, RunningSidecar, run_sidecar, sidecar_environ, write_config


def post_raw(sidecar: RunningSidecar, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{sidecar.url}/v1/pi/stream",
        content=content,
        headers={"authorization": f"Bearer {TOKEN}", **(headers or {})},
        timeout=10,
    )


def assert_envelope(response: httpx.Response, status: int, type_: str, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["type"] == type_
    assert message in error["message"], error["message"]
    assert "Traceback" not in response.text and 'File "' not in response.text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "Invalid JSON body"),
        (b"[1, 2]", "Invalid JSON body: expected an object"),
        (b'{"context": {"messages": []}}', "Missing `modelId` (or `model.id`) field"),
        (b'{"modelId": "echo/echo"}', "Missing `context` object"),
        (b'{"modelId": "echo/echo", "context": {"messages": {}}}', "`context.messages` must be an array"),
        (
            b'{"modelId": "echo/echo", "context": {"messages": [], "systemPrompt": "hi"}}',
            "`context.systemPrompt` must be an array of strings when present",
        ),
        (
            b'{"modelId": "echo/echo", "context": {"messages": [], "tools": {}}}',
            "`context.tools` must be an array when present",
        ),
        (
            b'{"modelId": "echo/echo", "context": {"messages": [{"role": "robot", "content": "x"}]}}',
            "`context.messages[0].role` must be one of user, developer, assistant, toolResult",
        ),
        (
            b'{"modelId": "echo/echo", "context": {"messages": [{"role": "user", "content": [{"type": "image"}]}]}}',
            "`context.messages[0].content[0]` image blocks need base64 `data`",
        ),
        (
            b'{"modelId": "echo/echo", "context": {"messages": [{"role": "toolResult", "content": []}]}}',
            "`context.messages[0].toolCallId` must be the string id",
        ),
        (
            b'{"modelId": "echo/echo", "context": {"messages": []}, "options": {"maxTokens": "many"}}',
            "`options.maxTokens` must be a number, got str",
        ),
        (
            b'{"modelId": "echo/echo", "context": {"messages": []}, "options": {"reasoning": "extreme"}}',
            "`options.reasoning` must be one of high, low, max, medium, minimal, xhigh",
        ),
    ],
)
def test_invalid_bodies(sidecar: RunningSidecar, body: bytes, message: str) -> None:
    assert_envelope(post_raw(sidecar, body), 400, "invalid_request_error", message)


def test_unknown_model_is_404(sidecar: RunningSidecar) -> None:
    for model in ("nope/model-x", "model-without-provider"):
        response = post_raw(sidecar, httpx.Request("POST", "/", json=pi_body(model)).content)
        assert_envelope(response, 404, "invalid_request_error", f"Unknown model: {model}")


def test_uncatalogued_model_under_a_configured_provider_is_served_at_cost_zero(
    sidecar: RunningSidecar, upstream: FakeUpstream
) -> None:
    from tests.fakeupstream import Reply, fixture_bytes

    upstream.push(Reply.sse(fixture_bytes("openai-chat-completions/text-basic-include-usage.sse")))
    response = post_raw(sidecar, httpx.Request("POST", "/", json=pi_body("openai/my-finetune-2")).content)
    assert response.status_code == 200
    assert upstream.received[0].json()["model"] == "my-finetune-2"
    assert '"total":0.0' in response.text.rsplit('"type":"done"', 1)[1]


@pytest.mark.parametrize(
    ("authorization", "ok"),
    [(None, False), ("Bearer wrong", False), (f"Basic {TOKEN}", False), (f"bearer  {TOKEN}", True)],
)
def test_bearer_check(sidecar: RunningSidecar, authorization: str | None, ok: bool) -> None:
    headers = {"authorization": authorization} if authorization else {}
    response = httpx.post(f"{sidecar.url}/v1/pi/stream", json=pi_body("echo/echo"), headers=headers, timeout=10)
    if ok:
        assert response.status_code == 200
    else:
        assert response.status_code == 401
        assert response.json() == {"error": "unauthorized"}  # a string body, as the reference gateway sends


def test_payload_too_large(upstream: FakeUpstream, tmp_path: Path) -> None:
    config = write_config(tmp_path, "[server]\nmax_body_bytes = 2000\n")
    with run_sidecar(sidecar_environ(upstream.url, tmp_path), config) as running:
        body = httpx.Request("POST", "/", json=pi_body("echo/echo", "x" * 5000)).content
        assert_envelope(post_raw(running, body), 413, "invalid_request_error", "2000-byte limit")

        # Without a content-length (chunked upload) the limit still holds.
        def chunks() -> Iterator[bytes]:
            yield body[:1000]
            yield body[1000:]

        response = httpx.post(
            f"{running.url}/v1/pi/stream", content=chunks(), headers={"authorization": f"Bearer {TOKEN}"}, timeout=10
        )
        assert_envelope(response, 413, "invalid_request_error", "max_body_bytes")
        # And a small body still works afterwards.
        assert post_raw(running, httpx.Request("POST", "/", json=pi_body("echo/echo")).content).status_code == 200


def test_missing_credential_names_the_provider_and_the_fix(upstream: FakeUpstream, tmp_path: Path) -> None:
    environ = sidecar_environ(upstream.url, tmp_path)
    del environ["OPENAI_API_KEY"]
    with run_sidecar(environ) as running:
        response = post_raw(running, httpx.Request("POST", "/", json=pi_body("openai/gpt-4o")).content)
        assert_envelope(response, 401, "authentication_error", "No credential available for provider openai")
        assert "OPENAI_API_KEY" in response.json()["error"]["message"]
        assert "sidecar credentials set openai" in response.json()["error"]["message"]
        assert upstream.received == []


def test_routes_without_auth_and_unknown_routes(sidecar: RunningSidecar) -> None:
    health = httpx.get(f"{sidecar.url}/healthz")
    assert health.status_code == 200 and health.json()["ok"] is True
    preflight = httpx.options(
        f"{sidecar.url}/v1/pi/stream", headers={"origin": "http://x", "access-control-request-method": "POST"}
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    missing = httpx.get(f"{sidecar.url}/v2/nothing")
    assert missing.status_code == 404 and missing.json() == {"error": "No route: GET /v2/nothing"}


def test_models_endpoint_lists_servable_models(sidecar: RunningSidecar) -> None:
    unauthorized = httpx.get(f"{sidecar.url}/v1/models")
    assert unauthorized.status_code == 401
    response = httpx.get(f"{sidecar.url}/v1/models", headers={"authorization": f"Bearer {TOKEN}"})
    body: dict[str, Any] = response.json()
    assert body["object"] == "list"
    ids = {m["id"] for m in body["data"]}
    assert {"echo/echo", "openai/gpt-4o", "anthropic/claude-sonnet-4-5"} <= ids
    assert not any(i.startswith(("google/", "deepseek/")) for i in ids)  # no key configured for those
    sonnet = next(m for m in body["data"] if m["id"] == "anthropic/claude-sonnet-4-5")
    # One body for both families' SDKs: OpenAI's list fields and Anthropic's page fields, and the sidecar's own.
    assert sonnet == {
        "id": "anthropic/claude-sonnet-4-5",
        "object": "model",
        "type": "model",
        "created": 0,
        "created_at": "1970-01-01T00:00:00Z",
        "owned_by": "anthropic",
        "api": "anthropic-messages",
        "display_name": "claude-sonnet-4-5",
        "input_modalities": ["text", "image"],
        "context_length": 1000000,
        "max_input_tokens": 1000000,
        "max_output_tokens": 64000,
        "max_tokens": 64000,
    }
    assert body["has_more"] is False and body["first_id"] == body["data"][0]["id"]
    assert body["last_id"] == body["data"][-1]["id"]
