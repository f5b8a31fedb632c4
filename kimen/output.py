"""Human lines and JSON envelopes (SPEC §2.6, §2.7).

Human errors are one ``kimen: error: …`` line on stderr plus optional ``kimen: hint: …`` lines;
warnings are ``kimen: warning: …``. JSON is compact, one document per stream, newline-terminated.
This module never decides *what* to say, only how it is written; it never sees a secret value
except through `write_bytes`, which only `secret get --unsafe-stdout` and envfile to stdout use.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PREFIX = "kimen"


def dumps(doc: Any) -> str:
    """Compact JSON, as every kimen envelope is written."""
    import json

    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def one_line(text: str) -> str:
    """`text` with control characters escaped (`\\n`, `\\x1b`): a newline in a user's path must not
    split a message or forge a `kimen: hint:` line, and a terminal escape must not reach the tty."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def warn(message: str, reason: str | None = None) -> None:
    """Print one warning line on stderr (before any JSON envelope); `reason` names the warning."""
    _write_err(f"{PREFIX}: warning: {one_line(message)}\n")


def error_lines(message: str, hint: str | None = None) -> str:
    text = f"{PREFIX}: error: {one_line(message)}\n"
    if hint:
        text += "".join(f"{PREFIX}: hint: {one_line(line)}\n" for line in hint.splitlines())
    return text


def print_error(message: str, hint: str | None = None) -> None:
    _write_err(error_lines(message, hint))


def print_error_envelope(doc: dict[str, Any]) -> None:
    _write_err(dumps(doc) + "\n")


def print_json(doc: Any) -> None:
    """Print one JSON document on stdout."""
    _write_out(dumps(doc) + "\n")


def success_envelope(action: str, fields: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {"ok": True, "action": action, "exit_code": 0}
    doc.update(fields)
    return doc


def print_lines(lines: str | list[str]) -> None:
    if isinstance(lines, str):
        lines = [lines]
    if lines:
        _write_out("".join(f"{line}\n" for line in lines))


def write_bytes(data: bytes) -> None:
    """Raw bytes on stdout (values printed on explicit request only)."""
    out = sys.stdout
    out.flush()
    out.buffer.write(data)
    out.buffer.flush()


def _write_out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _write_err(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
