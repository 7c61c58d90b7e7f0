"""Bounds and character sets for the identifiers a request carries (model ids, session ids, header fields, ledger
attribution), checked once at parse time, and the truncated, escaped form in which an error message may echo one.

An identifier flows into logs, the ledger, error messages and upstream headers; bounding it where it enters keeps a
megabyte model id or a CRLF in a header value from reaching any of them.
"""

from __future__ import annotations

import re

from .errors import BadRequest

# What real model ids use: OpenRouter "vendor/model:variant", Ollama "llama3.2:3b", Bedrock "us.anthropic.…-v2:0",
# Fireworks "accounts/fireworks/models/…", Azure deployment names.
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+~=-]*")
_MODEL_ID_CHARS = "letters, digits and . _ : / @ + ~ = -"
# RFC 9110 field names (tokens) and field values (visible ASCII, space and tab; no CR, LF or NUL).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
# C0 and C1 controls, DEL and the Unicode line/paragraph separators: none of them belongs in an identifier, and
# every one of them ends a line somewhere (\n, \r, VT, FF, the C0 separators, NEL, U+2028/U+2029) or drives a terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_CODES = (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_ESCAPES = {code: _NAMED.get(chr(code), f"\\x{code:02x}") for code in _CONTROL_CODES}
_SHOWN_CHARS = 64


def escape_controls(text: str) -> str:
    """``text`` with every control character written as a visible escape (\\n, \\r, \\t, \\xNN, \\u2028): one line,
    whatever it contained. The one escaping of the logs and of the values error messages echo."""
    return text if text.isprintable() else text.translate(_ESCAPES)


def shown(value: str, limit: int = _SHOWN_CHARS) -> str:
    """``value`` as an error message or a log may echo it: at most ``limit`` characters, controls escaped, quoted."""
    suffix = f"… ({len(value)} characters)" if len(value) > limit else ""
    return f'"{escape_controls(value[:limit])}"{suffix}'


def check_model_id(value: str, where: str, max_chars: int) -> str:
    if len(value) > max_chars:
        raise BadRequest(f"`{where}` is {len(value)} characters long; the limit is {max_chars}: {shown(value)}")
    if not _MODEL_ID.fullmatch(value):
        raise BadRequest(
            f"`{where}` may contain only {_MODEL_ID_CHARS} (like anthropic/claude-sonnet-4-5), got {shown(value)}"
        )
    return value


def check_text(value: str, where: str, max_chars: int) -> str:
    """A free-form identifier (a session id, a user id, a tag): bounded, no control characters."""
    if len(value) > max_chars:
        raise BadRequest(f"`{where}` is {len(value)} characters long; the limit is {max_chars}")
    if _CONTROL.search(value):
        raise BadRequest(f"`{where}` must not contain control characters or line breaks, got {shown(value)}")
    return value


def check_header(name: str, value: str, where: str) -> None:
    """A header the caller asks the sidecar to send upstream: a valid field name and an ASCII field value."""
    if not _HEADER_NAME.fullmatch(name):
        raise BadRequest(
            f"`{where}` has an invalid header name {shown(name)}: use letters, digits and !#$%&'*+.^_`|~- only, "
            "with no spaces"
        )
    if not _HEADER_VALUE.fullmatch(value):
        raise BadRequest(
            f"`{where}` header {shown(name)} has a value with line breaks, NUL, other control or non-ASCII "
            "characters: header values must be printable ASCII"
        )


def depth_exceeded(value: object, limit: int) -> str | None:
    """The path of the first array or object nested deeper than ``limit`` in ``value``, or ``None``.

    Iterative, so a hostile document cannot exhaust the interpreter's stack here either; paths are built only for
    nested containers, not for the strings and numbers that make up most of a body."""
    stack: list[tuple[object, str, int]] = [(value, "", 1)]
    while stack:
        node, path, depth = stack.pop()
        if depth > limit:
            return path or "(the body)"
        if isinstance(node, dict):
            for key, child in node.items():
                if isinstance(child, dict | list):
                    stack.append((child, f"{path}.{key}" if path else str(key), depth + 1))
        elif isinstance(node, list):
            for i, child in enumerate(node):
                if isinstance(child, dict | list):
                    stack.append((child, f"{path}[{i}]", depth + 1))
    return None
