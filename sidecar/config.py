"""Settings: a TOML file plus the environment. The only module in the sidecar that reads ``os.environ``.

Everything else receives a frozen ``Settings``. Credential lookups that name an environment variable
(``env:NAME`` locations, ``OPENAI_API_KEY`` …) read ``Settings.environ``, the snapshot taken here, so tests can
build settings from any mapping.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError
from .models import Catalog, build_catalog, closest, load_builtin_catalog, refuse_unknown_keys

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4000
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024  # images travel base64-encoded in the context
DEFAULT_HEARTBEAT_SECONDS = 15.0
DEFAULT_KEYRING_SERVICE = "pi-sidecar"

CREDENTIAL_SCHEMES = ("env:", "file:", "keyring:")
CREDENTIAL_KINDS = ("key", "google", "aws")
"""``[providers.x] credential`` values that name a kind of credential rather than where a key is (sidecar.cloud)."""
BUDGET_PERIODS = ("day", "month", "total")
DEFAULT_LEDGER_FLUSH_MS = 200
DEFAULT_LEDGER_BATCH_SIZE = 256
_WORKLOAD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Workload:
    """A named workload bearer (``[[workloads]]``): its own identity in the ledger and, optionally, its own budget."""

    name: str
    token_location: str
    """``env:NAME`` or ``file:PATH``; the token itself is read by ``auth`` at startup and never stored here."""
    budget_usd: float | None = None
    max_streams: int | None = None
    """Generations this workload may have in flight at once; ``None``: ``[server] max_streams_per_workload``."""
    models: tuple[str, ...] | None = None
    """Glob patterns of the ``provider/id`` models it may use; ``None``: ``[limits] models``."""
    requests_per_minute: int | None = None
    """``None``: ``[limits] requests_per_minute``."""
    tokens_per_minute: int | None = None
    """``None``: ``[limits] tokens_per_minute``."""
    admin: bool = False
    """``admin = true``: its bearer sees every workload's generations, spend and budgets on ``/ui`` (others see their
    own only)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """``[server]`` limits: what one connection, request or workload may hold. Each has a safe default and is
    documented in the README; the HTTP ones are enforced by ``http_server``, the rest at parse and admission."""

    max_header_bytes: int = 64 * 1024
    """Request line plus header fields; a larger head gets 431 and the connection is closed."""
    max_headers: int = 100
    """Header fields per request; more get 431."""
    header_timeout_seconds: float = 10.0
    """From the connection (or the first byte of the next request) to the end of the headers; then 408 and close."""
    body_timeout_seconds: float = 60.0
    """From the end of the headers to the end of the body; then 408 and close."""
    keepalive_seconds: float = 75.0
    """An idle kept-alive connection is closed after this. Long, because Bun's fetch reuses sockets late (§14.4)."""
    max_streams: int = 64
    """Generations in flight in this process; one more gets 503 with ``retry-after`` before any upstream call. The
    default is the measured knee on two cores (bench/README.md, "Admission"): beyond it every stream slows down."""
    max_streams_per_workload: int = 64
    """Generations in flight per caller identity; one more gets 429 with ``retry-after``. Equal to ``max_streams`` by
    default (one agent per sidecar); lower it so that workloads sharing a sidecar cannot starve each other."""
    max_identifier_chars: int = 256
    """Model ids and session ids; longer ones get 400 (ledger tags and user ids have their own, smaller bounds)."""
    max_json_depth: int = 64
    """Nesting of arrays and objects in a request body (tool schemas included); deeper bodies get 400."""


@dataclass(frozen=True, slots=True)
class RealtimeSettings:
    """``[realtime]``: client-secret minting and the WebSocket relay."""

    token_store_url: str | None = field(default=None, repr=False)
    """``redis://…``: tokens shared by replicas; ``None``: in-memory (one process). May hold a password."""
    default_ttl_seconds: int = 60
    max_ttl_seconds: int = 600
    """A mint asking for a longer ``expiresIn`` is refused (400), not silently shortened."""
    max_frame_bytes: int = 2 * 1024 * 1024
    max_session_seconds: float = 1800.0
    idle_timeout_seconds: float = 300.0
    max_sessions_per_bearer: int = 8
    public_host: str | None = None
    """A second listener serving only the realtime WebSocket and /healthz (for an Ingress); ``None``: off."""
    public_port: int | None = None


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """``[metrics]``: the Prometheus endpoint ``GET /metrics``."""

    enabled: bool = True
    """Off: no ``/metrics`` anywhere and nothing counted."""
    host: str | None = None
    port: int | None = None
    """A listener of its own serving only ``/metrics``, without the bearer, for a scraper; ``None``: ``/metrics`` is
    served on the main listener behind the workload bearer. Never on the public realtime listener."""
    multiprocess_dir: Path | None = None
    """``PROMETHEUS_MULTIPROC_DIR``, which ``serve --workers`` sets for its workers: they count into files there and
    a scrape sums them (prometheus-client's multiprocess mode)."""


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """``[limits]``: the policy of the plain bearer, and of every workload for each key it does not set itself
    (``sidecar.policy``). Each ``None`` is no restriction."""

    models: tuple[str, ...] | None = None
    """Glob patterns (``fnmatch``, case-sensitive) of the resolved ``provider/id`` a caller may use."""
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    """Input + cache read + cache write + output tokens, counted when each generation ends."""
    redis_url: str | None = field(default=None, repr=False)
    """``redis://…``: the rate counters live there, shared by replicas and workers; ``None``: in this process's
    memory. May hold a password."""


LOG_FORMATS = ("text", "json")


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
    credential_locations: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Provider id → its ``env:NAME`` | ``file:PATH`` | ``keyring:SERVICE`` locations from the config file: one, or
    several for a key pool (``sidecar.key_pool``)."""
    base_urls: Mapping[str, str] = field(default_factory=dict)
    """Provider id → base URL overrides (config file first, then the provider's standard env var)."""
    max_retries: int = 2
    upstream_proxy: str | None = None
    log_level: str = "info"
    log_format: str = "text"
    """``text`` (one line per record) or ``json`` (one object per line): ``--log-format``, ``[server] log_format``,
    ``SIDECAR_LOG_FORMAT``."""
    catalog: Catalog = field(default_factory=lambda: build_catalog(load_builtin_catalog()))
    environ: Mapping[str, str] = field(default_factory=dict)
    config_path: Path | None = None
    path_prefix: str = ""
    """Also serve every route under this prefix (e.g. ``/sidecar``), for a proxy that does not strip it."""
    ledger_url: str | None = field(default=None, repr=False)
    """``postgresql://…`` selects the shared PostgreSQL ledger; ``None`` the SQLite file. May hold a password."""
    ledger_path: Path | None = None
    ledger_flush_interval: float = DEFAULT_LEDGER_FLUSH_MS / 1000
    ledger_batch_size: int = DEFAULT_LEDGER_BATCH_SIZE
    budget_usd: float | None = None
    """Default USD budget of every bearer without its own (``[budget] usd``); ``None``: unlimited."""
    budget_period: str = "month"
    allow_unpriced: bool = False
    """``[budget] allow_unpriced``: serve models with no known price (at cost 0) to callers that have a budget."""
    log_content: bool = False
    """``[server] log_content``: allow prompt and completion text in DEBUG logs. Off: no level ever logs it."""
    limits: Limits = field(default_factory=Limits)
    workloads: tuple[Workload, ...] = ()
    realtime: RealtimeSettings = field(default_factory=RealtimeSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    """``[limits]``: allowed models and rate limits per caller."""
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    workers: int = 1
    """``[server] workers`` / ``serve --workers``: processes serving the one listening socket (a shared gateway on
    several cores). The ledger file, budgets and realtime client secrets are shared between them."""

    @property
    def token_store_file(self) -> Path | None:
        """The SQLite file the workers share realtime client secrets through when there are several and no Redis."""
        return self.home / "realtime-tokens.db" if self.workers > 1 and not self.realtime.token_store_url else None

    @property
    def token_path(self) -> Path:
        return self.token_file or self.home / "token"

    @property
    def ledger_file(self) -> Path:
        return self.ledger_path or self.home / "ledger.db"


def _table(raw: Mapping[str, Any], name: str, known: Collection[str] | None) -> Mapping[str, Any]:
    """The section ``[name]``, refusing a key not in ``known``; ``None``: its entries are tables, each checked where
    it is read (``[providers.<id>]``, ``[models."provider/id"]``: ``sidecar.models.build_catalog``)."""
    value = raw.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{name}] must be a table")
    if known is not None:
        refuse_unknown_keys(value, known, f"[{name}]")
    return value


_SECTIONS = {
    "server": "[server]",
    "upstream": "[upstream]",
    "credentials": "[credentials]",
    "ledger": "[ledger]",
    "budget": "[budget]",
    "realtime": "[realtime]",
    "metrics": "[metrics]",
    "limits": "[limits]",
    "workloads": "[[workloads]]",
    "providers": "[providers.<id>]",
    "models": '[models."provider/id"]',
}
"""The config file's sections, as a header spells them."""


def _refuse_unknown_sections(raw: Mapping[str, Any]) -> None:
    for name, value in raw.items():
        if name in _SECTIONS:
            continue
        if isinstance(value, Mapping):
            header = f"[{name}]"
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            header = f"[[{name}]]"
        else:
            raise ConfigError(
                f"`{name}` is outside any section: put it below the header of the section it belongs to, "
                f"one of {', '.join(_SECTIONS[s] for s in sorted(_SECTIONS))}"
            )
        raise ConfigError(
            f"`{header}` is not a section; {closest(name, _SECTIONS, 'the sections are', _SECTIONS.__getitem__)}"
        )


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


_SERVER_KEYS = frozenset(
    {
        "host",
        "port",
        "max_body_bytes",
        "heartbeat_seconds",
        "cors_origins",
        "token_file",
        "log_level",
        "log_format",
        "log_content",
        "path_prefix",
        "workers",
    }
)
"""``[server]``, besides the limits (``_LIMIT_RANGES``)."""
_UPSTREAM_KEYS = frozenset({"max_retries", "proxy"})
_CREDENTIALS_KEYS = frozenset({"secrets_dir", "keyring_service"})


def load_settings(
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    log_format: str | None = None,
) -> Settings:
    """Build settings from an optional TOML file and an environment mapping (``os.environ`` by default).

    Precedence: command-line arguments > config file > environment > defaults.
    """
    env = dict(os.environ if environ is None else environ)
    if config_path is None and env.get("SIDECAR_CONFIG"):
        config_path = Path(env["SIDECAR_CONFIG"])
    raw = read_config_file(config_path) if config_path else {}

    _refuse_unknown_sections(raw)
    server = _table(raw, "server", _SERVER_KEYS | _LIMIT_RANGES.keys())
    upstream = _table(raw, "upstream", _UPSTREAM_KEYS)
    creds = _table(raw, "credentials", _CREDENTIALS_KEYS)
    providers = _table(raw, "providers", None)
    _table(raw, "models", None)  # a table of rows, each checked by build_catalog
    catalog = build_catalog(load_builtin_catalog(), raw)

    locations: dict[str, tuple[str, ...]] = {}
    base_urls: dict[str, str] = {}
    for pid, table in providers.items():
        found = _credential_locations(table, pid)
        if found:
            locations[pid] = found
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

    log_content = _typed(server, "log_content", bool, "server")
    settings = Settings(
        host=host or _typed(server, "host", str, "server") or DEFAULT_HOST,
        port=_port(port or _typed(server, "port", int, "server") or DEFAULT_PORT),
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
        upstream_proxy=_proxy(_typed(upstream, "proxy", str, "upstream") or env.get("HTTPS_PROXY") or None),
        log_level=(_typed(server, "log_level", str, "server") or env.get("SIDECAR_LOG_LEVEL") or "info").lower(),
        log_format=_log_format(
            log_format or _typed(server, "log_format", str, "server") or env.get("SIDECAR_LOG_FORMAT")
        ),
        catalog=catalog,
        environ=MappingProxyType(env),
        config_path=config_path,
        path_prefix=_path_prefix(server, env),
        log_content=bool(log_content),
        workers=_workers(workers if workers is not None else _typed(server, "workers", int, "server")),
        limits=_limits(server),
        **_ledger_settings(raw, env),
        **_budget_settings(raw),
        realtime=_realtime_settings(raw, env),
        policy=_policy_settings(raw, env),
        metrics=_metrics_settings(raw, env),
    )
    if settings.max_body_bytes <= 0:
        raise ConfigError("[server] max_body_bytes must be positive")
    return settings


_LEDGER_KEYS = frozenset({"url", "path", "flush_interval_ms", "batch_size"})


def _credential_locations(table: Mapping[str, Any], pid: str) -> tuple[str, ...]:
    """``[providers.x] credential``: one location, a list of them (a key pool), or a credential kind (catalog data,
    read by ``build_catalog``: nothing here)."""
    where = f"[providers.{pid}] credential"
    value = _typed(table, "credential", (str, list), f"providers.{pid}")
    if value is None or value in CREDENTIAL_KINDS:
        return ()
    if isinstance(value, str):
        value = [value]
    elif not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f'{where} must be a location or a non-empty list of them: ["env:KEY_A", "file:/run/b"]')
    for location in value:
        if not location.startswith(CREDENTIAL_SCHEMES):
            # Only the scheme is shown: a value that is not a location may be a key pasted by mistake.
            raise ConfigError(
                f"{where} = {location.split(':', 1)[0]!r}…: use env:NAME, file:PATH or keyring:SERVICE (a list of "
                f"them for a key pool), or a credential kind ({', '.join(CREDENTIAL_KINDS)})"
            )
    if len(set(value)) != len(value):
        raise ConfigError(f"{where} names the same location twice")
    return tuple(value)


def _ledger_settings(raw: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    ledger = _table(raw, "ledger", _LEDGER_KEYS)
    url = _typed(ledger, "url", str, "ledger") or env.get("SIDECAR_LEDGER_URL") or None
    if url is not None:
        url = _dereference(url, env, "[ledger] url")
        if not url.startswith(("postgresql://", "postgres://")):
            raise ConfigError("[ledger] url must be a postgresql:// URL (leave it out for the embedded SQLite ledger)")
    path = _typed(ledger, "path", str, "ledger") or env.get("SIDECAR_LEDGER_PATH") or None
    flush_ms = _typed(ledger, "flush_interval_ms", int, "ledger")
    if flush_ms is not None and not 1 <= flush_ms <= 60_000:
        raise ConfigError("[ledger] flush_interval_ms must be between 1 and 60000")
    batch = _typed(ledger, "batch_size", int, "ledger")
    if batch is not None and not 1 <= batch <= 10_000:
        raise ConfigError("[ledger] batch_size must be between 1 and 10000")
    return {
        "ledger_url": url,
        "ledger_path": Path(path).expanduser() if path else None,
        "ledger_flush_interval": (flush_ms or DEFAULT_LEDGER_FLUSH_MS) / 1000,
        "ledger_batch_size": batch or DEFAULT_LEDGER_BATCH_SIZE,
    }


def _port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise ConfigError(f"port must be between 1 and 65535, got {port}")
    return port


_LIMIT_RANGES: dict[str, tuple[float, float]] = {
    "max_header_bytes": (1024, 16 * 1024 * 1024),
    "max_headers": (8, 10_000),
    "header_timeout_seconds": (0.1, 3600),
    "body_timeout_seconds": (0.1, 3600),
    "keepalive_seconds": (0.1, 3600),
    "max_streams": (1, 1_000_000),
    "max_streams_per_workload": (1, 1_000_000),
    "max_identifier_chars": (16, 65_536),
    "max_json_depth": (8, 200),  # orjson cannot encode past 254 levels; the upstream body adds a few
}


def _limits(server: Mapping[str, Any]) -> Limits:
    values: dict[str, Any] = {}
    for key, (low, high) in _LIMIT_RANGES.items():
        is_seconds = key.endswith("_seconds")
        value = _typed(server, key, (int, float) if is_seconds else int, "server")
        if value is None:
            continue
        if not low <= value <= high:
            raise ConfigError(f"[server] {key} must be between {low:g} and {high:g}, got {value}")
        values[key] = float(value) if is_seconds else value
    return Limits(**values)


_BUDGET_KEYS = frozenset({"usd", "period", "allow_unpriced"})
_POLICY_KEYS = frozenset({"models", "requests_per_minute", "tokens_per_minute"})
"""What ``[limits]`` and a ``[[workloads]]`` entry both set (the entry's own value wins)."""
_WORKLOAD_KEYS = frozenset({"name", "token", "budget_usd", "max_streams", "admin"}) | _POLICY_KEYS
_LIMITS_KEYS = _POLICY_KEYS | {"redis_url"}
MAX_PER_MINUTE = 10**12


def _budget_settings(raw: Mapping[str, Any]) -> dict[str, Any]:
    budget = _table(raw, "budget", _BUDGET_KEYS)
    usd = _usd(budget, "usd", "budget")
    period = _typed(budget, "period", str, "budget") or "month"
    if period not in BUDGET_PERIODS:
        raise ConfigError(f"[budget] period must be one of {', '.join(BUDGET_PERIODS)}, got {period!r}")
    workloads: list[Workload] = []
    entries = raw.get("workloads", [])
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        raise ConfigError('workloads must be an array of tables: [[workloads]] name = …, token = "env:NAME"')
    for n, entry in enumerate(entries):
        where = f"workloads #{n + 1}"
        refuse_unknown_keys(entry, _WORKLOAD_KEYS, f"[{where}]")
        name = _typed(entry, "name", str, where)
        if not name or not _WORKLOAD_NAME.match(name):
            raise ConfigError(f"[{where}] name must be 1-64 letters, digits, '.', '_' or '-', got {name!r}")
        token = _typed(entry, "token", str, where)
        if not token or not token.startswith(("env:", "file:")):
            raise ConfigError(f"[{where}] ({name}) token must be env:NAME or file:PATH (never the token itself)")
        if any(w.name == name for w in workloads):
            raise ConfigError(f"[{where}] workload name {name!r} is used twice")
        max_streams = _typed(entry, "max_streams", int, where)
        if max_streams is not None and not 1 <= max_streams <= 1_000_000:
            raise ConfigError(f"[{where}] ({name}) max_streams must be between 1 and 1000000")
        admin = bool(_typed(entry, "admin", bool, where))
        workloads.append(
            Workload(
                name, token, _usd(entry, "budget_usd", where), max_streams, admin=admin, **_policy_values(entry, where)
            )
        )
    allow_unpriced = _typed(budget, "allow_unpriced", bool, "budget")
    return {
        "budget_usd": usd,
        "budget_period": period,
        "allow_unpriced": bool(allow_unpriced),
        "workloads": tuple(workloads),
    }


_REALTIME_KEYS = frozenset(
    {
        "token_store",
        "default_ttl_seconds",
        "max_ttl_seconds",
        "max_frame_bytes",
        "max_session_seconds",
        "idle_timeout_seconds",
        "max_sessions_per_bearer",
        "public_host",
        "public_port",
    }
)


def _realtime_settings(raw: Mapping[str, Any], env: Mapping[str, str]) -> RealtimeSettings:
    table = _table(raw, "realtime", _REALTIME_KEYS)
    defaults = RealtimeSettings()

    def number(key: str, low: float, high: float, kind: type | tuple[type, ...] = int) -> Any:
        value = _typed(table, key, kind, "realtime")
        if value is None:
            return getattr(defaults, key)
        if not low <= value <= high:
            raise ConfigError(f"[realtime] {key} must be between {low:g} and {high:g}, got {value}")
        return value

    url = _redis_url(
        _typed(table, "token_store", str, "realtime") or env.get("SIDECAR_REALTIME_REDIS_URL") or None,
        env,
        "[realtime] token_store",
    )
    public_port = _typed(table, "public_port", int, "realtime")
    public_host = _typed(table, "public_host", str, "realtime")
    if (public_port is None) != (public_host is None):
        raise ConfigError("[realtime] public_host and public_port go together (the public realtime listener)")
    settings = RealtimeSettings(
        token_store_url=url,
        default_ttl_seconds=number("default_ttl_seconds", 1, 3600),
        max_ttl_seconds=number("max_ttl_seconds", 1, 3600),
        max_frame_bytes=number("max_frame_bytes", 1024, 64 * 1024 * 1024),
        max_session_seconds=float(number("max_session_seconds", 1, 24 * 3600, (int, float))),
        idle_timeout_seconds=float(number("idle_timeout_seconds", 1, 24 * 3600, (int, float))),
        max_sessions_per_bearer=number("max_sessions_per_bearer", 1, 10_000),
        public_host=public_host,
        public_port=public_port,
    )
    if settings.default_ttl_seconds > settings.max_ttl_seconds:
        raise ConfigError("[realtime] default_ttl_seconds must not exceed max_ttl_seconds")
    return settings


def _redis_url(value: str | None, env: Mapping[str, str], where: str) -> str | None:
    """A ``redis://`` URL, or ``env:NAME`` / ``file:PATH`` holding one; never quoted back (it may hold a password)."""
    if value is None:
        return None
    url = _dereference(value, env, where)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{where} must be a redis:// URL (leave it out to keep it in this process's memory)")
    return url


def _policy_settings(raw: Mapping[str, Any], env: Mapping[str, str]) -> PolicySettings:
    table = _table(raw, "limits", _LIMITS_KEYS)
    return PolicySettings(
        **_policy_values(table, "limits"),
        redis_url=_redis_url(_typed(table, "redis_url", str, "limits"), env, "[limits] redis_url"),
    )


def _policy_values(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``models``, ``requests_per_minute`` and ``tokens_per_minute`` of ``[limits]`` or a ``[[workloads]]`` entry."""
    values: dict[str, Any] = {}
    for key in ("requests_per_minute", "tokens_per_minute"):
        value = _typed(table, key, int, where)
        if value is not None and not 1 <= value <= MAX_PER_MINUTE:
            raise ConfigError(f"[{where}] {key} must be a whole number from 1 to {MAX_PER_MINUTE}, got {value}")
        values[key] = value
    models = _typed(table, "models", list, where)
    if models is not None:
        if not models or not all(isinstance(m, str) and m.strip() for m in models):
            raise ConfigError(
                f'[{where}] models must be a non-empty list of glob patterns such as ["anthropic/*", "openai/gpt-4o*"]'
            )
        for pattern in models:
            if "/" not in pattern and not pattern.startswith("*"):
                raise ConfigError(
                    f"[{where}] models: {pattern!r} never matches, because patterns match the resolved provider/id; "
                    f'write "<provider>/{pattern}" or "*/{pattern}"'
                )
        values["models"] = tuple(models)
    return values


def _usd(table: Mapping[str, Any], key: str, where: str) -> float | None:
    value = _typed(table, key, (int, float), where)
    if value is not None and value < 0:
        raise ConfigError(f"[{where}] {key} must not be negative")
    return None if value is None else float(value)


def _dereference(value: str, env: Mapping[str, str], where: str) -> str:
    """``env:NAME`` / ``file:PATH`` indirection, so a secret-bearing value need not sit in the config file."""
    if value.startswith("env:"):
        name = value[4:]
        if not env.get(name):
            raise ConfigError(f"{where} names the environment variable {name}, which is not set")
        return env[name].strip()
    if value.startswith("file:"):
        try:
            return Path(value[5:]).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read {value[5:]}: {exc.strerror}") from None
    return value


MAX_WORKERS = 64


def _workers(count: int | None) -> int:
    if count is None:
        return 1
    if not 1 <= count <= MAX_WORKERS:
        raise ConfigError(f"[server] workers must be between 1 and {MAX_WORKERS} (about one per core), got {count}")
    return count


def _proxy(url: str | None) -> str | None:
    """The egress proxy: an ``http://`` (or ``https://``) URL, which the upstream client tunnels HTTPS through with
    CONNECT; a SOCKS or schemeless value is refused here rather than on the first model call."""
    if url is None:
        return None
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        given = f"a {scheme}:// URL" if scheme else "a value without a scheme"  # never the URL: it may hold a password
        raise ConfigError(
            f"[upstream] proxy / HTTPS_PROXY must be an http:// URL such as http://egress:3128, got {given}; SOCKS "
            "proxies are not supported"
        )
    return url


def _path_prefix(server: Mapping[str, Any], env: Mapping[str, str]) -> str:
    prefix = _typed(server, "path_prefix", str, "server") or env.get("SIDECAR_PATH_PREFIX") or ""
    prefix = prefix.strip().rstrip("/")
    if prefix and (not prefix.startswith("/") or any(c in prefix for c in "?#% ")):
        raise ConfigError(f"[server] path_prefix must be a path like /sidecar, got {prefix!r}")
    return prefix


def _log_format(value: str | None) -> str:
    fmt = (value or "text").strip().lower()
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {value!r}")
    return fmt


_METRICS_KEYS = frozenset({"enabled", "host", "port"})


def _metrics_settings(raw: Mapping[str, Any], env: Mapping[str, str]) -> MetricsSettings:
    table = _table(raw, "metrics", _METRICS_KEYS)
    enabled = _typed(table, "enabled", bool, "metrics")
    host = _typed(table, "host", str, "metrics")
    port = _typed(table, "port", int, "metrics")
    if host is not None and port is None:
        raise ConfigError("[metrics] host needs a port: the metrics listener is served only when port is set")
    return MetricsSettings(
        enabled=True if enabled is None else enabled,
        host=(host or DEFAULT_HOST) if port is not None else None,
        port=_port(port) if port is not None else None,
        multiprocess_dir=Path(env["PROMETHEUS_MULTIPROC_DIR"]) if env.get("PROMETHEUS_MULTIPROC_DIR") else None,
    )
