"""The realtime routes: the client-secret mint (origin root) and the WebSocket that redeems it (any base path).

``POST /v1/realtime/client-secrets`` (workload bearer) → ``{"token": "vcst_…", "expiresAt": <epoch s>}``.
``<base>/realtime-model?ai-model-id=<provider/id>``: a WebSocket authenticated by the ``ai-gateway-auth.<token>``
subprotocol (browsers) or ``Authorization: Bearer`` (server-owned connections; the workload bearer works there too).
Every refusal happens at the upgrade, before any upstream connection: an HTTP error response with the usual JSON
envelope (a browser sees only that the socket failed to open).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import Response

from sidecar.auth import BearerAuth, Caller
from sidecar.config import Settings
from sidecar.errors import (
    BadRequest,
    BudgetExceeded,
    FailedDependency,
    Forbidden,
    InvalidToken,
    MissingCredential,
    ModelNotFound,
    PayloadTooLarge,
    SidecarError,
    TooManySessions,
    Unauthorized,
    UnknownModel,
)
from sidecar.gateway_routes import authenticate_gateway
from sidecar.identifiers import check_model_id, shown
from sidecar.ledger.budget import Budgets
from sidecar.ledger.service import Ledger
from sidecar.metrics import Metrics
from sidecar.policy import Policy, unrestricted
from sidecar.registry import ModelRegistry, Resolved
from sidecar.request import json_object

from .session import RealtimeSession
from .tokens import TOKEN_PREFIX, Grant, TokenStore, mint_token, token_hash

log = logging.getLogger("sidecar.realtime")

REALTIME_SUBPROTOCOL = "ai-gateway-realtime.v1"
AUTH_PREFIX = "ai-gateway-auth."
TEAM_PREFIX = "ai-gateway-team."
REALTIME_API = "openai-realtime"
MAX_BODY_BYTES = 64 * 1024


def parse_protocols(header: str | None) -> tuple[list[str], str | None, str | None]:
    """(offered subprotocols, auth token, team) from ``Sec-WebSocket-Protocol``, as @ai-sdk/gateway decodes them."""
    offered = [p.strip() for p in (header or "").split(",") if p.strip()]
    token = next((p[len(AUTH_PREFIX) :] for p in offered if p.startswith(AUTH_PREFIX)), None) or None
    encoded = next((p[len(TEAM_PREFIX) :] for p in offered if p.startswith(TEAM_PREFIX)), None)
    team = None
    if encoded:
        try:
            padded = encoded.replace("-", "+").replace("_", "/") + "=" * (-len(encoded) % 4)
            team = base64.b64decode(padded, validate=True).decode() or None
        except (binascii.Error, UnicodeDecodeError):
            team = None
    return offered, token, team


class RealtimeGateway:
    """Mint and redeem; shared by the private app and the optional public listener."""

    def __init__(
        self,
        settings: Settings,
        auth: BearerAuth,
        registry: ModelRegistry,
        tokens: TokenStore,
        ledger: Ledger,
        budgets: Budgets,
        metrics: Metrics | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.settings = settings
        self.limits = settings.realtime
        self.auth = auth
        self.registry = registry
        self.tokens = tokens
        self.ledger = ledger
        self.budgets = budgets
        self.metrics = metrics
        self.policy = policy or unrestricted()
        self.sessions: dict[str, int] = {}
        self.connector: Callable[..., Any] | None = None  # tests may swap the upstream WebSocket connector

    # ----- mint -------------------------------------------------------------------------------------------------

    async def mint(self, caller: Caller, body: bytes) -> dict[str, Any]:
        example = '{"model": "openai/gpt-realtime", "expiresIn"?: seconds}'
        data = json_object(body or b"{}", self.settings.limits, example)
        model_id = data.get("model")
        if not isinstance(model_id, str) or not model_id:
            raise BadRequest('`model` is required: a realtime model id such as "openai/gpt-realtime"')
        route_kind = data.get("routeKind") or "realtime"
        if route_kind != "realtime":
            raise BadRequest(f"routeKind {shown(str(route_kind))} is not supported by this sidecar (only realtime)")
        ttl = data.get("expiresIn", self.limits.default_ttl_seconds)
        if ttl is None:
            ttl = self.limits.default_ttl_seconds
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or ttl <= 0:
            raise BadRequest("`expiresIn` must be a positive number of seconds")
        if ttl > self.limits.max_ttl_seconds:
            raise BadRequest(
                f"`expiresIn` {ttl:g} s is over this sidecar's maximum of {self.limits.max_ttl_seconds} s "
                "(raise [realtime] max_ttl_seconds to allow it)"
            )
        resolved = self.resolve(model_id, "model")
        self.policy.check_model(caller, resolved.model)  # 403 model_not_allowed, before any secret exists
        await self.budgets.check(caller, resolved.model)
        token, key = mint_token()
        expires_at = time.time() + float(ttl)
        await self.tokens.put(
            key, Grant(resolved.model.full_id, route_kind, caller.identity, expires_at, caller.budget_usd)
        )
        return {"token": token, "expiresAt": int(expires_at)}

    def resolve(self, model_id: str, where: str) -> Resolved:
        check_model_id(model_id, where, self.settings.limits.max_identifier_chars)
        if "/" in model_id and model_id not in self.settings.catalog.models:
            # Realtime models must be catalog rows (api openai-realtime): no uncatalogued fallback, and no warning
            # from the registry about serving one at cost 0.
            raise ModelNotFound(
                f"Unknown realtime model: {model_id}. Realtime models are catalog rows with api = "
                f'"openai-realtime" (add [models."{model_id}"] to the config to serve it)'
            )
        try:
            resolved = self.registry.resolve(model_id)
        except UnknownModel:
            raise ModelNotFound(
                f"Unknown realtime model: {model_id}. GET /v1/models lists the models (api openai-realtime)."
            ) from None
        except MissingCredential as exc:
            raise FailedDependency(exc.message) from None
        if resolved.model.api != REALTIME_API:
            raise BadRequest(
                f"{resolved.model.full_id} is not a realtime model (its API is {resolved.model.api}); use a model "
                "whose api is openai-realtime, e.g. openai/gpt-realtime"
            )
        return resolved

    # ----- redeem -----------------------------------------------------------------------------------------------

    async def connect(self, websocket: WebSocket) -> None:
        offered, token, team = parse_protocols(websocket.headers.get("sec-websocket-protocol"))
        if token is None:
            authorization = websocket.headers.get("authorization") or ""
            token = authorization[7:].strip() if authorization[:7].lower() == "bearer " else None
        try:
            caller, resolved = await self._admit(websocket, token)
        except SidecarError as exc:
            await deny(websocket, exc)
            return
        async with self.counted(caller):
            await websocket.accept(subprotocol=REALTIME_SUBPROTOCOL if REALTIME_SUBPROTOCOL in offered else None)
            log.info(
                "realtime session for %s on %s%s",
                caller.identity,
                resolved.model.full_id,
                f" team={shown(team)}" if team else "",
            )
            await self.session(caller, resolved, websocket).run()

    def session(self, caller: Caller, resolved: Resolved, browser: WebSocket | None, **dialect: Any) -> RealtimeSession:
        """A relay session of ``caller`` on ``resolved`` with the stored key; ``dialect``: the browser's dialect and
        first events (``sidecar.realtime.openai``), the AI Gateway's by default."""
        session = RealtimeSession(
            browser=browser,
            model=resolved.model,
            api_key=resolved.credential.value if resolved.credential else None,
            credential_source=resolved.credential.source if resolved.credential else None,
            caller=caller,
            ledger=self.ledger,
            budgets=self.budgets,
            limits=self.limits,
            proxy=self.settings.upstream_proxy,
            metrics=self.metrics,
            **dialect,
        )
        if self.connector is not None:
            session.connector = self.connector
        return session

    @contextlib.asynccontextmanager
    async def counted(self, caller: Caller) -> AsyncIterator[None]:
        """An open session of ``caller``, for ``max_sessions_per_bearer`` and the metrics."""
        identity = caller.identity
        self.sessions[identity] = self.sessions.get(identity, 0) + 1
        try:
            yield
        finally:
            self.sessions[identity] -= 1
            if not self.sessions[identity]:
                del self.sessions[identity]

    async def _admit(self, websocket: WebSocket, token: str | None) -> tuple[Caller, Resolved]:
        if not token:
            raise InvalidToken(
                "Missing credentials: offer the subprotocol ai-gateway-auth.<client secret> or send "
                "Authorization: Bearer <token>"
            )
        model_id = websocket.query_params.get("ai-model-id")
        if not model_id:
            raise BadRequest("Missing query parameter ai-model-id (e.g. ?ai-model-id=openai%2Fgpt-realtime)")
        if token.startswith(TOKEN_PREFIX):
            caller, resolved, _ = await self.redeem(token, model_id, "ai-model-id", "realtime")
        else:
            try:
                caller = self.auth.authenticate(f"Bearer {token}")
            except Unauthorized:
                raise InvalidToken("Invalid client secret or bearer token") from None
            resolved = self.resolve(model_id, "ai-model-id")
        await self.may_open(caller, resolved)
        return caller, resolved

    async def redeem(
        self, token: str, model_id: str | None, where: str, route_kind: str
    ) -> tuple[Caller, Resolved, Grant]:
        """A client secret, consumed first whatever follows (good for one attempt): the minting caller, the model it
        is bound to (``model_id`` must be that one, if given) and the grant. ``route_kind``: the contract it was
        minted for (``realtime``: the AI Gateway's ``vcst_``; OpenAI's ``ek_`` have their own)."""
        grant = await self.tokens.consume(token_hash(token))
        if grant is None or grant.route_kind != route_kind:
            raise InvalidToken("The client secret is unknown, expired or already used: mint a new one")
        resolved = self.resolve(model_id or grant.model, where)
        if resolved.model.full_id != grant.model:
            raise Forbidden(f"The client secret was minted for {grant.model}, not {resolved.model.full_id}")
        return Caller(grant.identity, grant.budget_usd), resolved, grant

    async def may_open(self, caller: Caller, resolved: Resolved) -> None:
        """The checks of every session before its upstream connection: the caller's open sessions, its allowed
        models (a bearer may open a socket without a mint) and its budget."""
        if self.sessions.get(caller.identity, 0) >= self.limits.max_sessions_per_bearer:
            raise TooManySessions(
                f"{caller.identity} already has {self.limits.max_sessions_per_bearer} realtime sessions open "
                "(raise [realtime] max_sessions_per_bearer)"
            )
        self.policy.check_model(caller, resolved.model)
        await self.budgets.check(caller, resolved.model)


async def deny(websocket: WebSocket, exc: SidecarError) -> None:
    body = {"error": {"type": exc.type, "message": exc.message}}
    if isinstance(exc, BudgetExceeded | TooManySessions):
        log.info("realtime upgrade refused: %s", exc.type)
    response = Response(orjson.dumps(body), exc.status, media_type="application/json")
    try:
        await websocket.send_denial_response(response)
    except RuntimeError:  # the server has no denial-response extension: a plain close (HTTP 403)
        await websocket.close(1008, exc.message[:120])


def realtime_router(gateway: RealtimeGateway, respond: Callable[[object], Response]) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/realtime/client-secrets")
    async def client_secrets(request: Request) -> Response:
        caller = authenticate_gateway(gateway.auth, request)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise PayloadTooLarge(
                f"Request body is larger than the {MAX_BODY_BYTES}-byte limit of a client-secret mint"
            )
        return respond(await gateway.mint(caller, body))

    return router


def realtime_socket_router(gateway: RealtimeGateway) -> APIRouter:
    router = APIRouter()

    @router.websocket("/realtime-model")
    async def at_root(websocket: WebSocket) -> None:
        await gateway.connect(websocket)

    @router.websocket("/{base:path}/realtime-model")
    async def under_base(websocket: WebSocket, base: str) -> None:
        await gateway.connect(websocket)

    return router
