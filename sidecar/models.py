"""What can be served: providers, models, prices and vendor quirks, loaded from data (``catalog.toml`` + config).

A ``ModelSpec`` is everything an adapter needs to know about the upstream besides the credential: wire API, base URL,
pricing and ``compat`` flags (vendor quirks as data, never ``if provider == ...`` in an adapter).

A model's price comes from, first to last: its ``[models."provider/id"] cost`` in the config file, its row in
``catalog.toml``, the genai-prices database (``ProviderSpec.genai_prices``, see ``pricing``), the provider's
``default_cost``. With none of them it is unpriced (``pricing=None``), which the budget check refuses to callers
with a budget unless ``[budget] allow_unpriced`` is set.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any

from .errors import ConfigError

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def refuse_unknown_keys(table: Mapping[str, Any], known: Collection[str], where: str) -> None:
    """Stop at a key the table ``where`` (``[server]``, ``[providers.vllm]`` …) has no use for: a misspelt setting
    would otherwise be ignored in silence and its default used instead."""
    for key in table:
        if key not in known:
            raise ConfigError(f"`{where} {key}` is not a setting; {closest(key, known, f'the {where} settings are')}")


def closest(name: str, known: Collection[str], listing: str, shown: Callable[[str], str] = str) -> str:
    """``did you mean `…`?`` with the known name nearest to a misspelt one, else ``listing`` and every known name."""
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if match:
        return f"did you mean `{shown(match[0])}`?"
    return f"{listing}: {', '.join(shown(k) for k in sorted(known))}"


_PRICE_KEYS = frozenset({"input", "output", "cacheRead", "cacheWrite", "cache_read", "cache_write"})


@dataclass(frozen=True, slots=True)
class Pricing:
    """USD per 1M tokens."""

    input: float
    output: float
    cache_read: float = 0.0
    cache_write: float = 0.0

    @classmethod
    def parse(cls, raw: Any, where: str) -> Pricing:
        if isinstance(raw, list | tuple) and 2 <= len(raw) <= 4 and all(isinstance(x, int | float) for x in raw):
            return cls(*(float(x) for x in raw))
        if isinstance(raw, Mapping) and raw.keys() <= _PRICE_KEYS:  # a misspelt rate must not price as 0
            try:
                return cls(
                    input=float(raw["input"]),
                    output=float(raw["output"]),
                    cache_read=float(raw.get("cacheRead", raw.get("cache_read", 0.0))),
                    cache_write=float(raw.get("cacheWrite", raw.get("cache_write", 0.0))),
                )
            except (KeyError, TypeError, ValueError):
                pass
        raise ConfigError(
            f"{where}: cost must be [input, output, cacheRead, cacheWrite] or "
            "{input=…, output=…, cacheRead=…, cacheWrite=…} in USD per 1M tokens"
        )


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """A provider as the catalog and config describe it."""

    id: str
    api: str
    base_url: str
    env_keys: tuple[str, ...] = ()
    """Standard env vars holding its key, in order (e.g. ``GEMINI_API_KEY`` then ``GOOGLE_API_KEY``)."""
    base_url_env: str | None = None
    needs_credential: bool = True
    compat: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    default_model: str | None = None
    genai_prices: str | None = None
    """The provider's id in the genai-prices database (``x-ai`` for ``xai``): models without a catalog row are priced
    from it. ``None``: not looked up there."""
    default_pricing: Pricing | None = None
    """``default_cost``: the price of every model of this provider that has no other (``[0, 0]`` for a local server)."""
    credential: str = "key"
    """What kind of credential it takes: ``key`` (an API key, ``sidecar.credentials``) or a cloud's credential chain
    (``google``, ``aws``: ``sidecar.cloud.RESOLVERS``). A configured location (``env:``/``file:``) still wins."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    provider: str
    id: str
    api: str
    base_url: str
    name: str = ""
    pricing: Pricing | None = None
    """``None``: no known price (see the module docstring); served at cost 0, and refused to budgeted callers."""
    context_window: int | None = None
    max_tokens: int | None = None
    reasoning: bool = False
    input: tuple[str, ...] = ("text",)
    compat: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    audio_pricing: Pricing | None = None
    """Realtime models: audio token rates (input, output, cacheRead); ``pricing`` then holds the text rates."""
    fallbacks: tuple[str, ...] = ()
    """Models that serve a request for this one when it fails before its first byte (``sidecar.failover``)."""

    @property
    def full_id(self) -> str:
        return f"{self.provider}/{self.id}"


@dataclass(frozen=True, slots=True)
class CatalogModel:
    """A catalog row before its provider's base URL and compat flags are merged in."""

    provider: str
    id: str
    name: str
    pricing: Pricing | None
    context_window: int | None
    max_tokens: int | None
    reasoning: bool
    input: tuple[str, ...]
    compat: Mapping[str, Any]
    api: str | None = None
    audio_pricing: Pricing | None = None
    fallbacks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Catalog:
    providers: Mapping[str, ProviderSpec]
    models: Mapping[str, CatalogModel]
    """Keyed by ``provider/id``, in catalog order."""


def load_builtin_catalog() -> dict[str, Any]:
    """The raw TOML of the catalog shipped with the package."""
    text = resources.files("sidecar").joinpath("catalog.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


PROVIDER_KEYS = frozenset(
    {
        "api",
        "base_url",
        "env_keys",
        "base_url_env",
        "needs_credential",
        "compat",  # vendor data, free-form: its keys are not checked
        "headers",
        "default_model",
        "credential",  # a kind (read here) or one or more locations (env:NAME …, read by sidecar.config)
        "genai_prices",
        "default_cost",
    }
)
"""What a ``[providers.<id>]`` table may set, in ``catalog.toml`` and in a config file."""
MODEL_KEYS = frozenset(
    {"cost", "audio_cost", "name", "context_window", "max_tokens", "reasoning", "input", "compat", "api", "fallbacks"}
)
"""What a ``[models."provider/id"]`` row may set."""


def build_catalog(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Catalog:
    """Merge the built-in catalog with the ``[providers]``/``[models]`` tables of a config file."""
    providers_raw: dict[str, dict[str, Any]] = {k: dict(v) for k, v in raw.get("providers", {}).items()}
    models_raw: dict[str, dict[str, Any]] = {k: dict(v) for k, v in raw.get("models", {}).items()}
    if overrides:
        for pid, table in overrides.get("providers", {}).items():
            if not isinstance(table, Mapping):
                raise ConfigError(f"[providers.{pid}] must be a table")
            merged = providers_raw.setdefault(pid, {})
            for key, value in table.items():
                if key == "credential" and (isinstance(value, list) or isinstance(value, str) and ":" in value):
                    continue  # a location (env:NAME, file:PATH …): sidecar.config keeps it; the kind stays
                if key == "compat" and isinstance(value, Mapping):
                    merged["compat"] = {**merged.get("compat", {}), **value}
                else:
                    merged[key] = value
        for mid, table in overrides.get("models", {}).items():
            if not isinstance(table, Mapping):
                raise ConfigError(f'[models."{mid}"] must be a table')
            models_raw[mid] = {**models_raw.get(mid, {}), **table}

    providers: dict[str, ProviderSpec] = {}
    for pid, p in providers_raw.items():
        refuse_unknown_keys(p, PROVIDER_KEYS, f"[providers.{pid}]")
        api, base_url = p.get("api"), p.get("base_url")
        if not isinstance(api, str) or not isinstance(base_url, str):
            raise ConfigError(f"[providers.{pid}] needs string `api` and `base_url`")
        env_keys = p.get("env_keys", [])
        genai_prices = p.get("genai_prices")
        if genai_prices is not None and not isinstance(genai_prices, str):
            raise ConfigError(f'[providers.{pid}] genai_prices must be a provider id like "openai" ("" for none)')
        default_pricing = (
            Pricing.parse(p["default_cost"], f"[providers.{pid}] default_cost") if "default_cost" in p else None
        )
        providers[pid] = ProviderSpec(
            id=pid,
            api=api,
            base_url=base_url.rstrip("/"),
            env_keys=tuple(env_keys),
            base_url_env=p.get("base_url_env"),
            needs_credential=bool(p.get("needs_credential", True)),
            compat=MappingProxyType(dict(p.get("compat", {}))),
            headers=MappingProxyType({str(k): str(v) for k, v in p.get("headers", {}).items()}),
            default_model=p.get("default_model"),
            genai_prices=genai_prices or None,
            default_pricing=default_pricing,
            credential=str(p.get("credential", "key")),
        )

    models: dict[str, CatalogModel] = {}
    for full_id, m in models_raw.items():
        refuse_unknown_keys(m, MODEL_KEYS, f'[models."{full_id}"]')
        provider, sep, model_id = full_id.partition("/")
        if not sep or not model_id:
            raise ConfigError(f'[models."{full_id}"]: model keys are "provider/model-id"')
        if provider not in providers:
            raise ConfigError(
                f'[models."{full_id}"]: unknown provider {provider!r}; add a [providers.{provider}] table'
            )
        pricing = Pricing.parse(m["cost"], f'[models."{full_id}"]') if "cost" in m else None
        audio = Pricing.parse(m["audio_cost"], f'[models."{full_id}"] audio_cost') if "audio_cost" in m else None
        models[full_id] = CatalogModel(
            provider=provider,
            id=model_id,
            name=str(m.get("name", model_id)),
            pricing=pricing,
            context_window=m.get("context_window"),
            max_tokens=m.get("max_tokens"),
            reasoning=bool(m.get("reasoning", False)),
            input=tuple(m.get("input", ["text"])),
            compat=MappingProxyType(dict(m.get("compat", {}))),
            api=m.get("api"),
            audio_pricing=audio,
            fallbacks=_fallbacks(m.get("fallbacks", []), full_id),
        )
    return Catalog(providers=MappingProxyType(providers), models=MappingProxyType(models))


def _fallbacks(value: Any, full_id: str) -> tuple[str, ...]:
    where = f'[models."{full_id}"] fallbacks'
    if not isinstance(value, list) or not all(isinstance(v, str) and "/" in v for v in value):
        raise ConfigError(f'{where} must be a list of "provider/model" ids, e.g. ["openai/gpt-4o"]')
    if full_id in value:
        raise ConfigError(f"{where} names the model itself")
    return tuple(dict.fromkeys(value))


def model_spec(provider: ProviderSpec, model_id: str, row: CatalogModel | None, base_url: str) -> ModelSpec:
    """The servable spec for ``provider/model_id``; ``row`` is its catalog entry if it has one."""
    if row is None:
        return ModelSpec(
            provider=provider.id,
            id=model_id,
            api=provider.api,
            base_url=base_url,
            name=model_id,
            compat=provider.compat,
            headers=provider.headers,
        )
    return ModelSpec(
        provider=provider.id,
        id=model_id,
        api=row.api or provider.api,
        base_url=base_url,
        name=row.name,
        pricing=row.pricing,
        context_window=row.context_window,
        max_tokens=row.max_tokens,
        reasoning=row.reasoning,
        input=row.input,
        compat=MappingProxyType({**provider.compat, **row.compat}) if row.compat else provider.compat,
        headers=provider.headers,
        audio_pricing=row.audio_pricing,
        fallbacks=row.fallbacks,
    )
