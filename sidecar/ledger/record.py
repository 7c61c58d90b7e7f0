"""One ledger row: what a generation cost and how it went. Never prompt or completion text, never a credential.

``Attribution`` comes from the request (``options.metadata`` / ``options.requestMetadata`` on the pi-native route,
``providerOptions.gateway`` on realtime) and is validated once, before the upstream call, so a bad value is a 400
rather than a silently missing report row.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from sidecar.errors import BadRequest
from sidecar.identifiers import check_text

if TYPE_CHECKING:
    from sidecar.models import ModelSpec
    from sidecar.stream import Outcome

CredentialType = Literal["system", "byok"]
"""``system``: a key the sidecar holds (its config, secrets dir, env or keyring). ``byok``: a request-scoped key."""

MAX_TAGS = 32
MAX_TAG_LENGTH = 128
MAX_ID_LENGTH = 256


@dataclass(frozen=True, slots=True)
class Attribution:
    user: str | None = None
    tags: tuple[str, ...] = ()
    quota_entity_id: str | None = None

    @classmethod
    def from_pi_options(cls, options: Mapping[str, Any]) -> Attribution:
        """``options.requestMetadata`` wins over ``options.metadata``; ``user_id`` (Anthropic's key) is a ``user``."""
        merged: dict[str, Any] = {}
        for name in ("metadata", "requestMetadata"):
            source = options.get(name)
            if isinstance(source, Mapping):
                if "user_id" in source and "user" not in source:
                    merged["user"] = (f"options.{name}.user_id", source["user_id"])
                for key in ("user", "tags", "quotaEntityId"):
                    if key in source:
                        merged[key] = (f"options.{name}.{key}", source[key])
        return cls.parse(merged)

    @classmethod
    def from_gateway_options(cls, options: Mapping[str, Any], where: str) -> Attribution:
        return cls.parse({k: (f"{where}.{k}", options[k]) for k in ("user", "tags", "quotaEntityId") if k in options})

    @classmethod
    def parse(cls, values: Mapping[str, tuple[str, Any]]) -> Attribution:
        """``values`` maps ``user``/``tags``/``quotaEntityId`` to ``(field path for messages, value)``."""
        user = _identifier(*values["user"]) if "user" in values else None
        quota = _identifier(*values["quotaEntityId"]) if "quotaEntityId" in values else None
        tags: tuple[str, ...] = ()
        if "tags" in values:
            path, raw = values["tags"]
            if raw is None:
                raw = []
            if isinstance(raw, str):  # a single tag, as some callers send it
                raw = [raw]
            if not isinstance(raw, list) or not all(isinstance(t, str) and t for t in raw):
                raise BadRequest(f"`{path}` must be an array of non-empty strings")
            if len(raw) > MAX_TAGS:
                raise BadRequest(f"`{path}` has {len(raw)} tags; at most {MAX_TAGS} are allowed")
            for tag in raw:
                if len(tag) > MAX_TAG_LENGTH:
                    raise BadRequest(f"`{path}` has a tag longer than {MAX_TAG_LENGTH} characters")
                check_text(tag, path, MAX_TAG_LENGTH)
            tags = tuple(dict.fromkeys(raw))  # de-duplicated, order kept
        return cls(user=user, tags=tags, quota_entity_id=quota)


def _identifier(path: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise BadRequest(f"`{path}` must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise BadRequest(f"`{path}` is longer than {MAX_ID_LENGTH} characters")
    return check_text(value, path, MAX_ID_LENGTH)


@dataclass(slots=True)
class GenerationRecord:
    """A row of the ``generations`` table. Field order is the column order (see ``store.COLUMNS``)."""

    id: str
    created_at_ms: int
    identity: str
    model: str
    """``provider/id`` as served."""
    provider: str
    api: str
    streamed: bool
    finish_reason: str = "stop"
    """pi's ``stopReason``: stop | length | toolUse | error | aborted."""
    ttft_ms: float | None = None
    generation_ms: float = 0.0
    input_tokens: int = 0
    """Non-cached input tokens (pi's ``usage.input``)."""
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_input: float = 0.0
    cost_output: float = 0.0
    cost_cache_read: float = 0.0
    cost_cache_write: float = 0.0
    cost_total: float = 0.0
    credential_type: CredentialType = "system"
    credential_source: str | None = None
    """Where the key came from (``env:OPENAI_API_KEY``, ``secrets-dir``…): a location, never the value."""
    user: str | None = None
    tags: tuple[str, ...] = field(default=())
    quota_entity_id: str | None = None
    upstream_response_id: str | None = None
    upstream_model: str | None = None
    error_type: str | None = None
    error_status: int | None = None

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.created_at_ms / 1000, UTC)

    @property
    def day(self) -> str:
        # time.strftime on a struct: a few times cheaper than a datetime, and read for every generation recorded.
        return time.strftime("%Y-%m-%d", time.gmtime(self.created_at_ms // 1000))

    @property
    def hour(self) -> str:
        return time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(self.created_at_ms // 1000))

    @property
    def status(self) -> int:
        """The HTTP status the generation ended with: the provider's error status, 499 for aborted, else 200 (as the
        metrics label it, and as ``store.GROUP_COLUMNS["status"]`` computes it in SQL)."""
        return self.error_status or (499 if self.finish_reason == "aborted" else 200)

    @property
    def prompt_tokens(self) -> int:
        """All input tokens, cached ones included (the AI SDK's ``inputTokens.total``)."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def record_from_outcome(
    *,
    generation_id: str,
    created_at_ms: int,
    identity: str,
    model: ModelSpec,
    streamed: bool,
    credential_source: str | None,
    attribution: Attribution,
    outcome: Outcome,
) -> GenerationRecord:
    usage = outcome.message["usage"]
    cost = usage["cost"]
    return GenerationRecord(
        id=generation_id,
        created_at_ms=created_at_ms,
        identity=identity,
        model=model.full_id,
        provider=model.provider,
        api=model.api,
        streamed=streamed,
        finish_reason=outcome.reason,
        ttft_ms=outcome.ttft_ms,
        generation_ms=outcome.duration_ms,
        input_tokens=usage["input"],
        output_tokens=usage["output"],
        cache_read_tokens=usage["cacheRead"],
        cache_write_tokens=usage["cacheWrite"],
        reasoning_tokens=usage.get("reasoningTokens", 0),
        cost_input=cost["input"],
        cost_output=cost["output"],
        cost_cache_read=cost["cacheRead"],
        cost_cache_write=cost["cacheWrite"],
        cost_total=cost["total"],
        credential_type="system",  # the sidecar only ever uses keys it holds; agents carry no provider credentials
        credential_source=credential_source,
        user=attribution.user,
        tags=attribution.tags,
        quota_entity_id=attribution.quota_entity_id,
        upstream_response_id=outcome.message.get("responseId"),
        upstream_model=outcome.upstream_model,
        error_type=outcome.error_type,
        error_status=outcome.error_status,
    )
