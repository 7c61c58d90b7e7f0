"""Log setup for ``sidecar serve``: one stderr handler that, whoever logs (our modules, uvicorn's access log, any
library), masks secrets, writes each record as one line, and keeps prompt and completion text out unless the
operator turned ``[server] log_content`` on.

* ``RedactingFilter``: the one redaction (``sidecar.redaction``) over the message, its fields and any traceback,
  before either formatter.
* ``OneLineFormatter`` (``log_format = "text"``, the default): control characters become visible escapes, so no
  logged value can start a line of its own.
* ``JsonFormatter`` (``log_format = "json"``): one JSON object per line, with a record's structured ``fields``.
* ``ContentFilter``: DEBUG records of the loggers that write request or response bodies are dropped.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Final

from .config import Settings
from .identifiers import escape_controls
from .redaction import redact, redact_json

LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

FIELDS: Final = "fields"
"""The record attribute with a record's structured fields (``log.info(..., extra={"fields": {...}})``): emitted as
keys of its own in JSON, ignored by the text format, whose message already says the same."""

_SCALARS: Final = (int, float, type(None))
"""Field values redaction leaves as they are (``bool`` is an ``int``)."""

_CONTINUATION: Final = "    | "
"""Starts every continuation line of a traceback: never a timestamp, so no reader takes it for a record."""

# Loggers that write request or response content at DEBUG: websockets every frame (the realtime user's words and
# audio, the model's answers); "uvicorn.error" is the logger uvicorn hands to websockets for browser sockets,
# "sidecar.realtime.upstream" the one the relay hands it for upstream sockets (both are also kept at INFO always: their
# handshakes carry credentials).
CONTENT_LOGGERS: Final = ("websockets", "uvicorn.error", "sidecar.realtime.upstream")


class RedactingFilter(logging.Filter):
    """Defence in depth: whatever a library logs, key-shaped strings and the loaded keys are masked, in the message,
    the structured ``FIELDS`` and the traceback (an exception's message may quote a provider body)."""

    def __init__(self, secrets: list[str], *, fields: bool = True) -> None:
        """``fields``: redact the records' ``FIELDS`` too; off when no formatter writes them (text), which saves the
        generation line a few microseconds."""
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)
        self._fields = fields

    def filter(self, record: logging.LogRecord) -> bool:
        # Always replace msg/args with the (cleaned) message: the formatter's getMessage then formats nothing again.
        record.msg, record.args = redact(record.getMessage(), self._secrets), None
        fields = getattr(record, FIELDS, None) if self._fields else None
        if fields:
            setattr(record, FIELDS, self._redacted(fields))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self._secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self._secrets)
        return True

    def _redacted(self, fields: dict[str, Any]) -> dict[str, Any]:
        # One redaction over the string values joined, instead of one per value (a fraction of the cost): if the
        # joined text comes back unchanged, so would each value (an escape, a secret or a key shape inside one value
        # is inside the joined text too). Otherwise, or for a value that is not a scalar, redact value by value.
        texts = []
        for value in fields.values():
            if isinstance(value, str):
                texts.append(value)
            elif not isinstance(value, _SCALARS):
                return self._redacted_each(fields)
        joined = "\n".join(texts)
        return fields if redact(joined, self._secrets) == joined else self._redacted_each(fields)

    def _redacted_each(self, fields: dict[str, Any]) -> dict[str, Any]:
        redacted: dict[str, Any] = redact_json(fields, self._secrets)
        return redacted


class ContentFilter(logging.Filter):
    """Drops the records below INFO of ``CONTENT_LOGGERS`` and their children."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.INFO:
            return True
        name = record.name
        return not any(name == logger or name.startswith(logger + ".") for logger in CONTENT_LOGGERS)


class OneLineFormatter(logging.Formatter):
    """``LOG_FORMAT`` with every control character in the record escaped, so each record starts with its own
    timestamp and no logged value (a path, a model id, a provider message, an exception message) can forge one.

    A traceback stays readable on several lines, but each of its lines is escaped on its own and starts with
    ``_CONTINUATION``, so a newline inside an exception's message cannot start a line that looks like a record.
    """

    def __init__(self) -> None:
        super().__init__(LOG_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = escape_controls(self.formatMessage(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        extra = [text for text in (record.exc_text, record.stack_info and self.formatStack(record.stack_info)) if text]
        if not extra:
            return line
        continuation = "\n".join(extra).split("\n")  # only the traceback's own line breaks; others are escaped
        return "\n".join([line, *(_CONTINUATION + escape_controls(part) for part in continuation)])


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``,
    ``message``, then the record's ``FIELDS``, and ``exception`` / ``stack`` (the traceback as one string) when it has
    them.

    ``json.dumps`` with ``ensure_ascii`` writes everything but printable ASCII as an escape: the C0 controls, DEL,
    and every non-ASCII character, so NEL, U+2028 and U+2029 (which some readers take for line breaks) and lone
    surrogates (which orjson refuses) too. No logged value can end the line or start another.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                entry.setdefault(key, value)  # a field never replaces one of the four above
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=True, default=str)


FORMATTERS: Final[dict[str, type[logging.Formatter]]] = {"text": OneLineFormatter, "json": JsonFormatter}
"""One per ``config.LOG_FORMATS``."""


def configure_logging(settings: Settings, secrets: list[str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(FORMATTERS[settings.log_format]())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # Python warnings would otherwise be written to stderr as they are: several lines, unredacted, not JSON.
    logging.captureWarnings(True)
    # httpx logs every request URL at INFO; keep it for debugging only.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # the upstream client: one INFO line per request URL
    if not settings.log_content:
        # The levels keep the records from being made at all (websockets checks before formatting each frame);
        # the filter holds whatever sets those levels later.
        handler.addFilter(ContentFilter())
        floor = max(logging.INFO, root.level)
        for name in CONTENT_LOGGERS:
            logger = logging.getLogger(name)
            logger.setLevel(max(floor, logger.level))
    handler.addFilter(RedactingFilter(secrets, fields=settings.log_format == "json"))
