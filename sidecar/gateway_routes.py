"""The AI Gateway account endpoints, at the origin root: ``/v1/generation``, ``/v1/credits``, ``/v1/report``.

Same contract as the Vercel AI Gateway (``@ai-sdk/gateway``'s ``getGenerationInfo``, ``getCredits``,
``getSpendReport``): snake_case bodies, errors as ``{"error": {"message", "type"}}``. Every answer is scoped to the
caller's identity: another bearer's generation id is ``not_found``, exactly like an id that never existed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .auth import BearerAuth, Caller
from .errors import InvalidToken, NotFound, Unauthorized
from .ledger.budget import Budgets
from .ledger.service import Ledger
from .ledger.views import credits_view, generation_view, parse_generation_id, parse_report_query


def authenticate_gateway(auth: BearerAuth, request: Request) -> Caller:
    """The workload bearer, as the AI Gateway routes check it: a failure is the gateway's 401 envelope
    (``authentication_error``), not the pi-native route's ``{"error": "unauthorized"}``."""
    try:
        return auth.authenticate_request(request.headers)
    except Unauthorized:
        raise InvalidToken(
            "Invalid or missing bearer token: send `Authorization: Bearer <workload token>` (the token the "
            "sidecar was started with, or a [[workloads]] token)"
        ) from None


async def generation_lookup(ledger: Ledger, identity: str, params: Mapping[str, str]) -> dict[str, object]:
    """``{"data": <generation view>}`` of the ``id`` in ``params`` among ``identity``'s generations; ``NotFound``
    otherwise (another identity's id is not found, exactly like one that never existed)."""
    generation_id = parse_generation_id(params)
    record = await ledger.get(identity, generation_id)
    if record is None:
        raise NotFound(f"Generation {generation_id} not found")
    return {"data": generation_view(record)}


def gateway_router(
    auth: BearerAuth, ledger: Ledger, budgets: Budgets, respond: Callable[[object], Response]
) -> APIRouter:
    router = APIRouter()

    def authenticate(request: Request) -> Caller:
        return authenticate_gateway(auth, request)

    @router.get("/v1/generation")
    async def generation(request: Request) -> Response:
        caller = authenticate(request)
        return respond(await generation_lookup(ledger, caller.identity, request.query_params))

    @router.get("/v1/credits")
    async def credits(request: Request) -> Response:
        caller = authenticate(request)
        return respond(credits_view(await budgets.credits(caller)))

    @router.get("/v1/report")
    async def report(request: Request) -> Response:
        caller = authenticate(request)
        query = parse_report_query(request.query_params)
        return respond({"results": await ledger.report(caller.identity, query)})

    return router
