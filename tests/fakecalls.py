"""A fake of OpenAI's WebRTC call setup: ``POST /v1/realtime/calls`` (multipart ``sdp`` + ``session``, as OpenAI's
server-side call setup takes them) answering an SDP answer with the call's ``Location``, and the call's side-band
WebSocket ``/v1/realtime?call_id=…``, which replays the recorded GA text turn (as if the user had spoken) and then
ends, as a call that hangs up does. A real aiohttp server on 127.0.0.1 in a background thread (``BackgroundServer``).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.background import BackgroundServer
from tests.fakerealtime import GA_TEXT_TURN, fixture_lines

ANSWER_SDP = "v=0\r\no=- 4242 2 IN IP4 127.0.0.1\r\ns=fake answer\r\nt=0 0\r\n"
CALL_ID = "rtc_fake_0001"


@dataclass
class CallSetup:
    headers: dict[str, str]
    sdp: str
    session: dict[str, Any]


@dataclass
class SideBand:
    path: str
    headers: dict[str, str]
    sent: list[str] = field(default_factory=list)


class FakeCalls(BackgroundServer):
    """``with FakeCalls(key) as up: up.url (the base URL with /v1), up.setups, up.side_bands``. A call whose
    ``Authorization`` is not ``Bearer <key>`` gets OpenAI's 401."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.setups: list[CallSetup] = []
        self.side_bands: list[SideBand] = []
        self.side_band_done = threading.Event()
        self._port = 0
        self._runner: web.AppRunner | None = None
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/realtime/calls", self._call)
        app.router.add_get("/v1/realtime", self._side_band)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _call(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            body = {
                "error": {
                    "message": "Incorrect API key provided",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            }
            return web.json_response(body, status=401)
        parts: dict[str, str] = {}
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            parts[str(part.name)] = (await part.read()).decode()  # type: ignore[union-attr]
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.setups.append(CallSetup(headers, parts["sdp"], json.loads(parts["session"])))
        headers = {"Location": f"/v1/realtime/calls/{CALL_ID}"}
        return web.Response(status=201, text=ANSWER_SDP, content_type="application/sdp", headers=headers)

    async def _side_band(self, request: web.Request) -> web.WebSocketResponse:
        record = SideBand(request.path_qs, {k.lower(): v for k, v in request.headers.items()})
        self.side_bands.append(record)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if request.headers.get("Authorization") == f"Bearer {self.key}":
            session = {"type": "session.created", "event_id": "event_fake_1", "session": {"id": "sess_fake"}}
            for frame in [json.dumps(session), *fixture_lines(GA_TEXT_TURN)]:
                await ws.send_str(frame)
                record.sent.append(frame)
        await ws.close()  # the call hangs up
        self.side_band_done.set()
        return ws
