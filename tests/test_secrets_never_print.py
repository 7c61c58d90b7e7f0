"""Canary keys: no provider key or workload bearer in logs, errors, response headers or recorded outcomes."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from sidecar.logs import RedactingFilter
from tests.conftest import pi_body
from tests.fakeupstream import FakeUpstream, Reply, fixture_bytes
from tests.sidecar_server import ANTHROPIC_CANARY, OPENAI_CANARY, TOKEN, run_sidecar, sidecar_environ, write_config

# A key with no recognisable shape (a self-hosted server's): only exact-value redaction can catch it.
PLAIN_CANARY = "plainCanaryValue4242"

CONFIG = """
[upstream]
max_retries = 0

[providers.selfhosted]
api = "openai-completions"
base_url = "{url}/v1"
credential = "env:SELFHOSTED_KEY"
"""


def test_canaries_never_leave_the_sidecar(
    upstream: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    environ = sidecar_environ(upstream.url, tmp_path, SELFHOSTED_KEY=PLAIN_CANARY)
    config = write_config(tmp_path, CONFIG.format(url=upstream.url))
    seen: list[str] = []
    with run_sidecar(environ, config) as running:
        good = {"authorization": f"Bearer {TOKEN}"}
        # Upstreams that echo the key they were given, in an error status body and inside a 200 stream.
        upstream.push(
            Reply.sse(fixture_bytes("anthropic-messages/text-basic-padded.sse")),
            Reply.json(401, {"error": {"message": f"Incorrect API key provided: {OPENAI_CANARY}"}}),
            Reply.json(403, {"error": {"message": f"key {PLAIN_CANARY} is not allowed"}}),
            Reply.sse(b'data: {"error": {"message": "bad key ' + PLAIN_CANARY.encode() + b'", "code": 401}}\n\n'),
            Reply.json(
                401,
                {
                    "type": "error",
                    "error": {"type": "authentication_error", "message": f"invalid x-api-key {ANTHROPIC_CANARY}"},
                },
            ),
        )
        requests = [
            ("anthropic/claude-sonnet-4-5", good, False),
            ("openai/gpt-4o", good, False),
            ("selfhosted/some-model", good, False),
            ("selfhosted/some-model", good, False),
            ("anthropic/claude-sonnet-4-5", good, True),  # JSON mode: the error becomes an HTTP error body
            ("anthropic/claude-sonnet-4-5", {"authorization": f"Bearer {ANTHROPIC_CANARY}"}, False),
            ("nope/none", good, False),
        ]
        for model, headers, json_mode in requests:
            body = {**pi_body(model), "stream": not json_mode}
            response = httpx.post(f"{running.url}/v1/pi/stream", json=body, headers=headers, timeout=10)
            seen.append(response.text)
            seen.append(str(dict(response.headers)))
        seen.append(httpx.get(f"{running.url}/v1/models", headers=good).text)
        outcomes = running.wait_for_outcomes(5)
        seen.extend(repr(o) for o in outcomes)
    # The upstreams really received the keys (so the canaries were live)...
    assert [r.headers.get("x-api-key") or r.headers.get("authorization") for r in upstream.received] == [
        ANTHROPIC_CANARY,
        f"Bearer {OPENAI_CANARY}",
        f"Bearer {PLAIN_CANARY}",
        f"Bearer {PLAIN_CANARY}",
        ANTHROPIC_CANARY,
    ]
    # ...and the errors still carried the providers' messages, minus the keys.
    assert "Incorrect API key provided: [REDACTED]" in seen[2]
    assert "is not allowed" in seen[4]
    everything = "\n".join(seen) + "\n" + caplog.text
    for canary in (ANTHROPIC_CANARY, OPENAI_CANARY, PLAIN_CANARY, TOKEN):
        assert canary not in everything, canary
    assert "bearer:" in caplog.text  # callers are identified by a hash of their token


def test_redacting_log_filter_masks_known_values_and_key_shapes() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "got %s and %s", ("mysecret-value", "sk-abcdef123456"), None
    )
    assert RedactingFilter(["mysecret-value"]).filter(record)
    assert record.getMessage() == "got [REDACTED] and [REDACTED]"
