"""Interop: provider error bodies that spell the key in an escaped form, read by the real ``@oh-my-pi/pi-ai`` client.

The client JSON-decodes what the sidecar sends; no reading of what it received or yielded may give back the key.
The sidecar, the fake upstream and the client runner are the ones of ``test_pi_ai_interop`` (its fixtures).
"""

from __future__ import annotations

import json

import pytest

from tests.canaries import ENCODINGS, leaks
from tests.fakeupstream import FakeUpstream, Reply
from tests.interop.harness import Sidecar
from tests.interop.test_pi_ai_interop import (  # noqa: F401 (fixtures, used by name)
    GPT4O,
    SONNET,
    RunClient,
    _fresh_upstream,
    bun,
    canaries,
    client_home,
    run_client,
    sidecar,
    upstream,
    user,
)

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("encoding", [e for e in sorted(ENCODINGS) if e != "plain"])
def test_escaped_keys_never_reach_the_pi_ai_client(
    encoding: str,
    run_client: RunClient,  # noqa: F811
    upstream: FakeUpstream,  # noqa: F811
    sidecar: Sidecar,  # noqa: F811
    canaries: dict[str, str],  # noqa: F811
) -> None:
    spell = ENCODINGS[encoding]
    anthropic_body = (
        '{"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key '
        + spell(canaries["anthropic"])
        + '"}}'
    )
    openai_body = '{"error": {"message": "Incorrect API key provided: ' + spell(canaries["openai"]) + '"}}'
    upstream.push(Reply.json(401, anthropic_body.encode()), Reply.json(401, openai_body.encode()))
    runs = [run_client(SONNET, [user("hi")]), run_client(GPT4O, [user("hi")])]
    for run in runs:
        assert run.result["stopReason"] == "error" and run.result["errorStatus"] == 401
        assert "[REDACTED]" in run.result["errorMessage"]
        for key in canaries.values():
            assert not leaks(run.raw, key), run.raw
            assert not leaks(json.dumps(run.lines, ensure_ascii=False), key)
    log = sidecar.log()
    for key in canaries.values():
        assert not leaks(log, key), "a provider key reached the sidecar's log"
