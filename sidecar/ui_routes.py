"""``GET /ui``: the spend and traffic page, static files shipped in the package (``sidecar/ui/``).

The files hold no data and need no bearer: the page asks for the bearer itself and sends it to the JSON endpoints
(``sidecar.ui_api``) in the ``Authorization`` header. Only the private app includes this router, never the public
realtime listener.

The page is served at ``/ui/``; ``/ui`` redirects there with a relative ``Location``, so that the page's relative
links (``app.js``, ``api/me``, ``../v1/generation``) resolve under a ``[server] path_prefix`` as well as at the root.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .responses import json_response

CONTENT_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "format.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
"""Every file the page is made of: nothing else under ``/ui/`` is served."""

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""No inline script or style, nothing from another origin; the page may not be framed (it holds a bearer)."""

_SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    # The file names carry no version: a browser revalidates (ETag) so an upgraded sidecar serves its own page.
    "cache-control": "no-cache",
}


@dataclass(frozen=True)
class _Asset:
    body: bytes
    content_type: str
    etag: str


def _load_assets() -> dict[str, _Asset]:
    folder = files("sidecar") / "ui"
    assets = {}
    for name, content_type in CONTENT_TYPES.items():
        body = (folder / name).read_bytes()
        assets[name] = _Asset(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')
    return assets


def ui_router() -> APIRouter:
    """The page's routes; its files are read once, here (a missing one fails the start, not a page load)."""
    assets = _load_assets()
    router = APIRouter()

    def serve(name: str, request: Request) -> Response:
        asset = assets.get(name)
        if asset is None:
            return json_response({"error": f"No route: GET {request.url.path}"}, 404)
        headers = {**_SECURITY_HEADERS, "etag": asset.etag}
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        return Response(asset.body, headers={**headers, "content-type": asset.content_type})

    @router.get("/ui")
    async def to_page(request: Request) -> Response:
        query = f"?{request.url.query}" if request.url.query else ""
        return Response(status_code=308, headers={**_SECURITY_HEADERS, "location": f"ui/{query}"})

    @router.get("/ui/")
    async def page(request: Request) -> Response:
        return serve("index.html", request)

    @router.get("/ui/{asset}")
    async def asset(asset: str, request: Request) -> Response:
        return serve(asset, request)

    return router
