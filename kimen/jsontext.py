"""JSON text without the `json` package, for the commands called before every step.

`import json` compiles regular expressions and brings `re`, `enum`, `functools` and `collections`
(several ms, more than a third of the interpreter's own start-up). The C functions `json` itself
calls are used directly with the same settings: `compact_json` writes (envelopes, session frames),
`read_json` reads (session frames, the config, signed documents and sync state files);
`tests/test_protocol_json.py` proves both equal to `json`'s. Kept apart from `kimen.output`, so
that `kimen run` talks to the session daemon without importing the terminal writer.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def compact_json(doc: Any) -> str:
    """`json.dumps(doc, separators=(",", ":"), ensure_ascii=False)`, written by the C encoder that
    `json` itself uses for these settings (`_json.make_encoder`, with the arguments
    `json.JSONEncoder.iterencode` passes), without importing `json`: `import json` compiles regular
    expressions and imports `re` (~5 ms, more than a third of the interpreter's own start-up), which
    `status --json` and every session request would pay. `tests/test_protocol_json.py` proves the
    texts equal; a value `json` cannot write raises its `TypeError` (through `json`)."""
    try:
        from _json import encode_basestring, make_encoder
    except ImportError:  # pragma: no cover - an interpreter without the C accelerator
        return _json_dumps(doc)
    if type(doc) is str:
        return encode_basestring(doc)
    # markers (circular check), default, string encoder, indent, key and item separators,
    # sort_keys, skipkeys, allow_nan
    encode = make_encoder({}, _not_plain, encode_basestring, None, ":", ",", False, False, True)
    try:
        return "".join(encode(doc, 0))
    except _NotPlain:
        return _json_dumps(doc)  # the `json` module's own error for a value it cannot write


class _NotPlain(Exception):
    """A value outside the JSON types (internal)."""


def _not_plain(value: Any) -> Any:
    raise _NotPlain()


def _json_dumps(doc: Any) -> str:
    import json

    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


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
