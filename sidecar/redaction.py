"""One redaction for every text that leaves the sidecar: responses, SSE and WebSocket events, logs, the ledger.

Provider keys and bearers must never reach a client or a log, whatever path the text takes, and in no encoding a
reader could reverse. ``redact`` first decodes the escapes a provider body can spell a key with (JSON/JS ``\\uXXXX``
including surrogate pairs and bodies escaped twice, ``\\xXX``, ``\\/``, percent-encoding, numeric HTML character
references, mixed with plain text), then removes the known secret values, their base64 forms, and anything shaped
like a provider key. The text it returns is the decoded form.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

REDACTED = "[REDACTED]"

# Provider keys that could appear in an upstream error body (OpenAI echoes a masked key; some OpenAI-compatible
# servers echo it whole). Anything shaped like one is replaced before it reaches a log, an error or the ledger.
_KEY_SHAPES = re.compile(
    r"(sk-[A-Za-z0-9_\-*]{8,}|sk-ant-[A-Za-z0-9_\-*]{8,}|AIza[0-9A-Za-z_\-]{20,}|xai-[A-Za-z0-9]{16,}|"
    r"gsk_[A-Za-z0-9]{16,}|vcst_[A-Za-z0-9_\-]{8,}|ya29\.[A-Za-z0-9_\-.]{16,}|Bearer\s+[A-Za-z0-9._\-~+/=]{8,})"
)

# The fast path: ordinary text with none of these characters is never decoded.
_MAY_BE_ENCODED = re.compile(r"[\\%&]")
# Any run of backslashes counts as one escape, so a body JSON-encoded twice (``\\u0073``) decodes in one pass.
_BACKSLASH_ESCAPE = re.compile(r"\\+(?:u([0-9A-Fa-f]{4})|x([0-9A-Fa-f]{2})|(/))")
_CHARACTER_REFERENCE = re.compile(r"&#(?:[xX]([0-9A-Fa-f]{1,6})|([0-9]{1,7}));?")
_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_MAX_DECODE_ROUNDS = 6
"""Nesting depth decoded (percent inside JSON inside percent …). Each round is one linear pass; the bound keeps a
hostile body from costing a pass per character."""

_MIN_SECRET = 4
_MIN_BASE64_SECRET = 12
"""Shorter secrets have base64 cores too short to search for without masking ordinary words."""


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` decoded, with the given secret values (plain or base64) and key-shaped substrings removed."""
    if _MAY_BE_ENCODED.search(text):
        text = decode_escapes(text)
    for form in _secret_forms(tuple(secrets)):
        if form in text:
            text = text.replace(form, REDACTED)
    return _KEY_SHAPES.sub(REDACTED, text)


def redact_json(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of a parsed JSON value with ``redact`` applied to every string in it (keys included)."""
    known = tuple(secrets)
    if isinstance(value, str):
        return redact(value, known)
    if isinstance(value, dict):
        return {redact_json(k, known): redact_json(v, known) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(v, known) for v in value]
    return value


def decode_escapes(text: str) -> str:
    """``text`` with backslash escapes, percent-encoding and numeric character references decoded, repeatedly (up to
    ``_MAX_DECODE_ROUNDS`` levels of nesting). Surrogate pairs become one character; a lone surrogate, which no
    UTF-8 encoder accepts, becomes U+FFFD."""
    for _ in range(_MAX_DECODE_ROUNDS):
        before = text
        if "\\" in text:
            text = _BACKSLASH_ESCAPE.sub(_unescape_backslash, text)
        if "%" in text:
            text = unquote(text, errors="replace")  # only %XX runs change; bytes that are not UTF-8 become U+FFFD
        if "&#" in text:
            text = _CHARACTER_REFERENCE.sub(_unescape_reference, text)
        if text == before:
            break
    if _SURROGATE.search(text):
        text = _SURROGATE.sub("\ufffd", _SURROGATE_PAIR.sub(_join_surrogates, text))
    return text


def _unescape_backslash(match: re.Match[str]) -> str:
    hex4, hex2, slash = match.groups()
    if slash:
        return "/"
    return chr(int(hex4 or hex2, 16))


def _unescape_reference(match: re.Match[str]) -> str:
    hex_digits, decimal = match.groups()
    code = int(hex_digits, 16) if hex_digits else int(decimal)
    return chr(code) if 0 < code <= 0x10FFFF else "\ufffd"


def _join_surrogates(match: re.Match[str]) -> str:
    high, low = (ord(c) for c in match.group(0))
    return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))


@functools.lru_cache(maxsize=256)
def _secret_forms(secrets: tuple[str, ...]) -> tuple[str, ...]:
    """Each secret as it may appear after decoding: itself, and the runs of base64 (standard and URL-safe) that any
    base64 text containing it must contain, at each of the three byte alignments. Longest first, so a secret that
    contains another is removed whole."""
    forms: set[str] = set()
    for secret in secrets:
        if not secret or len(secret) < _MIN_SECRET:
            continue
        forms.add(secret)
        if len(secret) >= _MIN_BASE64_SECRET:
            forms.update(_base64_cores(secret.encode()))
    return tuple(sorted(forms, key=len, reverse=True))


def _base64_cores(raw: bytes) -> set[str]:
    cores: set[str] = set()
    for shift in range(3):
        # With ``shift`` foreign bytes before it, the secret's first quantum mixes with them and its last partial one
        # with what follows; the quanta in between are the same in every encoding of a text containing it.
        encoded = base64.b64encode(bytes(shift) + raw).decode()
        start = 4 if shift else 0
        end = 4 * ((shift + len(raw)) // 3)
        core = encoded[start:end]
        if len(core) >= 8:
            cores.add(core)
            cores.add(core.replace("+", "-").replace("/", "_"))
    return cores
