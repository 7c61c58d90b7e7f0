"""Incremental SSE framing on bytes: chunks in, the ``data`` payload of each event out.

Why not ``httpx_sse``: the reference reader (pi-utils ``readSseEvents``) differs from it where it matters here.
It does not require a ``text/event-stream`` content type, and at EOF it dispatches an event that was not
followed by a blank line (real servers do close that way; ``httpx_sse`` drops such an event, which would turn a
final ``done`` into a failure). Working on bytes also keeps the hot path cheap: lines are split on the LF/CR
bytes, which never occur inside a multi-byte UTF-8 sequence, so no incremental text decoding is needed and the
payload goes to ``orjson.loads`` as bytes.

Framing, as the reference and the SSE spec: lines end in LF, CRLF or CR (a CRLF may be split across chunks);
``data:`` lines are joined with LF; comments (``:...``), ``event:``, ``id:``, ``retry:`` and unknown fields are
ignored; events whose data is empty are skipped. ``[DONE]`` is left to the caller.
"""

from __future__ import annotations

_LF = 0x0A
_CR = 0x0D


class SSEDecoder:
    __slots__ = ("_data", "_parts", "_skip_lf")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        """The current line so far (CR/LF-free pieces)."""
        self._data: list[bytes] | None = None
        """``data`` values of the event being read, or ``None`` before its first ``data`` line."""
        self._skip_lf = False
        """The previous chunk ended in CR: a LF opening this chunk belongs to that CRLF."""

    def feed(self, chunk: bytes) -> list[bytes]:
        """Consume ``chunk``; return the data payloads of the events it completes (usually zero or one)."""
        if self._skip_lf:
            if not chunk:
                return []
            self._skip_lf = False
            if chunk[0] == _LF:
                chunk = chunk[1:]
        if b"\n" not in chunk and b"\r" not in chunk:
            if chunk:
                self._parts.append(chunk)
            return []
        if self._parts:
            self._parts.append(chunk)
            buf = b"".join(self._parts)
            self._parts = []
        else:
            buf = chunk
        if b"\r" in buf:
            if buf[-1] == _CR:
                self._skip_lf = True
                buf = buf[:-1].replace(b"\r\n", b"\n").replace(b"\r", b"\n") + b"\n"
            else:
                buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buf.split(b"\n")
        tail = lines.pop()
        if tail:
            self._parts.append(tail)
        out: list[bytes] = []
        for line in lines:
            self._line(line, out)
        return out

    def flush(self) -> list[bytes]:
        """At EOF: treat an unterminated last line as complete and dispatch a pending event."""
        out: list[bytes] = []
        if self._parts:
            tail = b"".join(self._parts)
            self._parts = []
            self._line(tail, out)
        self._line(b"", out)
        return out

    def _line(self, line: bytes, out: list[bytes]) -> None:
        if not line:
            data = self._data
            if data is not None:
                self._data = None
                payload = data[0] if len(data) == 1 else b"\n".join(data)
                if payload:
                    out.append(payload)
            return
        if line.startswith(b"data:"):
            value = line[5:]
            if value[:1] == b" ":
                value = value[1:]
        elif line == b"data":
            value = b""
        else:
            return  # comment, event:, id:, retry: or an unknown field
        if self._data is None:
            self._data = [value]
        else:
            self._data.append(value)
