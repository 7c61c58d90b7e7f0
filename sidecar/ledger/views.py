"""Ledger data in the AI Gateway's wire shapes (``../shared/docs/ai-gateway-protocol.md`` §3), and query parsing.

Token fields follow the AI SDK's conventions: ``native_tokens_prompt`` / ``input_tokens`` count every input token,
cached ones included; ``native_tokens_cached`` and ``native_tokens_cache_creation`` are the cached subsets;
``native_tokens_reasoning`` is the reasoning subset of the completion tokens.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from typing import Any

from sidecar.errors import BadRequest

from .budget import Credits
from .record import GenerationRecord
from .store import ReportQuery

# pi's stopReason → the AI SDK's unified finish reasons.
FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "toolUse": "tool-calls",
    "error": "error",
    "aborted": "interrupted",
}
GROUP_BY = ("day", "user", "model", "tag", "provider", "credential_type")
DATE_PARTS = ("day", "hour")
CREDENTIAL_TYPES = ("byok", "system")
MAX_REPORT_DAYS = 366
_GENERATION_ID = re.compile(r"^gen_[0-9A-HJKMNP-TV-Z]{26}$")


def generation_view(record: GenerationRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "total_cost": record.cost_total,
        "market_cost": record.cost_total,
        "surcharge_cost": 0.0,
        "gateway_cost": 0.0,
        "upstream_inference_cost": record.cost_total,
        "usage": record.cost_total,
        "created_at": record.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "model": record.model,
        "is_byok": record.credential_type == "byok",
        "provider_name": record.provider,
        "streamed": record.streamed,
        "finish_reason": FINISH_REASONS.get(record.finish_reason, "other"),
        "latency": round(record.ttft_ms, 3) if record.ttft_ms is not None else 0,
        "generation_time": round(record.generation_ms, 3),
        "native_tokens_prompt": record.prompt_tokens,
        "native_tokens_completion": record.output_tokens,
        "native_tokens_reasoning": record.reasoning_tokens,
        "native_tokens_cached": record.cache_read_tokens,
        "native_tokens_cache_creation": record.cache_write_tokens,
        "billable_web_search_calls": 0,
        # Beyond the documented schema (the client ignores extra keys): what an operator looks for first.
        "api": record.api,
        "upstream_model": record.upstream_model,
        "upstream_response_id": record.upstream_response_id,
        "user": record.user,
        "tags": list(record.tags),
        "quota_entity_id": record.quota_entity_id,
        "credential_type": record.credential_type,
        "credential_source": record.credential_source,  # where the key came from (a key pool's member): never it
        "error_type": record.error_type,
        "error_status": record.error_status,
    }


def usd(amount: float) -> str:
    """Dollars as the gateway prints them: at least two decimals, up to eight so a fraction of a cent shows."""
    text = f"{amount:.8f}".rstrip("0")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


def credits_view(credits: Credits) -> dict[str, str]:
    # No budget: an unlimited balance. "Infinity" is what JavaScript's Number() and Python's float() read as ∞.
    balance = "Infinity" if credits.balance is None else usd(credits.balance)
    return {"balance": balance, "total_used": usd(credits.used)}


def parse_generation_id(params: Mapping[str, str], name: str = "id") -> str:
    generation_id = params.get(name, "").strip()
    if not generation_id:
        raise BadRequest(f"Missing query parameter `{name}` (a generation id such as gen_01J…, from x-generation-id)")
    if not _GENERATION_ID.match(generation_id):
        raise BadRequest(
            f"`{name}` must be a generation id: gen_ followed by a 26-character ULID, got {generation_id!r}"
        )
    return generation_id


def parse_report_query(params: Mapping[str, str]) -> ReportQuery:
    start = _day(params, "start_date")
    end = _day(params, "end_date")
    if end < start:
        raise BadRequest(f"end_date ({end}) is before start_date ({start})")
    if (end - start).days >= MAX_REPORT_DAYS:
        raise BadRequest(f"the report covers at most {MAX_REPORT_DAYS} days; narrow start_date..end_date")
    group_by = _choice(params, "group_by", GROUP_BY, "day")
    date_part = _choice(params, "date_part", DATE_PARTS, "day")
    credential_type = params.get("credential_type") or None
    if credential_type is not None and credential_type not in CREDENTIAL_TYPES:
        raise BadRequest(f"credential_type must be one of {', '.join(CREDENTIAL_TYPES)}, got {credential_type!r}")
    tags = tuple(t.strip() for t in params.get("tags", "").split(",") if t.strip())
    return ReportQuery(
        start_day=start.isoformat(),
        end_day=end.isoformat(),
        group_by=group_by,
        date_part=date_part,
        user=params.get("user_id") or None,
        model=params.get("model") or None,
        provider=params.get("provider") or None,
        credential_type=credential_type,
        tags=tags,
    )


def _day(params: Mapping[str, str], name: str) -> date:
    value = params.get(name)
    if not value:
        raise BadRequest(f"Missing query parameter `{name}` (YYYY-MM-DD, UTC, inclusive)")
    try:
        if len(value) != 10:
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"`{name}` must be a date as YYYY-MM-DD, got {value!r}") from None


def _choice(params: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = params.get(name) or default
    if value not in allowed:
        raise BadRequest(f"`{name}` must be one of {', '.join(allowed)}, got {value!r}")
    return value
