"""The README's examples run as written: the first-screen curl streams from a real ``sidecar serve``, the OpenAI and
Anthropic SDK example of the "Any agent" section talks to one, the full TOML example of the Configuration section is
a valid config, and the Codex CLI provider table says what Codex requires."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def served(tmp_path: Path, env: dict[str, str]) -> Iterator[int]:
    """A real ``sidecar serve`` on a free port, with no provider key (only the echo model is servable)."""
    port = free_port()
    log = (tmp_path / "sidecar.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "serve", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", server)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


def offline_environ(tmp_path: Path) -> dict[str, str]:
    # No provider credential of any kind (keys, cloud chains): only the echo model is servable, as on a fresh machine.
    cloud = ("AWS_", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_", "AZURE_OPENAI_")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_API_KEY", "_TOKEN", "_BASE_URL")) and not k.startswith(cloud)
    }
    env["HOME"] = str(tmp_path)  # no ~/.aws or gcloud files
    env["NO_GCE_CHECK"] = "true"
    env["SIDECAR_HOME"] = str(tmp_path / "home")
    return env


def as_written(block: str, port: int) -> str:
    bin_dir = Path(sys.executable).parent
    return block.replace("127.0.0.1:4000", f"127.0.0.1:{port}").replace(".venv/bin/sidecar", str(bin_dir / "sidecar"))


def test_the_first_screen_curl_streams_from_a_real_sidecar(tmp_path: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is needed to run the README's first example (apt-get install curl)")
    command = next(block for block in fenced_blocks("bash") if block.startswith("curl -N"))
    env = offline_environ(tmp_path)
    with served(tmp_path, env) as port:
        result = subprocess.run(
            ["bash", "-c", as_written(command, port)], env=env, capture_output=True, text=True, timeout=20
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("data: [DONE]"), result.stdout[-500:]
    done = next(json.loads(line[6:]) for line in result.stdout.splitlines() if line.startswith('data: {"type":"done"'))
    assert done["message"]["content"][0]["text"] == "hello sidecar"  # the echo model streamed the prompt back


def test_the_sdk_example_runs_against_a_real_sidecar(tmp_path: Path) -> None:
    example = next(block for block in fenced_blocks("python") if "import anthropic" in block)
    env = offline_environ(tmp_path)
    with served(tmp_path, env) as port:
        result = subprocess.run(
            [sys.executable, "-c", as_written(example, port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            cwd=Path(__file__).parent.parent,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == ["hello chat", "hello"]  # what the comments in the example promise


def test_the_codex_provider_is_what_codex_accepts() -> None:
    example = next(block for block in fenced_blocks("toml") if "[model_providers.sidecar]" in block)
    config = tomllib.loads(example)
    provider = config["model_providers"][config["model_provider"]]
    # Codex refuses wire_api "chat" and ignores a redefined built-in id; it posts to {base_url}/responses.
    assert provider["wire_api"] == "responses" and config["model_provider"] not in ("openai", "ollama", "lmstudio")
    assert provider["base_url"] == "http://127.0.0.1:4000/v1" and provider["env_key"] == "SIDECAR_TOKEN"
