"""Realtime in OpenAI's own shape, so an app written for OpenAI's Realtime API changes only its base URL (and where
its server gets the ephemeral key):

``POST /v1/realtime/client_secrets`` (workload bearer; OpenAI's GA body ``{expires_after?, session?}``)
    → ``{"value": "ek_…", "expires_at", "session"}``. The secret is the sidecar's own, never OpenAI's: single-use,
    short-lived, bound to the model, the session config and the minting workload (the ``vcst_`` secrets' stores).
``/v1/realtime?model=…`` (WebSocket): the secret in the ``openai-insecure-api-key.<ek>`` subprotocol (``realtime``
    is selected) or ``Authorization: Bearer`` (the workload bearer works there too, for a server's own socket). OpenAI
    events are relayed both ways untranslated (``dialects.OpenAIDialect``), the minted session config is sent upstream
    first, and each ``response.done`` is a ledger row, with the gateway relay's limits and close codes.
``POST /v1/realtime/calls`` (WebRTC): an SDP offer with the secret → OpenAI's SDP answer. The sidecar posts the offer
    with the stored key and the minted config (OpenAI's multipart call setup); the media then flows between the browser
    and OpenAI. The sidecar opens the call's side-band WebSocket (``?call_id=``) with the stored key to record each
    ``response.done`` in the ledger; what is only in the media (nothing billed is) is not seen.

Refusals are OpenAI's error envelope ``{"error": {"message", "type", "param", "code"}}``: as the HTTP answer of a mint
or a call, as the upgrade's denial response for a socket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import Response
from ulid import ULID

from sidecar.auth import Caller
from sidecar.errors import (
    BadRequest,
    InvalidToken,
    PayloadTooLarge,
    SidecarError,
    TooManySessions,
    Unauthorized,
    UpstreamError,
    UpstreamStatusError,
    map_transport_errors,
)
from sidecar.ingress.common import openai_error_body
from sidecar.registry import Resolved
from sidecar.request import json_object
from sidecar.responses import CORS_HEADERS, json_response
from sidecar.upstream import Upstream

from .dialects import OpenAIDialect
from .routes import MAX_BODY_BYTES, RealtimeGateway
from .session import RealtimeSession
from .tokens import Grant, mint_token

log = logging.getLogger("sidecar.realtime")

SECRET_PREFIX = "ek_"
"""OpenAI's ephemeral keys start so, and its SDKs check it (a browser refuses a key that does not)."""
ROUTE_KIND = "openai-realtime"
"""What an ``ek_`` grant is good for: only this module's socket and calls, never the AI Gateway socket."""
SUBPROTOCOL = "realtime"
KEY_PREFIX = "openai-insecure-api-key."
DEFAULT_MODEL = "gpt-realtime"
MAX_SDP_BYTES = 64 * 1024
CALL_SETUP_TIMEOUT = 30.0


def error(exc: SidecarError) -> Response:
    return json_response(openai_error_body(exc.status, exc.type, exc.message), exc.status, exc.headers or None)


class OpenAIRealtime:
    """The three routes, on the AI Gateway relay's machinery (``RealtimeGateway``: tokens, limits, ledger)."""

    def __init__(self, gateway: RealtimeGateway, client: Any) -> None:
        """``client``: the lifespan's upstream client, looked up per call (it exists only while the app runs)."""
        self.gateway = gateway
        self._client = client
        self.calls: set[asyncio.Task[None]] = set()
        """The WebRTC calls' side-band observers, cancelled at shutdown."""

    # ----- mint -------------------------------------------------------------------------------------------------

    async def mint(self, caller: Caller, body: bytes) -> dict[str, Any]:
        example = '{"session": {"type": "realtime", "model": "gpt-realtime"}}'
        data = json_object(body or b"{}", self.gateway.settings.limits, example)
        ttl = self._ttl(data.get("expires_after"))
        session = data.get("session") or {}
        if not isinstance(session, dict):
            raise BadRequest("`session` must be an object (a realtime session configuration)")
        if session.get("type", "realtime") != "realtime":
            raise BadRequest(
                f"`session.type` {str(session.get('type'))[:40]!r} is not supported by this sidecar: only realtime "
                "sessions (not transcription sessions) are minted"
            )
        model_id = session.get("model", DEFAULT_MODEL)
        if not isinstance(model_id, str) or not model_id:
            raise BadRequest('`session.model` must be a realtime model id such as "gpt-realtime"')
        resolved = self.gateway.resolve(model_id, "session.model")
        self.gateway.policy.check_model(caller, resolved.model)
        await self.gateway.budgets.check(caller, resolved.model)
        config = {key: value for key, value in session.items() if key != "model"}
        config["type"] = "realtime"
        token, key = mint_token(SECRET_PREFIX)
        expires_at = time.time() + ttl
        grant = Grant(resolved.model.full_id, ROUTE_KIND, caller.identity, expires_at, caller.budget_usd, config)
        await self.gateway.tokens.put(key, grant)
        described = {**config, "object": "realtime.session", "id": f"sess_{ULID()}", "model": resolved.model.id}
        return {"value": token, "expires_at": int(expires_at), "session": described}

    def _ttl(self, expires_after: Any) -> float:
        limits = self.gateway.limits
        if expires_after is None:
            return float(limits.default_ttl_seconds)
        if not isinstance(expires_after, dict):
            raise BadRequest('`expires_after` must be {"anchor": "created_at", "seconds": N}')
        if expires_after.get("anchor", "created_at") != "created_at":
            raise BadRequest('`expires_after.anchor` must be "created_at"')
        seconds = expires_after.get("seconds", limits.default_ttl_seconds)
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds <= 0:
            raise BadRequest("`expires_after.seconds` must be a positive number of seconds")
        if seconds > limits.max_ttl_seconds:
            raise BadRequest(
                f"`expires_after.seconds` {seconds:g} is over this sidecar's maximum of {limits.max_ttl_seconds} s "
                "(raise [realtime] max_ttl_seconds to allow it)"
            )
        return float(seconds)

    # ----- redeem -----------------------------------------------------------------------------------------------

    async def admit(self, token: str | None, model_id: str | None) -> tuple[Caller, Resolved, Grant | None]:
        """Who the secret (or bearer) is, the model and the minted grant; every refusal before any upstream call."""
        gateway = self.gateway
        if not token:
            raise InvalidToken(
                f"Missing credentials: offer the subprotocol {KEY_PREFIX}<client secret> or send Authorization: "
                "Bearer <client secret>"
            )
        grant: Grant | None = None
        if token.startswith(SECRET_PREFIX):
            caller, resolved, grant = await gateway.redeem(token, model_id, "model", ROUTE_KIND)
        else:
            try:
                caller = gateway.auth.authenticate(f"Bearer {token}")
            except Unauthorized:
                raise InvalidToken("Invalid client secret or bearer token") from None
            if not model_id:
                raise BadRequest("Missing query parameter model (e.g. ?model=gpt-realtime)")
            resolved = gateway.resolve(model_id, "model")
        await gateway.may_open(caller, resolved)
        return caller, resolved, grant

    def session(
        self, caller: Caller, resolved: Resolved, grant: Grant | None, browser: WebSocket | None
    ) -> RealtimeSession:
        first = [{"type": "session.update", "session": grant.session}] if grant is not None and grant.session else []
        return self.gateway.session(caller, resolved, browser, dialect=OpenAIDialect(), first_events=first)

    async def connect(self, websocket: WebSocket) -> None:
        offered = [p.strip() for p in (websocket.headers.get("sec-websocket-protocol") or "").split(",") if p.strip()]
        token = next((p[len(KEY_PREFIX) :] for p in offered if p.startswith(KEY_PREFIX)), None)
        if token is None:
            authorization = websocket.headers.get("authorization") or ""
            token = authorization[7:].strip() if authorization[:7].lower() == "bearer " else None
        try:
            caller, resolved, grant = await self.admit(token, websocket.query_params.get("model"))
        except SidecarError as exc:
            await deny(websocket, exc)
            return
        async with self.gateway.counted(caller):
            await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
            log.info("realtime session (OpenAI shape) for %s on %s", caller.identity, resolved.model.full_id)
            await self.session(caller, resolved, grant, websocket).run()

    # ----- WebRTC call setup ------------------------------------------------------------------------------------

    async def call(self, request: Request) -> Response:
        authorization = request.headers.get("authorization") or ""
        token = authorization[7:].strip() if authorization[:7].lower() == "bearer " else None
        offer = await request.body()
        if len(offer) > MAX_SDP_BYTES:
            raise PayloadTooLarge(f"The SDP offer is larger than {MAX_SDP_BYTES} bytes")
        media_type = (request.headers.get("content-type") or "").partition(";")[0].strip().lower()
        if media_type != "application/sdp" or not offer.startswith(b"v=0"):
            raise BadRequest(
                "Send the browser's SDP offer (`pc.localDescription.sdp`) with Content-Type: application/sdp"
            )
        caller, resolved, grant = await self.admit(token, request.query_params.get("model"))
        model = resolved.model
        config = {**(grant.session if grant is not None and grant.session else {"type": "realtime"}), "model": model.id}
        key = resolved.credential.value if resolved.credential else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        headers.update(model.headers)
        files = {"sdp": (None, offer, "application/sdp"), "session": (None, orjson.dumps(config), "application/json")}
        client: Upstream = self._client()
        url = model.base_url.rstrip("/") + "/realtime/calls"
        try:
            with map_transport_errors(model.provider):
                answer = await client.http.post(url, headers=headers, files=files, timeout=CALL_SETUP_TIMEOUT)
        except UpstreamError as exc:
            raise UpstreamError(f"upstream {model.provider} call setup failed: {exc.message}", exc.status) from None
        if answer.status_code >= 300:
            raise UpstreamStatusError(answer.status_code, answer.text, None, (key,) if key else ())
        location = answer.headers.get("location") or ""
        call_id = location.rstrip("/").rsplit("/", 1)[-1]
        if call_id:
            observer = asyncio.create_task(self.session(caller, resolved, grant, None).observe(call_id))
            self.calls.add(observer)
            observer.add_done_callback(self.calls.discard)
        log.info("realtime call (WebRTC) for %s on %s: %s", caller.identity, model.full_id, call_id or "no call id")
        # A browser reads the call id from Location (@openai/agents-realtime does): cross-origin, only if exposed.
        response_headers = {**CORS_HEADERS, "access-control-expose-headers": "location"}
        if location:
            response_headers["location"] = location
        return Response(answer.content, 201, headers=response_headers, media_type="application/sdp")

    async def close(self) -> None:
        for task in list(self.calls):
            task.cancel()
        await asyncio.gather(*self.calls, return_exceptions=True)


async def deny(websocket: WebSocket, exc: SidecarError) -> None:
    if isinstance(exc, TooManySessions):
        log.info("realtime upgrade refused: %s", exc.type)
    try:
        await websocket.send_denial_response(error(exc))
    except RuntimeError:  # the server has no denial-response extension: a plain close (HTTP 403)
        await websocket.close(1008, exc.message[:120])


def openai_mint_router(realtime: OpenAIRealtime) -> APIRouter:
    """The mint: the private listener only (an app's server calls it with the workload bearer)."""
    router = APIRouter()

    @router.post("/v1/realtime/client_secrets")
    async def client_secrets(request: Request) -> Response:
        try:
            caller = realtime.gateway.auth.authenticate_request(request.headers)
            body = await request.body()
            if len(body) > MAX_BODY_BYTES:
                raise PayloadTooLarge(f"Request body is larger than the {MAX_BODY_BYTES}-byte limit of a mint")
            return json_response(await realtime.mint(caller, body))
        except SidecarError as exc:
            return error(_as_openai(exc))

    return router


def openai_browser_router(realtime: OpenAIRealtime) -> APIRouter:
    """What a browser reaches with a secret: the socket and the WebRTC call setup (also on the public listener)."""
    router = APIRouter()

    @router.post("/v1/realtime/calls")
    async def calls(request: Request) -> Response:
        try:
            return await realtime.call(request)
        except SidecarError as exc:
            return error(_as_openai(exc))

    @router.websocket("/v1/realtime")
    async def socket(websocket: WebSocket) -> None:
        await realtime.connect(websocket)

    return router


def _as_openai(exc: SidecarError) -> SidecarError:
    """A bad bearer is OpenAI's 401 ``invalid_api_key``, as its SDKs expect it."""
    if isinstance(exc, Unauthorized):
        return InvalidToken("Invalid or missing bearer token: send Authorization: Bearer <workload token>")
    return exc
