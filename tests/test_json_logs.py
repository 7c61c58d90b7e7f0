"""``--log-format json``: every record of a real ``sidecar serve`` is one JSON object on one line (uvicorn's own
records and access log included), the generation line carries its values as fields of their own, and no provider
key or bearer reaches the log: not in a message, not in a field, not in a traceback.

The end-to-end test starts ``python -m sidecar serve --log-format json --access-log`` at ``log_level = "debug"``
against the fake upstream and reads its stderr; the formatter test covers what a running sidecar cannot be made to
log on purpose (an internal error's traceback).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from sidecar.auth import identity_of
from sidecar.config import load_settings
from sidecar.logs import FIELDS, JsonFormatter, RedactingFilter, configure_logging
from tests.canaries import leaks
from tests.conftest import pi_body, read_events
from tests.fakeupstream import FakeUpstream, Reply, fixture_bytes
from tests.sidecar_server import (
    ANTHROPIC_CANARY,
    OPENAI_CANARY,
    TOKEN,
    free_port,
    sidecar_environ,
    wait_until_healthy,
    write_config,
)

HEADERS = {"authorization": f"Bearer {TOKEN}"}
CONFIG = '[server]\nlog_level = "debug"\n\n[upstream]\nmax_retries = 0\n'
FORGED = '{"time": "1999-12-31T23:59:59.999Z", "level": "ERROR", "logger": "sidecar", "message": "forged"}'
"""A record an attacker wants to appear on a line of its own; no real record of a run has this time."""
BREAKS = "\r\x00\x85\u2028"
"""Besides LF: characters that end a line for some reader (Python's ``splitlines`` honours all of them)."""
SECRETS = (ANTHROPIC_CANARY, OPENAI_CANARY, TOKEN)


@contextmanager
def serve_json(tmp_path: Path, upstream_url: str) -> Iterator[tuple[str, Path]]:
    """A ``sidecar serve --log-format json`` subprocess; yields its URL and the file its stderr goes to."""
    config = write_config(tmp_path, CONFIG)
    # A local time zone far from UTC: a timestamp written in local time would be off by hours.
    environ = sidecar_environ(upstream_url, tmp_path, TZ="XYZ-5:30")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stderr_path = tmp_path / "stderr.log"
    command = [sys.executable, "-m", "sidecar", "serve", "--config", str(config), "--port", str(port)]
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [*command, "--access-log", "--log-format", "json"], env=environ, stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        wait_until_healthy(url, process, lambda: stderr_path.read_text(errors="replace"))
        yield url, stderr_path
    finally:
        process.terminate()
        process.wait(timeout=10)


def parse_records(log: str) -> list[dict[str, Any]]:
    """Each line of ``log`` as a record; fails on a line that is not a JSON object with the four keys every record
    has, or whose time is not RFC 3339 UTC with milliseconds."""
    records = []
    for line in log.splitlines():  # splits at every line break some reader honours, not only LF
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert {"time", "level", "logger", "message"} <= record.keys(), line
        assert record["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}, line
        assert isinstance(record["logger"], str) and isinstance(record["message"], str), line
        assert len(record["time"]) == len("2026-11-30T10:02:03.456Z") and record["time"].endswith("Z"), line
        datetime.fromisoformat(record["time"])  # raises on anything that is not an ISO 8601 / RFC 3339 time
        records.append(record)
    return records


def test_every_record_is_one_json_object_with_fields_and_no_secret(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.push(
        Reply.sse(fixture_bytes("anthropic-messages/text-basic-padded.sse")),
        # The refusal echoes the key it was given, as some providers do.
        Reply.json(401, {"type": "error", "error": {"type": "authentication_error", "message": ANTHROPIC_CANARY}}),
    )
    started = datetime.now(UTC)
    ids: dict[str, str] = {}
    with serve_json(tmp_path, upstream.url) as (url, stderr_path):
        for name, model in [("echo", "echo/echo"), ("anthropic", "anthropic/claude-sonnet-4-5")]:
            response = httpx.post(f"{url}/v1/pi/stream", json=pi_body(model), headers=HEADERS, timeout=10)
            assert read_events(response)[-1]["type"] == "done", response.text
            ids[name] = response.headers["x-generation-id"]
        refused = httpx.post(f"{url}/v1/pi/stream", json=pi_body("anthropic/claude-sonnet-4-5"), headers=HEADERS)
        assert read_events(refused)[-1]["error"]["errorStatus"] == 401, refused.text  # type: ignore[index]
        ids["refused"] = refused.headers["x-generation-id"]
        # A model id is written in the generation line (message and field): ids that are a key or the bearer.
        for model in (f"echo/{OPENAI_CANARY}", f"echo/{TOKEN}"):
            response = httpx.post(f"{url}/v1/pi/stream", json=pi_body(model), headers=HEADERS, timeout=10)
            assert read_events(response)[-1]["type"] == "done", response.text
        # Values carrying line breaks: a request path (uvicorn's access log writes it decoded) and a model id.
        path = quote(f"x\n{FORGED}\n{BREAKS}", safe="")
        assert httpx.get(f"{url}/{path}", headers=HEADERS).status_code == 404
        bad_model = httpx.post(f"{url}/v1/pi/stream", json=pi_body(f"echo/x\n{FORGED}{BREAKS}"), headers=HEADERS)
        assert bad_model.status_code == 400, bad_model.text
        # The canary key as the bearer.
        denied = httpx.get(f"{url}/v1/models", headers={"authorization": f"Bearer {ANTHROPIC_CANARY}"})
        assert denied.status_code == 401
    raw = stderr_path.read_bytes()
    assert raw.isascii(), "non-ASCII bytes in the log: every character outside ASCII must be escaped"
    log = raw.decode("ascii")
    assert all(line.isprintable() for line in log.split("\n")), "a raw control character reached the log"
    records = parse_records(log)
    assert len(records) == log.count("\n")  # one record per line, and nothing else
    assert upstream.received[0].headers["x-api-key"] == ANTHROPIC_CANARY  # the canary was live
    for secret in SECRETS:
        assert not leaks(log, secret), secret

    for record in records:
        assert started - timedelta(seconds=1) <= datetime.fromisoformat(record["time"]) <= datetime.now(UTC)
    # uvicorn's own records and its access log go through the same handler.
    loggers = {record["logger"] for record in records}
    assert {"sidecar", "uvicorn.error", "uvicorn.access"} <= loggers, loggers
    # The path's line breaks stayed inside its access-log record, which a JSON reader gets back exactly.
    assert any(f"/x\n{FORGED}\n{BREAKS}" in r["message"] for r in records if r["logger"] == "uvicorn.access")
    assert not any(r["message"] == "forged" for r in records)

    generations = {r["generation_id"]: r for r in records if "generation_id" in r}
    assert len(generations) == 5, generations
    caller = identity_of(TOKEN)
    echo = generations[ids["echo"]]
    assert echo["logger"] == "sidecar" and echo["level"] == "INFO"
    assert echo["message"].startswith(f"generation {ids['echo']} caller={caller} model=echo/echo reason=stop ")
    assert (echo["workload"], echo["provider"], echo["model"], echo["reason"]) == (caller, "echo", "echo", "stop")
    assert echo["status"] == 200
    assert (echo["error_type"], echo["error_status"], echo["cost_usd"]) == (None, None, 0)
    anthropic = generations[ids["anthropic"]]
    assert (anthropic["provider"], anthropic["model"], anthropic["reason"]) == (
        "anthropic",
        "claude-sonnet-4-5",
        "stop",
    )
    assert (anthropic["input_tokens"], anthropic["output_tokens"]) == (135, 10)  # the fixture's usage
    assert anthropic["cost_usd"] > 0 and 0 <= anthropic["ttft_ms"] <= anthropic["duration_ms"]
    failed = generations[ids["refused"]]
    assert failed["reason"] == "error" and failed["ttft_ms"] is None
    assert (failed["provider"], failed["model"]) == ("anthropic", "claude-sonnet-4-5")
    assert (failed["error_type"], failed["error_status"], failed["status"]) == ("authentication_error", 401, 401)
    assert failed["message"].endswith(" error=authentication_error/401")
    # The key and the bearer sent as model ids: masked in the field as in the message.
    masked = [r for r in generations.values() if r["provider"] == "echo" and r["model"] != "echo"]
    assert [r["model"] for r in masked] == ["[REDACTED]", "[REDACTED]"]
    assert all("model=echo/[REDACTED] " in r["message"] for r in masked)


def test_a_traceback_is_one_redacted_field_of_one_line() -> None:
    """An internal error's traceback, whose exception message quotes a key, the bearer and line breaks, becomes the
    ``exception`` string of the record's one line, masked; so do its fields."""
    try:
        raise ValueError(f"upstream said: key {OPENAI_CANARY}\n{FORGED}{BREAKS} bearer {TOKEN}")
    except ValueError:
        record = logging.LogRecord(
            "sidecar", logging.ERROR, __file__, 1, "internal error on %s", ("/v1/x\n" + BREAKS,), sys.exc_info()
        )
    record.created, record.msecs = 1764496923.25, 250.0  # 2025-11-30 10:02:03.250 UTC
    setattr(record, FIELDS, {"model": f"m-{TOKEN}", "message": "not the message", "input_tokens": 3})
    assert RedactingFilter([OPENAI_CANARY, TOKEN]).filter(record)
    line = JsonFormatter().format(record)
    assert line.isascii() and line.isprintable(), line  # no raw line break or control character
    entry = json.loads(line)
    assert entry["time"] == "2025-11-30T10:02:03.250Z"
    assert (entry["level"], entry["logger"]) == ("ERROR", "sidecar")
    assert entry["message"] == "internal error on /v1/x\n" + BREAKS  # a field cannot replace the message
    assert (entry["model"], entry["input_tokens"]) == ("m-[REDACTED]", 3)
    assert entry["exception"].startswith("Traceback (most recent call last):\n")
    assert entry["exception"].endswith(f"ValueError: upstream said: key [REDACTED]\n{FORGED}{BREAKS} bearer [REDACTED]")
    for secret in (OPENAI_CANARY, TOKEN):
        assert not leaks(line, secret), secret


@pytest.mark.parametrize(
    "value",
    [{"nested": f"k={TOKEN}"}, [f"k={TOKEN}"], f"%{TOKEN.encode().hex('%')}"],
    ids=["nested", "list", "percent"],
)
def test_fields_are_redacted_whatever_their_shape(value: object) -> None:
    """Past the fast path (all string fields redacted at once): nested values, and a value whose secret is spelled in
    an encoding the redaction decodes."""
    record = logging.LogRecord("sidecar", logging.INFO, __file__, 1, "x", (), None)
    setattr(record, FIELDS, {"value": value, "plain": "ok"})
    RedactingFilter([TOKEN]).filter(record)
    line = JsonFormatter().format(record)
    assert not leaks(line, TOKEN), line
    assert json.loads(line)["plain"] == "ok"


def test_python_warnings_are_json_records_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A library's ``warnings.warn`` (written straight to stderr unless captured) comes out as a record, redacted."""
    settings = replace(load_settings(None, {"HOME": str(tmp_path)}), log_format="json")
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        # Another test's configure_logging may have captured warnings while pytest's own capture was active, which
        # pytest then undid: logging would think it still captures them. Start from "not captured".
        logging.captureWarnings(False)
        configure_logging(settings, [TOKEN])
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn(f"deprecated, token {TOKEN}\nsecond line", UserWarning, stacklevel=1)
    finally:
        logging.captureWarnings(False)
        root.handlers[:], root.level = saved
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    (record,) = parse_records(lines[0])
    assert (record["level"], record["logger"]) == ("WARNING", "py.warnings")
    assert "UserWarning: deprecated, token [REDACTED]\nsecond line" in record["message"]
