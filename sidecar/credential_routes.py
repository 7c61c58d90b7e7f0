"""``GET /v1/credentials/check``: every provider's credential probed now (``sidecar.credential_check``), behind the
workload bearer, in the reference gateway's shape: ``{generatedAt, credentials: [{id, provider, type, ok, …}]}``.

A refused bearer is the pi-native route's ``{"error": "unauthorized"}`` (401), as the reference gateway answers it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .auth import BearerAuth
from .config import Settings
from .credential_check import CredentialStatus, check_credentials
from .credentials import CredentialStore
from .responses import json_response
from .upstream import Upstream


def credential_router(
    settings: Settings, credentials: CredentialStore, auth: BearerAuth, client: Callable[[], Upstream]
) -> APIRouter:
    """``client``: the lifespan's upstream client, looked up per request (it exists only while the app runs)."""
    router = APIRouter()

    @router.get("/v1/credentials/check")
    async def check(request: Request) -> Response:
        auth.authenticate_request(request.headers)
        statuses = await check_credentials(settings, credentials, client())
        rows = Counter(s.provider for s in statuses)  # a key pool has a row per key, each with its own id
        views = [credential_view(s, unique=rows[s.provider] == 1) for s in statuses]
        return json_response({"generatedAt": int(time.time() * 1000), "credentials": views})

    return router


def credential_view(status: CredentialStatus, unique: bool = True) -> dict[str, Any]:
    return {
        "id": status.provider if unique else f"{status.provider}:{status.location}",
        "provider": status.provider,
        "type": status.kind,
        "ok": status.ok,
        "status": status.status,
        "location": status.location,
        "probe": status.probe,
        "reason": status.reason,
        "latencyMs": status.latency_ms,
    }
