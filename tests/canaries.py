"""Canary keys in the encodings a provider body could use, and a check that no reading of a text yields the key.

The check decodes on its own (``json``, ``urllib``, a regex for ``\\uXXXX``), not with the sidecar's decoder, so a
gap in that decoder cannot hide itself.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from urllib.parse import quote, unquote

_U_ESCAPE = re.compile(r"\\+u([0-9A-Fa-f]{4})")


def json_escaped(secret: str) -> str:
    """Every character as a JSON ``\\uXXXX`` escape (as the text of a JSON string literal)."""
    return "".join(f"\\u{ord(c):04x}" for c in secret)


def half_escaped(secret: str) -> str:
    """The first half plain, the second half ``\\u``-escaped: a split escaped/plain spelling."""
    middle = len(secret) // 2
    return secret[:middle] + json_escaped(secret[middle:])


def double_escaped(secret: str) -> str:
    """Escaped in a body that was JSON-encoded twice: one JSON decode leaves ``\\u0073…`` text, a second the key."""
    return json_escaped(secret).replace("\\", "\\\\")


def percent_encoded(secret: str) -> str:
    return "".join(f"%{b:02X}" for b in secret.encode())


def percent_of_escaped(secret: str) -> str:
    """Percent-encoding of the ``\\u``-escaped key: two layers."""
    return quote(json_escaped(secret), safe="")


ENCODINGS: dict[str, Callable[[str], str]] = {
    "plain": lambda s: s,
    "json-escaped": json_escaped,
    "half-escaped": half_escaped,
    "double-escaped": double_escaped,
    "percent": percent_encoded,
    "percent-of-escaped": percent_of_escaped,
}


def readings(text: str, rounds: int = 3) -> set[str]:
    """``text`` and what a reader gets by JSON-decoding, percent-decoding or ``\\u``-unescaping it, repeatedly."""
    found = {text}
    for _ in range(rounds):
        for form in list(found):
            found.add(unquote(form))
            found.add(_U_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), form))
            try:
                found.add(json.dumps(json.loads(form), ensure_ascii=False))
            except ValueError:
                pass
    return found


def base64_cores(secret: str) -> list[str]:
    """Runs of base64 that any base64 text containing ``secret`` contains (one per byte alignment)."""
    raw = secret.encode()
    cores = []
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + raw).decode()
        cores.append(encoded[4 if shift else 0 : 4 * ((shift + len(raw)) // 3)])
    return cores


def leaks(text: str, secret: str) -> bool:
    """True when some reading of ``text`` contains ``secret``, either half of it (a redaction that caught only a
    key-shaped plain prefix leaves the escaped rest), or its base64."""
    middle = len(secret) // 2
    parts = (secret, secret[:middle], secret[middle:])
    return any(part in form for form in readings(text) for part in parts) or any(
        core in text for core in base64_cores(secret)
    )
