"""The README's examples run as written: the first-screen curl streams from a real ``sidecar serve``, and the full TOML
example of the Configuration section is a valid config."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.config import load_settings
from tests.sidecar_server import free_port, wait_until_healthy

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def fenced_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_the_configuration_example_is_a_valid_config(tmp_path: Path) -> None:
    example = next(block for block in fenced_blocks("toml") if block.startswith("[server]"))
    config = tmp_path / "sidecar.toml"
    config.write_text(example, encoding="utf-8")
    settings = load_settings(config, {"HOME": str(tmp_path), "TEAM_ANTHROPIC_KEY": "k"})
    assert settings.port == 4000 and settings.log_content is False
    assert [w.name for w in settings.workloads] == ["ci-agent"]
    assert settings.catalog.models["vllm/qwen3-32b"].pricing is not None


def test_the_first_screen_curl_streams_from_a_real_sidecar(tmp_path: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is needed to run the README's first example (apt-get install curl)")
    command = next(block for block in fenced_blocks("bash") if block.startswith("curl -N"))
    port = free_port()
    bin_dir = Path(sys.executable).parent
    command = command.replace("127.0.0.1:4000", f"127.0.0.1:{port}").replace(
        ".venv/bin/sidecar", str(bin_dir / "sidecar")
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN"))}
    env["SIDECAR_HOME"] = str(tmp_path / "home")
    log = (tmp_path / "sidecar.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "serve", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", server)
        result = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=20)
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("data: [DONE]"), result.stdout[-500:]
    done = next(json.loads(line[6:]) for line in result.stdout.splitlines() if line.startswith('data: {"type":"done"'))
    assert done["message"]["content"][0]["text"] == "hello sidecar"  # the echo model streamed the prompt back
