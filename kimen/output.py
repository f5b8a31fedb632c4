"""Human lines and JSON envelopes (docs/errors.md).

Human errors are one ``kimen: error: …`` line on stderr plus optional ``kimen: hint: …`` lines;
warnings are ``kimen: warning: …``. JSON is compact, one document per stream, newline-terminated:
with ``--json`` every warning waits for the envelope (``warnings: [{reason, message}]``), so
nothing human reaches stderr before or after it. This module never decides *what* to say, only
how it is written; it never sees a secret value except through `write_bytes`, which only
`secret get --unsafe-stdout` and envfile to stdout use.

JSON text itself (without the `json` package) is written and read by `kimen.jsontext`.
"""

from __future__ import annotations

import os
import sys

from .jsontext import compact_json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PREFIX = "kimen"

# With --json (`collect_warnings`), or inside `capture_warnings`: the warnings raised so far, each
# `{"reason", "message"}`; None: warnings are printed as they come.
_pending: list[dict[str, str]] | None = None


def dumps(doc: Any) -> str:
    """Compact JSON, as every kimen envelope is written. Always UTF-8 text: a byte that is not UTF-8
    (a path's, decoded to a lone surrogate) is written as the text `\\xff`, as messages show it."""
    text = compact_json(doc)
    try:
        text.encode()
    except UnicodeEncodeError:  # surrogates occur only inside strings, where `\\` is a backslash
        text = "".join(_escaped(ch).replace("\\", "\\\\") if "\ud800" <= ch <= "\udfff" else ch for ch in text)
    return text


def _escaped(ch: str) -> str:
    """A character shown as an escape: `\\n`, `\\x1b`; a byte that is not UTF-8 (a lone surrogate
    from a path or argv) as `\\xff`, the byte it stands for."""
    code = ord(ch)
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else ascii(ch)[1:-1]


def one_line(text: str) -> str:
    """`text` with control characters escaped (`\\n`, `\\x1b`): a newline in a user's path must not
    split a message or forge a `kimen: hint:` line, and a terminal escape must not reach the tty."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escaped(ch) for ch in text)


def warn(message: str, *, reason: str) -> None:
    """One warning: a ``kimen: warning:`` line on stderr, or with --json an item of the envelope's
    `warnings`. `reason` is stable snake_case, declared in `kimen.errors.WARNINGS`."""
    if _pending is not None:
        _pending.append({"reason": reason, "message": one_line(message)})
    else:
        write_err(f"{PREFIX}: warning: {one_line(message)}\n")


def collect_warnings(on: bool = True) -> None:
    """From now on warnings wait for the JSON envelope (--json), or are printed (`on` False);
    either way none raised before is kept."""
    global _pending
    _pending = [] if on else None


def take_warnings() -> list[dict[str, str]]:
    """The warnings collected so far (none are kept): for the envelope that is written now."""
    if _pending is None:
        return []
    taken = list(_pending)
    _pending.clear()
    return taken


def flush_warnings() -> None:
    """Before `run` hands the terminal to its child: collected warnings as one line
    ``{"warnings": [...]}`` on stderr (nothing when there are none)."""
    taken = take_warnings()
    if taken:
        write_err(dumps({"warnings": taken}) + "\n")


class capture_warnings:
    """`with capture_warnings() as caught:` the warnings raised inside go to `caught` (a list of
    `{reason, message}`), never to stderr or the envelope: reports fold them into their checks."""

    def __enter__(self) -> list[dict[str, str]]:
        global _pending
        self._outer = _pending
        _pending = []
        return _pending

    def __exit__(self, *exc: object) -> None:
        global _pending
        _pending = self._outer


def error_lines(message: str, hint: str | None = None) -> str:
    text = f"{PREFIX}: error: {one_line(message)}\n"
    if hint:
        text += "".join(f"{PREFIX}: hint: {one_line(line)}\n" for line in hint.splitlines())
    return text


def print_error(message: str, hint: str | None = None) -> None:
    write_err(error_lines(message, hint))


def print_error_envelope(doc: dict[str, Any]) -> None:
    """The error envelope on stderr, with the warnings raised before the failure."""
    doc.setdefault("warnings", take_warnings())
    write_err(dumps(doc) + "\n")


def print_json(doc: Any) -> None:
    """Print one JSON document on stdout."""
    write_text(dumps(doc) + "\n")


def success_envelope(action: str, fields: dict[str, Any]) -> dict[str, Any]:
    """`{"ok": true, "action", "exit_code": 0, "warnings", …fields}`; a report's own `ok` and
    `exit_code` (map lint, doctor: did the report pass) are kept from `fields`."""
    doc: dict[str, Any] = {"ok": True, "action": action, "exit_code": 0, "warnings": take_warnings()}
    doc.update(fields)
    return doc


def print_lines(lines: str | list[str]) -> None:
    if isinstance(lines, str):
        lines = [lines]
    if lines:
        write_text("".join(f"{line}\n" for line in lines))


def terse_line(action: str, fields: dict) -> str:
    """`--terse`: the envelope's scalar fields as one line of shell-quoted `key=value` words
    (`action` first; booleans `true`/`false`, None empty, a list of scalars comma-joined; nested
    objects left out — `--json` has them)."""
    import shlex

    def word(value: object) -> str | None:
        if isinstance(value, bool):
            return "true" if value else "false"
        if value is None:
            return ""
        if isinstance(value, (str, int, float)):
            return str(value)
        if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int)) for v in value):
            return ",".join(str(v) for v in value)
        return None

    pairs = [("action", action)]
    for key, value in fields.items():
        text = word(value)
        if text is not None:
            pairs.append((key, text))
    return " ".join(f"{key}={shlex.quote(text) if text else ''}" for key, text in pairs)


class StdoutFailed(OSError):
    """A write to stdout failed for another reason than a closed pipe (a full disk, an I/O error);
    `kimen.cli.stdout_failed` reports it as `write_failed`."""


def drop_stdout() -> None:
    """Point fd 1 at /dev/null, so the text still buffered for stdout is dropped quietly at exit
    instead of failing again (Python would then print its own message and exit 120)."""
    _drop(sys.stdout)


def _drop(stream: Any) -> None:
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(null, stream.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    finally:
        os.close(null)


def _failed(exc: OSError) -> OSError:
    """What a failed write to stdout raises: a closed pipe as it is (`kimen.cli` exits quietly),
    anything else as `StdoutFailed`."""
    return exc if isinstance(exc, BrokenPipeError) else StdoutFailed(exc.errno, exc.strerror)


def _stdout() -> Any:
    out = sys.stdout
    if out is None:  # kimen was started with fd 1 closed (`kimen … >&-`)
        import errno  # here only: every command that prints imports this module

        raise StdoutFailed(errno.EBADF, "it is closed")
    return out


def write_text(text: str) -> None:
    """Text on stdout, flushed; a failure other than a closed pipe raises `StdoutFailed`."""
    out = _stdout()
    try:
        out.write(text)
        out.flush()
    except OSError as exc:
        raise _failed(exc) from None


def write_bytes(*chunks: bytes) -> None:
    """Raw bytes on stdout, one chunk after another (values printed on explicit request only);
    failures as `write_text`'s."""
    out = _stdout()
    try:
        out.flush()
        for chunk in chunks:
            out.buffer.write(chunk)
        out.buffer.flush()
    except OSError as exc:
        raise _failed(exc) from None


def write_err(text: str) -> None:
    """Text on stderr, flushed; never fails (a closed or full stderr loses the text, not the
    command's exit code: a failed stderr is pointed at /dev/null, as `drop_stdout` does)."""
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except OSError:
        _drop(sys.stderr)
    except (ValueError, AttributeError):  # AttributeError: fd 2 was closed at start (None)
        pass


PROGRESS_AFTER = 2.0  # seconds: a quicker operation prints nothing


class Progress:
    """Progress on a terminal: when the block runs longer than `PROGRESS_AFTER` seconds, one line
    ``kimen: <what>…`` on stderr. Nothing when stderr is not a terminal, with --json (warnings are
    collected then) or inside `capture_warnings`. Names only: `what` never holds a value."""

    __slots__ = ("_timer", "what")

    def __init__(self, what: str) -> None:
        self.what = what
        self._timer: Any = None

    def __enter__(self) -> Progress:
        try:
            tty = _pending is None and sys.stderr.isatty()
        except (AttributeError, OSError, ValueError):
            tty = False
        if tty:
            import threading

            self._timer = threading.Timer(PROGRESS_AFTER, write_err, (f"{PREFIX}: {one_line(self.what)}…\n",))
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
