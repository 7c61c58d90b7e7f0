"""Config that says what is wrong: a misspelt setting or section stops the sidecar naming the closest known name, a
port in use is one line naming it before anything starts, and every command explains itself in ``--help``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar import cli
from sidecar.config import load_settings
from sidecar.errors import ConfigError
from tests.sidecar_server import free_port, wait_until_healthy, write_config

REPO = Path(__file__).parent.parent
SERVER_SETTINGS = (
    "body_timeout_seconds, cors_origins, header_timeout_seconds, heartbeat_seconds, host, keepalive_seconds, "
    "log_content, log_format, log_level, max_body_bytes, max_header_bytes, max_headers, max_identifier_chars, "
    "max_json_depth, max_streams, max_streams_per_workload, path_prefix, port, token_file, workers"
)
SECTIONS = (
    '[budget], [credentials], [ledger], [limits], [metrics], [models."provider/id"], [providers.<id>], [realtime], '
    "[server], [upstream], [[workloads]]"
)
VLLM = '[providers.vllm]\napi = "openai-completions"\nbase_url = "http://127.0.0.1:8000/v1"\n'


def config_error(tmp_path: Path, config: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(write_config(tmp_path, config), {"HOME": str(tmp_path)})
    return info.value.message


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("[server]\nprot = 4000\n", "`[server] prot` is not a setting; did you mean `port`?"),
        ("[server]\nlog_formt = 'json'\n", "`[server] log_formt` is not a setting; did you mean `log_format`?"),
        ("[server]\nxyz = 1\n", f"`[server] xyz` is not a setting; the [server] settings are: {SERVER_SETTINGS}"),
        ("[upstream]\nmax_retry = 1\n", "`[upstream] max_retry` is not a setting; did you mean `max_retries`?"),
        (
            "[credentials]\nsecret_dir = '/x'\n",
            "`[credentials] secret_dir` is not a setting; did you mean `secrets_dir`?",
        ),
        ("[ledger]\nflush_ms = 100\n", "`[ledger] flush_ms` is not a setting; did you mean `flush_interval_ms`?"),
        (
            "[budget]\nusd_limit = 5\n",
            "`[budget] usd_limit` is not a setting; the [budget] settings are: allow_unpriced, period, usd",
        ),
        ("[realtime]\npublic_prot = 4443\n", "`[realtime] public_prot` is not a setting; did you mean `public_port`?"),
        ("[metrics]\nenable = false\n", "`[metrics] enable` is not a setting; did you mean `enabled`?"),
        (
            '[[workloads]]\nname = "ci"\ntoken = "env:CI_TOKEN"\nbudget = 5\n',
            "`[workloads #1] budget` is not a setting; did you mean `budget_usd`?",
        ),
        (
            VLLM + "needs_credentials = false\n",
            "`[providers.vllm] needs_credentials` is not a setting; did you mean `needs_credential`?",
        ),
        (
            '[providers.openai]\ncredentials = "env:X"\n',
            "`[providers.openai] credentials` is not a setting; did you mean `credential`?",
        ),
        (
            '[models."openai/gpt-4o"]\ncontext = 1000\n',
            '`[models."openai/gpt-4o"] context` is not a setting; did you mean `context_window`?',
        ),
        ("[sever]\nport = 4000\n", "`[sever]` is not a section; did you mean `[server]`?"),
        ('[[workload]]\nname = "ci"\n', "`[[workload]]` is not a section; did you mean `[[workloads]]`?"),
        ("[provider.vllm]\napi = 'x'\n", "`[provider]` is not a section; did you mean `[providers.<id>]`?"),
        ("[nonsense]\na = 1\n", f"`[nonsense]` is not a section; the sections are: {SECTIONS}"),
        (
            "port = 4000\n",
            "`port` is outside any section: put it below the header of the section it belongs to, one of " + SECTIONS,
        ),
        # A misspelt rate would otherwise be priced at 0.
        (
            '[models."openai/gpt-4o"]\ncost = { input = 1, output = 2, cache_reed = 0.5 }\n',
            '[models."openai/gpt-4o"]: cost must be [input, output, cacheRead, cacheWrite] or '
            "{input=…, output=…, cacheRead=…, cacheWrite=…} in USD per 1M tokens",
        ),
    ],
)
def test_an_unknown_setting_or_section_names_the_closest_known_one(tmp_path: Path, config: str, message: str) -> None:
    assert config_error(tmp_path, config) == message


def test_every_setting_the_sidecar_reads_is_accepted(tmp_path: Path) -> None:
    """All the keys of every table at once (compat and headers being free-form vendor data): a key missing from a
    table's known names would stop this config."""
    config = f"""
[server]
host = "127.0.0.1"
port = 4100
max_body_bytes = 1048576
heartbeat_seconds = 5
cors_origins = ["https://app.example"]
token_file = "{tmp_path}/token"
log_level = "debug"
log_format = "json"
log_content = false
path_prefix = "/sidecar"
workers = 2
max_header_bytes = 32768
max_headers = 50
header_timeout_seconds = 5
body_timeout_seconds = 30
keepalive_seconds = 20
max_streams = 10
max_streams_per_workload = 5
max_identifier_chars = 128
max_json_depth = 32

[upstream]
max_retries = 1
proxy = "http://egress:3128"

[credentials]
secrets_dir = "{tmp_path}/secrets"
keyring_service = "team-sidecar"

[ledger]
url = "postgresql://ledger@db.internal/ledger"
path = "{tmp_path}/ledger.db"
flush_interval_ms = 100
batch_size = 64

[budget]
usd = 10
period = "day"
allow_unpriced = true

[realtime]
token_store = "redis://127.0.0.1:6379/0"
default_ttl_seconds = 30
max_ttl_seconds = 300
max_frame_bytes = 1048576
max_session_seconds = 600
idle_timeout_seconds = 60
max_sessions_per_bearer = 4
public_host = "0.0.0.0"
public_port = 4443

[metrics]
enabled = true
host = "127.0.0.1"
port = 9464

[limits]
models = ["anthropic/*", "openai/gpt-4o*"]
requests_per_minute = 60
tokens_per_minute = 200000
redis_url = "redis://127.0.0.1:6379/0"

[[workloads]]
name = "ci"
token = "env:CI_TOKEN"
budget_usd = 2.5
max_streams = 3
admin = true
models = ["anthropic/claude-haiku-*"]
requests_per_minute = 10
tokens_per_minute = 50000

{VLLM}env_keys = ["VLLM_API_KEY"]
base_url_env = "VLLM_BASE_URL"
needs_credential = false
compat = {{ any_vendor_flag = true, nested = {{ also = "free-form" }} }}
headers = {{ "x-team" = "agents" }}
default_model = "qwen3-32b"
credential = "env:TEAM_VLLM_KEY"
genai_prices = ""
default_cost = [0, 0]

[models."vllm/qwen3-32b"]
name = "Qwen3 32B"
cost = {{ input = 0.1, output = 0.2, cache_read = 0.05, cacheWrite = 0 }}
audio_cost = [1, 2, 0.5]
context_window = 32768
max_tokens = 8192
reasoning = true
input = ["text", "image"]
compat = {{ whatever_the_vendor_needs = 1 }}
api = "openai-responses"
"""
    settings = load_settings(write_config(tmp_path, config), {"HOME": str(tmp_path), "CI_TOKEN": "ci-token-0123"})
    assert (settings.port, settings.log_format, settings.workers) == (4100, "json", 2)
    assert settings.limits.max_json_depth == 32 and settings.ledger_batch_size == 64
    assert settings.realtime.public_port == 4443 and settings.metrics.port == 9464
    assert settings.workloads[0].max_streams == 3 and settings.budget_period == "day"
    assert settings.policy.requests_per_minute == 60 and settings.workloads[0].tokens_per_minute == 50000
    assert settings.workloads[0].admin is True
    provider = settings.catalog.providers["vllm"]
    assert provider.compat["nested"] == {"also": "free-form"} and provider.headers == {"x-team": "agents"}
    assert settings.credential_locations["vllm"] == ("env:TEAM_VLLM_KEY",)
    model = settings.catalog.models["vllm/qwen3-32b"]
    assert model.pricing is not None and model.pricing.cache_read == 0.05
    assert model.api == "openai-responses" and model.compat == {"whatever_the_vendor_needs": 1}


def test_the_log_format_comes_from_the_flag_then_the_file_then_the_environment(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "SIDECAR_LOG_FORMAT": "json"}
    assert load_settings(None, env).log_format == "json"
    config = write_config(tmp_path, '[server]\nlog_format = "text"\n')
    assert load_settings(config, env).log_format == "text"
    assert load_settings(config, env, log_format="json").log_format == "json"
    with pytest.raises(ConfigError) as info:
        load_settings(None, {**env, "SIDECAR_LOG_FORMAT": "xml"})
    assert info.value.message == "log format must be one of text, json, got 'xml'"


def serve_environ(tmp_path: Path) -> dict[str, str]:
    """Nothing inherited but PATH: no provider key, config or home of the caller's shell."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "SIDECAR_HOME": str(tmp_path / "home"),
        "SIDECAR_TOKEN": "a-workload-token-0123456789",
    }


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", "serve", *args],
        env=serve_environ(tmp_path),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("listener", "setting"),
    [("main", "--port or [server] port"), ("public realtime", "[realtime] public_port"), ("metrics", "[metrics] port")],
)
def test_a_port_in_use_is_one_line_naming_it_before_anything_starts(
    tmp_path: Path, listener: str, setting: str
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        if listener == "main":
            result = serve(tmp_path, "--port", str(port))
        else:
            table = f'[realtime]\npublic_host = "127.0.0.1"\npublic_port = {port}\n'
            if listener == "metrics":
                table = f"[metrics]\nport = {port}\n"
            config = write_config(tmp_path, table)
            result = serve(tmp_path, "--config", str(config), "--port", str(free_port()))
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert result.stderr.strip().splitlines()[-1] == (
        f"sidecar: 127.0.0.1:{port} is already in use: stop what listens there, or pick another port with {setting}"
    )
    assert "startup complete" not in output and "Errno" not in output and "Traceback" not in output


def test_serve_log_format_json_writes_one_object_per_line(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "serve", "--port", str(port), "--log-format", "json"],
        env=serve_environ(tmp_path),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=10)
    records = [json.loads(line) for line in output.splitlines()]
    assert any(f"on http://127.0.0.1:{port}" in record["message"] for record in records), output


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (
            "serve",
            [
                "Run the gateway: an HTTP server (default http://127.0.0.1:4000) that holds the provider credentials",
                "Needs: the workload bearer (SIDECAR_TOKEN, else the token file, created on first use",
                "Configuration, first found wins: these options, the TOML file (--config, else $SIDECAR_CONFIG), the "
                "environment (SIDECAR_*, HTTPS_PROXY …), the defaults.",
                "--log-format {text,json} text: one line per record; json: one JSON object per line (default: "
                "[server] log_format, else $SIDECAR_LOG_FORMAT, else text)",
                "--port PORT port, 1-65535 (default: [server] port, else 4000)",
                "--workers WORKERS processes serving the port",
                "--config CONFIG TOML config file (default: $SIDECAR_CONFIG)",
            ],
        ),
        (
            "token",
            [
                "Print the workload bearer: the token callers send as `Authorization: Bearer …`",
                "--regenerate replace the token file with a new token and print it",
            ],
        ),
        (
            "credentials",
            [
                "Provider credentials, which only the sidecar holds and no command prints:",
                "list where each provider's credential comes from (never the value)",
                "A provider's credential is looked up in this order, first found wins:",
            ],
        ),
        (
            "models",
            ["List the models `sidecar serve` would serve now, one per line: id, wire API and price"],
        ),
    ],
)
def test_every_command_explains_itself(command: str, says: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width
    for sentence in says:
        assert sentence in text


def test_an_unknown_log_format_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["serve", "--log-format", "xml"])
    assert info.value.code == 2
    assert "argument --log-format: invalid choice: 'xml' (choose from 'text', 'json')" in capsys.readouterr().err
