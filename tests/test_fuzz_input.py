"""Fuzzing the pi-native ingress (issue #9): whatever the body, never a 500, never a traceback, always the documented
envelope. Bounded (a fixed number of examples, derandomized so CI is repeatable) and fast (a few seconds).

Two levels: ``parse_request`` alone, over arbitrary bytes and over bodies that are almost right (the shape a client
sends with one part replaced by anything JSON can hold); then the same bodies over HTTP to a real sidecar.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sidecar.config import Limits
from sidecar.errors import BadRequest
from sidecar.request import PiRequest, parse_request
from tests.sidecar_server import TOKEN, RunningSidecar, run_sidecar, sidecar_environ, write_config

FUZZ = settings(
    max_examples=250, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
LIMITS = Limits()

scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=40)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
)
# Identifiers: ordinary, control characters, huge, and unicode line separators.
identifiers = (
    st.sampled_from(["echo/echo", "echo", "anthropic/claude-sonnet-4-5", "nope/x", "", " "])
    | st.text(max_size=30)
    | st.text(alphabet=st.sampled_from("a/\n\r\x00\u2028é:."), max_size=20)
    | st.integers(1, 3).map(lambda n: "m" * (300 * n))
)
blocks = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image", "thinking", "toolCall", "x"])},
    optional={
        "text": json_values,
        "data": json_values,
        "mimeType": json_values,
        "thinking": json_values,
        "id": json_values,
        "name": json_values,
        "arguments": json_values,
    },
)
messages = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "developer", "assistant", "toolResult", "robot"])},
    optional={"content": st.text(max_size=20) | st.lists(blocks, max_size=3) | json_values, "toolCallId": json_values},
)
options = st.dictionaries(
    st.sampled_from(
        [
            "temperature",
            "maxTokens",
            "headers",
            "metadata",
            "requestMetadata",
            "sessionId",
            "reasoning",
            "streamIdleTimeoutMs",
            "streamFirstEventTimeoutMs",
            "stopSequences",
            "toolChoice",
            "thinkingBudgets",
        ]
    ),
    json_values | st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
    max_size=4,
)
deep_values = st.integers(40, 400).map(lambda depth: _nest(depth))
header_names = st.sampled_from(["x-a", "anthropic-beta", "X-Trace", "x-api-key "]) | st.text(max_size=12)
header_maps = st.dictionaries(header_names, st.text(max_size=12) | json_values, min_size=1, max_size=3)
# Mostly a valid body with exactly one part replaced, so the fuzz reaches the checks behind the first ones (and the
# adapters that build the upstream request); now and then a body that is wrong everywhere.
models = st.sampled_from(["echo/echo", "anthropic/claude-sonnet-4-5", "openai/gpt-4o"])
valid_context = st.just({"messages": [{"role": "user", "content": "hi", "timestamp": 0}]})
bodies = st.one_of(
    st.fixed_dictionaries({"modelId": identifiers | json_values, "context": valid_context}),
    st.fixed_dictionaries({"modelId": models, "context": valid_context, "options": options | json_values}),
    st.fixed_dictionaries(
        {"modelId": models, "context": valid_context, "options": st.builds(dict, headers=header_maps)}
    ),
    st.fixed_dictionaries({"modelId": models, "context": valid_context, "stream": json_values}),
    st.fixed_dictionaries(
        {"modelId": models, "context": st.fixed_dictionaries({"messages": st.lists(messages, min_size=1, max_size=3)})}
    ),
    st.fixed_dictionaries(
        {
            "modelId": models,
            "context": st.fixed_dictionaries(
                {
                    "messages": st.just([{"role": "user", "content": "hi"}]),
                    "tools": st.lists(
                        st.fixed_dictionaries({"name": st.just("t"), "parameters": deep_values | json_values}),
                        max_size=2,
                    ),
                }
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "modelId": identifiers | json_values,
            "context": st.fixed_dictionaries(
                {"messages": st.lists(messages, max_size=3) | json_values},
                optional={"systemPrompt": json_values, "tools": st.lists(json_values, max_size=2) | json_values},
            )
            | json_values,
        },
        optional={"options": options | json_values, "stream": json_values},
    ),
)


def _nest(depth: int) -> Any:
    value: Any = {"type": "string"}
    for _ in range(depth):
        value = {"type": "array", "items": value}
    return value


def _check_parse(raw: bytes) -> None:
    try:
        parsed = parse_request(raw, LIMITS)
    except BadRequest as exc:
        assert exc.status == 400 and exc.message
        assert len(exc.message) < 1500, exc.message[:200]
        assert "\n" not in exc.message and "\x00" not in exc.message and "Traceback" not in exc.message
    else:
        assert isinstance(parsed, PiRequest) and len(parsed.model_id) <= LIMITS.max_identifier_chars


@FUZZ
@given(st.binary(max_size=300))
def test_parse_request_on_arbitrary_bytes_is_a_request_or_a_400(raw: bytes) -> None:
    _check_parse(raw)


@FUZZ
@given(bodies)
def test_parse_request_on_almost_right_bodies_is_a_request_or_a_400(body: dict[str, Any]) -> None:
    _check_parse(json.dumps(body).encode())


# ----- over HTTP: the whole route, with the real server and its exception mapping -----------------------------------


@pytest.fixture(scope="module")
def fuzz_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSidecar]:
    home = tmp_path_factory.mktemp("fuzz")
    # Providers point at a closed port: a body that gets past every check fails upstream, which must still be an
    # in-band error or an envelope, never a 500.
    environ = sidecar_environ("http://127.0.0.1:9", Path(home))
    with run_sidecar(environ, write_config(Path(home), "[upstream]\nmax_retries = 0\n")) as running:
        yield running


@pytest.fixture(scope="module")
def http(fuzz_sidecar: RunningSidecar) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_sidecar.url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=10) as client:
        yield client


ENVELOPE_STATUSES = {400, 401, 403, 404, 413, 415, 429, 499, 502, 503, 504}


# caplog is cleared per example, so sharing the function-scoped fixture across examples is sound.
@settings(FUZZ, max_examples=150, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(body=bodies)
# The audit's two 500s, always tried: a 300-deep tool schema, and a non-ASCII header value for the upstream.
@example(body={"modelId": "echo/echo", "context": {"messages": [], "tools": [{"name": "t", "parameters": _nest(300)}]}})
@example(body={"modelId": "openai/gpt-4o", "context": {"messages": []}, "options": {"headers": {"x-a": "é"}}})
def test_route_answers_every_almost_right_body_with_a_stream_or_the_envelope(
    http: httpx.Client, caplog: pytest.LogCaptureFixture, body: dict[str, Any]
) -> None:
    caplog.set_level(logging.INFO)
    caplog.clear()
    response = http.post("/v1/pi/stream", content=json.dumps(body).encode())
    assert response.status_code != 500, response.text[:300]
    assert "Traceback" not in response.text and 'File "' not in response.text
    if response.status_code == 200:
        content_type = response.headers["content-type"]
        assert content_type.startswith(("text/event-stream", "application/json")), content_type
        if content_type.startswith("text/event-stream"):
            assert response.text.rstrip().endswith("data: [DONE]")
        else:
            assert response.json()["message"]["role"] == "assistant"
    else:
        assert response.status_code in ENVELOPE_STATUSES, response.status_code
        error = response.json()["error"]
        assert set(error) == {"type", "message"} and error["message"], error
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], [
        r.getMessage()[:200] for r in caplog.records if r.levelno >= logging.ERROR
    ]
