"""Settings: a TOML file plus the environment. The only module in the sidecar that reads ``os.environ``.

Everything else receives a frozen ``Settings``. Credential lookups that name an environment variable
(``env:NAME`` locations, ``OPENAI_API_KEY`` …) read ``Settings.environ``, the snapshot taken here, so tests can
build settings from any mapping.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import ConfigError
from .models import Catalog, build_catalog, load_builtin_catalog

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4000
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024  # images travel base64-encoded in the context
DEFAULT_HEARTBEAT_SECONDS = 15.0
DEFAULT_KEYRING_SERVICE = "pi-sidecar"

CREDENTIAL_SCHEMES = ("env:", "file:", "keyring:")


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    cors_origins: tuple[str, ...] = ("*",)
    home: Path = field(default_factory=lambda: Path.home() / ".config" / "pi-sidecar")
    """Where the token file lives by default (``SIDECAR_HOME``, else ``$XDG_CONFIG_HOME/pi-sidecar``)."""
    token_file: Path | None = None
    token: str | None = None
    """``SIDECAR_TOKEN``; when set the token file is not used."""
    secrets_dir: Path | None = None
    keyring_service: str = DEFAULT_KEYRING_SERVICE
    credential_locations: Mapping[str, str] = field(default_factory=dict)
    """Provider id → ``env:NAME`` | ``file:PATH`` | ``keyring:SERVICE`` from the config file."""
    base_urls: Mapping[str, str] = field(default_factory=dict)
    """Provider id → base URL overrides (config file first, then the provider's standard env var)."""
    max_retries: int = 2
    upstream_proxy: str | None = None
    log_level: str = "info"
    catalog: Catalog = field(default_factory=lambda: build_catalog(load_builtin_catalog()))
    environ: Mapping[str, str] = field(default_factory=dict)
    config_path: Path | None = None

    @property
    def token_path(self) -> Path:
        return self.token_file or self.home / "token"


def _table(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{name}] must be a table")
    return value


def _typed(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = table.get(key)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool) and kind is not bool):
        name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"[{where}] {key} must be a {name}, got {value!r}")
    return value


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def load_settings(
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
) -> Settings:
    """Build settings from an optional TOML file and an environment mapping (``os.environ`` by default).

    Precedence: command-line arguments > config file > environment > defaults.
    """
    env = dict(os.environ if environ is None else environ)
    if config_path is None and env.get("SIDECAR_CONFIG"):
        config_path = Path(env["SIDECAR_CONFIG"])
    raw = read_config_file(config_path) if config_path else {}

    server = _table(raw, "server")
    upstream = _table(raw, "upstream")
    creds = _table(raw, "credentials")
    catalog = build_catalog(load_builtin_catalog(), raw)

    locations: dict[str, str] = {}
    base_urls: dict[str, str] = {}
    for pid, table in _table(raw, "providers").items():
        location = _typed(table, "credential", str, f"providers.{pid}")
        if location is not None:
            if not location.startswith(CREDENTIAL_SCHEMES):
                raise ConfigError(
                    f"[providers.{pid}] credential = {location.split(':', 1)[0]!r}…: use env:NAME, file:PATH "
                    "or keyring:SERVICE"
                )
            locations[pid] = location
        if "base_url" in table:
            base_urls[pid] = str(table["base_url"]).rstrip("/")
    for pid, spec in catalog.providers.items():
        if pid not in base_urls and spec.base_url_env and env.get(spec.base_url_env):
            base_urls[pid] = env[spec.base_url_env].rstrip("/")

    if env.get("SIDECAR_HOME"):
        home = Path(env["SIDECAR_HOME"])
    elif env.get("XDG_CONFIG_HOME"):
        home = Path(env["XDG_CONFIG_HOME"]) / "pi-sidecar"
    else:
        home = Path(env.get("HOME") or Path.home()) / ".config" / "pi-sidecar"

    token_file = _typed(server, "token_file", str, "server")
    secrets_dir = _typed(creds, "secrets_dir", str, "credentials") or env.get("SIDECAR_SECRETS_DIR")
    cors = _typed(server, "cors_origins", list, "server")
    max_retries = _typed(upstream, "max_retries", int, "upstream")
    if max_retries is not None and not 0 <= max_retries <= 10:
        raise ConfigError("[upstream] max_retries must be between 0 and 10")

    settings = Settings(
        host=host or _typed(server, "host", str, "server") or DEFAULT_HOST,
        port=port or _typed(server, "port", int, "server") or DEFAULT_PORT,
        max_body_bytes=_typed(server, "max_body_bytes", int, "server") or DEFAULT_MAX_BODY_BYTES,
        heartbeat_seconds=float(
            _typed(server, "heartbeat_seconds", (int, float), "server") or DEFAULT_HEARTBEAT_SECONDS
        ),
        cors_origins=tuple(str(o) for o in cors) if cors is not None else ("*",),
        home=home,
        token_file=Path(token_file).expanduser() if token_file else None,
        token=env.get("SIDECAR_TOKEN") or None,
        secrets_dir=Path(secrets_dir).expanduser() if secrets_dir else None,
        keyring_service=_typed(creds, "keyring_service", str, "credentials") or DEFAULT_KEYRING_SERVICE,
        credential_locations=MappingProxyType(locations),
        base_urls=MappingProxyType(base_urls),
        max_retries=2 if max_retries is None else max_retries,
        upstream_proxy=_typed(upstream, "proxy", str, "upstream") or env.get("HTTPS_PROXY") or None,
        log_level=(_typed(server, "log_level", str, "server") or env.get("SIDECAR_LOG_LEVEL") or "info").lower(),
        catalog=catalog,
        environ=MappingProxyType(env),
        config_path=config_path,
    )
    if settings.max_body_bytes <= 0:
        raise ConfigError("[server] max_body_bytes must be positive")
    return settings
