"""Human lines and JSON envelopes (docs/errors.md).

Human errors are one ``kimen: error: …`` line on stderr plus optional ``kimen: hint: …`` lines;
warnings are ``kimen: warning: …``. JSON is compact, one document per stream, newline-terminated:
with ``--json`` every warning waits for the envelope (``warnings: [{reason, message}]``), so
nothing human reaches stderr before or after it. This module never decides *what* to say, only
how it is written; it never sees a secret value except through `write_bytes`, which only
`secret get --unsafe-stdout` and envfile to stdout use.

It also owns JSON text without the `json` package, for the commands called before every step:
`compact_json` writes (envelopes, session frames), `read_json` reads (session frames, the config,
signed documents and sync state files).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
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


class _Other(Exception):
    """A value outside the plain JSON types (internal): the `json` module encodes it."""


def compact_json(doc: Any) -> str:
    """`json.dumps(doc, separators=(",", ":"), ensure_ascii=False)`, written through `_json`, the
    C module `json` itself calls: `import json` compiles regular expressions and imports `re`
    (~5 ms, more than a third of the interpreter's own start-up), which `status --json` and every
    session request would pay. A value of another type (or an interpreter without `_json`) goes
    through `json`; `tests/test_protocol_json.py` proves the texts equal."""
    try:
        from _json import encode_basestring

        out: list[str] = []
        _dump(doc, out, encode_basestring)
        return "".join(out)
    except (ImportError, _Other):
        import json

        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def _dump(value: Any, out: list[str], quote: Any) -> None:
    kind = type(value)
    if kind is str:
        out.append(quote(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif kind is int:
        out.append(int.__repr__(value))
    elif kind is float and value == value and value not in (float("inf"), float("-inf")):
        out.append(float.__repr__(value))
    elif kind is dict:
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if type(key) is not str:
                raise _Other()
            out.append("," if i else "")
            out.append(quote(key))
            out.append(":")
            _dump(item, out, quote)
        out.append("}")
    elif kind is list or kind is tuple:
        out.append("[")
        for i, item in enumerate(value):
            out.append("," if i else "")
            _dump(item, out, quote)
        out.append("]")
    else:
        raise _Other()


# -- reading JSON without the json package ------------------------------------------------------
# `import json` costs several ms (it compiles regular expressions and brings `re`, `enum`,
# `functools`, `collections`); the C scanner behind `json.loads` is used directly with the same
# settings (`tests/test_protocol_json.py` proves the values equal). Syntax errors are reported by
# `json` itself: the text is parsed again there, so the message is the documented one.

_WHITESPACE = " \t\n\r"  # what `json.loads` skips around the value


class _Settings:
    """Parser settings, read by the C scanner as attributes: those of `json.JSONDecoder()`, or
    with `strict` floats and NaN/Infinity refused, and duplicate keys unless `unique_keys` is
    False (the caller knows the text is a canonical serialisation, which repeats no key)."""

    strict = True
    object_hook = None

    def __init__(self, strict: bool, unique_keys: bool) -> None:
        self.parse_int: Callable[[str], Any] = int
        self.parse_float: Callable[[str], Any] = _no_float if strict else float
        self.parse_constant: Callable[[str], Any] = _no_float if strict else _CONSTANTS.__getitem__
        self.object_pairs_hook = _unique_pairs if strict and unique_keys else None


_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


def _no_float(text: str) -> Any:
    raise ValueError("floats are not allowed")


def _unique_pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(items)
    if len(out) != len(items):
        raise ValueError("duplicate key")
    return out


def read_json(text: str, *, strict: bool = False, unique_keys: bool = True) -> Any:
    """`json.loads(text)` for a `str`: `ValueError` for anything that is not one JSON value,
    `RecursionError` for deep nesting. `strict`: floats and NaN/Infinity refused, and duplicate
    keys too unless `unique_keys` is False (the caller knows the text repeats no key)."""
    context = _Settings(strict, unique_keys)
    try:
        from _json import make_scanner
    except ImportError:  # pragma: no cover - an interpreter without the C accelerator
        return _json_loads(text, context)
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        # typeshed types the context as a decoder; the C scanner reads only the attributes above
        value, end = make_scanner(context)(text, start)  # type: ignore[arg-type]
    except StopIteration:
        raise ValueError("not a JSON value") from None
    except (ValueError, RecursionError):
        raise
    except Exception:
        # The accelerator reports a syntax error through `json.decoder.JSONDecodeError`; before
        # Python 3.12, when `json.decoder` is not imported yet, it fails with SystemError instead
        # (`{bad}`). The `json` module gives the documented error for the same text.
        return _json_loads(text, context)
    if text[end:].strip(_WHITESPACE):
        raise ValueError("extra data after the JSON value")
    return value


def _json_loads(text: str, context: _Settings) -> Any:
    import json

    return json.loads(text, parse_float=context.parse_float, parse_constant=context.parse_constant,
                      object_pairs_hook=context.object_pairs_hook)


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
        _write_err(f"{PREFIX}: warning: {one_line(message)}\n")


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
        _write_err(dumps({"warnings": taken}) + "\n")


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
    _write_err(error_lines(message, hint))


def print_error_envelope(doc: dict[str, Any]) -> None:
    """The error envelope on stderr, with the warnings raised before the failure."""
    doc.setdefault("warnings", take_warnings())
    _write_err(dumps(doc) + "\n")


def print_json(doc: Any) -> None:
    """Print one JSON document on stdout."""
    _write_out(dumps(doc) + "\n")


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
        _write_out("".join(f"{line}\n" for line in lines))


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

            self._timer = threading.Timer(PROGRESS_AFTER, _write_err, (f"{PREFIX}: {one_line(self.what)}…\n",))
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
