"""Canary keys: no provider key or workload bearer in logs, errors, response headers or recorded outcomes."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar.logs import RedactingFilter
from sidecar.redaction import redact
from tests.canaries import ENCODINGS, double_escaped, half_escaped, json_escaped, leaks, percent_encoded
from tests.conftest import pi_body, read_events
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


# ----- escaped keys: every reversible spelling of the key is caught, on every path ------------------------------


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("secret", [PLAIN_CANARY, OPENAI_CANARY])
def test_redact_catches_every_spelling_of_a_secret(encoding: str, secret: str) -> None:
    spelled = f"Incorrect API key provided: {ENCODINGS[encoding](secret)}. See the docs."
    cleaned = redact(spelled, (secret,))
    assert not leaks(cleaned, secret), cleaned
    assert cleaned == "Incorrect API key provided: [REDACTED]. See the docs."


def test_redact_catches_base64_of_a_known_secret_at_any_alignment() -> None:
    for prefix in (b"", b"u:", b"user:"):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            blob = encode(prefix + PLAIN_CANARY.encode() + b"!").decode()
            cleaned = redact(f"Basic {blob}", (PLAIN_CANARY,))
            assert "[REDACTED]" in cleaned and not leaks(cleaned, PLAIN_CANARY), (prefix, cleaned)


def test_redact_decodes_surrogate_pairs_and_replaces_lone_surrogates() -> None:
    cleaned = redact(r"smile \ud83d\ude00, broken \ud800, key " + json_escaped(PLAIN_CANARY), (PLAIN_CANARY,))
    assert cleaned == "smile \U0001f600, broken \ufffd, key [REDACTED]"
    cleaned.encode("utf-8")  # a lone surrogate would make the error body unencodable


def test_redact_leaves_ordinary_text_alone() -> None:
    text = 'path C:\\temp\\x, 100% sure, a & b, "quoted" \\n'
    assert redact(text, (PLAIN_CANARY,)) == text


# Provider error bodies spelling the key as raw JSON text (bytes on the wire): \u-escaped, half escaped, percent-encoded
# inside a URL, in a body encoded twice, and next to a lone surrogate and a surrogate pair.
_ESCAPED_BODIES = [
    b'{"error": {"message": "key ' + json_escaped(PLAIN_CANARY).encode() + b' is not allowed"}}',
    b'{"error": {"message": "key ' + half_escaped(PLAIN_CANARY).encode() + b' is not allowed"}}',
    b'{"error": {"message": "see https://example.test/keys?k=' + percent_encoded(PLAIN_CANARY).encode() + b'"}}',
    b'{"error": {"message": "key ' + double_escaped(PLAIN_CANARY).encode() + b' is not allowed"}}',
    b'{"error": {"message": "\\ud800 \\ud83d\\ude00 key ' + json_escaped(PLAIN_CANARY).encode() + b'"}}',
    b'{"error": {"message": "Incorrect API key provided: ' + json_escaped(OPENAI_CANARY).encode() + b'"}}',
]


def error_message(response: httpx.Response, json_mode: bool) -> str:
    """The error text the client gets: the JSON envelope's message, or the in-band error event's errorMessage."""
    if json_mode:
        return str(response.json()["error"]["message"])
    terminal: Any = read_events(response)[-1]
    return str(terminal["error"]["errorMessage"])


@pytest.mark.parametrize("json_mode", [False, True], ids=["sse", "json"])
def test_escaped_keys_in_upstream_errors_never_reach_the_client(
    upstream: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture, json_mode: bool
) -> None:
    caplog.set_level(logging.DEBUG)
    environ = sidecar_environ(upstream.url, tmp_path, SELFHOSTED_KEY=PLAIN_CANARY)
    config = write_config(tmp_path, CONFIG.format(url=upstream.url))
    good = {"authorization": f"Bearer {TOKEN}"}
    models = ["selfhosted/some-model"] * (len(_ESCAPED_BODIES) - 1) + ["openai/gpt-4o", "selfhosted/some-model"]
    # Inside a 200 stream, in a body that was encoded twice: JSON parsing leaves \u-escapes in the message.
    stream_error = b'data: {"error": {"message": "bad key ' + double_escaped(PLAIN_CANARY).encode() + b'"}}\n\n'
    seen: list[str] = []
    messages: list[str] = []
    with run_sidecar(environ, config) as running:
        upstream.push(*(Reply.json(401, body) for body in _ESCAPED_BODIES), Reply.sse(stream_error))
        for model in models:
            body = {**pi_body(model), "stream": not json_mode}
            response = httpx.post(f"{running.url}/v1/pi/stream", json=body, headers=good, timeout=10)
            seen.append(response.text)
            messages.append(error_message(response, json_mode))
        outcomes = running.wait_for_outcomes(len(models))
    assert len(upstream.received) == len(models)  # every request reached the upstream and got its scripted reply
    for text, message in zip(seen, messages, strict=True):
        for secret in (PLAIN_CANARY, OPENAI_CANARY):
            assert not leaks(text, secret), text
        assert "[REDACTED]" in message, message  # the provider's message came back, minus the key
    assert "key [REDACTED] is not allowed" in messages[0] and "\U0001f600" in messages[4]
    logged = caplog.text + "".join(repr(o) for o in outcomes)
    for secret in (PLAIN_CANARY, OPENAI_CANARY):
        assert not leaks(logged, secret)
