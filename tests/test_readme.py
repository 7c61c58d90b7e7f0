"""The README's examples run as written: the first-screen curl streams from a real ``sidecar serve``, the Python client
example streams from one and, beside it, from a second sidecar on a recorded Anthropic stream, the fallbacks curl is
served by the first model that can, the OpenAI and Anthropic SDK example of the "Any agent" section talks to one, the
full TOML example of the Configuration section is a valid config, and the Codex CLI provider table says what Codex
requires. A new user's way through it holds too: the first screen gives two commands and names the services the
tests need, every ``sidecar`` command is the checkout's ``.venv/bin/sidecar``, and ``make lint`` passes the client
example and leaves a file the user saves in the checkout alone."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from sidecar.cli import build_parser
from sidecar.config import load_settings
from tests.sidecar_server import free_port, wait_until_healthy

REPO = Path(__file__).parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
FIRST_SCREEN = README.split("\n---\n", 1)[0]
FIRST_SCREEN_PORT = int(re.findall(r"127\.0\.0\.1:(\d+)", FIRST_SCREEN)[0])  # where `make run` listens


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


def as_written(block: str, ports: Mapping[int, int]) -> str:
    """The block as a user runs it from the checkout, with each documented port moved to a free one."""
    for documented, free in ports.items():
        block = block.replace(f"127.0.0.1:{documented}", f"127.0.0.1:{free}")
        block = block.replace(f"--port {documented}", f"--port {free}")
    return block.replace(".venv/bin/", f"{Path(sys.executable).parent}/")


def need_curl() -> None:
    if shutil.which("curl") is None:
        pytest.fail("curl is needed to run the README's examples (apt-get install curl)")


def promised_lines(command_line: str) -> list[str]:
    """What the comment of a README command line says it prints: ``# line one / line two``."""
    return command_line.split("# ", 1)[1].split(" / ")


def curl_against_a_sidecar(marker: str, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """The README's curl block that contains ``marker``, run as written against a real offline sidecar: its output
    and the pi ``done`` event it printed."""
    need_curl()
    command = next(block for block in fenced_blocks("bash") if marker in block)
    env = offline_environ(tmp_path)
    with served(tmp_path, env) as port:
        result = subprocess.run(
            ["bash", "-c", as_written(command, {FIRST_SCREEN_PORT: port})],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
        )
    assert result.returncode == 0, result.stderr
    done = next(json.loads(line[6:]) for line in result.stdout.splitlines() if line.startswith('data: {"type":"done"'))
    return result.stdout, done


def test_the_first_screen_curl_streams_from_a_real_sidecar(tmp_path: Path) -> None:
    output, done = curl_against_a_sidecar("curl -N", tmp_path)
    assert output.rstrip().endswith("data: [DONE]"), output[-500:]
    assert done["message"]["content"][0]["text"] == "hello sidecar"  # the echo model streamed the prompt back


def test_the_fallbacks_curl_is_served_by_the_first_model_that_can(tmp_path: Path) -> None:
    """Offline, the requested model's provider and the first fallback's have no key: echo/echo serves."""
    _, done = curl_against_a_sidecar('"options":{"models"', tmp_path)
    assert (done["message"]["provider"], done["message"]["content"][0]["text"]) == ("echo", "hello")


def test_the_sdk_example_runs_against_a_real_sidecar(tmp_path: Path) -> None:
    example = next(block for block in fenced_blocks("python") if "import anthropic" in block)
    env = offline_environ(tmp_path)
    with served(tmp_path, env) as port:
        result = subprocess.run(
            [sys.executable, "-c", as_written(example, {FIRST_SCREEN_PORT: port})],
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


def test_the_first_screen_gives_two_commands_and_names_the_services_the_tests_need() -> None:
    first_block = fenced_blocks("bash")[0]
    commands = [line.split("#", 1)[0].strip() for line in first_block.splitlines()]
    assert [command for command in commands if command] == ["make run", "make test"]
    prose = " ".join(FIRST_SCREEN.split())  # the sentences, whatever their line breaks
    for needed in ("PostgreSQL at 127.0.0.1:5432 that trusts", "as user `postgres`", "Redis at 127.0.0.1:6379"):
        assert needed in prose
    # What the first screen says `.ci/run` does is what it does.
    ci_run = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "`.ci/run`" in prose and "main start" in ci_run and "redis-server --daemonize yes" in ci_run
    assert "-p 5432" in ci_run and "--port 6379" in ci_run and ci_run.rstrip().endswith("make test")


def test_every_sidecar_command_is_the_checkouts_venv_one() -> None:
    usage = build_parser().format_usage()
    subcommands = re.search(r"\{([a-z,]+)\}", usage)
    assert subcommands is not None, usage
    bare = re.compile(rf"(?<![\w/.-])sidecar ({'|'.join(subcommands.group(1).split(','))})\b")
    assert [line for line in README.splitlines() if bare.search(line)] == []  # `sidecar token` is not on PATH
    assert "`source .venv/bin/activate`" in FIRST_SCREEN  # how to drop the prefix, said once, up front


def ruff(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120
    )


def make_lint_commands() -> list[list[str]]:
    """The ruff invocations of the Makefile's ``lint`` recipe, without their ``$(VENV)/bin/ruff``."""
    recipe = re.search(r"^lint:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(encoding="utf-8"), flags=re.M)
    assert recipe is not None, "the Makefile has no lint recipe"
    commands = [line.split() for line in recipe.group(1).splitlines()]
    assert commands and all(command[0] == "$(VENV)/bin/ruff" for command in commands), commands
    return [command[1:] for command in commands]


def python_client_example() -> str:
    return next(block for block in fenced_blocks("python") if "from client import stream" in block)


def test_make_lint_leaves_a_stray_file_alone_and_still_checks_the_project(tmp_path: Path) -> None:
    # A checkout in miniature: the project's lint settings, one clean module, and a user's unlinted agent.py.
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "sidecar").mkdir()
    (tmp_path / "sidecar" / "__init__.py").write_text("", encoding="utf-8")
    unlinted = "import sys,os\n"  # unsorted, unused and unformatted: fails every lint command
    (tmp_path / "agent.py").write_text(unlinted, encoding="utf-8")
    for command in make_lint_commands():
        result = ruff(*command, cwd=tmp_path)
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    (tmp_path / "sidecar" / "stray.py").write_text(unlinted, encoding="utf-8")
    for command in make_lint_commands():
        assert ruff(*command, cwd=tmp_path).returncode == 1, f"{command} did not check sidecar/stray.py"


def test_make_lint_reaches_every_python_file_of_the_project() -> None:
    listed = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, f"git ls-files failed (the tests run in a git checkout): {listed.stderr}"
    tracked = {REPO / name for name in listed.stdout.splitlines() if (REPO / name).exists()}
    shown = ruff("check", "--show-files", ".", cwd=REPO)
    assert shown.returncode == 0, shown.stderr
    linted = {Path(line) for line in shown.stdout.splitlines()}
    assert tracked and tracked <= linted, f"[tool.ruff] include leaves out: {sorted(map(str, tracked - linted))}"


def test_the_python_client_example_passes_the_lint() -> None:
    for command in (["check"], ["format", "--check"]):
        result = ruff(*command, "--stdin-filename", "agent.py", "-", cwd=REPO, stdin=python_client_example())
        assert result.returncode == 0, f"ruff {' '.join(command)}: {result.stdout}{result.stderr}"


def test_the_python_client_example_streams_from_the_first_screen_sidecar(tmp_path: Path) -> None:
    (tmp_path / "agent.py").write_text(python_client_example(), encoding="utf-8")
    block = next(block for block in fenced_blocks("bash") if block.startswith("export SIDECAR_URL"))
    env = offline_environ(tmp_path) | {"PYTHONPATH": str(REPO)}
    with served(tmp_path, env) as port:
        result = subprocess.run(
            ["bash", "-c", as_written(block, {FIRST_SCREEN_PORT: port})],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == promised_lines(block.splitlines()[-1])


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_the_recorded_stream_example_runs_beside_the_first_screen_sidecar(tmp_path: Path) -> None:
    need_curl()
    block = next(block for block in fenced_blocks("bash") if "tests.fakeupstream" in block)
    documented = {int(port) for port in re.findall(r"(?:127\.0\.0\.1:|--port )(\d+)", block)}
    assert FIRST_SCREEN_PORT not in documented and "make run" not in block  # `make run` of the first screen holds it
    (tmp_path / "agent.py").write_text(python_client_example(), encoding="utf-8")
    env = offline_environ(tmp_path) | {"PYTHONPATH": str(REPO)}  # tests.fakeupstream, as from the checkout
    with served(tmp_path, env) as first_screen_port:
        ports = {port: free_port() for port in documented}
        # The previous block's exports, as the user's shell still has them.
        exports = f"export SIDECAR_URL=http://127.0.0.1:{first_screen_port} SIDECAR_TOKEN=$(.venv/bin/sidecar token)\n"
        shell = subprocess.Popen(
            ["bash", "-c", as_written(exports + block, ports)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its background jobs too, for the cleanup below if the block fails midway
        )
        try:
            stdout, stderr = shell.communicate(timeout=60)
        finally:
            try:
                os.killpg(shell.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    assert shell.returncode == 0, stderr[-2000:]
    agent_line = next(line for line in block.splitlines() if "agent.py" in line)
    assert stdout.splitlines()[-1:] == promised_lines(agent_line)  # the recording's tokens at Sonnet 4.5 prices
    deadline = time.monotonic() + 10
    while not all(port_is_free(port) for port in ports.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(port_is_free(port) for port in ports.values()), "the block's last line left a process listening"
