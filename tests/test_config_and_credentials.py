"""Settings from TOML + environment, credential precedence, Secret rotation without restart, keyring absence."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import keyring
import keyring.backends.fail
import pytest
from keyring.backend import KeyringBackend

from sidecar import cli
from sidecar.app import create_app
from sidecar.config import load_settings
from sidecar.credentials import Credential, CredentialStore
from sidecar.errors import ConfigError, MissingCredential
from sidecar.registry import ModelRegistry
from tests.conftest import pi_body, read_events
from tests.fakeupstream import FakeUpstream, Reply, fixture_bytes
from tests.sidecar_server import TOKEN, run_sidecar, sidecar_environ, write_config


def store_for(tmp_path: Path, config: str = "", **environ: str) -> tuple[CredentialStore, ModelRegistry]:
    settings = load_settings(write_config(tmp_path, config), {"HOME": str(tmp_path), **environ})
    store = CredentialStore(settings)
    return store, ModelRegistry(settings, store)


def provider(registry: ModelRegistry, pid: str) -> object:
    return registry._catalog.providers[pid]


def test_standard_env_vars_work_without_a_config_file(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        {
            "HOME": str(tmp_path),
            "OPENAI_API_KEY": "sk-o",
            "OPENAI_BASE_URL": "http://proxy.local/v1/",
            "ANTHROPIC_API_KEY": "sk-a",
            "ANTHROPIC_BASE_URL": "http://anthropic.local",
            "GOOGLE_API_KEY": "g-2",
        },
    )
    registry = ModelRegistry(settings, CredentialStore(settings))
    openai = registry.resolve("openai/gpt-4o")
    assert openai.model.base_url == "http://proxy.local/v1"  # OPENAI_BASE_URL includes /v1, trailing slash trimmed
    assert openai.credential == Credential("sk-o", "env:OPENAI_API_KEY")
    anthropic = registry.resolve("claude-sonnet-4-5")  # a bare id resolves through the catalog
    assert anthropic.model.full_id == "anthropic/claude-sonnet-4-5"
    assert anthropic.model.base_url == "http://anthropic.local"
    google = registry.resolve("google/gemini-2.5-flash")
    assert google.credential is not None and google.credential.source == "env:GOOGLE_API_KEY"


def test_gemini_key_wins_over_google_key(tmp_path: Path) -> None:
    store, registry = store_for(tmp_path, GEMINI_API_KEY="g-1", GOOGLE_API_KEY="g-2")
    resolved = registry.resolve("google/gemini-2.5-pro")
    assert resolved.credential == Credential("g-1", "env:GEMINI_API_KEY")


def test_precedence_config_then_secrets_dir_then_env(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "openai").write_text("sk-from-secret-dir\n")
    (secrets / "anthropic").write_text("sk-ant-from-secret-dir")
    keyfile = tmp_path / "openai.key"
    keyfile.write_text("sk-from-config-file")
    config = f'[credentials]\nsecrets_dir = "{secrets}"\n[providers.openai]\ncredential = "file:{keyfile}"\n'
    store, registry = store_for(
        tmp_path, config, OPENAI_API_KEY="sk-env", ANTHROPIC_API_KEY="sk-ant-env", DEEPSEEK_API_KEY="sk-deepseek-env"
    )
    assert registry.resolve("openai/gpt-4o").credential == Credential("sk-from-config-file", f"config:file:{keyfile}")
    assert registry.resolve("anthropic/claude-haiku-4-5").credential == Credential(
        "sk-ant-from-secret-dir", "secrets-dir"
    )
    assert registry.resolve("deepseek/deepseek-chat").credential == Credential(
        "sk-deepseek-env", "env:DEEPSEEK_API_KEY"
    )


def test_env_location_in_config(tmp_path: Path) -> None:
    store, registry = store_for(
        tmp_path,
        '[providers.anthropic]\ncredential = "env:TEAM_CLAUDE_KEY"\n',
        TEAM_CLAUDE_KEY="sk-team",
        ANTHROPIC_API_KEY="sk-default",
    )
    assert registry.resolve("anthropic/claude-sonnet-4-5").credential == Credential(
        "sk-team", "config:env:TEAM_CLAUDE_KEY"
    )


def test_credential_repr_never_shows_the_value() -> None:
    credential = Credential("sk-very-secret-value", "env:X")
    assert "sk-very-secret-value" not in repr(credential) and "sk-very-secret-value" not in str(credential)


def test_rotated_secret_file_is_used_without_restart(upstream: FakeUpstream, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "anthropic").write_text("sk-ant-first-generation-key")
    environ = sidecar_environ(upstream.url, tmp_path)
    del environ["ANTHROPIC_API_KEY"]
    config = write_config(tmp_path, f'[credentials]\nsecrets_dir = "{secrets}"\n[upstream]\nmax_retries = 0\n')
    with run_sidecar(environ, config) as running:
        headers = {"authorization": f"Bearer {TOKEN}"}
        for _ in range(2):
            upstream.push(Reply.sse(fixture_bytes("anthropic-messages/text-basic-padded.sse")))
        first = httpx.post(
            f"{running.url}/v1/pi/stream", json=pi_body("anthropic/claude-sonnet-4-5"), headers=headers, timeout=10
        )
        assert read_events(first)[-1]["type"] == "done"
        # The kubelet replaces the file atomically (a symlink swap); a rename models it.
        replacement = secrets / ".anthropic.new"
        replacement.write_text("sk-ant-second-generation-key")
        os.replace(replacement, secrets / "anthropic")
        second = httpx.post(
            f"{running.url}/v1/pi/stream", json=pi_body("anthropic/claude-sonnet-4-5"), headers=headers, timeout=10
        )
        assert read_events(second)[-1]["type"] == "done"
        assert [r.headers["x-api-key"] for r in upstream.received] == [
            "sk-ant-first-generation-key",
            "sk-ant-second-generation-key",
        ]


def test_missing_credential_lists_every_way_to_add_one(tmp_path: Path) -> None:
    store, registry = store_for(tmp_path)
    with pytest.raises(MissingCredential) as info:
        registry.resolve("xai/grok-4")
    message = info.value.message
    assert "provider xai" in message and "XAI_API_KEY" in message and "sidecar credentials set xai" in message
    assert "[providers.xai]" in message


@pytest.fixture
def no_keyring() -> Iterator[None]:
    """The process has no usable keyring backend (as in a slim container)."""
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())
    yield
    keyring.set_keyring(previous)


class MemoryKeyring(KeyringBackend):
    """A real keyring backend kept in memory: keyring's own plug-in interface, not a mock of our code."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.items.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.items[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.items.pop((service, username))


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


def test_keyring_location_without_a_backend_fails_at_startup_with_a_clear_message(
    tmp_path: Path, no_keyring: None
) -> None:
    settings = load_settings(
        write_config(tmp_path, '[providers.openai]\ncredential = "keyring:team-keys"\n'),
        {"HOME": str(tmp_path), "SIDECAR_TOKEN": "t"},
    )
    with pytest.raises(ConfigError) as info:
        create_app(settings)
    assert "provider openai" in info.value.message and "no OS keyring backend" in info.value.message
    assert "env:NAME / file:PATH" in info.value.message


def test_no_keyring_backend_still_starts(tmp_path: Path, no_keyring: None) -> None:
    settings = load_settings(None, {"HOME": str(tmp_path), "SIDECAR_TOKEN": "t"})
    store = CredentialStore(settings)
    registry = ModelRegistry(settings, store)
    assert [m.full_id for m in registry.servable()] == ["echo/echo"]


def test_keyring_credentials_via_the_cli(
    tmp_path: Path, memory_keyring: MemoryKeyring, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("OPENAI_API_KEY", "SIDECAR_CONFIG", "SIDECAR_SECRETS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO("sk-from-keyring-123\n"))
    assert cli.main(["credentials", "set", "openai"]) == 0
    assert memory_keyring.items == {("pi-sidecar", "openai"): "sk-from-keyring-123"}
    assert cli.main(["credentials", "list"]) == 0
    listing = capsys.readouterr().out
    assert "openai       keyring" in listing and "sk-from-keyring-123" not in listing
    store, registry = store_for(tmp_path)
    assert registry.resolve("openai/gpt-4o").credential == Credential("sk-from-keyring-123", "keyring")
    assert cli.main(["credentials", "remove", "openai"]) == 0
    assert memory_keyring.items == {}
    assert cli.main(["credentials", "set", "nosuchprovider"]) == 2


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('[providers.openai]\ncredential = "plain-key-in-config"\n', "use env:NAME, file:PATH or keyring:SERVICE"),
        ('[server]\nport = "4000"\n', "[server] port must be a int"),
        ("[upstream]\nmax_retries = 99\n", "max_retries must be between 0 and 10"),
        ('[models."openai/x"]\ncost = "cheap"\n', "cost must be [input, output, cacheRead, cacheWrite]"),
        ('[models."nobody/x"]\ncost = [1, 2]\n', "unknown provider 'nobody'"),
        ("not toml at all [", "is not valid TOML"),
        ("[server]\nworkers = 65\n", "[server] workers must be between 1 and 64 (about one per core), got 65"),
        (
            '[upstream]\nproxy = "socks5://user:hunter2@egress:1080"\n',
            "must be an http:// URL such as http://egress:3128, got a socks5:// URL; SOCKS proxies are not supported",
        ),
    ],
)
def test_config_errors_say_what_to_fix(tmp_path: Path, config: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write_config(tmp_path, config), {"HOME": str(tmp_path)})
    assert message in info.value.message
    assert "hunter2" not in info.value.message


def test_workers_share_realtime_secrets_through_a_file_unless_redis_is_configured(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "SIDECAR_HOME": str(tmp_path / "home")}
    assert load_settings(None, env).token_store_file is None  # one process: its memory
    several = load_settings(write_config(tmp_path, "[server]\nworkers = 3\n"), env)
    assert several.workers == 3 and several.token_store_file == tmp_path / "home" / "realtime-tokens.db"
    assert load_settings(None, env, workers=2).workers == 2  # serve --workers wins over the file
    redis = write_config(tmp_path, '[server]\nworkers = 3\n[realtime]\ntoken_store = "redis://127.0.0.1:6379/0"\n')
    assert load_settings(redis, env).token_store_file is None  # Redis is shared already


def test_an_http_proxy_from_the_environment_is_kept(tmp_path: Path) -> None:
    settings = load_settings(None, {"HOME": str(tmp_path), "HTTPS_PROXY": "http://egress:3128"})
    assert settings.upstream_proxy == "http://egress:3128"


def test_config_adds_providers_and_prices(tmp_path: Path) -> None:
    config = """
[providers.vllm]
api = "openai-completions"
base_url = "http://127.0.0.1:8000/v1/"
needs_credential = false
compat = { max_tokens_field = "max_tokens" }

[models."vllm/qwen3-32b"]
cost = { input = 0.1, output = 0.2 }
context_window = 32768

[models."openai/gpt-4o"]
cost = [1, 2, 0.5, 0]
"""
    store, registry = store_for(tmp_path, config, OPENAI_API_KEY="sk-o")
    vllm = registry.resolve("vllm/qwen3-32b")
    assert vllm.model.base_url == "http://127.0.0.1:8000/v1" and vllm.credential is None
    assert vllm.model.compat["max_tokens_field"] == "max_tokens"
    assert vllm.model.pricing is not None and vllm.model.pricing.output == 0.2
    gpt = registry.resolve("openai/gpt-4o").model
    assert gpt.pricing is not None and (gpt.pricing.input, gpt.pricing.cache_read) == (1.0, 0.5)
    assert gpt.context_window == 128000  # the override merged into the catalog row
