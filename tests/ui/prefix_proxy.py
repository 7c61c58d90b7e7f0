"""A path-prefix reverse proxy for the spend page test, in aiohttp on a thread of its own (``BackgroundServer``):
what nginx's ``location /team-a/ { proxy_pass http://sidecar/; }`` does (``strip=True``), or
``proxy_pass http://sidecar;`` in front of a sidecar with ``[server] path_prefix = "/team-a"`` (``strip=False``).

``/team-a/<rest>`` is forwarded to ``<upstream>/<rest>`` (the prefix stripped, as the trailing ``/`` of nginx's
``proxy_pass`` strips it) or to ``<upstream>/team-a/<rest>``; the answer comes back as it is, redirects included (a
relative ``Location`` is the page's job, not the proxy's). Any path outside the prefix is a 404 from the proxy
itself, so a request that escapes the prefix fails visibly. Every path it was asked for is kept in ``seen``.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web
from yarl import URL

from tests.background import BackgroundServer
from tests.interop.harness import free_port

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
"""Headers that describe one connection, not the message: never copied across (aiohttp sets its own)."""


class PrefixProxy(BackgroundServer):
    """``with PrefixProxy(upstream, "/team-a") as proxy:`` serves on ``proxy.url`` (``http://127.0.0.1:<port>``)
    until the block ends."""

    def __init__(self, upstream: str, prefix: str, *, strip: bool = True) -> None:
        self.upstream = upstream.rstrip("/")
        self.prefix = prefix.rstrip("/")
        self.strip = strip
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.seen: list[str] = []
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        super().__init__()

    async def start(self) -> None:
        # No decompression (the body goes on as it came) and no redirects followed (the browser must see them).
        self._client = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request.path_qs)
        raw = request.raw_path  # as the browser sent it, still percent-encoded: forwarded unchanged
        if not raw.startswith(self.prefix + "/"):
            return web.json_response({"error": f"outside {self.prefix}/: {request.path}"}, status=404)
        assert self._client is not None
        headers = {name: value for name, value in request.headers.items() if name.lower() not in HOP_BY_HOP}
        async with self._client.request(
            request.method,
            URL(self.upstream + (raw[len(self.prefix) :] if self.strip else raw), encoded=True),
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as upstream:
            body = await upstream.read()
            answer = {name: value for name, value in upstream.headers.items() if name.lower() not in HOP_BY_HOP}
            return web.Response(status=upstream.status, body=body, headers=answer)
