"""Credential health (``GET /v1/credentials/check``, ``sidecar credentials check``): every provider probed against
real servers on 127.0.0.1, each key sent only to its own provider, never shown back."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar.config import load_settings
from sidecar.credential_check import check_credentials
from sidecar.credentials import CredentialStore
from sidecar.errors import MissingCredential
from sidecar.registry import ModelRegistry
from sidecar.upstream import Upstream
from tests.canaries import leaks
from tests.fakeupstream import FakeUpstream, Reply
from tests.sidecar_server import (
    ANTHROPIC_CANARY,
    OPENAI_CANARY,
    TOKEN,
    free_port,
    run_sidecar,
    sidecar_environ,
    write_config,
)

GEMINI_CANARY = "AIza-gemini-canary-do-not-leak-777888"
AZURE_CANARY = "azure-canary-key-do-not-leak-999000"
DEEPSEEK_CANARY = "sk-deepseek-canary-do-not-leak-121212"
GROQ_CANARY = "gsk-groq-canary-do-not-leak-343434"
OPENROUTER_CANARY = "sk-or-v1-openrouter-canary-do-not-leak-5656"
WEB_IDENTITY_JWT = "eyJ-web-identity-canary-do-not-leak.payload.signature"
METADATA_TOKEN = "ya29.metadata-canary-do-not-leak"
CANARIES = (
    ANTHROPIC_CANARY,
    OPENAI_CANARY,
    GEMINI_CANARY,
    AZURE_CANARY,
    DEEPSEEK_CANARY,
    GROQ_CANARY,
    OPENROUTER_CANARY,
)
SECRETS = (*CANARIES, WEB_IDENTITY_JWT, METADATA_TOKEN)

CONFIG = """
[providers.google]
base_url = "{ok}/v1beta"

[providers.azure]
base_url = "{ok}"

[providers.openrouter]  # its models list answers without a key: the check asks for the key's own record
base_url = "{ok}/api/v1"
compat = {{ credential_check_path = "/key" }}

[providers.deepseek]
base_url = "{down}/v1"

[providers.groq]
base_url = "http://127.0.0.1:{closed}/openai/v1"
credential = "env:GROQ_TEST_KEY"

[providers.mistral]
credential = "env:UNSET_MISTRAL_KEY_NAME"
"""

STS_REFUSAL = (
    '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
    f"<Code>InvalidIdentityToken</Code><Message>Couldn't verify {WEB_IDENTITY_JWT}</Message></Error>"
    "</ErrorResponse>"
)


@dataclass
class Upstreams:
    ok: FakeUpstream
    """anthropic, google (Gemini), azure and openrouter: 200 to every probe."""
    refusing: FakeUpstream
    """openai: 401, with a body that echoes the key."""
    down: FakeUpstream
    """deepseek: 503."""
    metadata: FakeUpstream
    """vertex: a GCE metadata server that hands out a token."""
    sts: FakeUpstream
    """bedrock: AWS STS refusing the web identity token."""
    config: Path
    environ: dict[str, str]


@pytest.fixture
def upstreams(tmp_path: Path) -> Iterator[Upstreams]:
    with (
        FakeUpstream() as ok,
        FakeUpstream() as refusing,
        FakeUpstream() as down,
        FakeUpstream() as metadata,
        FakeUpstream() as sts,
    ):
        ok.default = Reply.json(200, {"data": [{"id": "some-model"}], "has_more": True})
        refusing.default = Reply.json(401, {"error": {"message": f"Incorrect API key provided: {OPENAI_CANARY}"}})
        down.default = Reply.json(503, {"error": {"message": "overloaded"}})
        metadata.default = Reply.json(200, {"access_token": METADATA_TOKEN, "expires_in": 3600})
        sts.default = Reply(status=400, chunks=[STS_REFUSAL.encode()], headers={"content-type": "text/xml"})
        token_file = tmp_path / "web-identity-token"
        token_file.write_text(WEB_IDENTITY_JWT)
        config = write_config(tmp_path, CONFIG.format(ok=ok.url, down=down.url, closed=free_port()))
        environ = sidecar_environ(
            ok.url,
            tmp_path,
            OPENAI_BASE_URL=refusing.url + "/v1",
            GEMINI_API_KEY=GEMINI_CANARY,
            AZURE_OPENAI_API_KEY=AZURE_CANARY,
            OPENROUTER_API_KEY=OPENROUTER_CANARY,
            DEEPSEEK_API_KEY=DEEPSEEK_CANARY,
            GROQ_TEST_KEY=GROQ_CANARY,
            NO_GCE_CHECK="",
            GCE_METADATA_HOST=metadata.url.removeprefix("http://"),
            AWS_WEB_IDENTITY_TOKEN_FILE=str(token_file),
            AWS_ROLE_ARN="arn:aws:iam::123456789012:role/bedrock",
            AWS_ENDPOINT_URL_STS=sts.url,
            PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
        )
        yield Upstreams(ok, refusing, down, metadata, sts, config, environ)


def assert_statuses(rows: dict[str, dict[str, Any]]) -> None:
    """What ``CONFIG`` and the fixture's servers make of each provider (``rows`` by provider id)."""
    expected = {
        "anthropic": ("ok", "env:ANTHROPIC_API_KEY"),
        "google": ("ok", "env:GEMINI_API_KEY"),
        "azure": ("ok", "env:AZURE_OPENAI_API_KEY"),
        "openrouter": ("ok", "env:OPENROUTER_API_KEY"),
        "openai": ("invalid", "env:OPENAI_API_KEY"),
        "deepseek": ("unreachable", "env:DEEPSEEK_API_KEY"),
        "groq": ("unreachable", "config:env:GROQ_TEST_KEY"),
        "mistral": ("missing", None),
        "xai": ("missing", None),
        "ollama": ("not needed", None),
        "echo": ("not needed", None),
        "vertex": ("ok", "metadata-server"),
        "bedrock": ("invalid", "web-identity"),
    }
    assert {pid: (rows[pid]["status"], rows[pid]["location"]) for pid in expected} == expected
    assert rows["deepseek"]["reason"] == "HTTP 503"
    assert rows["groq"]["reason"] == "connection refused"
    assert rows["openai"]["reason"] == "HTTP 401: the provider refused the credential"
    assert rows["mistral"]["reason"].startswith(
        "No credential available for provider mistral: env:UNSET_MISTRAL_KEY_NAME is not set."
    )
    assert "set XAI_API_KEY" in rows["xai"]["reason"]
    assert "no Vertex AI call is made" in rows["vertex"]["reason"]
    assert "InvalidIdentityToken" in rows["bedrock"]["reason"]


def assert_probes_reached_their_own_provider_only(up: Upstreams) -> None:
    by_key = {
        r.headers.get("x-api-key")
        or r.headers.get("x-goog-api-key")
        or r.headers.get("api-key")
        or r.headers.get("authorization", "").removeprefix("Bearer "): r
        for r in up.ok.received
    }
    assert set(by_key) == {ANTHROPIC_CANARY, GEMINI_CANARY, AZURE_CANARY, OPENROUTER_CANARY}
    anthropic, gemini, azure = by_key[ANTHROPIC_CANARY], by_key[GEMINI_CANARY], by_key[AZURE_CANARY]
    assert by_key[OPENROUTER_CANARY].path == "/api/v1/key"
    assert anthropic.path == "/v1/models?limit=1" and anthropic.headers["anthropic-version"] == "2023-06-01"
    assert gemini.path == "/v1beta/models?pageSize=1"
    assert azure.path == "/openai/v1/models"
    # Each request carried its provider's header and nothing else that could hold another key; a GET: no body.
    for request in up.ok.received:
        assert request.method == "GET" and request.body == b"" and "content-type" not in request.headers
        assert ("authorization" in request.headers) == (request is by_key[OPENROUTER_CANARY])
        assert sum(1 for c in CANARIES if c in str(request.headers)) == 1
    [openai] = up.refusing.received
    assert (openai.path, openai.headers["authorization"]) == ("/v1/models", f"Bearer {OPENAI_CANARY}")
    [deepseek] = up.down.received
    assert (deepseek.path, deepseek.headers["authorization"]) == ("/v1/models", f"Bearer {DEEPSEEK_CANARY}")
    assert [r.path.partition("?")[0] for r in up.metadata.received][0].endswith("/service-accounts/default/token")
    assert len(up.sts.received) == 1 and "AssumeRoleWithWebIdentity" in up.sts.received[0].body.decode()


def assert_no_secret_in(text: str) -> None:
    for secret in SECRETS:
        assert not leaks(text, secret), secret


def test_the_route_reports_every_provider_without_a_secret(
    upstreams: Upstreams, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with run_sidecar(upstreams.environ, upstreams.config) as running:
        refused = httpx.get(f"{running.url}/v1/credentials/check", timeout=10)
        assert (refused.status_code, refused.json()) == (401, {"error": "unauthorized"})
        assert not upstreams.ok.received  # no probe without the bearer
        response = httpx.get(
            f"{running.url}/v1/credentials/check", headers={"authorization": f"Bearer {TOKEN}"}, timeout=10
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["generatedAt"], int) and body["generatedAt"] > 1_700_000_000_000
    rows = {row["id"]: row for row in body["credentials"]}
    assert list(rows)[:3] == ["echo", "openai", "anthropic"]  # catalog order
    assert_statuses(rows)
    probes = {pid: row["probe"] for pid, row in rows.items() if row["probe"]}
    assert probes == {
        "anthropic": "/v1/models",  # paths only: no host, no query
        "google": "/v1beta/models",
        "azure": "/openai/v1/models",
        "openrouter": "/api/v1/key",
        "openai": "/v1/models",
        "deepseek": "/v1/models",
        "groq": "/openai/v1/models",
    }
    for row in rows.values():
        assert row["provider"] == row["id"]
        assert row["ok"] == {"ok": True, "invalid": False, "missing": False}.get(row["status"])
        assert (row["latencyMs"] is None) == (row["status"] in ("missing", "not needed"))
    assert (rows["anthropic"]["type"], rows["vertex"]["type"], rows["bedrock"]["type"]) == ("api_key", "google", "aws")
    assert_probes_reached_their_own_provider_only(upstreams)
    assert_no_secret_in(response.text)
    assert_no_secret_in(caplog.text)


def run_cli(environ: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", "credentials", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )


CLI_LINE = re.compile(r"^(\S+) +(ok|invalid|unreachable|missing|not needed) +(\S+) +(-|\d+ ms)  (.*)$")


def cli_rows(stdout: str) -> dict[str, dict[str, Any]]:
    """``sidecar credentials check``'s lines, by provider id."""
    rows = {}
    for line in stdout.splitlines():
        match = CLI_LINE.match(line)
        assert match, line
        pid, status, location, latency, reason = match.groups()
        rows[pid] = {"status": status, "location": None if location == "-" else location, "latency": latency}
        rows[pid]["reason"] = reason
    return rows


def test_the_cli_prints_one_line_per_provider_and_exits_1_on_a_failing_credential(upstreams: Upstreams) -> None:
    result = run_cli(upstreams.environ, "check", "--config", str(upstreams.config))
    assert result.returncode == 1, result.stderr
    rows = cli_rows(result.stdout)
    assert_statuses(rows)
    assert rows["anthropic"]["latency"].endswith(" ms") and rows["mistral"]["latency"] == "-"
    assert_probes_reached_their_own_provider_only(upstreams)
    assert_no_secret_in(result.stdout)
    assert_no_secret_in(result.stderr)


def test_the_cli_exits_0_when_nothing_configured_fails(tmp_path: Path) -> None:
    """Missing and not-needed credentials are providers not in use: only invalid or unreachable ones fail."""
    with FakeUpstream() as ok:
        ok.default = Reply.json(200, {"data": []})
        environ = sidecar_environ(ok.url, tmp_path, PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")
        del environ["OPENAI_API_KEY"]
        result = run_cli(environ, "check")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = cli_rows(result.stdout)
    assert [rows[pid]["status"] for pid in ("anthropic", "openai", "ollama")] == ["ok", "missing", "not needed"]
    assert [r.path for r in ok.received] == ["/v1/models?limit=1"]


def test_list_and_the_missing_credential_error_name_the_unset_variable(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[providers.anthropic]\ncredential = "env:ANTHROPIC_KEY_PROD"\n')
    environ = sidecar_environ("http://127.0.0.1:9", tmp_path, PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")
    result = run_cli(environ, "list", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "anthropic    missing (env:ANTHROPIC_KEY_PROD is not set)" in result.stdout.splitlines()
    assert "openai       env:OPENAI_API_KEY" in result.stdout.splitlines()
    settings = load_settings(config, environ)
    with pytest.raises(MissingCredential) as info:
        ModelRegistry(settings, CredentialStore(settings)).resolve("anthropic/claude-sonnet-4-5")
    assert info.value.message.startswith(
        "No credential available for provider anthropic: env:ANTHROPIC_KEY_PROD is not set."
    )
    assert "ANTHROPIC_API_KEY" not in info.value.message  # the standard variable is not looked at: it would not help


def test_a_slow_provider_is_unreachable_after_the_probe_timeout(tmp_path: Path) -> None:
    with FakeUpstream() as slow:
        slow.default = Reply.json(200, {"data": []})
        slow.default.delay_before = 3.0
        settings = load_settings(None, sidecar_environ(slow.url, tmp_path))

        async def check() -> dict[str, Any]:
            async with Upstream() as client:
                statuses = await check_credentials(settings, CredentialStore(settings), client, probe_seconds=0.3)
            return {s.provider: s for s in statuses}

        rows = asyncio.run(check())
    assert (rows["anthropic"].status, rows["anthropic"].reason) == ("unreachable", "timed out after 0.3 s")
    assert rows["anthropic"].ok is None and rows["anthropic"].probe == "/v1/models"
    assert rows["anthropic"].latency_ms is not None
    assert rows["anthropic"].latency_ms < 2000  # both probes ran at once, and neither waited out the server
    assert rows["openai"].status == "unreachable"
