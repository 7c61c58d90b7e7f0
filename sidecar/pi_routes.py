"""``POST /v1/pi/stream``: the pi-native route (protocol §2). Thin: the work is ``GenerationService.serve``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .errors import SidecarError
from .ingress.pi import FORMAT
from .serving import GenerationService


def pi_router(service: GenerationService) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/pi/stream")
    async def pi_stream(request: Request) -> Response:
        try:
            caller, ingress = await service.read_request(request, FORMAT)
            return await service.serve(request, FORMAT, caller, ingress)
        except SidecarError as exc:
            return service.error(FORMAT, exc)

    return router
