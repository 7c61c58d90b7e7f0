"""The public listener: a second port serving only the realtime WebSocket and /healthz (``sidecar serve``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from websockets.sync.client import connect

from tests.fakerealtime import FakeRealtime
from tests.sidecar_server import free_port, wait_until_healthy

TOKEN = "public-listener-test-token-0123"
CANARY = "sk-canary-public-listener-777888999"


def test_the_public_port_serves_only_the_realtime_socket_and_healthz(tmp_path: Path) -> None:
    private_port, public_port = free_port(), free_port()
    config = tmp_path / "sidecar.toml"
    config.write_text(f'[realtime]\npublic_host = "127.0.0.1"\npublic_port = {public_port}\n')
    with FakeRealtime() as up:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "SIDECAR_TOKEN": TOKEN,
            "OPENAI_API_KEY": CANARY,
            "OPENAI_BASE_URL": up.url.replace("ws://", "http://"),
        }
        cmd = [sys.executable, "-m", "sidecar", "serve", "--config", str(config), "--port", str(private_port)]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        private, public = f"http://127.0.0.1:{private_port}", f"http://127.0.0.1:{public_port}"
        headers = {"authorization": f"Bearer {TOKEN}"}
        try:
            wait_until_healthy(private, proc)
            wait_until_healthy(public, proc)
            for method, path in [
                ("POST", "/v1/pi/stream"),
                ("POST", "/v1/realtime/client-secrets"),
                ("GET", "/v1/generation?id=gen_01JZZZZZZZZZZZZZZZZZZZZZZZ"),
                ("GET", "/v1/credits"),
                ("GET", "/v1/models"),
                ("POST", "/v1/realtime/client_secrets"),  # OpenAI's mint is private too (its socket is not)
                ("GET", "/metrics"),  # never on the public listener, with the bearer or without
                ("GET", "/v1/credentials/check"),
            ]:
                assert httpx.request(method, f"{public}{path}", headers=headers).status_code == 404, path

            minted = httpx.post(
                f"{private}/v1/realtime/client-secrets", json={"model": "openai/gpt-realtime"}, headers=headers
            )
            token = minted.json()["token"]
            url = f"ws://127.0.0.1:{public_port}/v4/ai/realtime-model?ai-model-id=openai%2Fgpt-realtime"
            with connect(url, subprotocols=["ai-gateway-realtime.v1", f"ai-gateway-auth.{token}"]) as ws:  # type: ignore[list-item]
                assert json.loads(ws.recv(timeout=5))["type"] == "session-created"
                ws.send(json.dumps({"type": "response-create"}))
                while (event := json.loads(ws.recv(timeout=5)))["type"] != "response-done":
                    pass
            generation = httpx.get(f"{private}/v1/generation", params={"id": event["generationId"]}, headers=headers)
            assert generation.status_code == 200 and generation.json()["data"]["model"] == "openai/gpt-realtime"
            (upstream,) = up.wait_closed()
            assert upstream.headers["authorization"] == f"Bearer {CANARY}"

            # A browser's cross-origin WebRTC call setup is preflighted on the public listener too.
            assert httpx.options(f"{public}/v1/realtime/calls").status_code == 204

            # OpenAI's shape: minted privately, opened publicly.
            secret = httpx.post(f"{private}/v1/realtime/client_secrets", json={}, headers=headers).json()["value"]
            openai_url = f"ws://127.0.0.1:{public_port}/v1/realtime?model=gpt-realtime"
            with connect(openai_url, subprotocols=["realtime", f"openai-insecure-api-key.{secret}"]) as ws:  # type: ignore[list-item]
                assert json.loads(ws.recv(timeout=5))["type"] == "session.created"
        finally:
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=15)
    assert proc.returncode in (0, -15), output  # both listeners stop on one signal
    assert f"public realtime listener on http://127.0.0.1:{public_port}" in output
    assert CANARY not in output and TOKEN not in output and token not in output and secret not in output
