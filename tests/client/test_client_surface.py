"""The client's public surface and its boundaries: ``__all__``, imports, env parsing, option stripping, SSE framing."""

from __future__ import annotations

import ast
import inspect
import json
import random
import subprocess
import sys
import types
from pathlib import Path

import pytest

import client
from client import _env, _request
from client._sse import SSEDecoder

CLIENT_DIR = Path(client.__file__).parent
FORBIDDEN = {"sidecar", "fastapi", "uvicorn", "starlette", "sse_starlette", "pydantic", "keyring"}


def test_all_is_sorted_and_lists_exactly_the_public_names() -> None:
    assert client.__all__ == sorted(client.__all__)
    assert len(set(client.__all__)) == len(client.__all__)
    public = {
        name
        for name, value in vars(client).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(client.__all__) == public
    for name in client.__all__:
        assert getattr(client, name) is not None


def test_public_api_signatures() -> None:
    for fn in (client.stream, client.complete, client.stream_sync, client.complete_sync):
        params = inspect.signature(fn).parameters
        assert list(params)[:3] == ["model", "context", "options"]
        for name in ("base_url", "token", "headers", "abort", "http_client"):
            assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert inspect.iscoroutinefunction(client.complete)
    assert not inspect.iscoroutinefunction(client.stream)
    err = client.GatewayError("m", 401, {"x": "y"}, "authentication_error")
    assert (err.message, err.status, err.headers, err.type) == ("m", 401, {"x": "y"}, "authentication_error")
    assert issubclass(client.StreamTimeoutError, client.StreamError)
    assert issubclass(client.StreamTimeoutError, TimeoutError)
    for cls in (client.GatewayError, client.ConfigurationError, client.StreamError, client.GatewayConnectionError):
        assert issubclass(cls, client.ClientError)


def test_the_schema_is_the_shared_one() -> None:
    from client import types as schema

    assert client.AssistantMessage is schema.AssistantMessage
    assert client.AssistantMessageEvent == schema.AssistantMessageEvent
    assert client.Context is schema.Context and client.Tool is schema.Tool and client.Usage is schema.Usage


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in {
            "import_module",
            "__import__",
        }:
            for arg in node.args[:1]:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    roots.add(arg.value.split(".")[0])
    return roots


def test_client_sources_import_no_server_packages() -> None:
    files = sorted(CLIENT_DIR.rglob("*.py"))
    assert len(files) >= 6
    for path in files:
        bad = _imported_roots(path) & FORBIDDEN
        assert not bad, f"{path.name} imports {bad}"


def test_importing_and_using_client_loads_no_server_packages() -> None:
    code = (
        "import sys, client, client._stream, client._transport, client._sse, client._env, client._request\n"
        "client.stream('a/b', {'messages': []}, base_url='http://127.0.0.1:9')\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN)!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=CLIENT_DIR.parent, check=True, timeout=60
    )
    assert out.stdout.strip() == ""


def test_only_env_module_reads_the_environment() -> None:
    for path in CLIENT_DIR.rglob("*.py"):
        if path.name != "_env.py":
            text = path.read_text()
            assert "os.environ" not in text and "getenv" not in text, path.name


# ----- env ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, 300_000), ("1500", 1500), (" 2500.9 ", 2500), ("0", None), ("-5", None), ("", None), ("abc", 300_000),
     ("inf", 300_000), ("1e3", 1000)],
)  # fmt: skip
def test_idle_timeout_env_parsing(monkeypatch: pytest.MonkeyPatch, value: str | None, expected: int | None) -> None:
    if value is not None:
        monkeypatch.setenv("PI_STREAM_IDLE_TIMEOUT_MS", value)
    assert _env.stream_idle_timeout_ms() == expected


def test_idle_timeout_alias_and_first_event_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PI_OPENAI_STREAM_IDLE_TIMEOUT_MS", "400000")
    assert _env.stream_idle_timeout_ms() == 400_000
    monkeypatch.setenv("PI_STREAM_IDLE_TIMEOUT_MS", "1000")
    assert _env.stream_idle_timeout_ms() == 1000  # the generic name wins
    assert _env.stream_first_event_timeout_ms(None) == 300_000
    assert _env.stream_first_event_timeout_ms(1000) == 300_000
    assert _env.stream_first_event_timeout_ms(400_000) == 400_000  # never below the idle timeout
    monkeypatch.setenv("PI_STREAM_FIRST_EVENT_TIMEOUT_MS", "0")
    assert _env.stream_first_event_timeout_ms(400_000) is None


def test_resolved_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _request.resolve_timeouts(None) == (300.0, 300.0)
    assert _request.resolve_timeouts({"streamIdleTimeoutMs": 500_000}) == (500.0, 500.0)
    assert _request.resolve_timeouts({"streamIdleTimeoutMs": 0}) == (300.0, None)
    assert _request.resolve_timeouts({"streamFirstEventTimeoutMs": 0, "streamIdleTimeoutMs": 100}) == (None, 0.1)
    monkeypatch.setenv("PI_STREAM_IDLE_TIMEOUT_MS", "0")
    monkeypatch.setenv("PI_STREAM_FIRST_EVENT_TIMEOUT_MS", "250")
    assert _request.resolve_timeouts(None) == (0.25, None)
    assert _request.resolve_timeouts({"streamIdleTimeoutMs": True}) == (0.25, None)  # not a number: ignored


def test_sidecar_url_and_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _env.sidecar_url() is None and _env.sidecar_token() is None
    monkeypatch.setenv("SIDECAR_URL", "  ")
    assert _env.sidecar_url() is None
    monkeypatch.setenv("SIDECAR_URL", "http://gw:4000/x/")
    monkeypatch.setenv("SIDECAR_TOKEN", "t")
    prepared = _request.prepare("a/b", {"messages": []}, None, base_url=None, token=None, headers=None, abort=None)
    assert prepared.url == "http://gw:4000/x/v1/pi/stream"
    assert prepared.headers["authorization"] == "Bearer t"


# ----- options ------------------------------------------------------------------------------------------------------


def test_wire_options_strip_non_wire_keys_callables_and_none() -> None:
    options = {key: "x" for key in _request.NON_WIRE_KEYS} | {"maxTokens": 5, "cb": print, "topK": None}
    wire = _request.wire_options(options)
    assert set(wire) == {"maxTokens", "sessionId"}
    reference = {"signal", "apiKey", "fetch", "onPayload", "onResponse", "onSseEvent", "execHandlers"}
    reference |= {"cursorExecHandlers", "cursorOnToolResult", "providerSessionState", "onBeforeRequest"}
    assert reference <= _request.NON_WIRE_KEYS
    assert _request.wire_options(None).keys() == {"sessionId"}


def test_model_parsing() -> None:
    assert _request.parse_model("anthropic/claude-x").model_id == "anthropic/claude-x"
    bare = _request.parse_model("claude-x")
    assert (bare.model_id, bare.provider, bare.id) == ("claude-x", "", "claude-x")
    nested = _request.parse_model("openrouter/anthropic/claude")
    assert (nested.provider, nested.id) == ("openrouter", "anthropic/claude")
    with pytest.raises(client.ConfigurationError):
        _request.parse_model("")
    with pytest.raises(client.ConfigurationError):
        _request.parse_model(42)  # type: ignore[arg-type]


# ----- SSE framing (unit) -------------------------------------------------------------------------------------------


def _decode(pieces: list[bytes]) -> list[bytes]:
    decoder = SSEDecoder()
    out: list[bytes] = []
    for piece in pieces:
        out += decoder.feed(piece)
    return out + decoder.flush()


def test_sse_decoder_random_splits_and_line_endings() -> None:
    payloads = [json.dumps({"i": i, "t": "ä😀\u2028" * i}, ensure_ascii=False).encode() for i in range(30)]
    rng = random.Random(7)
    for ending in (b"\n", b"\r\n", b"\r"):
        body = b"".join(b": c" + ending + b"id: 1" + ending + b"data: " + p + ending + ending for p in payloads)
        for _ in range(20):
            cuts = sorted(rng.sample(range(1, len(body)), 40))
            pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
            assert _decode(pieces) == payloads


def test_sse_decoder_details() -> None:
    assert _decode([b"data:a\ndata\ndata: b\n\n"]) == [b"a\n\nb"]  # no-space form, a bare 'data' field
    assert _decode([b"data: x\r", b"\ndata: y\r\n\r\n"]) == [b"x\ny"]  # CRLF split across chunks
    assert _decode([b"data: x\r", b"\r"]) == [b"x"]  # bare CRs
    assert _decode([b"data:\n\nevent: e\n\n"]) == []  # empty data is skipped
    assert _decode([b"data: tail-without-newline"]) == [b"tail-without-newline"]
    assert _decode([b"dataX: no\n\n"]) == []
