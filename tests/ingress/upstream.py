"""What the ingress SDK tests share: recorded provider streams as FakeUpstream replies, and the check that the
workload bearer never left the sidecar."""

from __future__ import annotations

import json

from tests.fakeupstream import FakeUpstream, Reply, fixture_bytes
from tests.sidecar_server import TOKEN


def anthropic_reply(name: str, split: int | None = 7) -> Reply:
    """``tests/fixtures/anthropic-messages/<name>``, sent in ``split``-byte pieces."""
    return Reply.sse(fixture_bytes(f"anthropic-messages/{name}"), split=split)


def openai_reply(name: str, split: int | None = 7) -> Reply:
    """``tests/fixtures/openai-chat-completions/<name>``, sent in ``split``-byte pieces."""
    return Reply.sse(fixture_bytes(f"openai-chat-completions/{name}"), split=split)


def assert_no_bearer_upstream(upstream: FakeUpstream) -> None:
    """The upstream was called, and the workload bearer is in none of its requests' headers or bodies."""
    assert upstream.received
    for received in upstream.received:
        assert TOKEN not in json.dumps(received.headers) and TOKEN.encode() not in received.body
