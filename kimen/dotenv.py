"""Reading dotenv files for `secret import` and `migrate`: the dialect `envfile` writes plus the
common variations — `export ` prefixes, unquoted values with ` #` comments, single quotes
(literal; `'\\''` inside them is a quote, as the shell format writes it), double quotes (escapes
\\\\ \\" \\n \\r \\t), values spanning lines inside quotes, blank lines and `#` comments.

Errors name the line number only, never the line: a dotenv file is full of secrets.
Values are bytes, exact: the file is decoded with surrogateescape and re-encoded the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import InvalidDotenv

_KEY = re.compile(r"[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_.-]*)[ \t]*(=)?")
# What other dotenv readers (docker compose, python-dotenv, dotenvx) would expand and kimen keeps
# literally: a `${…}` reference or an escaped dollar `\$`.
_EXPANDED_ELSEWHERE = re.compile(rb"\$\{[^}]*\}|\\\$")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}
# A lone CR outside quotes: a file with old Mac (CR-only) line endings would read as one line.
_CR = "a carriage return outside quotes (convert CR line endings to LF, or quote the value)"
MAX_FILE_BYTES = 256 * 1024 * 1024  # the largest dotenv file `secret import` and `migrate` read


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    value: bytes = field(repr=False)
    line: int


def kept_literally(value: bytes) -> bool:
    """True when `value` holds `${…}` or `\\$`: imported as written (kimen never interpolates),
    where another dotenv reader would have substituted or unescaped it."""
    return _EXPANDED_ELSEWHERE.search(value) is not None


def parse(data: bytes) -> list[Entry]:
    """All assignments in file order (a repeated key appears more than once)."""
    text = data.decode("utf-8", "surrogateescape")
    if text.startswith("\ufeff"):
        text = text[1:]
    text = text.replace("\r\n", "\n")
    entries: list[Entry] = []
    pos, line = 0, 1
    end = len(text)
    while pos < end:
        nl = text.find("\n", pos)
        line_end = end if nl < 0 else nl
        stripped = text[pos:line_end].strip(" \t")
        if not stripped or stripped.startswith("#"):
            if "\r" in stripped:
                raise InvalidDotenv(line=line, detail=_CR)
            pos, line = line_end + 1, line + 1
            continue
        match = _KEY.match(text, pos, line_end)
        if not match or not match.group(2):
            raise InvalidDotenv(line=line, detail="expected KEY=value")
        key, start_line = match.group(1), line
        pos = after_equals = match.end()
        while pos < line_end and text[pos] in " \t":
            pos += 1
        quote = text[pos] if pos < line_end else ""
        if quote in ("'", '"'):
            value, pos, line = _quoted(text, pos, line, quote)
            rest_end = text.find("\n", pos)
            rest_end = end if rest_end < 0 else rest_end
            rest = text[pos:rest_end].strip(" \t")
            if "\r" in rest:
                raise InvalidDotenv(line=line, detail=_CR)
            if rest and not rest.startswith("#"):
                raise InvalidDotenv(line=line, detail="unexpected text after the closing quote")
            pos = rest_end
        else:
            raw = text[after_equals:line_end]  # with its leading blanks: `KEY= # note` is empty
            if "\r" in raw:
                raise InvalidDotenv(line=line, detail=_CR)
            comment = re.search(r"[ \t]#", raw)
            if comment:
                raw = raw[:comment.start()]
            value = raw.strip(" \t")
            pos = line_end
        entries.append(Entry(key, value.encode("utf-8", "surrogateescape"), start_line))
        pos, line = pos + 1, line + 1
    return entries


def _quoted(text: str, pos: int, line: int, quote: str) -> tuple[str, int, int]:
    """Parse a quoted value starting at the opening quote; returns (value, index after, line)."""
    out: list[str] = []
    i = pos + 1
    start_line = line
    while i < len(text):
        ch = text[i]
        if ch == quote:
            if quote == "'" and text.startswith("\\''", i + 1):
                # `'\''`: a single quote inside single quotes, as `envfile --format shell` (and every
                # POSIX shell quoter) writes it; otherwise an error, so no valid file changes meaning
                out.append("'")
                i += 4
                continue
            return "".join(out), i + 1, line
        if ch == "\n":
            line += 1
        if quote == '"' and ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
        out.append(ch)
        i += 1
    raise InvalidDotenv(line=start_line, detail="unterminated quoted value")
