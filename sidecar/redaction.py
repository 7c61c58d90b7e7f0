"""One redaction for every text that leaves the sidecar: responses, SSE and WebSocket events, logs, the ledger.

Provider keys and bearers must never reach a client or a log, whatever path the text takes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Provider keys that could appear in an upstream error body (OpenAI echoes a masked key; some OpenAI-compatible
# servers echo it whole). Anything shaped like one is replaced before it reaches a log, an error or the ledger.
_KEY_SHAPES = re.compile(
    r"(sk-[A-Za-z0-9_\-*]{8,}|sk-ant-[A-Za-z0-9_\-*]{8,}|AIza[0-9A-Za-z_\-]{20,}|xai-[A-Za-z0-9]{16,}|"
    r"gsk_[A-Za-z0-9]{16,}|vcst_[A-Za-z0-9_\-]{8,}|Bearer\s+[A-Za-z0-9._\-~+/=]{8,})"
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove key-shaped substrings and any of the given secret values from ``text``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[REDACTED]")
    return _KEY_SHAPES.sub("[REDACTED]", text)
