"""The Bedrock ConverseStream adapter and the AWS credential chain.

Upstream bytes are the event streams in ``tests/fixtures/bedrock-converse-stream`` (assembled from AWS's documented
event shapes, see its README), replayed by FakeUpstream whole and split at every byte boundary. SigV4 is checked
twice: the adapter's signer reproduces AWS's documented example signature, and every request the fake upstream
receives is verified the way AWS verifies it, by an independent implementation of the algorithm (itself checked
against the same documented example). STS is a FakeUpstream on 127.0.0.1 answering XML.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import importlib.util
import logging
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, quote

import httpx
import orjson
import pytest

from sidecar.cloud import RESOLVERS, aws
from sidecar.config import load_settings
from sidecar.credentials import Credential, CredentialStore
from sidecar.errors import (
    BadRequest,
    ConfigError,
    MissingCredential,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamStreamError,
)
from sidecar.models import ModelSpec, Pricing
from sidecar.providers import ADAPTERS, bedrock_converse_stream
from sidecar.providers.base import Delta, Finish, ResponseInfo, UpstreamCall, UsageUpdate
from sidecar.registry import ModelRegistry
from sidecar.stream import MessageAssembler, SilentEncoder
from tests.canaries import leaks
from tests.conftest import pi_body, read_events
from tests.fakeupstream import FIXTURES, FakeUpstream, Reply, fixture_bytes
from tests.providers.adapters import adapter_deltas
from tests.sidecar_server import TOKEN, run_sidecar, sidecar_environ, write_config

DIR = "bedrock-converse-stream"
API = "bedrock-converse-stream"


def _load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bedrock_fixture_builder", FIXTURES / DIR / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD = _load_builder()
STREAMS = sorted(p.name for p in (FIXTURES / DIR).glob("*.eventstream"))

KEY_ID = "AKIDEXAMPLE"
SECRET = "bedrockCanarySECRETdoNotLeak0123456789abcd"
SESSION = "bedrockCanarySESSIONtokenDoNotLeak9876543210zyxw"
BEARER = "ABSKbedrockCanaryAPIkeyDoNotLeak11223344"
SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
NOVA_LITE = "us.amazon.nova-lite-v1:0"
SONNET_PRICE = Pricing(3.3, 16.5, 0.33, 4.125)
NOVA_LITE_PRICE = Pricing(0.06, 0.24, 0.015, 0.06)
HELLO: dict[str, Any] = {"messages": [{"role": "user", "content": "hi", "timestamp": 0}]}
SIG = (
    "EqoBCkgIBxABGAIiQKkdqDWrWH3ZJ5d2BCV0Ud1cRCpgSAXxNVq8ZTyOEzaMvU0P5q2y/pkSWhOafhbNi0ixG3XJmVqfb/uY3w1zsMESDI"
    "kwy2FIz9xu8dyd+hoMLn7pVTW9wX51TKChIjDqSwpCSpSJqGzVP+0Kng4JV7WIBVMaUzwfyLOM5ZNGD5mNq0lBqHKU2T3v1Z7Yw84qEHkMKR7n"
    "vHJlHbbW0Y4I0hgC"
)


def keys_value(region: str | None = "us-west-2", token: str | None = SESSION) -> str:
    value: dict[str, Any] = {"type": "keys", "accessKeyId": KEY_ID, "secretAccessKey": SECRET}
    if token:
        value["sessionToken"] = token
    if region:
        value["region"] = region
    return orjson.dumps(value).decode()


def model(url: str = "http://x", model_id: str = SONNET, **kw: Any) -> ModelSpec:
    fields: dict[str, Any] = {
        "reasoning": model_id.startswith(("us.anthropic", "global.anthropic")),
        "input": ("text", "image"),
        "pricing": SONNET_PRICE if "anthropic" in model_id else NOVA_LITE_PRICE,
        "max_tokens": 64000 if "anthropic" in model_id else 10000,
        "compat": {"cache_points": True},
    }
    return ModelSpec("bedrock", model_id, API, url, **{**fields, **kw})


def make_call(
    up: FakeUpstream | None,
    context: dict[str, Any] | None = None,
    *,
    options: dict[str, Any] | None = None,
    api_key: str | None = None,
    max_retries: int = 0,
    headers: dict[str, str] | None = None,
    **model_kw: Any,
) -> UpstreamCall:
    return UpstreamCall(
        model=model(up.url if up else "http://x", **model_kw),
        context=context or HELLO,  # type: ignore[arg-type]
        options=options or {},
        api_key=api_key if api_key is not None else keys_value(),
        session_id="session-1",
        headers=headers or {},
        max_retries=max_retries,
    )


async def collect(call: UpstreamCall) -> tuple[list[Delta], Exception | None]:
    return await adapter_deltas(bedrock_converse_stream.stream, call)


def assemble(deltas: list[Delta], spec: ModelSpec | None = None) -> dict[str, Any]:
    assembler = MessageAssembler(spec or model(), encoder=SilentEncoder())
    assembler.start()
    for delta in deltas:
        assembler.feed(delta)
    assembler.done()
    return dict(assembler.message)


def stream_reply(data: bytes, split: int | None = None, **kw: Any) -> Reply:
    headers = {"content-type": "application/vnd.amazon.eventstream", "x-amzn-requestid": "req-0001"}
    return Reply.sse(data, split=split, headers=headers, **kw)


def error_reply(name: str, status: int) -> Reply:
    headers = {}
    for line in fixture_bytes(f"{DIR}/errors/{name}.headers").decode().splitlines()[1:]:
        key, _, value = line.partition(":")
        headers[key.strip()] = value.strip()
    return Reply(status=status, chunks=[fixture_bytes(f"{DIR}/errors/{name}.json")], headers=headers)


@pytest.fixture
def up(upstream: FakeUpstream) -> FakeUpstream:
    return upstream


@pytest.fixture(autouse=True)
def _no_cached_sts_keys() -> Iterator[None]:
    aws._STS_CACHE.clear()
    yield
    aws._STS_CACHE.clear()


# ----- SigV4 ------------------------------------------------------------------------------------------------------

# AWS's documented Signature Version 4 example ("GET iam ListUsers", 2015-08-30, the AKIDEXAMPLE key pair).
EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
EXAMPLE_URL = "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08"
EXAMPLE_HEADERS = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}
EXAMPLE_SIGNATURE = "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
EXAMPLE_AUTHORIZATION = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
    f"SignedHeaders=content-type;host;x-amz-date, Signature={EXAMPLE_SIGNATURE}"
)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def expected_signature(
    method: str, raw_path: str, headers: dict[str, str], signed: list[str], body: bytes, secret: str, scope: str
) -> str:
    """SigV4 as the AWS documentation spells it out (not botocore): what AWS computes from the received request.

    Non-S3 services URI-encode the path as received once more; the query's pairs are sorted; each signed header is
    ``name:trimmed value``; the key is derived from the secret through the scope's date, region and service."""
    path, _, query = raw_path.partition("?")
    pairs = sorted(pair.partition("=")[::2] for pair in query.split("&") if pair)
    canonical = "\n".join(
        [
            method,
            quote(path, safe="/~"),
            "&".join(f"{k}={v}" for k, v in pairs),
            "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in signed),
            ";".join(signed),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    date, region, service, _ = scope.split("/")
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", headers["x-amz-date"], scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret}".encode(), date), region), service), "aws4_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def verify_sigv4(method: str, raw_path: str, headers: dict[str, str], body: bytes, secret: str) -> dict[str, str]:
    """Check a received request's signature; return the parts of its Authorization header."""
    algorithm, _, rest = headers["authorization"].partition(" ")
    assert algorithm == "AWS4-HMAC-SHA256"
    parts = dict(part.strip().split("=", 1) for part in rest.split(","))
    key_id, scope = parts["Credential"].split("/", 1)
    signed = parts["SignedHeaders"].split(";")
    assert signed == sorted(signed) and "host" in signed and "x-amz-date" in signed
    assert parts["Signature"] == expected_signature(method, raw_path, headers, signed, body, secret, scope)
    return {"key_id": key_id, "scope": scope, "signed": parts["SignedHeaders"]}


def test_the_independent_verifier_agrees_with_the_documented_example() -> None:
    headers = {**EXAMPLE_HEADERS, "host": "iam.amazonaws.com", "x-amz-date": "20150830T123600Z"}
    signed = ["content-type", "host", "x-amz-date"]
    scope = "20150830/us-east-1/iam/aws4_request"
    path = "/?Action=ListUsers&Version=2010-05-08"
    assert expected_signature("GET", path, headers, signed, b"", EXAMPLE_SECRET, scope) == EXAMPLE_SIGNATURE


def test_the_adapter_signer_reproduces_the_documented_example(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = bedrock_converse_stream.botocore()["auth"]
    monkeypatch.setattr(auth, "get_current_datetime", lambda: datetime.datetime(2015, 8, 30, 12, 36, 0))
    keys = aws.Keys("AKIDEXAMPLE", EXAMPLE_SECRET)
    signed = bedrock_converse_stream.sign(
        EXAMPLE_URL, EXAMPLE_HEADERS, b"", keys, "us-east-1", method="GET", service="iam"
    )
    assert signed == {**EXAMPLE_HEADERS, "x-amz-date": "20150830T123600Z", "authorization": EXAMPLE_AUTHORIZATION}


async def test_the_request_on_the_wire_verifies_as_aws_would(up: FakeUpstream) -> None:
    up.push(stream_reply(fixture_bytes(f"{DIR}/text-nova-lite.ASSEMBLED.eventstream")))
    caller = {"x-trace": "abc", "host": "evil.example", "x-amz-date": "19990101T000000Z", "authorization": "x"}
    deltas, error = await collect(make_call(up, model_id=NOVA_LITE, headers=caller))
    assert error is None and deltas
    (received,) = up.received
    assert received.path == "/model/us.amazon.nova-lite-v1%3A0/converse-stream"  # ":" escaped: one path segment
    parts = verify_sigv4("POST", received.path, received.headers, received.body, SECRET)
    assert parts["key_id"] == KEY_ID
    assert parts["scope"] == f"{received.headers['x-amz-date'][:8]}/us-west-2/bedrock/aws4_request"
    assert parts["signed"] == "accept;content-type;host;x-amz-date;x-amz-security-token;x-trace"
    stamp = datetime.datetime.strptime(received.headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    assert abs(stamp.timestamp() - time.time()) < 60  # the caller's x-amz-date was not used
    assert received.headers["x-amz-security-token"] == SESSION
    assert received.headers["accept"] == "application/vnd.amazon.eventstream"
    assert received.headers["content-type"] == "application/json"
    # The secret key itself never travels; only the signature derived from it does.
    assert not leaks(repr(received.headers) + received.body.decode(), SECRET)


async def test_a_retried_request_still_verifies(up: FakeUpstream) -> None:
    up.push(
        error_reply("429-throttling-exception.ASSEMBLED", 429),
        stream_reply(fixture_bytes(f"{DIR}/text-nova-lite.ASSEMBLED.eventstream")),
    )
    call = make_call(up, model_id=NOVA_LITE, max_retries=1, options={"maxRetryDelayMs": 1})
    deltas, error = await collect(call)
    assert error is None and isinstance(deltas[-1], UsageUpdate)
    assert len(up.received) == 2
    for received in up.received:
        verify_sigv4("POST", received.path, received.headers, received.body, SECRET)


@pytest.mark.parametrize(
    ("model_id", "path"),
    [
        (
            "arn:aws:bedrock:eu-west-1:123456789012:application-inference-profile/abc",
            "/model/arn%3Aaws%3Abedrock%3Aeu-west-1%3A123456789012%3Aapplication-inference-profile%2Fabc/converse-stream",
        ),
        ("..", "/model/%2E%2E/converse-stream"),
    ],
)
async def test_odd_model_ids_stay_one_signed_path_segment(up: FakeUpstream, model_id: str, path: str) -> None:
    up.push(stream_reply(fixture_bytes(f"{DIR}/text-nova-lite.ASSEMBLED.eventstream")))
    _, error = await collect(make_call(up, model_id=model_id))
    assert error is None
    (received,) = up.received
    assert received.path == path
    parts = verify_sigv4("POST", received.path, received.headers, received.body, SECRET)
    region = "eu-west-1" if model_id.startswith("arn:") else "us-west-2"  # an ARN names its region
    assert parts["scope"].split("/")[1] == region


async def test_a_bedrock_api_key_is_a_bearer_and_nothing_is_signed(up: FakeUpstream) -> None:
    up.push(stream_reply(fixture_bytes(f"{DIR}/text-nova-lite.ASSEMBLED.eventstream")))
    _, error = await collect(make_call(up, model_id=NOVA_LITE, api_key=BEARER))  # a bare key, as a secrets file
    assert error is None
    (received,) = up.received
    assert received.headers["authorization"] == f"Bearer {BEARER}"
    assert not [name for name in received.headers if name.startswith("x-amz-")]


def test_botocore_debug_logs_never_show_the_keys(caplog: pytest.LogCaptureFixture) -> None:
    """botocore.auth logs the canonical request (with the session token header) at DEBUG: kept at INFO."""
    caplog.set_level(logging.DEBUG)
    bedrock_converse_stream.botocore()
    logging.getLogger("botocore").setLevel(logging.NOTSET)  # as a fresh process has it, before the adapter's import
    bedrock_converse_stream._BOTOCORE.clear()
    bedrock_converse_stream.sign("https://h/model/m/converse-stream", {}, b"{}", aws.Keys(KEY_ID, SECRET, SESSION), "r")
    assert SESSION not in caplog.text and SECRET not in caplog.text


async def test_without_botocore_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bedrock_converse_stream, "_BOTOCORE", {})
    monkeypatch.setitem(sys.modules, "botocore.auth", None)  # what `import` does when the module is absent
    _, error = await collect(make_call(None))
    assert isinstance(error, ConfigError) and error.status == 500
    assert "pip install 'pi-sidecar[bedrock]'" in str(error) and "botocore" in str(error)


# ----- the recorded streams ---------------------------------------------------------------------------------------


def test_every_fixture_is_its_source_as_botocore_reads_it() -> None:
    """The .eventstream files are the assembly of their .jsonl sources, and botocore decodes them back (CRCs)."""
    assert STREAMS == [
        "text-nova-lite.ASSEMBLED.eventstream",
        "thinking-claude.ASSEMBLED.eventstream",
        "thinking-then-tool-use-claude.ASSEMBLED.eventstream",
        "throttling-exception-mid-stream.ASSEMBLED.eventstream",
        "tool-use-cached-claude.ASSEMBLED.eventstream",
    ]
    for name in STREAMS:
        source = FIXTURES / DIR / name.replace(".eventstream", ".jsonl")
        data = fixture_bytes(f"{DIR}/{name}")
        assert BUILD.assemble(source) == data
        assert BUILD.decode(data) == BUILD.sources(source)


TEXT = "A “hello world” program shows a language's most basic syntax by printing a greeting — here, “Hello, World!” 👋"
THINKING = "27 × 453: split 453 into 400 + 53. 27 × 400 = 10800, 27 × 53 = 1431. 10800 + 1431 = 12231."
SIG2 = (
    "EpYBCkgIBxABGAIiQDdHqz4hUEm1U8pcJk6G4jz6nUMNhV2yQnC5G1Zf0aEbOSsq2E+X1mHqQ0n9PDvzPbLqgLiQ7a4N9tQJcZz9u6cSDL"
    "Gx3FZ1P8ZP2G3b2hoM4Uh8QybLNhvE1b6MIjAB9rj5fJ5KpXq2fNQ2+HcS+nk4KTu8rw2GxAcM9hQZl0b0TjrEuQm7hTC9oGg8o3EqFC3y8kN4"
    "fD0zU6cBMkh3H1JRRW2lGAI="
)
# What each stream is, worked out by hand from its source: content, stop reason, usage (input, output, cacheRead,
# cacheWrite) and the cost at the model's rates (USD per 1M tokens).
EXPECTED: dict[str, tuple[str, list[dict[str, Any]], str, tuple[int, int, int, int], float]] = {
    "text-nova-lite.ASSEMBLED.eventstream": (
        NOVA_LITE,
        [{"type": "text", "text": TEXT}],
        "stop",
        (14, 31, 0, 0),
        14 * 0.06e-6 + 31 * 0.24e-6,  # 8.28e-06
    ),
    "thinking-claude.ASSEMBLED.eventstream": (
        SONNET,
        [
            {"type": "thinking", "thinking": THINKING, "thinkingSignature": SIG},
            {"type": "text", "text": "27 × 453 = 12,231."},
        ],
        "stop",
        (48, 96, 0, 0),
        48 * 3.3e-6 + 96 * 16.5e-6,  # 0.0017424
    ),
    "tool-use-cached-claude.ASSEMBLED.eventstream": (
        SONNET,
        [
            {"type": "text", "text": "I'll look up the most popular song on WZPZ."},
            {
                "type": "toolCall",
                "id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
                "name": "top_song",
                "arguments": {"sign": "WZPZ"},
            },
        ],
        "toolUse",
        (12, 54, 1536, 412),
        12 * 3.3e-6 + 54 * 16.5e-6 + 1536 * 0.33e-6 + 412 * 4.125e-6,  # 0.00313698
    ),
    "thinking-then-tool-use-claude.ASSEMBLED.eventstream": (
        SONNET,
        [
            {
                "type": "thinking",
                "thinking": "The user wants WZPZ's most popular song. The top_song tool takes a call sign.",
                "thinkingSignature": SIG2,
            },
            {
                "type": "toolCall",
                "id": "tooluse_Pm3hWWvOQjSUj2a0yDPfyw",
                "name": "top_song",
                "arguments": {"sign": "WZPZ"},
            },
        ],
        "toolUse",
        (530, 118, 0, 0),
        530 * 3.3e-6 + 118 * 16.5e-6,  # 0.003696
    ),
}


def test_the_hand_computed_costs() -> None:
    assert [round(e[4], 10) for e in EXPECTED.values()] == [0.00000828, 0.0017424, 0.00313698, 0.003696]


@pytest.mark.parametrize("split", [None, 1, 2, 3, 7, 64])
@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_recorded_stream(up: FakeUpstream, name: str, split: int | None) -> None:
    model_id, content, stop, (tokens_in, tokens_out, cache_read, cache_write), cost = EXPECTED[name]
    data = fixture_bytes(f"{DIR}/{name}")
    up.push(stream_reply(data, split=split))
    deltas, error = await collect(make_call(up, model_id=model_id))
    assert error is None
    assert deltas[0] == ResponseInfo(response_id="req-0001")  # x-amzn-requestid
    assert isinstance(deltas[-2], Finish) and deltas[-2].reason == stop
    cached = b"cacheReadInputTokens" in data  # Nova's usage has no cache fields at all
    assert deltas[-1] == UsageUpdate(
        input=tokens_in,
        output=tokens_out,
        cache_read=cache_read if cached else None,
        cache_write=cache_write if cached else None,
    )
    message = assemble(deltas, model(model_id=model_id))
    assert message["content"] == content
    assert message["stopReason"] == stop
    usage = message["usage"]
    assert (usage["input"], usage["output"], usage["cacheRead"], usage["cacheWrite"]) == (
        tokens_in,
        tokens_out,
        cache_read,
        cache_write,
    )
    assert usage["totalTokens"] == tokens_in + tokens_out + cache_read + cache_write
    assert usage["cost"]["total"] == pytest.approx(cost, rel=1e-12)


def _parse_all(chunks: list[bytes], placeholder: str | None = None) -> list[Delta]:
    """The deltas of a body delivered in ``chunks``, through botocore's buffer and the adapter's parser."""
    eventstream = bedrock_converse_stream.botocore()["eventstream"]
    buffer = eventstream.EventStreamBuffer()
    parser = bedrock_converse_stream.ConverseStreamParser("bedrock", (), placeholder)
    deltas: list[Delta] = []
    for chunk in chunks:
        buffer.add_data(chunk)
        for message in buffer:
            deltas.extend(parser.feed(message))
    parser.end()
    return deltas


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_byte_boundary(name: str) -> None:
    """Two chunks, cut at every offset of the body: always the same deltas as the whole body."""
    data = fixture_bytes(f"{DIR}/{name}")
    whole = _parse_all([data])
    assert assemble(whole, model(model_id=EXPECTED[name][0]))["content"] == EXPECTED[name][1]
    for cut in range(1, len(data)):
        assert _parse_all([data[:cut], data[cut:]]) == whole, cut


# ----- errors -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [None, 1])
async def test_an_exception_message_mid_stream(up: FakeUpstream, split: int | None) -> None:
    up.push(stream_reply(fixture_bytes(f"{DIR}/throttling-exception-mid-stream.ASSEMBLED.eventstream"), split=split))
    deltas, error = await collect(make_call(up, model_id=NOVA_LITE))
    assert isinstance(error, UpstreamStreamError) and error.status == 429
    assert str(error) == "bedrock stream error (throttlingException): Too many tokens, please wait before trying again."
    assert assemble(deltas)["content"] == [{"type": "text", "text": "A “hello world” program "}]


@pytest.mark.parametrize(
    ("exception", "status"),
    [
        ("validationException", 400),
        ("modelStreamErrorException", 424),
        ("throttlingException", 429),
        ("internalServerException", 500),
        ("serviceUnavailableException", 503),
        ("someFutureException", 500),
    ],
)
async def test_exception_statuses(up: FakeUpstream, exception: str, status: int) -> None:
    body = BUILD.event("messageStart", {"role": "assistant"}) + BUILD.exception(exception, f"it broke {SECRET}")
    up.push(stream_reply(body))
    _, error = await collect(make_call(up))
    assert isinstance(error, UpstreamStreamError) and error.status == status and exception in str(error)
    assert "it broke" in str(error) and not leaks(str(error), SECRET)


def turn(stop_reason: str, *, tool: str | None = None, metadata: bool = True) -> bytes:
    events = [BUILD.event("messageStart", {"role": "assistant"})]
    if tool:
        events += [
            BUILD.event(
                "contentBlockStart",
                {"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "tooluse_1", "name": tool}}},
            ),
            BUILD.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": "{}"}}}),
            BUILD.event("contentBlockStop", {"contentBlockIndex": 0}),
        ]
    else:
        events += [
            BUILD.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Sorry."}}),
            BUILD.event("contentBlockStop", {"contentBlockIndex": 0}),
        ]
    events.append(BUILD.event("messageStop", {"stopReason": stop_reason}))
    if metadata:
        events.append(BUILD.event("metadata", {"usage": {"inputTokens": 10, "outputTokens": 2, "totalTokens": 12}}))
    return b"".join(events)


@pytest.mark.parametrize(
    ("stop_reason", "status", "text"),
    [
        ("guardrail_intervened", 400, "guardrail"),
        ("content_filtered", 400, "content filters"),
        ("malformed_tool_use", 502, "tool call"),
    ],
)
async def test_failed_stops_are_errors_that_keep_the_usage(
    up: FakeUpstream, stop_reason: str, status: int, text: str
) -> None:
    up.push(stream_reply(turn(stop_reason)))
    deltas, error = await collect(make_call(up))
    assert isinstance(error, UpstreamStreamError) and error.status == status
    assert text in str(error) and stop_reason in str(error)
    assert UsageUpdate(input=10, output=2) in deltas  # read before the error is raised


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [("max_tokens", "length"), ("model_context_window_exceeded", "length"), ("stop_sequence", "stop"), ("new", "stop")],
)
async def test_stop_reasons(up: FakeUpstream, stop_reason: str, finish: str) -> None:
    up.push(stream_reply(turn(stop_reason)))
    deltas, error = await collect(make_call(up))
    assert error is None and Finish(finish) in deltas  # type: ignore[arg-type]


async def test_a_stream_cut_before_message_stop(up: FakeUpstream) -> None:
    data = fixture_bytes(f"{DIR}/thinking-claude.ASSEMBLED.eventstream")
    up.push(stream_reply(data[: len(data) - 700], split=64))
    deltas, error = await collect(make_call(up))
    assert isinstance(error, UpstreamProtocolError) and error.status == 502 and "messageStop" in str(error)
    assert assemble(deltas)["content"][0]["thinking"] == THINKING  # what arrived is kept


async def test_a_stream_without_metadata_ends_well_after_message_stop(up: FakeUpstream) -> None:
    up.push(stream_reply(turn("end_turn", metadata=False)))
    deltas, error = await collect(make_call(up))
    assert error is None and deltas[-1] == Finish("stop")


async def test_a_corrupted_frame_is_a_protocol_error(up: FakeUpstream) -> None:
    data = bytearray(fixture_bytes(f"{DIR}/text-nova-lite.ASSEMBLED.eventstream"))
    data[200] ^= 0xFF  # inside the second message: its CRC no longer matches
    up.push(stream_reply(bytes(data)))
    _, error = await collect(make_call(up))
    assert isinstance(error, UpstreamProtocolError) and "ChecksumMismatch" in str(error)


async def test_a_json_200_is_not_an_event_stream(up: FakeUpstream) -> None:
    up.push(Reply.json(200, {"output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}}}))
    _, error = await collect(make_call(up))
    assert isinstance(error, UpstreamProtocolError) and "expected an AWS event stream" in str(error)


@pytest.mark.parametrize(
    ("name", "status", "text"),
    [
        ("400-validation-exception.ASSEMBLED", 400, "The provided model identifier is invalid."),
        ("403-unrecognized-client.ASSEMBLED", 403, "The security token included in the request is invalid."),
    ],
)
async def test_errors_before_the_stream(up: FakeUpstream, name: str, status: int, text: str) -> None:
    up.push(error_reply(name, status))
    _, error = await collect(make_call(up))
    assert isinstance(error, UpstreamStatusError) and error.status == status and text in str(error)


async def test_an_error_body_echoing_the_keys_is_redacted(up: FakeUpstream) -> None:
    body = orjson.dumps({"message": f"bad signature for {SECRET} with token {SESSION}"})
    up.push(Reply.json(403, body))
    _, error = await collect(make_call(up))
    assert isinstance(error, UpstreamStatusError) and "bad signature" in str(error)
    assert not leaks(str(error), SECRET) and not leaks(str(error), SESSION) and "[REDACTED]" in str(error)


async def test_an_image_bedrock_cannot_take_is_a_bad_request(up: FakeUpstream) -> None:
    image = {"type": "image", "data": "Qk0=", "mimeType": "image/bmp"}
    context = {"messages": [{"role": "user", "content": [image], "timestamp": 0}]}
    _, error = await collect(make_call(up, context))
    assert isinstance(error, BadRequest) and "image/bmp" in str(error) and not up.received


# ----- the request ------------------------------------------------------------------------------------------------

IMAGE = {"type": "image", "data": "aGVsbG8=", "mimeType": "image/png"}
TOP_SONG = {
    "name": "top_song",
    "description": "Get the most popular song played on a radio station.",
    "parameters": {"type": "object", "properties": {"sign": {"type": "string"}}, "required": ["sign"]},
}


def assistant(*content: dict[str, Any], api: str = API, stop: str = "toolUse") -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": list(content),
        "api": api,
        "provider": "bedrock",
        "model": SONNET,
        "usage": {},
        "stopReason": stop,
        "timestamp": 2,
    }


def tool_result(call_id: str, *content: dict[str, Any], error: bool = False) -> dict[str, Any]:
    return {
        "role": "toolResult",
        "toolCallId": call_id,
        "toolName": "top_song",
        "content": list(content),
        "isError": error,
        "timestamp": 3,
    }


FULL_CONTEXT: dict[str, Any] = {
    "systemPrompt": ["You are a radio assistant.", "  "],
    "tools": [TOP_SONG, {"name": "no_description", "parameters": {"properties": {}}}],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Top song on WZPZ?"}, IMAGE], "timestamp": 1},
        assistant(
            {"type": "thinking", "thinking": "Use the tool.", "thinkingSignature": SIG},
            {"type": "thinking", "thinking": "Unsigned musing."},
            {"type": "redactedThinking", "data": "cmVkYWN0ZWQ="},
            {"type": "text", "text": "Checking."},
            {"type": "toolCall", "id": "tooluse_1", "name": "top_song", "arguments": {"sign": "WZPZ"}},
            {"type": "toolCall", "id": "call_2|fc.2", "name": "top_song", "arguments": {"sign": "WKRP"}},
        ),
        tool_result("tooluse_1", {"type": "text", "text": "Elemental Hotel"}),
        tool_result("call_2|fc.2", error=True),
        {"role": "developer", "content": "Answer briefly.", "timestamp": 4},
        {"role": "user", "content": "Thanks.", "timestamp": 5},
    ],
}


async def sent(up: FakeUpstream, context: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    up.push(stream_reply(fixture_bytes(f"{DIR}/text-nova-lite.ASSEMBLED.eventstream")))
    _, error = await collect(make_call(up, context, **kw))
    assert error is None, error
    body: dict[str, Any] = up.received[-1].json()
    return body


async def test_request_translation(up: FakeUpstream) -> None:
    options = {"toolChoice": "auto", "maxTokens": 2048, "reasoning": "low", "temperature": 0.3, "topP": 0.9}
    body = await sent(up, FULL_CONTEXT, options={**options, "stopSequences": ["END"]})
    assert body == {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"text": "Top song on WZPZ?"},
                    {"image": {"format": "png", "source": {"bytes": "aGVsbG8="}}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"reasoningContent": {"reasoningText": {"text": "Use the tool.", "signature": SIG}}},
                    {"text": "Unsigned musing."},  # Bedrock rejects unsigned reasoningContent: it goes back as text
                    {"reasoningContent": {"redactedContent": "cmVkYWN0ZWQ="}},
                    {"text": "Checking."},
                    {"toolUse": {"toolUseId": "tooluse_1", "name": "top_song", "input": {"sign": "WZPZ"}}},
                    {"toolUse": {"toolUseId": "call_2_fc_2", "name": "top_song", "input": {"sign": "WKRP"}}},
                ],
            },
            {
                "role": "user",  # the tool results and the next user turns are one turn: Converse alternates roles
                "content": [
                    {
                        "toolResult": {
                            "toolUseId": "tooluse_1",
                            "content": [{"text": "Elemental Hotel"}],
                            "status": "success",
                        }
                    },
                    {"toolResult": {"toolUseId": "call_2_fc_2", "content": [{"text": "(empty)"}], "status": "error"}},
                    {"text": "Answer briefly."},
                    {"text": "Thanks."},
                    {"cachePoint": {"type": "default"}},
                ],
            },
        ],
        "system": [{"text": "You are a radio assistant."}, {"cachePoint": {"type": "default"}}],
        "inferenceConfig": {"maxTokens": 2048 + 4096, "topP": 0.9, "stopSequences": ["END"]},  # no temperature
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": "top_song",
                        "inputSchema": {"json": TOP_SONG["parameters"]},
                        "description": TOP_SONG["description"],
                    }
                },
                {
                    "toolSpec": {
                        "name": "no_description",  # no empty description: Bedrock wants one character or none
                        "inputSchema": {"json": {"type": "object", "properties": {}}},
                    }
                },
            ],
            "toolChoice": {"auto": {}},
        },
        "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 4096}},
    }


async def test_minimal_body(up: FakeUpstream) -> None:
    body = await sent(up, options={"temperature": 0.5, "cacheRetention": "none"}, model_id=NOVA_LITE)
    assert body == {
        "messages": [{"role": "user", "content": [{"text": "hi"}]}],
        "inferenceConfig": {"maxTokens": 10000, "temperature": 0.5},
    }
    body = await sent(up, compat={}, max_tokens=None, reasoning=False)  # an uncatalogued model: Bedrock's defaults
    assert body == {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("any", {"any": {}}),
        ("required", {"any": {}}),
        ({"type": "tool", "name": "top_song"}, {"tool": {"name": "top_song"}}),
        ({"type": "function", "function": {"name": "top_song"}}, {"tool": {"name": "top_song"}}),
    ],
)
async def test_a_forced_tool_choice_turns_thinking_off(up: FakeUpstream, choice: Any, wire: dict[str, Any]) -> None:
    context = {**HELLO, "tools": [TOP_SONG]}
    body = await sent(up, context, options={"toolChoice": choice, "reasoning": "high", "temperature": 1})
    assert body["toolConfig"]["toolChoice"] == wire
    assert "additionalModelRequestFields" not in body and body["inferenceConfig"]["temperature"] == 1


async def test_thinking_budgets_and_the_interleaved_beta(up: FakeUpstream) -> None:
    options = {"reasoning": "medium", "thinkingBudgets": {"medium": 3000}, "interleavedThinking": True}
    body = await sent(up, options=options)
    assert body["additionalModelRequestFields"] == {
        "thinking": {"type": "enabled", "budget_tokens": 3000},
        "anthropic_beta": ["interleaved-thinking-2025-05-14"],
    }
    assert body["inferenceConfig"]["maxTokens"] == 64000  # (64000 + 3000) capped at the model's limit
    body = await sent(up, options={"reasoning": "high"}, model_id=NOVA_LITE)  # not a reasoning model
    assert "additionalModelRequestFields" not in body


async def test_tool_history_without_tools_gets_the_placeholder_and_its_call_is_dropped(up: FakeUpstream) -> None:
    context = {
        "messages": [
            HELLO["messages"][0],
            assistant({"type": "toolCall", "id": "tooluse_1", "name": "top_song", "arguments": {}}),
            tool_result("tooluse_1", {"type": "text", "text": "Elemental Hotel"}),
        ]
    }
    up.push(stream_reply(turn("tool_use", tool=bedrock_converse_stream.NO_TOOLS_PLACEHOLDER)))
    deltas, error = await collect(make_call(up, context, options={"toolChoice": "none"}))
    assert error is None
    config = up.received[0].json()["toolConfig"]
    assert [t["toolSpec"]["name"] for t in config["tools"]] == ["__no_tools__"]
    message = assemble(deltas)
    assert message["content"] == [] and message["stopReason"] == "stop"  # no tool to run


async def test_tool_choice_none(up: FakeUpstream) -> None:
    body = await sent(up, {**HELLO, "tools": [TOP_SONG]}, options={"toolChoice": "none"})
    assert "toolConfig" not in body  # Converse has no "none": no tools offered
    context = {
        "tools": [TOP_SONG],
        "messages": [
            HELLO["messages"][0],
            assistant({"type": "toolCall", "id": "t1", "name": "top_song", "arguments": {}}),
            tool_result("t1", {"type": "text", "text": "x"}),
        ],
    }
    body = await sent(up, context, options={"toolChoice": "none"})
    assert body["toolConfig"] == {"tools": [{"toolSpec": {"name": "top_song", **_spec_rest()}}]}


def _spec_rest() -> dict[str, Any]:
    return {"inputSchema": {"json": TOP_SONG["parameters"]}, "description": TOP_SONG["description"]}


async def test_the_second_turn_replays_reasoning_and_the_tool_call(up: FakeUpstream) -> None:
    up.push(stream_reply(fixture_bytes(f"{DIR}/thinking-then-tool-use-claude.ASSEMBLED.eventstream"), split=5))
    deltas, _ = await collect(make_call(up, {**HELLO, "tools": [TOP_SONG]}, options={"reasoning": "low"}))
    first = assemble(deltas)
    assert first["api"] == API and first["stopReason"] == "toolUse"
    call_id = first["content"][1]["id"]
    context = {
        "tools": [TOP_SONG],
        "messages": [HELLO["messages"][0], first, tool_result(call_id, {"type": "text", "text": "Elemental Hotel"})],
    }
    body = await sent(up, context, options={"reasoning": "low"})
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {
                    "reasoningContent": {
                        "reasoningText": {
                            "text": "The user wants WZPZ's most popular song. The top_song tool takes a call sign.",
                            "signature": SIG2,
                        }
                    }
                },
                {
                    "toolUse": {
                        "toolUseId": "tooluse_Pm3hWWvOQjSUj2a0yDPfyw",
                        "name": "top_song",
                        "input": {"sign": "WZPZ"},
                    }
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "toolResult": {
                        "toolUseId": "tooluse_Pm3hWWvOQjSUj2a0yDPfyw",
                        "content": [{"text": "Elemental Hotel"}],
                        "status": "success",
                    }
                },
                {"cachePoint": {"type": "default"}},
            ],
        },
    ]
    assert body["additionalModelRequestFields"]["thinking"]["type"] == "enabled"


@pytest.mark.parametrize(
    ("api", "signature", "replayed"),
    [
        (API, SIG, True),
        ("", SIG, True),  # a turn sent back through an ingress format: no origin recorded
        ("", '{"type":"reasoning","encrypted_content":"x"}', False),  # OpenAI's reasoning item
        ("anthropic-messages", SIG, False),
        ("openai-responses", '{"type":"reasoning"}', False),
    ],
)
async def test_only_bedrock_signatures_are_replayed(up: FakeUpstream, api: str, signature: str, replayed: bool) -> None:
    context = {
        "messages": [
            HELLO["messages"][0],
            assistant({"type": "thinking", "thinking": "Hmm.", "thinkingSignature": signature}, api=api, stop="stop"),
            {"role": "user", "content": "And?", "timestamp": 3},
        ]
    }
    body = await sent(up, context)
    block = body["messages"][1]["content"][0]
    if replayed:
        assert block == {"reasoningContent": {"reasoningText": {"text": "Hmm.", "signature": signature}}}
    else:
        assert block == {"text": "Hmm."}


@pytest.mark.parametrize(
    ("model_id", "compat", "ambient", "region"),
    [
        (SONNET, {"region": "eu-central-1"}, "us-west-2", "eu-central-1"),  # configured wins outright
        (SONNET, {}, "us-west-2", "us-west-2"),
        (SONNET, {}, "eu-west-3", "us-east-1"),  # a us. profile is not served from Europe
        (SONNET, {}, "us-gov-west-1", "us-east-1"),
        (SONNET, {}, None, "us-east-1"),
        ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", {}, "eu-west-3", "eu-west-3"),
        ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", {}, "us-east-2", "eu-west-1"),
        ("jp.anthropic.claude-sonnet-4-5-20250929-v1:0", {}, "ap-southeast-1", "ap-northeast-1"),
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", {}, "eu-west-3", "eu-west-3"),
        ("anthropic.claude-3-haiku-20240307-v1:0", {}, None, "us-east-1"),
        ("arn:aws:bedrock:ap-south-1:123456789012:inference-profile/apac.x", {}, "us-east-1", "ap-south-1"),
    ],
)
def test_region(model_id: str, compat: dict[str, str], ambient: str | None, region: str) -> None:
    spec = model(model_id=model_id, compat=compat)
    assert bedrock_converse_stream.resolve_region(spec, ambient) == region


def test_the_region_fills_the_catalog_base_url() -> None:
    spec = model("https://bedrock-runtime.{region}.amazonaws.com", model_id=NOVA_LITE)
    url = bedrock_converse_stream.endpoint_url(spec, "us-west-2")
    assert url == "https://bedrock-runtime.us-west-2.amazonaws.com/model/us.amazon.nova-lite-v1%3A0/converse-stream"


# ----- the credential chain ---------------------------------------------------------------------------------------


def settings_with(tmp_path: Path, **env: str) -> Any:
    return load_settings(None, {"HOME": str(tmp_path), "SIDECAR_HOME": str(tmp_path / "sidecar"), **env})


def bedrock_credential(tmp_path: Path, **env: str) -> Credential | None:
    settings = settings_with(tmp_path, **env)
    return CredentialStore(settings).resolve(settings.catalog.providers["bedrock"])


def write_aws_files(home: Path) -> None:
    (home / ".aws").mkdir(exist_ok=True)
    (home / ".aws" / "credentials").write_text(
        "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = default-secret\n\n"
        f"[work]\naws_access_key_id = AKIDWORK\naws_secret_access_key = {SECRET}%\naws_session_token = {SESSION}\n"
    )
    (home / ".aws" / "config").write_text("[default]\nregion = us-east-2\n\n[profile work]\nregion = eu-west-1\n")


def test_env_keys(tmp_path: Path) -> None:
    write_aws_files(tmp_path)  # the environment wins over the files
    found = bedrock_credential(
        tmp_path,
        AWS_ACCESS_KEY_ID=KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_SESSION_TOKEN=SESSION,
        AWS_REGION="sa-east-1",
    )
    assert found is not None and found.source == "env:AWS_ACCESS_KEY_ID"
    parsed = aws.parse(found.value)
    assert parsed.keys == aws.Keys(KEY_ID, SECRET, SESSION) and parsed.region == "sa-east-1"
    assert SECRET not in repr(found) and SECRET not in repr(parsed) and SESSION not in repr(parsed)


def test_bearer_env_comes_first(tmp_path: Path) -> None:
    found = bedrock_credential(
        tmp_path, AWS_BEARER_TOKEN_BEDROCK=BEARER, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET
    )
    assert found is not None and found.source == "env:AWS_BEARER_TOKEN_BEDROCK"
    assert aws.parse(found.value).bearer == BEARER


def test_shared_file_with_profile(tmp_path: Path) -> None:
    write_aws_files(tmp_path)
    found = bedrock_credential(tmp_path, AWS_PROFILE="work")
    assert found is not None and found.source == "file:~/.aws/credentials[work]"
    parsed = aws.parse(found.value)
    # A "%" in a secret is kept (no interpolation); the profile's region comes from ~/.aws/config.
    assert parsed.keys == aws.Keys("AKIDWORK", SECRET + "%", SESSION) and parsed.region == "eu-west-1"
    found = bedrock_credential(tmp_path)
    assert found is not None and found.source == "file:~/.aws/credentials[default]"
    assert aws.parse(found.value).region == "us-east-2"
    assert bedrock_credential(tmp_path, AWS_PROFILE="absent") is None


def test_shared_file_elsewhere_and_a_rewritten_file(tmp_path: Path) -> None:
    path = tmp_path / "team-creds"
    path.write_text("[default]\naws_access_key_id = AKID1\naws_secret_access_key = s1\n")
    found = bedrock_credential(tmp_path, AWS_SHARED_CREDENTIALS_FILE=str(path))
    assert found is not None and found.source == f"file:{path}[default]"
    path.write_text("[default]\naws_access_key_id = AKID22\naws_secret_access_key = s22\n")  # rotated: re-read
    found = bedrock_credential(tmp_path, AWS_SHARED_CREDENTIALS_FILE=str(path))
    assert found is not None and aws.parse(found.value).keys == aws.Keys("AKID22", "s22")


def test_an_unreadable_file_is_ignored_without_quoting_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text(f"aws_secret_access_key = {SECRET}\n[default\n")
    assert bedrock_credential(tmp_path) is None
    assert "cannot read the AWS file" in caplog.text and SECRET not in caplog.text


def test_web_identity_comes_before_the_files(tmp_path: Path) -> None:
    write_aws_files(tmp_path)
    env = {"AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/token", "AWS_ROLE_ARN": "arn:aws:iam::1:role/r"}
    found = bedrock_credential(tmp_path, **env, AWS_REGION="eu-north-1")
    assert found is not None and found.source == "web-identity"
    parsed = aws.parse(found.value)
    assert parsed.web_identity == {
        "roleArn": "arn:aws:iam::1:role/r",
        "tokenFile": "/var/run/token",
        "sessionName": "pi-sidecar",
        "stsEndpoint": "https://sts.eu-north-1.amazonaws.com",
    }


def test_nothing_found_is_a_missing_credential_that_says_what_to_set(tmp_path: Path) -> None:
    assert bedrock_credential(tmp_path) is None
    settings = settings_with(tmp_path)
    registry = ModelRegistry(settings, CredentialStore(settings))
    with pytest.raises(MissingCredential) as caught:
        registry.resolve(f"bedrock/{SONNET}")
    assert caught.value.status == 401 and "bedrock" in str(caught.value)
    assert not [m for m in registry.servable() if m.provider == "bedrock"]


def test_the_catalog_and_registry_serve_bedrock(tmp_path: Path) -> None:
    assert RESOLVERS["aws"] is aws.resolve and ADAPTERS[API] is bedrock_converse_stream.stream
    settings = settings_with(tmp_path, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET)
    registry = ModelRegistry(settings, CredentialStore(settings))
    served = {m.id: m for m in registry.servable() if m.provider == "bedrock"}
    assert {SONNET, NOVA_LITE, "us.amazon.nova-pro-v1:0", "us.amazon.nova-micro-v1:0"} <= set(served)
    assert served[SONNET].pricing == SONNET_PRICE and served[NOVA_LITE].pricing == NOVA_LITE_PRICE
    resolved = registry.resolve(SONNET)  # a bare Bedrock id resolves to the provider
    assert resolved.model.api == API and resolved.credential is not None
    assert resolved.credential.source == "env:AWS_ACCESS_KEY_ID"


def test_credential_process_json_from_a_configured_location(tmp_path: Path) -> None:
    value = orjson.dumps({"Version": 1, "AccessKeyId": "AKIDCP", "SecretAccessKey": "cp-secret", "SessionToken": "t"})
    parsed = aws.parse(value.decode())
    assert parsed.keys == aws.Keys("AKIDCP", "cp-secret", "t") and parsed.region is None
    with pytest.raises(MissingCredential):
        aws.parse('{"nothing": "usable"}')
    assert aws.secret_values(keys_value()) == [keys_value(), SECRET, SESSION]


# ----- web identity against a fake STS ----------------------------------------------------------------------------


def sts_reply(key_id: str, secret: str, token: str, expires_in: float) -> Reply:
    expiration = datetime.datetime.fromtimestamp(time.time() + expires_in, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = f"""<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:agents:pi</SubjectFromWebIdentityToken>
    <Credentials>
      <SessionToken>{token}</SessionToken>
      <SecretAccessKey>{secret}</SecretAccessKey>
      <Expiration>{expiration}</Expiration>
      <AccessKeyId>{key_id}</AccessKeyId>
    </Credentials>
    <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/bedrock/pi-sidecar</Arn></AssumedRoleUser>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"""
    return Reply(chunks=[body.encode()], headers={"content-type": "text/xml"})


def web_identity_value(up: FakeUpstream, token_file: Path) -> str:
    return orjson.dumps(
        {
            "type": "web-identity",
            "roleArn": "arn:aws:iam::123456789012:role/bedrock",
            "tokenFile": str(token_file),
            "sessionName": "pi-sidecar",
            "stsEndpoint": up.url,
            "region": "us-west-2",
        }
    ).decode()


JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YWdlbnRzOnBpIn0.canarySignatureDoNotLeak"


async def test_web_identity_exchanges_caches_and_refreshes(up: FakeUpstream, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(JWT + "\n")
    text = fixture_bytes(f"{DIR}/text-nova-lite.ASSEMBLED.eventstream")
    up.push(sts_reply("ASIASTS1", "sts-secret-1", "sts-session-1", 3600), stream_reply(text), stream_reply(text))
    call = make_call(up, model_id=NOVA_LITE, api_key=web_identity_value(up, token_file))
    for _ in range(2):
        _, error = await collect(call)
        assert error is None
    sts, first, second = up.received  # one STS exchange for two calls: the keys are cached
    assert sts.path == "/" and sts.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(sts.body.decode()) == {
        "Action": ["AssumeRoleWithWebIdentity"],
        "Version": ["2011-06-15"],
        "RoleArn": ["arn:aws:iam::123456789012:role/bedrock"],
        "RoleSessionName": ["pi-sidecar"],
        "WebIdentityToken": [JWT],
    }
    assert "authorization" not in sts.headers  # an unsigned call
    for received in (first, second):
        assert verify_sigv4("POST", received.path, received.headers, received.body, "sts-secret-1")["key_id"] == (
            "ASIASTS1"
        )
        assert received.headers["x-amz-security-token"] == "sts-session-1"

    # Five minutes before expiry the keys are replaced, with the token file read again (the kubelet rotates it).
    aws._STS_CACHE.update(
        {
            k: aws.Keys(v.access_key_id, v.secret_access_key, v.session_token, time.time() + 299)
            for k, v in aws._STS_CACHE.items()
        }
    )
    token_file.write_text(JWT + "-rotated")
    up.push(sts_reply("ASIASTS2", "sts-secret-2", "sts-session-2", 3600), stream_reply(text))
    _, error = await collect(call)
    assert error is None
    sts, received = up.received[3:]
    assert parse_qs(sts.body.decode())["WebIdentityToken"] == [JWT + "-rotated"]
    verify_sigv4("POST", received.path, received.headers, received.body, "sts-secret-2")


async def test_sts_refusal_is_an_upstream_status_error_without_the_token(up: FakeUpstream, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(JWT)
    body = (
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
        f"<Code>InvalidIdentityToken</Code><Message>Couldn't verify {JWT}</Message></Error>"
        "<RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>"
    )
    up.push(Reply(status=400, chunks=[body.encode()], headers={"content-type": "text/xml"}))
    _, error = await collect(make_call(up, api_key=web_identity_value(up, token_file)))
    assert isinstance(error, UpstreamStatusError) and error.status == 400
    assert "InvalidIdentityToken" in str(error) and "arn:aws:iam::123456789012:role/bedrock" in str(error)
    assert not leaks(str(error), JWT)
    assert len(up.received) == 1  # Bedrock was never called


async def test_a_missing_token_file_says_what_to_check(up: FakeUpstream, tmp_path: Path) -> None:
    _, error = await collect(make_call(up, api_key=web_identity_value(up, tmp_path / "absent")))
    assert isinstance(error, MissingCredential) and "AWS_WEB_IDENTITY_TOKEN_FILE" in str(error) and not up.received


async def test_a_refused_signature_drops_the_cached_sts_keys(up: FakeUpstream, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(JWT)
    up.push(
        sts_reply("ASIASTS1", "sts-secret-1", "sts-session-1", 3600),
        error_reply("403-unrecognized-client.ASSEMBLED", 403),
    )
    _, error = await collect(make_call(up, api_key=web_identity_value(up, token_file)))
    assert isinstance(error, UpstreamStatusError) and error.status == 403
    assert aws._STS_CACHE == {}  # the next call asks STS again


# ----- through the running sidecar --------------------------------------------------------------------------------


def test_pi_route_streams_bedrock_and_keeps_the_keys_secret(
    upstream: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = write_config(tmp_path, f'[upstream]\nmax_retries = 0\n[providers.bedrock]\nbase_url = "{upstream.url}"\n')
    env = sidecar_environ(
        upstream.url, tmp_path, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_SESSION_TOKEN=SESSION
    )
    data = fixture_bytes(f"{DIR}/tool-use-cached-claude.ASSEMBLED.eventstream")
    echoed = orjson.dumps({"message": f"Signature mismatch for secret {SECRET} and token {SESSION}"})
    upstream.push(stream_reply(data, split=9), Reply.json(403, echoed))
    headers = {"authorization": f"Bearer {TOKEN}"}
    with run_sidecar(env, config) as sidecar:
        models = httpx.get(f"{sidecar.url}/v1/models", headers=headers, timeout=10).json()
        assert f"bedrock/{SONNET}" in {m["id"] for m in models["data"]}
        body = pi_body(f"bedrock/{SONNET}", "What is the most popular song on WZPZ?", reasoning="low")
        body["context"]["tools"] = [TOP_SONG]  # type: ignore[index]
        ok = httpx.post(f"{sidecar.url}/v1/pi/stream", json=body, headers=headers, timeout=10)
        refused = httpx.post(f"{sidecar.url}/v1/pi/stream", json=body, headers=headers, timeout=10)
        sidecar.wait_for_outcomes(2)
    assert ok.status_code == 200
    events = read_events(ok)
    message: Any = events[-1]["message"]
    assert message["content"] == EXPECTED["tool-use-cached-claude.ASSEMBLED.eventstream"][1]
    assert (message["api"], message["provider"], message["model"], message["stopReason"]) == (
        API,
        "bedrock",
        SONNET,
        "toolUse",
    )
    assert message["responseId"] == "req-0001"
    usage = message["usage"]
    assert (usage["input"], usage["output"], usage["cacheRead"], usage["cacheWrite"]) == (12, 54, 1536, 412)
    assert usage["cost"]["total"] == pytest.approx(0.00313698, rel=1e-12)
    first, second = upstream.received
    assert first.path == "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream"
    verify_sigv4("POST", first.path, first.headers, first.body, SECRET)
    sent_body = first.json()
    assert sent_body["additionalModelRequestFields"]["thinking"]["budget_tokens"] == 4096
    assert sent_body["messages"][0]["content"][0] == {"text": "What is the most popular song on WZPZ?"}
    assert TOKEN not in repr(first.headers) and TOKEN.encode() not in first.body

    # The refused call: the provider's words reach the client, its echo of the keys does not.
    refusal = refused.text
    assert "Signature mismatch" in refusal and "[REDACTED]" in refusal
    ledger = b"".join(p.read_bytes() for p in (tmp_path / "sidecar").glob("ledger.db*"))
    assert b"env:AWS_ACCESS_KEY_ID" in ledger  # the source is recorded, the value is not
    # Upstream, the session token travels as x-amz-security-token (SigV4 requires it), the secret key never.
    others = {name: value for name, value in first.headers.items() if name != "x-amz-security-token"}
    for secret in (SECRET, SESSION):
        for text in (ok.text, refusal, caplog.text, repr(others) + first.body.decode()):
            assert not leaks(text, secret)
        assert secret.encode() not in ledger
    rows = sqlite3.connect(tmp_path / "sidecar" / "ledger.db").execute("select * from generations").fetchall()
    assert len(rows) == 2 and not leaks(repr(rows), SECRET)


def test_the_openai_sdk_gets_bedrock_and_a_throttled_first_message_as_a_429(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """Through another ingress format (the official openai SDK): the answer is translated, and a stream whose first
    message is an exception fails before the response starts, so the SDK sees Bedrock's status."""
    import openai

    config = write_config(tmp_path, f'[upstream]\nmax_retries = 0\n[providers.bedrock]\nbase_url = "{upstream.url}"\n')
    env = sidecar_environ(upstream.url, tmp_path, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET)
    throttled = BUILD.exception("throttlingException", "Too many tokens, please wait before trying again.")
    upstream.push(stream_reply(fixture_bytes(f"{DIR}/text-nova-lite.ASSEMBLED.eventstream"), split=5))
    upstream.push(stream_reply(throttled))
    messages: Any = [{"role": "user", "content": "Describe the purpose of a 'hello world' program in one line."}]
    with (
        run_sidecar(env, config) as sidecar,
        openai.OpenAI(base_url=f"{sidecar.url}/v1", api_key=TOKEN, max_retries=0) as sdk,
    ):
        completion = sdk.chat.completions.create(model=f"bedrock/{NOVA_LITE}", messages=messages)
        with pytest.raises(openai.RateLimitError) as caught:
            sdk.chat.completions.create(model=f"bedrock/{NOVA_LITE}", messages=messages, stream=True)
    assert completion.choices[0].message.content == TEXT and completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (14, 31)
    assert caught.value.status_code == 429 and "Too many tokens" in str(caught.value)
    for received in upstream.received:
        verify_sigv4("POST", received.path, received.headers, received.body, SECRET)
