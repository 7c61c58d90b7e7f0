"""Interop: OpenAI's own unmodified realtime clients (under Node 20) against the sidecar's OpenAI realtime contract.

An app written for OpenAI's Realtime API should work by changing only its base URL. One sidecar process serves the
module (the fixtures of ``test_ai_gateway_realtime_interop``): its OpenAI base URL is a FakeRealtime replaying
OpenAI's documented GA text turn, its OpenAI key a canary. The driver ``openai_realtime_client.mjs`` runs:

* ``openai``'s ``client.realtime.clientSecrets.create()`` with baseURL ``<sidecar>/v1`` and the workload bearer as
  apiKey: an ``ek_`` secret bound to the minted session config;
* ``@openai/agents-realtime``'s ``RealtimeSession`` over its WebSocket transport (Node: the ``ws`` package, the
  secret in ``Authorization``), at ``ws://<sidecar>/v1/realtime?model=gpt-realtime``: one text message, the answer;
  the same secret a second time must be refused;
* ``openai``'s ``OpenAIRealtimeWebSocket`` (the global WebSocket; the secret in the ``realtime`` +
  ``openai-insecure-api-key.<secret>`` subprotocols, as in a browser) with a fresh secret, and ``OpenAIRealtimeWS``
  (``ws``, ``Authorization``) with the workload bearer: ``conversation.item.create`` + ``response.create`` through
  ``response.done``. Both build ``wss://<baseURL host>/…/realtime`` whatever the baseURL's scheme, so they reach the
  sidecar through a TLS front on 127.0.0.1 (a TLS-terminating Ingress in production), trusted through
  ``NODE_EXTRA_CA_CERTS``.

The upstream must get the canary key and never a client secret or the bearer; the minted config's
``session.update`` goes first; the clients get the upstream's events untranslated; every ``response.done`` is a
ledger row priced from the fixture's usage (``GET /v1/report``). Expected costs come from the fixture and the
catalog rates, never from the sidecar. Run with ``.venv/bin/python -m pytest tests/interop -q``; the suite fails,
and never skips, without Node >= 20 / npm.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.background import BackgroundServer
from tests.certificates import self_signed_certificate
from tests.fakerealtime import GA_TEXT_TURN, Connection, FakeRealtime, fixture_lines
from tests.interop import test_ai_gateway_realtime_interop as gateway_realtime
from tests.interop.harness import INTEROP_DIR, Sidecar, driver_broke, installed_version, node_env, ok, run_driver
from tests.interop.test_ai_gateway_realtime_interop import USAGE, DriverRun, failed, new_connections

pytestmark = pytest.mark.interop

# The gateway realtime module's fixtures, by name: a FakeRealtime upstream, the canary OpenAI key, the sidecar
# (one of each per module) and the log mark that attaches the sidecar's stderr to a failing test.
realtime_upstream = gateway_realtime.realtime_upstream
canary = gateway_realtime.canary
sidecar = gateway_realtime.sidecar
_mark_log = gateway_realtime._mark_log

DRIVER = INTEROP_DIR / "openai_realtime_client.mjs"
PINNED = {"openai": "7.59.0", "@openai/agents-realtime": "0.20.0", "ws": "8.23.0"}
DRIVER_TIMEOUT_S = 90
MODEL = "gpt-realtime"
LEDGER_MODEL = "openai/gpt-realtime"
TTL_S = 60
MINTED_INSTRUCTIONS = "Minted: answer in one short sentence."
AGENT_INSTRUCTIONS = "Agent: be brief."
PROMPT = "Say hi."
USER_ITEM = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": PROMPT}]}
FIXTURE_EVENTS = [json.loads(line) for line in fixture_lines(GA_TEXT_TURN)]
FIXTURE_TEXT = "".join(e["delta"] for e in FIXTURE_EVENTS if e["type"] == "response.output_text.delta")


def mint_body() -> dict[str, Any]:
    """OpenAI's GA ``client_secrets`` body: a TTL and the session config the secret is bound to."""
    return {
        "expires_after": {"anchor": "created_at", "seconds": TTL_S},
        "session": {
            "type": "realtime",
            "model": MODEL,
            "instructions": MINTED_INSTRUCTIONS,
            "output_modalities": ["text"],
        },
    }


# ---------------------------------------------------------------------------------------------------------------------
# A TLS front: openai's realtime sockets only speak wss://


class TlsFront(BackgroundServer):
    """``with TlsFront(port, cert, key) as front:`` TLS on ``front.port`` (127.0.0.1), each connection piped as plain
    TCP to 127.0.0.1:``port``: what an Ingress terminating TLS in front of the sidecar does."""

    def __init__(self, target_port: int, cert_path: Path, key_path: Path) -> None:
        self.target_port = target_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert_path, key_path)
        self.port = 0
        self._server: asyncio.Server | None = None
        super().__init__()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", 0, ssl=self.context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _pipe(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_copy(client_reader, target_writer), _copy(target_reader, client_writer))


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        writer.close()


@dataclass(frozen=True)
class Front:
    url: str
    """``https://127.0.0.1:<port>``: the sidecar behind TLS."""
    ca_file: Path


@pytest.fixture(scope="module")
def tls_front(sidecar: Sidecar, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    cert_path, key_path = self_signed_certificate(
        tmp_path_factory.mktemp("tls-front"), name="sidecar TLS front", ca=True
    )
    port = int(sidecar.url.rsplit(":", 1)[1])
    with TlsFront(port, cert_path, key_path) as front:
        yield Front(f"https://127.0.0.1:{front.port}", cert_path)


# ---------------------------------------------------------------------------------------------------------------------
# Running the driver, reading the ledger


@pytest.fixture(scope="module")
def openai_node(node: str) -> str:
    """``node``, with the pinned OpenAI clients in tests/interop/node_modules."""
    for package, version in PINNED.items():
        installed = installed_version(package)
        assert installed == version, (
            f"node_modules has {package} {installed}, not {version}; run `npm ci` in {INTEROP_DIR}"
        )
    return node


def run_openai_realtime(node: str, front: Front, steps: list[dict[str, Any]]) -> DriverRun:
    """Run ``steps`` through the real clients in one ``node --experimental-websocket`` process that trusts the TLS
    front's certificate."""
    env = {**node_env(), "NODE_EXTRA_CA_CERTS": str(front.ca_file)}
    started = time.time()
    proc, lines = run_driver(
        "openai realtime", [node, "--experimental-websocket", str(DRIVER)], {"steps": steps}, env, DRIVER_TIMEOUT_S
    )
    finished = time.time()
    if proc.returncode != 0 or [line["step"] for line in lines] != [step["name"] for step in steps]:
        pytest.fail(driver_broke("openai realtime", proc))
    return DriverRun({line["step"]: line for line in lines}, proc.stdout + proc.stderr, started, finished)


def socket_url(sidecar: Sidecar) -> str:
    return f"{sidecar.url.replace('http://', 'ws://')}/v1/realtime?model={MODEL}"


def realtime_report(sidecar: Sidecar) -> dict[str, Any]:
    """The bearer's ledger totals for the realtime model (yesterday to tomorrow, so no run straddles a window)."""
    today = datetime.datetime.now(datetime.UTC).date()
    params = {
        "start_date": (today - datetime.timedelta(days=1)).isoformat(),
        "end_date": (today + datetime.timedelta(days=1)).isoformat(),
        "group_by": "model",
    }
    response = httpx.get(
        f"{sidecar.url}/v1/report", params=params, headers={"authorization": f"Bearer {sidecar.token}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    rows = [row for row in response.json()["results"] if row.get("model") == LEDGER_MODEL]
    empty = {"request_count": 0, "total_cost": 0.0, "input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0}
    return rows[0] if rows else empty


def sent_events(connection: Connection) -> list[dict[str, Any]]:
    """What the fake upstream sent on ``connection``, parsed."""
    return [json.loads(frame) for frame in connection.sent]


def assert_upstream_auth(connection: Connection, canary: str, secrets: list[str]) -> None:
    """The canary key in the upstream handshake's Authorization; no client secret or bearer anywhere upstream."""
    assert connection.path == f"/v1/realtime?model={MODEL}", connection.path
    assert connection.headers["authorization"] == f"Bearer {canary}", connection.headers
    seen_upstream = json.dumps(connection.headers) + json.dumps(connection.frames)
    for secret in secrets:
        assert secret not in seen_upstream
    assert "openai-insecure-api-key" not in seen_upstream


def assert_minted_update(frame: dict[str, Any]) -> None:
    """The sidecar's own first frame: the minted session config as a ``session.update``."""
    assert frame["type"] == "session.update", frame
    # The model is the socket's (?model=); the update may leave it out.
    assert {"model": MODEL, **frame["session"]} == mint_body()["session"], frame


def assert_turn_frames(frames: list[Any]) -> None:
    """The client's text turn, as it sent it: the user item, then ``response.create``."""
    item, create = frames
    assert item["type"] == "conversation.item.create" and item["item"] == USER_ITEM, item
    assert create["type"] == "response.create", create


def assert_untranslated(client_events: list[dict[str, Any]], connection: Connection) -> None:
    """The client got exactly the upstream's events, in order, through ``response.done`` (where it closed: the
    upstream may have answered a later client event too): the fixture's turn."""
    upstream = sent_events(connection)
    through_done = upstream[: [e["type"] for e in upstream].index("response.done") + 1]
    assert client_events == through_done, (client_events, upstream)
    assert client_events[0]["type"] == "session.created", client_events[0]
    assert client_events[-len(FIXTURE_EVENTS) :] == FIXTURE_EVENTS
    assert client_events[-1]["type"] == "response.done" and client_events[-1]["response"]["status"] == "completed"


# ---------------------------------------------------------------------------------------------------------------------
# Scenario: three sessions, one Node process


@dataclass
class TextTurns:
    run: DriverRun
    upstreams: list[Connection]
    """agents, websocket, ws: one upstream each (the refused reuse made none)."""
    upstream_count: int
    """All upstream connections the run caused, once the driver has exited."""
    report_before: dict[str, Any]
    report_after: dict[str, Any]


@pytest.fixture(scope="module")
def text_turns(openai_node: str, sidecar: Sidecar, tls_front: Front, realtime_upstream: FakeRealtime) -> TextTurns:
    before = len(realtime_upstream.connections)
    report_before = realtime_report(sidecar)
    mint = {"op": "mint", "baseURL": f"{sidecar.url}/v1", "apiKey": sidecar.token, "body": mint_body()}
    run = run_openai_realtime(
        openai_node,
        tls_front,
        [
            {"name": "mint", **mint},
            {
                "name": "agents",
                "op": "agentsSession",
                "url": socket_url(sidecar),
                "secretFrom": "mint",
                "model": MODEL,
                "instructions": AGENT_INSTRUCTIONS,
                "config": {"outputModalities": ["text"]},
                "text": PROMPT,
            },
            {
                "name": "reuse",
                "op": "agentsSession",
                "url": socket_url(sidecar),
                "secretFrom": "mint",
                "model": MODEL,
                "text": PROMPT,
                "timeoutMs": 5000,
            },
            {"name": "mint2", **mint},
            {
                "name": "websocket",
                "op": "openaiWs",
                "transport": "websocket",
                "baseURL": f"{tls_front.url}/v1",
                "secretFrom": "mint2",
                "model": MODEL,
                "text": PROMPT,
            },
            {
                "name": "ws",
                "op": "openaiWs",
                "transport": "ws",
                "baseURL": f"{tls_front.url}/v1",
                "apiKey": sidecar.token,
                "model": MODEL,
                "text": PROMPT,
            },
        ],
    )
    upstreams = new_connections(realtime_upstream, before, 3)
    report_after = realtime_report(sidecar)
    count = len(realtime_upstream.connections) - before
    return TextTurns(run, upstreams, count, report_before, report_after)


def minted_secrets(turns: TextTurns) -> list[str]:
    return [ok(turns.run.lines[name])["value"] for name in ("mint", "mint2")]


def test_the_sdk_mints_an_ek_secret_bound_to_the_session(text_turns: TextTurns, sidecar: Sidecar) -> None:
    run = text_turns.run
    for name in ("mint", "mint2"):
        line = run.lines[name]
        minted = ok(line)
        assert [(r["method"], r["url"], r["status"]) for r in line["requests"]] == [
            ("POST", f"{sidecar.url}/v1/realtime/client_secrets", 200)
        ]
        assert minted["value"].startswith("ek_") and len(minted["value"]) > 30, minted
        assert run.started + TTL_S - 2 <= minted["expires_at"] <= run.finished + TTL_S + 1, (minted, run.started)
        session = minted["session"]
        assert (session["type"], session["object"], session["model"]) == ("realtime", "realtime.session", MODEL)
        assert session["id"].startswith("sess_"), session
        assert session["instructions"] == MINTED_INSTRUCTIONS and session["output_modalities"] == ["text"], session
        assert sidecar.token not in json.dumps(minted)
    assert len(set(minted_secrets(text_turns))) == 2


def test_agents_realtime_session_runs_a_text_turn(text_turns: TextTurns, sidecar: Sidecar, canary: str) -> None:
    session = ok(text_turns.run.lines["agents"])
    assert session["connected"] is True and session["connectError"] is None, session
    assert session["errors"] == [] and session["timedOut"] is False, session
    assert session["upgrade"] == {"status": 101, "protocol": None}, session  # Node: Authorization, no subprotocol
    assert session["text"] == FIXTURE_TEXT, session["text"]
    assert {"agent_start", "agent_end"} <= set(session["sessionEvents"]), session["sessionEvents"]
    # The SDK closes with ws.close(): a close frame with no status code, which the socket reports as 1005.
    assert session["close"] == {"code": 1005, "reason": ""}, session["close"]
    assert text_turns.run.lines["agents"]["requests"] == []  # no HTTP besides the upgrade (no trace export either)

    upstream = text_turns.upstreams[0]
    assert_upstream_auth(upstream, canary, [*minted_secrets(text_turns), sidecar.token])
    assert_untranslated(session["serverEvents"], upstream)
    frames = upstream.frames
    assert_minted_update(frames[0])
    # Then the agent's own session.update (its instructions replace the minted ones, as on OpenAI), the tracing
    # update it sends on session.created, and the message it was given.
    updates = [f for f in frames[1:] if f["type"] == "session.update"]
    assert updates[0]["session"]["instructions"] == AGENT_INSTRUCTIONS, updates[0]
    assert updates[0]["session"]["output_modalities"] == ["text"], updates[0]
    assert_turn_frames([f for f in frames if f["type"] != "session.update"])


def test_a_used_secret_is_refused_and_the_client_says_so(text_turns: TextTurns) -> None:
    reuse = ok(text_turns.run.lines["reuse"])
    assert reuse["connected"] is False and reuse["serverEvents"] == [], reuse
    assert reuse["connectError"] is not None, reuse
    assert "401" in reuse["connectError"]["message"], reuse  # ws: "Unexpected server response: 401"
    assert text_turns.upstream_count == 3  # refused before any upstream connection


def test_openai_websocket_with_a_secret_in_the_subprotocols(
    text_turns: TextTurns, sidecar: Sidecar, tls_front: Front, canary: str
) -> None:
    socket_ = ok(text_turns.run.lines["websocket"])
    assert socket_["url"] == f"{tls_front.url.replace('https://', 'wss://')}/v1/realtime?model={MODEL}"
    assert socket_["opened"] is True and socket_["protocol"] == "realtime", socket_
    assert socket_["errors"] == [] and socket_["timedOut"] is False, socket_
    assert socket_["sentTypes"] == ["conversation.item.create", "response.create"]
    assert socket_["close"]["code"] == 1000, socket_["close"]

    upstream = text_turns.upstreams[1]
    assert_upstream_auth(upstream, canary, [*minted_secrets(text_turns), sidecar.token])
    assert_untranslated(socket_["events"], upstream)
    assert_minted_update(upstream.frames[0])
    assert_turn_frames(upstream.frames[1:])


def test_openai_ws_with_the_workload_bearer(
    text_turns: TextTurns, sidecar: Sidecar, tls_front: Front, canary: str
) -> None:
    socket_ = ok(text_turns.run.lines["ws"])
    assert socket_["opened"] is True and socket_["protocol"] == "", socket_
    assert socket_["errors"] == [] and socket_["timedOut"] is False, socket_
    assert socket_["close"]["code"] == 1000, socket_["close"]

    upstream = text_turns.upstreams[2]
    assert_upstream_auth(upstream, canary, [*minted_secrets(text_turns), sidecar.token])
    assert_untranslated(socket_["events"], upstream)
    assert_turn_frames(upstream.frames)  # no minted config: the client's frames only


def test_no_key_bearer_or_secret_leaks(text_turns: TextTurns, sidecar: Sidecar, canary: str) -> None:
    assert canary not in text_turns.run.output
    assert sidecar.token not in text_turns.run.output
    log = sidecar.log()
    for secret in [canary, sidecar.token, *minted_secrets(text_turns)]:
        assert secret not in log


def test_each_response_done_is_a_priced_ledger_row(text_turns: TextTurns) -> None:
    before, after = text_turns.report_before, text_turns.report_after
    turns = 3
    assert after["request_count"] - before["request_count"] == turns, (before, after)
    assert after["total_cost"] - before["total_cost"] == pytest.approx(turns * USAGE.cost, rel=1e-9), (before, after)
    assert after["input_tokens"] - before["input_tokens"] == turns * USAGE.input, (before, after)
    assert after["cached_input_tokens"] - before["cached_input_tokens"] == turns * USAGE.cached, (before, after)
    assert after["output_tokens"] - before["output_tokens"] == turns * USAGE.output, (before, after)


def test_no_socket_is_left_open(text_turns: TextTurns) -> None:
    """Every upstream session the clients opened was closed by the client's own close (1000)."""
    assert [c.close_code for c in text_turns.upstreams] == [1000, 1000, 1000]


def test_refusals_are_openai_errors(
    openai_node: str, sidecar: Sidecar, tls_front: Front, realtime_upstream: FakeRealtime, canary: str
) -> None:
    """A wrong bearer, a TTL over the maximum, an unknown model: the SDK's own error classes, from OpenAI's envelope;
    a secret that was never minted does not open a socket. None of them reaches the upstream."""
    before = len(realtime_upstream.connections)
    mint = {"op": "mint", "baseURL": f"{sidecar.url}/v1", "apiKey": sidecar.token}
    too_long = {**mint_body(), "expires_after": {"anchor": "created_at", "seconds": 3600}}
    unknown = {"session": {"type": "realtime", "model": "gpt-nope-realtime"}}
    forged = f"ek_never-minted-{'x' * 40}"
    run = run_openai_realtime(
        openai_node,
        tls_front,
        [
            {"name": "wrong-bearer", **mint, "apiKey": f"not-the-token-{'y' * 20}", "body": mint_body()},
            {"name": "too-long", **mint, "body": too_long},
            {"name": "unknown-model", **mint, "body": unknown},
            {
                "name": "forged",
                "op": "openaiWs",
                "transport": "websocket",
                "baseURL": f"{tls_front.url}/v1",
                "apiKey": forged,
                "model": MODEL,
                "text": PROMPT,
                "timeoutMs": 5000,
            },
        ],
    )
    expected = {
        "wrong-bearer": ("AuthenticationError", 401, "invalid_api_key", "bearer token"),
        "too-long": ("BadRequestError", 400, "invalid_request_error", "maximum of 600 s"),
        "unknown-model": ("NotFoundError", 404, "model_not_found", "gpt-nope-realtime"),
    }
    for name, (cls, status, code, fragment) in expected.items():
        line = run.lines[name]
        error = failed(line)
        assert (error["class"], error["status"], error["type"], error["code"]) == (
            cls,
            status,
            "invalid_request_error",
            code,
        ), error
        assert fragment in error["message"], error
        assert [r["status"] for r in line["requests"]] == [status], line  # no retry of a refusal
    forged_socket = ok(run.lines["forged"])
    assert forged_socket["opened"] is False and forged_socket["events"] == [], forged_socket
    # Node 20's undici reports a refused handshake without its status (and fires no close: nodejs/undici#3546).
    assert [e["class"] for e in forged_socket["errors"]] == ["OpenAIRealtimeError"], forged_socket
    assert len(realtime_upstream.connections) == before
    assert canary not in run.output and sidecar.token not in run.output
